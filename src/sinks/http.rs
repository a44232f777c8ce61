//! The outbound HTTP client every target shares (Jenkins and the sinks): pooled HTTP/1.1 and
//! HTTP/2, plain or TLS with the system trust store, no redirects, answers read under a cap.

use std::time::Duration;

use actix_web::web::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper::header::RETRY_AFTER;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// `User-Agent` of every outbound call.
pub const AGENT: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

/// The pooled HTTP/1.1 and HTTP/2 client, plain or TLS (system trust store).
pub type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why a call could not be made or its answer not read. Never holds the URL, so a token in
/// it cannot reach a log line through it.
pub type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// A new pooled client. hyper directly rather than reqwest: reqwest re-parses the URL twice
/// per call (its redirect policy runs even when disabled), which cost more than the HMAC check
/// on the benchmark path (BENCHMARKS.md).
pub fn client() -> Result<Http, rustls::Error> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    // Redirects are never followed (a redirect could carry a token to another host, and
    // neither GWT nor the sinks redirect): the legacy client has no redirect support to turn off.
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Reads at most `max` bytes of an answer; the rest is dropped unread.
pub async fn read_capped(
    mut body: hyper::body::Incoming,
    max: usize,
) -> Result<Bytes, TransportError> {
    let mut answer = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let room = max.saturating_sub(answer.len());
        answer.extend_from_slice(&data[..data.len().min(room)]);
        if answer.len() >= max {
            break;
        }
    }
    Ok(Bytes::from(answer))
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: Jenkins, proxies and the
/// sinks send seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
