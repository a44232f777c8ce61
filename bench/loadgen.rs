//! A load generator for hookgate's benchmarks: N connections each send calls for a fixed time,
//! back to back (closed loop) or at a fixed total rate (`--rate`, open loop), then it prints one
//! JSON line with the request rate and latency percentiles.
//!
//! Every call gets its own run id (`{{RUN_ID}}`) and number (`{{SEQ}}`), and with `--secret` a
//! fresh `X-Port-Signature`, so idempotency, the replay window and the events endpoint's
//! duplicate check see realistic traffic. `cargo run --release --example loadgen -- --help`

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
    /// Port client secret used to sign; without it calls go unsigned (e.g. build events, whose
    /// token is in the URL).
    #[arg(long)]
    secret: Option<String>,
    /// Payload file; every occurrence of `{{RUN_ID}}` is replaced by a unique run id, and of
    /// `{{SEQ}}` by a unique integer (`--seq-base` + 0, 1, 2, … across all connections).
    #[arg(long)]
    payload: std::path::PathBuf,
    /// First `{{SEQ}}` value: give each run against one store its own range, so no call repeats
    /// an earlier run's (a repeated build event is a cheaper duplicate).
    #[arg(long, default_value_t = 0)]
    seq_base: u64,
    /// Total calls per second, spread evenly over the connections (wrk2's model). Latency is
    /// then measured from when each call was due, so a stall counts against every call it
    /// delays instead of hiding them (coordinated omission). Default: closed loop, as fast as
    /// answers come back.
    #[arg(long)]
    rate: Option<f64>,
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
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let results = runtime.block_on(async {
        let loops = (0..args.connections).map(|c| {
            let client = client.clone();
            let template = template.clone();
            let url = args.url.clone();
            let secret = args.secret.clone();
            let connections = args.connections as u64;
            let seq_base = args.seq_base;
            // Connection c's calls are due at started + (c / connections + n) * interval.
            let interval = args
                .rate
                .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
            let mut due = interval.map(|i| started + i.mul_f64(c as f64 / args.connections as f64));
            async move {
                let mut latencies = Vec::new();
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if let Some(at) = due {
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let seq = seq_base + n * connections + c as u64;
                    n += 1;
                    let body = template
                        .replace("{{RUN_ID}}", &format!("r_{c}_{n}"))
                        .replace("{{SEQ}}", &seq.to_string());
                    let mut request = client.post(&url).header("content-type", "application/json");
                    if let Some(secret) = &secret {
                        let timestamp = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .expect("clock")
                            .as_secs()
                            .to_string();
                        let signature = sign(secret, &timestamp, &body);
                        request = request
                            .header("x-port-timestamp", timestamp)
                            .header("x-port-signature", signature);
                    }
                    let sent = due.unwrap_or_else(Instant::now);
                    if let (Some(at), Some(interval)) = (&mut due, interval) {
                        *at += interval;
                    }
                    let response = request.body(body).send().await;
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
        "{{\"label\":\"{}\",\"requests\":{total},\"rps\":{:.0},\"target_rps\":{:.0},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"statuses\":{{{}}}}}",
        args.label,
        total as f64 / elapsed,
        args.rate.unwrap_or(0.0),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        statuses.join(",")
    );
}
