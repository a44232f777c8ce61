//! A stand-in Jenkins for demos: answers `/generic-webhook-trigger/invoke` as the GWT plugin
//! does and prints every request it receives, with tokens and credentials masked.
//!
//! `cargo run --example fake_jenkins -- --listen 127.0.0.1:8081 --job TOKEN=JOB`

#[path = "support/fake_jenkins.rs"]
#[allow(dead_code)] // shared with the tests, which use all of it
mod fake_jenkins;

use std::time::Duration;

use clap::Parser;
use fake_jenkins::{FakeJenkins, FakeJenkinsConfig};

/// Jobs of the shipped example rules (`rules/`), keyed by the Jenkins tokens in
/// `examples/secrets/`.
const DEFAULT_JOBS: [&str; 3] = [
    "port-deploy-jenkins-token=deploy-service",
    "github-push-jenkins-token=build-on-push",
    "gitlab-push-jenkins-token=gitlab-build",
];

#[derive(Parser)]
#[command(about = "A fake Jenkins with the Generic Webhook Trigger plugin, for demos")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// A job as TOKEN=NAME; repeat for several. Defaults to the example rules' jobs.
    #[arg(long = "job", value_name = "TOKEN=NAME")]
    jobs: Vec<String>,
    /// Require basic auth as USER:API_TOKEN.
    #[arg(long, value_name = "USER:API_TOKEN")]
    basic_auth: Option<String>,
    /// Print only a count of requests per second (for benchmarks).
    #[arg(long)]
    quiet: bool,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let specs: Vec<String> = if args.jobs.is_empty() {
        DEFAULT_JOBS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.jobs
    };
    let mut jobs = Vec::new();
    for spec in &specs {
        let Some((token, name)) = spec.split_once('=') else {
            eprintln!("--job must be TOKEN=NAME, got `{spec}`");
            std::process::exit(2);
        };
        jobs.push((token.to_owned(), name.to_owned()));
    }
    let basic_auth = args.basic_auth.as_deref().map(|pair| {
        let (user, token) = pair.split_once(':').unwrap_or((pair, ""));
        (user.to_owned(), token.to_owned())
    });
    let jenkins =
        FakeJenkins::start_on(&args.listen, FakeJenkinsConfig { jobs, basic_auth }).await?;
    println!("fake Jenkins listening on {}", jenkins.url());
    for (_, name) in specs.iter().filter_map(|s| s.split_once('=')) {
        println!("  job {name}");
    }

    let quiet = args.quiet;
    let mut total = 0usize;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(if quiet { 1000 } else { 100 })) => {}
        }
        let requests = jenkins.take_requests();
        if quiet {
            total += requests.len();
            if !requests.is_empty() {
                println!("{} requests ({total} in all)", requests.len());
            }
            continue;
        }
        for request in &requests {
            let query: Vec<String> = request
                .query
                .iter()
                .map(|(k, v)| {
                    if k == "token" {
                        format!("{k}=***")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            println!("{} {}?{}", request.method, request.path, query.join("&"));
            for (name, value) in &request.headers {
                let masked = matches!(name.as_str(), "authorization" | "token" | "x-gitlab-token");
                println!("  {name}: {}", if masked { "***" } else { value });
            }
            println!(
                "  body ({} bytes): {}",
                request.body.len(),
                String::from_utf8_lossy(&request.body)
            );
        }
    }
    jenkins.stop().await;
    Ok(())
}
