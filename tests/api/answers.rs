//! The shape every answer shares, over raw sockets so nothing is normalised on the way: an
//! `X-Request-Id` on every answer of both listeners (handlers, router defaults, middleware
//! refusals, malformed paths), and the fixed short JSON message on every error.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::{
    ADMIN_TOKEN, AppOptions, PORT_BODY, PORT_SECRET, SENDER_TOKEN, now, port_headers, port_rule,
    spawn_app_with,
};

/// One exchange on a fresh connection: the status, the lower-cased header block and the body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

async fn exchange(base: &str, request: String) -> Answer {
    let host = base.trim_start_matches("http://").to_owned();
    // A blocking socket, off the async thread so the in-process gateway keeps running.
    let raw = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&host).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = stream.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("join");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// A request with `Connection: close`, the given extra header lines and body.
fn request(method: &str, target: &str, headers: &[String], body: &str) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

fn signed(body: &str) -> Vec<String> {
    port_headers(PORT_SECRET, now(), body)
        .iter()
        .map(|(name, value)| format!("{name}: {}", value.to_str().expect("ascii")))
        .collect()
}

#[actix_web::test]
async fn invariant_every_answer_has_an_x_request_id() {
    let locked = "token = \"locked-token\"\n[allow]\nips = [\"10.0.0.0/8\"]\n[verify]\nscheme = \"none\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n";
    let app = spawn_app_with(AppOptions {
        rules: vec![
            ("port-deploy.toml", port_rule("")),
            ("locked.toml", locked.to_owned()),
        ],
        queue: true,
        admin_token: true,
        max_body_bytes: 4096,
        ..AppOptions::default()
    })
    .await;
    let limited = spawn_app_with(AppOptions {
        rate_per_client: 1,
        ..AppOptions::default()
    })
    .await;
    let fenced = spawn_app_with(AppOptions {
        allow_ips: vec!["192.0.2.0/24".into()],
        ..AppOptions::default()
    })
    .await;
    let invoke = format!("/generic-webhook-trigger/invoke?token={SENDER_TOKEN}");
    let bearer = vec![format!("Authorization: Bearer {ADMIN_TOKEN}")];
    let flood: Vec<String> = (0..80).map(|i| format!("X-Flood-{i}: v")).collect();
    let bad_json = "{\"action\":";
    let get = |target: &str| request("GET", target, &[], "");
    let admin_get = |target: &str| request("GET", target, &bearer, "");
    let post =
        |target: &str, headers: &[String], body: &str| request("POST", target, headers, body);
    // A table, one answer a line, is easier to read and extend than rustfmt's layout of it.
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, String, u16)> = vec![
        // Handlers.
        ("public", "accepted", post(&invoke, &signed(PORT_BODY), PORT_BODY), 202),
        ("public", "health", get("/healthz"), 200),
        ("public", "readiness", get("/readyz"), 200),
        ("public", "OPTIONS invoke", request("OPTIONS", &invoke, &[], ""), 200),
        ("public", "unknown token", post("/generic-webhook-trigger/invoke?token=nope", &[], "{}"), 404),
        ("public", "bad signature", post(&invoke, &[], PORT_BODY), 401),
        ("public", "invalid JSON", post(&invoke, &signed(bad_json), bad_json), 400),
        ("public", "rule allowlist", post("/generic-webhook-trigger/invoke?token=locked-token", &[], "{}"), 403),
        ("public", "too large", post(&invoke, &[], &"x".repeat(5000)), 413),
        ("public", "compressed", post(&invoke, &["Content-Encoding: gzip".to_owned()], "{}"), 415),
        // Middleware: the header limit.
        ("public", "header flood", post(&invoke, &flood, "{}"), 431),
        // The router: unknown paths, wrong methods, operator paths, malformed segments.
        ("public", "unknown path", get("/nope"), 404),
        ("public", "HEAD unknown path", request("HEAD", "/nope", &[], ""), 404),
        ("public", "no metrics here", admin_get("/metrics"), 404),
        ("public", "no deliveries here", admin_get("/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404),
        ("public", "POST healthz", post("/healthz", &[], ""), 404),
        ("public", "OPTIONS healthz", request("OPTIONS", "/healthz", &[], ""), 404),
        ("public", "HEAD healthz", request("HEAD", "/healthz", &[], ""), 404),
        ("public", "OPTIONS *", request("OPTIONS", "*", &[], ""), 404),
        ("public", "GET hook", get("/hooks/port-deploy"), 405),
        ("public", "HEAD hook", request("HEAD", "/hooks/port-deploy", &[], ""), 405),
        ("public", "OPTIONS hook", request("OPTIONS", "/hooks/port-deploy", &[], ""), 405),
        ("public", "invalid UTF-8 rule", post("/hooks/%ff", &[], ""), 404),
        ("public", "malformed escape", post("/hooks/%zz", &[], ""), 404),
        ("public", "truncated escape", post("/hooks/port-deploy%", &[], ""), 404),
        ("public", "escaped slash", post("/hooks/a%2fb", &[], ""), 404),
        ("public", "empty rule", post("/hooks/", &[], ""), 404),
        // The admin listener: its token middleware, its handlers and its router.
        ("admin", "no token", get("/metrics"), 401),
        ("admin", "wrong token", request("GET", "/metrics", &["Authorization: Bearer nope".to_owned()], ""), 401),
        ("admin", "no token, unknown path", get("/nope"), 401),
        ("admin", "metrics", admin_get("/metrics"), 200),
        ("admin", "readiness", admin_get("/readyz"), 200),
        ("admin", "unknown delivery", admin_get("/deliveries/%ff"), 404),
        ("admin", "unknown path", admin_get("/nope"), 404),
        ("admin", "POST metrics", request("POST", "/metrics", &bearer, ""), 404),
        ("admin", "header flood", request("GET", "/metrics", &flood, ""), 431),
        // Client checks before routing: the rate limit and server.allow_ips.
        ("limited", "first", get("/nope"), 404),
        ("limited", "over the rate", get("/nope"), 429),
        ("limited", "over the rate, health", get("/healthz"), 429),
        ("fenced", "outside allow_ips", get("/healthz"), 403),
        ("fenced", "outside allow_ips, unknown path", get("/nope"), 403),
        ("fenced", "outside allow_ips, OPTIONS", request("OPTIONS", &invoke, &[], ""), 403),
    ];
    let mut statuses = BTreeSet::new();
    for (listener, what, raw, expected) in cases {
        let base = match listener {
            "public" => &app.address,
            "admin" => &app.admin_address,
            "limited" => &limited.address,
            _ => &fenced.address,
        };
        let answer = exchange(base, raw.clone()).await;
        assert_eq!(answer.status, expected, "{listener} {what}: {raw:?}");
        assert!(
            answer.head.contains("\r\nx-request-id: "),
            "{listener} {what} ({expected}) has no X-Request-Id:\n{}",
            answer.head
        );
        // Every error answer but HEAD's (which has no body) is the short JSON message.
        if expected >= 400 && !raw.starts_with("HEAD ") {
            let body: serde_json::Value = serde_json::from_str(&answer.body)
                .unwrap_or_else(|e| panic!("{listener} {what}: not JSON ({e}): {:?}", answer.body));
            assert!(body["message"].is_string(), "{listener} {what}: {body}");
        }
        statuses.insert(expected);
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [200, 202, 400, 401, 403, 404, 405, 413, 415, 429, 431]
    );
}
