//! Stand-ins for Allstacks, itoc360, Port's API and a generic receiver, for demos of build events
//! out of Jenkins: prints every request it receives and what it answered, with the PAT, tokens,
//! access tokens and client credentials masked.
//!
//! `cargo run --example fake_sinks -- --listen 127.0.0.1:8090 --allstacks-token T --itoc360-token T`

#[path = "support/fake_sinks.rs"]
#[allow(dead_code)] // shared with the tests, which use all of it
mod fake_sinks;

use std::time::Duration;

use clap::Parser;
use fake_sinks::{FakeSinks, FakeSinksConfig};

#[derive(Parser)]
#[command(about = "Fake Allstacks, itoc360 and generic event receivers, for demos")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The Personal Access Token the fake Allstacks expects as a Bearer token (default: the
    /// demo one in examples/secrets/allstacks-pat, which examples/hookgate.toml sends).
    #[arg(long, value_name = "PAT")]
    allstacks_token: Option<String>,
    /// The source token the fake itoc360 expects, Bearer or `?token=` (default: the demo one in
    /// examples/secrets/itoc360-token).
    #[arg(long, value_name = "TOKEN")]
    itoc360_token: Option<String>,
    /// The client id the fake Port issues access tokens for (default: the demo one in
    /// examples/secrets/port-client-id).
    #[arg(long, value_name = "ID")]
    port_client_id: Option<String>,
    /// The client secret that goes with it (default: examples/secrets/port-client-secret).
    #[arg(long, value_name = "SECRET")]
    port_client_secret: Option<String>,
}

/// A demo secret shipped in examples/secrets/, for running from the repository root.
fn demo_secret(name: &str) -> String {
    let path = std::path::Path::new("examples/secrets").join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(error) => {
            eprintln!(
                "cannot read {} ({error}): run from the repository root or pass the token",
                path.display()
            );
            std::process::exit(2);
        }
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = FakeSinksConfig {
        allstacks_token: args
            .allstacks_token
            .unwrap_or_else(|| demo_secret("allstacks-pat")),
        itoc360_token: args
            .itoc360_token
            .unwrap_or_else(|| demo_secret("itoc360-token")),
        port_client_id: args
            .port_client_id
            .unwrap_or_else(|| demo_secret("port-client-id")),
        port_client_secret: args
            .port_client_secret
            .unwrap_or_else(|| demo_secret("port-client-secret")),
        ..FakeSinksConfig::default()
    };
    let sinks = FakeSinks::start_on(&args.listen, config).await?;
    println!("fake sinks listening on {}", sinks.url());
    println!(
        "  allstacks  {}  (Bearer ***)",
        sinks.allstacks_url("<company_id>")
    );
    println!(
        "  itoc360    {}  (Bearer *** or ?token=***)",
        sinks.itoc360_url()
    );
    println!("  forward    {}[/...]", sinks.forward_url());
    println!(
        "  port       {}/v1/auth/access_token, /v1/actions/runs/<run_id>[/logs]",
        sinks.port_url()
    );

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        for request in sinks.take_answered() {
            let query: Vec<String> = request
                .masked_query()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            println!(
                "{:?} {} {}{} -> {} {}",
                request.sink,
                request.method,
                request.path,
                query,
                request.answered,
                request.verdict
            );
            for (name, value) in request.masked_headers() {
                println!("  {name}: {value}");
            }
            // Port's token request carries the client id and secret.
            if request.path == "/v1/auth/access_token" {
                println!("  body: {{\"clientId\": \"***\", \"clientSecret\": \"***\"}}");
                continue;
            }
            let body = match request.json() {
                Some(document) => serde_json::to_string_pretty(&document)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&request.body).into_owned()),
                None => String::from_utf8_lossy(&request.body).into_owned(),
            };
            println!("  body ({} bytes):", request.body.len());
            for line in body.lines() {
                println!("    {line}");
            }
        }
    }
    sinks.stop().await;
    Ok(())
}
