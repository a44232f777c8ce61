//! What reaches Jenkins, and what the sender hears when Jenkins is down, slow or refusing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::fake_jenkins::{Behaviour, FakeJenkinsConfig};
use crate::helpers::{
    AppOptions, JOB_TOKEN, PORT_BODY, PORT_SECRET, SENDER_TOKEN, TestApp, json, now, port_headers,
    port_rule, spawn_app, spawn_app_with,
};

#[actix_web::test]
async fn variables_mode_sends_the_resolved_variables_as_a_json_object() {
    let rule = port_rule("").replace(
        "token_env = \"JOB_TOKEN\"",
        "token_env = \"JOB_TOKEN\"\nbody = \"variables\"",
    );
    let app = spawn_app_with(AppOptions {
        rules: vec![("port-deploy.toml", rule)],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.post_port(PORT_BODY).await.status(), StatusCode::OK);
    let sent: serde_json::Value =
        serde_json::from_slice(&app.jenkins.requests()[0].body).expect("JSON body");
    assert_eq!(
        sent,
        json!({"ACTION": "deploy_service", "RUN_ID": "r_QOz6WoOB1Q2lmhZZ", "SERVICE": "payments-api"})
    );
}

#[actix_web::test]
async fn basic_auth_is_sent_when_configured() {
    let app = spawn_app_with(AppOptions {
        jenkins_auth: true,
        fake_jenkins: FakeJenkinsConfig {
            jobs: vec![(JOB_TOKEN.to_owned(), "deploy-service".to_owned())],
            basic_auth: Some(("hookgate".to_owned(), "jenkins-api-token-value".to_owned())),
        },
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.post_port(PORT_BODY).await.status(), StatusCode::OK);
    let request = &app.jenkins.requests()[0];
    let auth = request
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .expect("authorization sent");
    assert_eq!(
        auth,
        format!(
            "Basic {}",
            STANDARD.encode("hookgate:jenkins-api-token-value")
        )
    );
}

#[actix_web::test]
async fn jenkins_refusing_the_credentials_is_a_502_not_a_success() {
    let app = spawn_app_with(AppOptions {
        fake_jenkins: FakeJenkinsConfig {
            jobs: vec![(JOB_TOKEN.to_owned(), "deploy-service".to_owned())],
            basic_auth: Some(("someone".to_owned(), "else".to_owned())),
        },
        ..AppOptions::default()
    })
    .await;
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let job = &json(response).await["jobs"]["port-deploy"];
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"], "Jenkins answered 401.");
}

#[actix_web::test]
async fn jenkins_down_is_a_502_with_a_failed_entry() {
    let app = spawn_app_with(AppOptions {
        jenkins_unreachable: true,
        ..AppOptions::default()
    })
    .await;
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let answer = json(response).await;
    assert_eq!(answer["message"], "There were errors when triggering jobs.");
    let job = &answer["jobs"]["port-deploy"];
    assert_eq!(job["triggered"], false);
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"], "Jenkins is unreachable.");
    assert!(job["delivery"].is_string());
    // The answer never reveals the job token.
    let text = answer.to_string();
    assert!(!text.contains(JOB_TOKEN), "{text}");
}

#[actix_web::test]
async fn jenkins_going_down_after_serving_is_a_502() {
    let TestApp {
        address,
        jenkins,
        client,
        rules_dir: _rules_dir,
        store_dir: _store_dir,
        ..
    } = spawn_app().await;
    let post = || {
        client
            .post(format!(
                "{address}/generic-webhook-trigger/invoke?token={SENDER_TOKEN}"
            ))
            .headers(port_headers(PORT_SECRET, now(), PORT_BODY))
            .body(PORT_BODY)
            .send()
    };
    assert_eq!(post().await.expect("request").status(), StatusCode::OK);
    jenkins.stop().await;
    assert_eq!(
        post().await.expect("request").status(),
        StatusCode::BAD_GATEWAY
    );
}

#[actix_web::test]
async fn jenkins_5xx_and_wrong_job_token_are_502() {
    let app = spawn_app().await;
    app.jenkins.set_behaviour(Behaviour::Status(503));
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        json(response).await["jobs"]["port-deploy"]["error"],
        "Jenkins answered 503."
    );

    // GWT's 404 for a token it does not know: a misconfigured dispatch token.
    let wrong_token =
        port_rule("").replace("token_env = \"JOB_TOKEN\"", "token = \"not-a-job-token\"");
    let app = spawn_app_with(AppOptions {
        rules: vec![("port-deploy.toml", wrong_token)],
        ..AppOptions::default()
    })
    .await;
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        json(response).await["jobs"]["port-deploy"]["error"],
        "Jenkins answered 404."
    );
}

#[actix_web::test]
async fn a_slow_jenkins_is_a_504_after_the_configured_deadline() {
    let app = spawn_app_with(AppOptions {
        jenkins_timeout_secs: 1,
        ..AppOptions::default()
    })
    .await;
    app.jenkins
        .set_behaviour(Behaviour::Delay(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let response = app.post_port(PORT_BODY).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        json(response).await["jobs"]["port-deploy"]["error"],
        "Jenkins did not answer in time."
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
}
