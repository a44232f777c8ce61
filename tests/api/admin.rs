//! The operator listener: its config checks (`[admin]`), what it serves, its bearer token, and
//! that nothing of it is reachable from the public listener.

use std::collections::HashMap;
use std::path::Path;

use hookgate::config::{self, Problems, Source};
use hookgate::gateway::Gateway;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ADMIN_TOKEN, AppOptions, PORT_BODY, SENDER_TOKEN, TestApp, json, spawn_app_with, test_env,
};

/// Compiles `hookgate.toml` text (with an empty rules directory) the way `serve` does.
fn compile(dir: &Path, toml: &str, env: &HashMap<String, String>) -> Result<Gateway, Problems> {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    let path = dir.join("hookgate.toml");
    std::fs::write(
        &path,
        format!(
            "{toml}\n[rules]\ndir = \"{}\"\n[jenkins.main]\nurl = \"http://127.0.0.1:1\"\n[delivery]\nmode = \"direct\"\n",
            dir.join("rules").display()
        ),
    )
    .expect("write");
    let source = Source::File(path);
    let settings = config::load(&source, env)?;
    Gateway::compile(settings, source, env)
}

fn problem_fields(result: Result<Gateway, Problems>) -> Vec<(String, String)> {
    match result {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .0
            .into_iter()
            .map(|p| (p.field, p.reason))
            .collect(),
    }
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = test_env();
    let problems = problem_fields(compile(
        dir.path(),
        "[admin]\nlisten = \"0.0.0.0:9091\"\n",
        &env,
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "admin.token_env");
    assert!(
        problems[0]
            .1
            .contains("required when admin.listen is not a loopback address"),
        "{problems:?}"
    );
    for toml in [
        "[admin]\nlisten = \"0.0.0.0:9091\"\ntoken_env = \"ADMIN_TOKEN\"\n",
        "[admin]\nlisten = \"[::1]:9091\"\n",
        "",
    ] {
        let gateway = compile(dir.path(), toml, &env).unwrap_or_else(|p| panic!("{toml}: {p}"));
        assert_eq!(gateway.admin_token.is_some(), toml.contains("token_env"));
    }
    let gateway = compile(dir.path(), "", &env).expect("defaults compile");
    assert_eq!(gateway.admin_listen.to_string(), "127.0.0.1:9091");
}

#[test]
fn admin_listen_and_token_problems_name_their_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("empty-token"), "\n").expect("write");
    let mut env = test_env();
    env.insert("EMPTY_TOKEN".to_owned(), String::new());
    let cases = [
        (
            "[admin]\nlisten = \"localhost\"\n",
            "admin.listen",
            "is not an address:port",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"0.0.0.0:8080\"\ntoken_env = \"ADMIN_TOKEN\"\n",
            "admin.listen",
            "overlaps server.listen",
        ),
        (
            "[admin]\nlisten = \"10.1.2.3:9091\"\ntoken_env = \"EMPTY_TOKEN\"\n",
            "admin.token_env",
            "environment variable EMPTY_TOKEN is empty",
        ),
        (
            "[admin]\ntoken_env = \"HOOKGATE_TEST_UNSET\"\n",
            "admin.token_env",
            "is not set",
        ),
        (
            &format!(
                "[admin]\nlisten = \"10.1.2.3:9091\"\ntoken_file = \"{}\"\n",
                dir.path().join("empty-token").display()
            ),
            "admin.token_file",
            "is empty",
        ),
    ];
    for (toml, field, reason) in cases {
        let problems = problem_fields(compile(dir.path(), toml, &env));
        assert!(
            problems
                .iter()
                .any(|(f, r)| f == field && r.contains(reason)),
            "{toml}: expected {field}: {reason}, got {problems:?}"
        );
        // A broken token never adds the "required" problem on top.
        assert_eq!(problems.len(), 1, "{toml}: {problems:?}");
    }
}

async fn get(app: &TestApp, url: String, bearer: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

#[actix_web::test]
async fn metrics_and_deliveries_are_404_on_the_public_listener_and_200_on_the_admin_one() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        ..AppOptions::default()
    })
    .await;
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = json(response).await["jobs"]["port-deploy"]["delivery"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    for path in ["/metrics".to_owned(), format!("/deliveries/{id}")] {
        // Not there at all: the same 404 as any unknown path, whatever the method.
        let response = get(&app, format!("{}{path}", app.address), Some(ADMIN_TOKEN)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(
            json(response).await,
            json!({"message": "Not found.", "jobs": null}),
            "{path}"
        );
        let response = app
            .client
            .post(format!("{}{path}", app.address))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST {path}");

        let response = get(&app, format!("{}{path}", app.admin_address), None).await;
        assert_eq!(response.status(), StatusCode::OK, "admin {path}");
        assert!(response.headers().contains_key("x-request-id"));
    }
    let view = json(get(&app, format!("{}/deliveries/{id}", app.admin_address), None).await).await;
    assert_eq!(view["id"], id.as_str());
    assert!(app.metrics().await.contains("hookgate_rules_loaded 1"));
    // The admin listener serves nothing of the public side.
    let response = app
        .client
        .post(format!(
            "{}/generic-webhook-trigger/invoke?token={SENDER_TOKEN}",
            app.admin_address
        ))
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn public_readyz_has_no_rules_or_store_detail() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        ..AppOptions::default()
    })
    .await;
    let response = get(&app, format!("{}/readyz", app.address), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await, json!({"status": "ready"}));
    let response = get(&app, format!("{}/readyz", app.admin_address), None).await;
    assert_eq!(
        json(response).await,
        json!({"status": "ready", "rules": 1, "store": "ok"})
    );
    // Both listeners answer /healthz.
    for base in [&app.address, &app.admin_address] {
        let response = get(&app, format!("{base}/healthz"), None).await;
        assert_eq!(json(response).await, json!({"status": "ok"}));
    }
}

#[actix_web::test]
async fn with_a_token_every_admin_request_needs_the_right_bearer() {
    let app = spawn_app_with(AppOptions {
        admin_token: true,
        ..AppOptions::default()
    })
    .await;
    let wrong = format!("{ADMIN_TOKEN}x");
    for (path, authorised) in [
        ("/metrics", StatusCode::OK),
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        (
            "/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            StatusCode::NOT_FOUND,
        ),
        ("/nope", StatusCode::NOT_FOUND),
    ] {
        let url = format!("{}{path}", app.admin_address);
        let refusals = [
            app.client.get(&url),
            app.client.get(&url).bearer_auth(&wrong),
            app.client.get(&url).bearer_auth(&ADMIN_TOKEN[1..]),
            app.client.get(&url).basic_auth("admin", Some(ADMIN_TOKEN)),
            app.client.get(&url).header("authorization", ADMIN_TOKEN),
            app.client
                .get(&url)
                .header("authorization", format!("Bearer {wrong}"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        ];
        for (i, request) in refusals.into_iter().enumerate() {
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} #{i}");
            assert!(response.headers().contains_key("x-request-id"));
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"hookgate-admin\""
            );
            let text = response.text().await.expect("body");
            assert!(!text.contains(ADMIN_TOKEN), "{text}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&text).expect("JSON"),
                json!({"message": "Admin token missing or wrong.", "jobs": null})
            );
        }
        let response = get(&app, url.clone(), Some(ADMIN_TOKEN)).await;
        assert_eq!(response.status(), authorised, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
    }
    // The public listener neither needs nor knows the admin token.
    let response = get(&app, format!("{}/healthz", app.address), None).await;
    assert_eq!(response.status(), StatusCode::OK);
}
