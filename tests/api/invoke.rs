//! The request pipeline through real HTTP: every status code in the contract's table, token
//! sources, fan-out, dry run, and the response shapes.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    AppOptions, JOB_TOKEN, PORT_BODY, PORT_SECRET, SENDER_TOKEN, json, now, port_headers,
    port_rule, spawn_app, spawn_app_with,
};

#[actix_web::test]
async fn a_signed_port_call_triggers_the_job_and_answers_with_jenkins_queue_item() {
    let app = spawn_app().await;
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let body = json(response).await;
    assert_eq!(body["message"], "Triggered jobs.");
    let job = &body["jobs"]["port-deploy"];
    assert_eq!(job["triggered"], true);
    assert_eq!(job["status"], "triggered");
    assert_eq!(job["id"], 1);
    assert_eq!(job["url"], "queue/item/1/");
    assert_eq!(job["regexpFilterText"], "deploy_service");
    assert_eq!(job["regexpFilterExpression"], "^deploy_service$");
    assert_eq!(
        job["resolvedVariables"],
        json!({"ACTION": "deploy_service", "RUN_ID": "r_QOz6WoOB1Q2lmhZZ", "SERVICE": "payments-api"})
    );
    let delivery = job["delivery"].as_str().expect("delivery id");
    assert_eq!(delivery.len(), 26, "a ULID");

    let received = app.jenkins.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/generic-webhook-trigger/invoke");
    assert_eq!(
        request.query,
        vec![("token".to_owned(), JOB_TOKEN.to_owned())]
    );
    assert_eq!(
        request.body,
        PORT_BODY.as_bytes(),
        "original body, byte for byte"
    );
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("x-hookgate-delivery"), Some(delivery));
    assert_eq!(header("x-hookgate-rule"), Some("port-deploy"));
    // The sender's credentials stay at the gateway.
    assert_eq!(header("x-port-signature"), None);
    assert_eq!(header("x-port-timestamp"), None);
    assert_eq!(header("token"), None);
    assert_eq!(header("authorization"), None);
}

#[actix_web::test]
async fn options_answers_200_with_an_empty_body_before_any_rule_check() {
    let app = spawn_app_with(AppOptions {
        rules: vec![(
            "port-deploy.toml",
            port_rule("[allow]\nips = [\"192.0.2.1\"]"),
        )],
        ..AppOptions::default()
    })
    .await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.invoke_url())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("body"), "");
}

#[actix_web::test]
async fn options_from_outside_server_allow_ips_is_refused_like_any_request() {
    let app = spawn_app_with(AppOptions {
        allow_ips: vec!["192.0.2.1".into()],
        ..AppOptions::default()
    })
    .await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.invoke_url())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().contains_key("x-request-id"));
}

#[actix_web::test]
async fn unknown_tokens_and_names_get_the_same_404_whatever_was_sent() {
    let app = spawn_app().await;
    let mut bodies = Vec::new();
    for url in [
        format!("{}?token=wrong", app.invoke_url()),
        format!("{}?token={}x", app.invoke_url(), SENDER_TOKEN),
        app.invoke_url(),
        app.hook_url("no-such-rule"),
        app.hook_url("port-deploy"),
        format!("{}?token=wrong", app.hook_url("port-deploy")),
    ] {
        let response = app
            .client
            .post(&url)
            .body(PORT_BODY)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{url}");
        bodies.push(response.text().await.expect("body"));
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).expect("json");
    assert_eq!(
        body,
        json!({"message": "Did not find any rule for this token.", "jobs": null})
    );
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn the_token_is_read_from_each_of_the_four_places() {
    let app = spawn_app().await;
    let sources: Vec<(String, Vec<(&str, String)>)> = vec![
        (format!("{}?token={SENDER_TOKEN}", app.invoke_url()), vec![]),
        (app.invoke_url(), vec![("token", SENDER_TOKEN.to_owned())]),
        (
            app.invoke_url(),
            vec![("authorization", format!("Bearer {SENDER_TOKEN}"))],
        ),
        (
            app.invoke_url(),
            vec![("x-gitlab-token", SENDER_TOKEN.to_owned())],
        ),
    ];
    for (i, (url, extra)) in sources.into_iter().enumerate() {
        let mut request = app
            .client
            .post(&url)
            .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
            .body(PORT_BODY);
        for (name, value) in extra {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "source {i}");
        assert_eq!(
            json(response).await["jobs"]["port-deploy"]["status"],
            "triggered"
        );
    }
    assert_eq!(app.jenkins.requests().len(), 4);
}

#[actix_web::test]
async fn a_form_field_token_is_read_like_a_query_parameter() {
    let rule = r#"
token_env = "SENDER_TOKEN"
[verify]
scheme = "none"
[[query]]
name = "env"
[dispatch]
token_env = "JOB_TOKEN"
body = "variables"
"#;
    let app = spawn_app_with(AppOptions {
        rules: vec![("form.toml", rule.to_owned())],
        ..AppOptions::default()
    })
    .await;
    let response = app
        .client
        .post(app.invoke_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={SENDER_TOKEN}&env=prod"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(
        body["jobs"]["form"]["resolvedVariables"],
        json!({"env": "prod", "env_0": "prod"})
    );
    assert_eq!(
        app.jenkins.requests()[0].body,
        br#"{"env":"prod","env_0":"prod"}"#
    );
}

#[actix_web::test]
async fn a_form_post_is_forwarded_as_a_form_without_the_senders_token() {
    let rule = "token_env = \"SENDER_TOKEN\"\n[verify]\nscheme = \"none\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n";
    let app = spawn_app_with(AppOptions {
        rules: vec![("form.toml", rule.to_owned())],
        ..AppOptions::default()
    })
    .await;
    let response = app
        .client
        .post(app.invoke_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "payload=%7B%22a%22%3A1%7D&token={SENDER_TOKEN}&env=prod"
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let sent = &app.jenkins.requests()[0];
    assert_eq!(sent.body, b"payload=%7B%22a%22%3A1%7D&env=prod");
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(!String::from_utf8_lossy(&sent.body).contains(SENDER_TOKEN));
}

#[actix_web::test]
async fn an_empty_token_parameter_hides_header_tokens_as_in_gwt() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}?token=", app.invoke_url()))
        .header("token", SENDER_TOKEN)
        .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn a_body_over_the_limit_gets_413_declared_or_chunked() {
    let app = spawn_app_with(AppOptions {
        max_body_bytes: 64,
        ..AppOptions::default()
    })
    .await;
    let big = "x".repeat(65);
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .body(big.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(json(response).await["jobs"], serde_json::Value::Null);

    // A chunked body carries no Content-Length, so the cap must hold while reading.
    let status = send_chunked(
        &app.address,
        &format!("/generic-webhook-trigger/invoke?token={SENDER_TOKEN}"),
        &["0123456789"; 10],
    )
    .await;
    assert_eq!(status, 413);
    // 413 comes before the token is even looked at: an unknown token gets 413 too.
    let response = app
        .client
        .post(format!("{}?token=unknown", app.invoke_url()))
        .body(big)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn invalid_json_gets_400_with_the_parse_position_after_the_signature_passed() {
    let app = spawn_app().await;
    let body = "{\"action\": \"deploy_service\",\n  oops}";
    let response = app.post_port(body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer = json(response).await;
    assert_eq!(answer["jobs"], serde_json::Value::Null);
    assert_eq!(
        answer["message"],
        "Body is not valid JSON: error at line 2, column 3."
    );
    // With a bad signature the same body is a 401: nothing is parsed before verification.
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers("wrong-secret", now(), body))
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(app.jenkins.requests().is_empty());
}

/// GWT reads bodies with json-smart's permissive grammar; a payload it accepts is resolved
/// here too (after the signature verified), and what neither parser takes stays a 400.
#[actix_web::test]
async fn a_body_gwt_reads_permissively_resolves_as_in_gwt() {
    let app = spawn_app().await;
    for body in [
        // Trailing commas, as in the plugin's own fixtures.
        "{\"action\": \"deploy_service\", \"context\": {\"runId\": \"r_9\",},}",
        // Single quotes and a bare key.
        "{'action': 'deploy_service', context: {runId: 'r_9'}}",
        // Data after the document is ignored, as json-smart does.
        "{\"action\": \"deploy_service\", \"context\": {\"runId\": \"r_9\"}} trailing",
    ] {
        let response = app.post_port(body).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        let answer = json(response).await;
        let job = &answer["jobs"]["port-deploy"];
        assert_eq!(
            job["resolvedVariables"]["ACTION"], "deploy_service",
            "{body}"
        );
        assert_eq!(job["resolvedVariables"]["RUN_ID"], "r_9", "{body}");
        assert_eq!(job["triggered"], true, "{body}");
    }
    assert_eq!(app.jenkins.requests().len(), 3);
    // A body that is no JSON container at all (GWT would leave every variable unresolved)
    // and one json-smart refuses too: 400 with the strict parser's position.
    for (body, position) in [
        ("deploy please", "line 1, column 1"),
        (
            "{\"action\": \"deploy_service\",\n  \"context\": {",
            "line 2, column 14",
        ),
    ] {
        let response = app.post_port(body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let message = json(response).await["message"].as_str().unwrap().to_owned();
        assert!(message.contains(position), "{body}: {message}");
    }
    assert_eq!(app.jenkins.requests().len(), 3);
}

#[actix_web::test]
async fn a_filter_miss_answers_200_not_triggered_and_dispatches_nothing() {
    let app = spawn_app().await;
    let body = PORT_BODY.replace("deploy_service", "restart_service");
    let response = app.post_port(&body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    assert_eq!(answer["message"], "Triggered jobs.");
    let job = &answer["jobs"]["port-deploy"];
    assert_eq!(job["triggered"], false);
    assert_eq!(job["status"], "filtered");
    assert_eq!(job["regexpFilterText"], "restart_service");
    assert_eq!(job["id"], 0);
    assert_eq!(job["url"], "");
    assert!(job.get("delivery").is_none());
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn dry_run_evaluates_everything_and_dispatches_nothing() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
        .header("gwt-dry-run", "TRUE")
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    assert_eq!(answer["dry_run"], true);
    let job = &answer["jobs"]["port-deploy"];
    assert_eq!(job["triggered"], true);
    assert_eq!(job["id"], 0);
    assert_eq!(job["resolvedVariables"]["SERVICE"], "payments-api");
    assert!(app.jenkins.requests().is_empty());

    // A dry run is not a way around verification.
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers("wrong", now(), PORT_BODY))
        .header("gwt-dry-run", "true")
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(response).await["dry_run"], true);
}

/// Two rules share a token; each is checked on its own.
fn fan_out_options() -> AppOptions {
    let second = r#"
token_env = "SENDER_TOKEN"
[verify]
scheme = "github"
secret_env = "GITHUB_SECRET"
[[variables]]
name = "ACTION"
jsonpath = "$.action"
[dispatch]
token = "second-job-token"
body = "variables"
"#;
    AppOptions {
        rules: vec![
            ("port-deploy.toml", port_rule("")),
            ("audit.toml", second.to_owned()),
        ],
        fake_jenkins: crate::helpers::fake_jenkins::FakeJenkinsConfig {
            jobs: vec![
                (JOB_TOKEN.to_owned(), "deploy-service".to_owned()),
                ("second-job-token".to_owned(), "audit".to_owned()),
            ],
            basic_auth: None,
        },
        ..AppOptions::default()
    }
}

#[actix_web::test]
async fn fan_out_lists_rules_that_failed_a_check_as_rejected_without_detail() {
    let app = spawn_app_with(fan_out_options()).await;
    // Signed for Port only: the GitHub-verified rule rejects it, the Port rule triggers.
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    assert_eq!(answer["jobs"]["port-deploy"]["status"], "triggered");
    assert_eq!(
        answer["jobs"]["audit"],
        json!({"triggered": false, "status": "rejected"})
    );
    assert_eq!(app.jenkins.requests().len(), 1);
}

#[actix_web::test]
async fn fan_out_triggers_every_matching_rule() {
    let app = spawn_app_with(fan_out_options()).await;
    let github = crate::helpers::github_signature(crate::helpers::GITHUB_SECRET, PORT_BODY);
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
        .header("x-hub-signature-256", github)
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    assert_eq!(answer["jobs"]["port-deploy"]["status"], "triggered");
    assert_eq!(answer["jobs"]["audit"]["status"], "triggered");
    let mut received: Vec<Vec<u8>> = app.jenkins.requests().into_iter().map(|r| r.body).collect();
    received.sort();
    assert_eq!(
        received,
        vec![
            br#"{"ACTION":"deploy_service"}"#.to_vec(),
            PORT_BODY.as_bytes().to_vec()
        ]
    );
}

#[actix_web::test]
async fn when_every_candidate_fails_the_earliest_failing_check_decides() {
    let mut options = fan_out_options();
    // The Port rule now only admits an address the test does not come from.
    options.rules[0].1 = port_rule("[allow]\nips = [\"192.0.2.10\"]");
    let app = spawn_app_with(options).await;
    // Port rule: 403 (allowlist); GitHub rule: 401 (no signature). 403 comes first.
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json(response).await,
        json!({"message": "Client address is not allowed.", "jobs": null})
    );
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn hooks_endpoint_selects_by_name_and_still_requires_the_token() {
    let app = spawn_app().await;
    let send = |token: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.hook_url("port-deploy"))
            .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
            .body(PORT_BODY);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        send(None).await.expect("request").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(Some("wrong")).await.expect("request").status(),
        StatusCode::NOT_FOUND
    );
    let response = send(Some(SENDER_TOKEN)).await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    // Only POST is served on /hooks.
    let response = app
        .client
        .get(app.hook_url("port-deploy"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key("x-request-id"));
}

#[actix_web::test]
async fn any_method_reaches_the_gwt_endpoint() {
    let rule = "token_env = \"SENDER_TOKEN\"\n[verify]\nscheme = \"none\"\n[[query]]\nname = \"env\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n";
    let app = spawn_app_with(AppOptions {
        rules: vec![("get.toml", rule.to_owned())],
        ..AppOptions::default()
    })
    .await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = app
            .client
            .request(
                method.clone(),
                format!("{}?token={SENDER_TOKEN}&env=qa", app.invoke_url()),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(
            json(response).await["jobs"]["get"]["resolvedVariables"]["env"],
            "qa"
        );
    }
}

#[actix_web::test]
async fn request_ids_are_kept_when_plain_and_replaced_otherwise() {
    let app = spawn_app().await;
    let get = |id: &'static str| {
        app.client
            .get(format!("{}/healthz", app.address))
            .header("x-request-id", id)
            .send()
    };
    let response = get("abc-123").await.expect("request");
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = get("evil\tvalue with spaces").await.expect("request");
    assert_ne!(
        response.headers()["x-request-id"],
        "evil\tvalue with spaces"
    );
}

#[actix_web::test]
async fn health_readiness_metrics_and_unknown_paths() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    // Readiness without detail here; the admin listener has the rule count.
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(json(response).await, json!({"status": "ready"}));
    let response = app
        .client
        .get(format!("{}/readyz", app.admin_address))
        .send()
        .await
        .expect("request");
    assert_eq!(json(response).await, json!({"status": "ready", "rules": 1}));

    app.post_port(PORT_BODY).await;
    app.client
        .post(format!("{}?token=nope", app.invoke_url()))
        .send()
        .await
        .expect("request");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"hookgate_requests_total{rule="port-deploy",outcome="triggered"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"hookgate_requests_total{rule="",outcome="not_found"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookgate_jenkins_calls_total"),
        "{metrics}"
    );
    assert!(metrics.contains("hookgate_rules_loaded 1"), "{metrics}");

    let response = app
        .client
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().contains_key("x-request-id"));
}

/// Sends a POST with `Transfer-Encoding: chunked` over a raw socket and returns the status code.
async fn send_chunked(address: &str, path: &str, chunks: &[&str]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    // The server may answer and close before the whole body is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}
