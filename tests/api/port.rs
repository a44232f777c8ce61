//! Port's API as a port sink calls it, against the fake Port API through real sockets: the
//! access token fetched once and cached across updates, fetched again once after a 401, refused
//! credentials, and Port's refusal of keys its schema does not list.

use std::time::Duration;

use hookgate::secret::Secret;
use hookgate::sinks::port::api::{CallError, PortApi};
use hookgate::sinks::{http, port};
use hyper::Method;
use serde_json::json;

use crate::helpers::fake_sinks::{FakeSinks, FakeSinksConfig};
use crate::helpers::{PORT_CLIENT_ID, PORT_CLIENT_SECRET};

async fn fake_port() -> FakeSinks {
    FakeSinks::start(FakeSinksConfig {
        port_client_id: PORT_CLIENT_ID.to_owned(),
        port_client_secret: PORT_CLIENT_SECRET.to_owned(),
        ..FakeSinksConfig::default()
    })
    .await
    .expect("fake Port starts")
}

fn api(fake: &FakeSinks, secret: &str) -> PortApi {
    PortApi::new(
        &fake.port_url(),
        Secret::new(PORT_CLIENT_ID.as_bytes().to_vec()),
        Secret::new(secret.as_bytes().to_vec()),
        http::client().expect("client"),
        Duration::from_secs(5),
        std::sync::Arc::default(),
    )
}

#[actix_web::test]
async fn the_access_token_is_fetched_once_and_again_after_a_401() {
    let fake = fake_port().await;
    let api = api(&fake, PORT_CLIENT_SECRET);
    let running = port::running(&["https://ci/job/a/1/".to_owned()], "https://ci/job/a/1/");
    for _ in 0..3 {
        let answer = api
            .call(Method::PATCH, "/v1/actions/runs/r_1", &running)
            .await
            .expect("answer");
        assert_eq!(answer.status, 200, "{}", answer.message());
    }
    assert_eq!(fake.port_tokens_issued(), 1, "one token for three updates");
    // The token stops working (Port's lifetime is not documented): one new token, and the
    // update goes through.
    fake.expire_port_tokens();
    let answer = api
        .call(Method::PATCH, "/v1/actions/runs/r_1", &running)
        .await
        .expect("answer");
    assert_eq!(answer.status, 200, "{}", answer.message());
    assert_eq!(fake.port_tokens_issued(), 2);
    let run = fake.port_runs()["r_1"].clone();
    assert_eq!(run.status_label.as_deref(), Some("Running"));
    assert_eq!(run.updates.len(), 4);
    // Every request carried a Bearer token, never the client secret.
    for request in fake.requests() {
        let text = format!("{request:?}{}", String::from_utf8_lossy(&request.body));
        if request.path != "/v1/auth/access_token" {
            assert!(!text.contains(PORT_CLIENT_SECRET), "{text}");
            assert!(
                request
                    .header("authorization")
                    .is_some_and(|v| v.starts_with("Bearer "))
            );
        }
    }
}

#[actix_web::test]
async fn refused_credentials_are_an_error_that_never_quotes_the_secret() {
    let fake = fake_port().await;
    let api = api(&fake, "a-wrong-secret-value");
    let error = api
        .call(Method::PATCH, "/v1/actions/runs/r_1", &port::filtered("r"))
        .await
        .expect_err("refused");
    match &error {
        CallError::Refused(reason) => {
            assert!(reason.contains("401"), "{reason}");
            assert!(!reason.contains("a-wrong-secret-value"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(fake.port_runs().is_empty(), "nothing reached the run");
}

#[actix_web::test]
async fn port_refuses_a_key_its_schema_does_not_list() {
    let fake = fake_port().await;
    let api = api(&fake, PORT_CLIENT_SECRET);
    let answer = api
        .call(
            Method::PATCH,
            "/v1/actions/runs/r_2",
            &json!({"status": "SUCCESS", "buildNumber": 7}),
        )
        .await
        .expect("answer");
    assert_eq!(answer.status, 422);
    assert!(
        answer.message().contains("buildNumber"),
        "{}",
        answer.message()
    );
    // What hookgate sends has only Port's keys, and a log line goes through.
    let update = port::trigger_failed("Jenkins answered 404");
    let answer = api
        .call(Method::PATCH, "/v1/actions/runs/r_2", &update)
        .await
        .expect("answer");
    assert_eq!(answer.status, 200, "{}", answer.message());
    let answer = api
        .call(
            Method::POST,
            "/v1/actions/runs/r_2/logs",
            &port::log_line(&update),
        )
        .await
        .expect("answer");
    assert_eq!(answer.status, 201, "{}", answer.message());
    let run = fake.port_runs()["r_2"].clone();
    assert_eq!(run.status, "FAILURE");
    assert_eq!(
        run.logs,
        ["hookgate could not trigger Jenkins: Jenkins answered 404"]
    );
}
