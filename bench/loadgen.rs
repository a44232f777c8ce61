//! A closed-loop load generator for hookgate's benchmarks: N connections each send signed Port
//! calls back to back for a fixed time, then it prints one JSON line with the request rate and
//! latency percentiles.
//!
//! Every call gets its own run id and a fresh `X-Port-Signature`, so idempotency and the replay
//! window see realistic traffic. `cargo run --release --example loadgen -- --help`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[derive(Parser)]
struct Args {
    /// Full URL, e.g. http://127.0.0.1:8080/generic-webhook-trigger/invoke?token=T
    #[arg(long)]
    url: String,
    /// Port client secret used to sign.
    #[arg(long)]
    secret: String,
    /// Payload file; every occurrence of `{{RUN_ID}}` is replaced by a unique run id.
    #[arg(long)]
    payload: std::path::PathBuf,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Label printed with the result.
    #[arg(long, default_value = "run")]
    label: String,
}

fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn main() {
    let args = Args::parse();
    let template = std::fs::read_to_string(&args.payload).expect("payload file");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let results = runtime.block_on(async {
        let loops = (0..args.connections).map(|c| {
            let client = client.clone();
            let template = template.clone();
            let url = args.url.clone();
            let secret = args.secret.clone();
            async move {
                let mut latencies = Vec::new();
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let body = template.replace("{{RUN_ID}}", &format!("r_{c}_{n}"));
                    let timestamp = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .expect("clock")
                        .as_secs()
                        .to_string();
                    let signature = sign(&secret, &timestamp, &body);
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-port-timestamp", &timestamp)
                        .header("x-port-signature", signature)
                        .body(body)
                        .send()
                        .await;
                    let status = match response {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    latencies.push(sent.elapsed());
                    *statuses.entry(status).or_default() += 1;
                }
                (latencies, statuses)
            }
        });
        futures_util::future::join_all(loops).await
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for (l, s) in results {
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let total = latencies.len();
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    println!(
        "{{\"label\":\"{}\",\"requests\":{total},\"rps\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"statuses\":{{{}}}}}",
        args.label,
        total as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        statuses.join(",")
    );
}
