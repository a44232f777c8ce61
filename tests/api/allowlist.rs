//! Global and per-rule IP allowlists, with and without a trusted proxy.

use reqwest::StatusCode;

use crate::helpers::{
    AppOptions, PORT_BODY, PORT_SECRET, SENDER_TOKEN, TestApp, now, port_headers, port_rule,
    spawn_app_with,
};

async fn send(app: &TestApp, forwarded_for: Option<&str>) -> StatusCode {
    let mut request = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
        .body(PORT_BODY);
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.expect("request").status()
}

#[actix_web::test]
async fn the_global_allowlist_is_checked_before_anything_else() {
    let app = spawn_app_with(AppOptions {
        allow_ips: vec!["192.0.2.0/24".into()],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(send(&app, None).await, StatusCode::FORBIDDEN);
    // Even an unknown token is refused with 403, not 404: the allowlist comes first.
    let response = app
        .client
        .post(format!("{}?token=unknown", app.invoke_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // X-Forwarded-For from an untrusted peer changes nothing.
    assert_eq!(send(&app, Some("192.0.2.7")).await, StatusCode::FORBIDDEN);
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn loopback_in_the_global_list_passes() {
    let app = spawn_app_with(AppOptions {
        allow_ips: vec!["192.0.2.0/24".into(), "127.0.0.1".into()],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(send(&app, None).await, StatusCode::OK);
}

#[actix_web::test]
async fn per_rule_allowlist_without_a_trusted_proxy_uses_the_peer() {
    let app = spawn_app_with(AppOptions {
        rules: vec![(
            "port-deploy.toml",
            port_rule("[allow]\nips = [\"192.0.2.1-192.0.2.9\", \"2001:db8::/32\"]"),
        )],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(send(&app, None).await, StatusCode::FORBIDDEN);
    // A client cannot talk its way in with X-Forwarded-For.
    assert_eq!(send(&app, Some("192.0.2.5")).await, StatusCode::FORBIDDEN);
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn invariant_the_client_address_is_the_peer_unless_a_trusted_proxy_forwards_it() {
    let app = spawn_app_with(AppOptions {
        rules: vec![(
            "port-deploy.toml",
            port_rule("[allow]\nips = [\"198.51.100.7\"]"),
        )],
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..AppOptions::default()
    })
    .await;
    // The proxy appended the real client address.
    assert_eq!(send(&app, Some("198.51.100.7")).await, StatusCode::OK);
    // A spoofed left-most entry is ignored: the right-most untrusted entry decides.
    assert_eq!(
        send(&app, Some("198.51.100.7, 203.0.113.9")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, Some("203.0.113.9, 198.51.100.7")).await,
        StatusCode::OK
    );
    // Trusted hops behind the client are skipped.
    assert_eq!(
        send(&app, Some("198.51.100.7, 127.0.0.5")).await,
        StatusCode::OK
    );
    // No header: the client is the proxy itself, which is not allowed here.
    assert_eq!(send(&app, None).await, StatusCode::FORBIDDEN);
    // Garbage where the client address should be is not an address.
    assert_eq!(send(&app, Some("not-an-ip")).await, StatusCode::FORBIDDEN);
    assert_eq!(app.jenkins.requests().len(), 3);
}

#[actix_web::test]
async fn server_allow_ips_covers_every_public_path_but_not_the_admin_listener() {
    let app = spawn_app_with(AppOptions {
        allow_ips: vec!["192.0.2.0/24".into()],
        ..AppOptions::default()
    })
    .await;
    let requests = [
        (reqwest::Method::GET, "/healthz"),
        (reqwest::Method::GET, "/readyz"),
        (reqwest::Method::GET, "/nope"),
        (reqwest::Method::GET, "/metrics"),
        (reqwest::Method::GET, "/hooks/port-deploy"),
        (reqwest::Method::HEAD, "/healthz"),
        (reqwest::Method::DELETE, "/readyz"),
    ];
    for (method, path) in &requests {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert!(response.headers().contains_key("x-request-id"));
        if *method != reqwest::Method::HEAD {
            assert_eq!(
                crate::helpers::json(response).await,
                serde_json::json!({"message": "Client address is not allowed.", "jobs": null})
            );
        }
    }
    // The operator listener is not the public one: its own exposure is admin.listen.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "hookgate_requests_total{{rule=\"\",outcome=\"forbidden\"}} {}",
            requests.len()
        )),
        "{metrics}"
    );
}
