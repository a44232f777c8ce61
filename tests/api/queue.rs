//! Queue mode through real HTTP: 202 after a durable store, delivery by the worker, retries and
//! dead letters by Jenkins' answer, idempotency, and a store that cannot be written.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::fake_jenkins::Behaviour;
use crate::helpers::{
    AppOptions, JOB_TOKEN, PORT_BODY, PORT_SECRET, SENDER_TOKEN, TestApp, json, now, port_headers,
    port_rule, spawn_app_with,
};

fn queue() -> AppOptions {
    AppOptions {
        queue: true,
        ..AppOptions::default()
    }
}

/// Polls `condition` until it holds, failing the test after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    async fn delivery(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}/deliveries/{id}", self.admin_address))
            .send()
            .await
            .expect("request");
        (response.status(), json(response).await)
    }

    /// Waits until the delivery is done or dead, and returns its view.
    async fn settled(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, view) = self.delivery(id).await;
            if matches!(view["state"].as_str(), Some("done" | "dead")) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id} did not settle: {view}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Posts the Port body (with `runId` replaced) and returns the status and the job entry.
async fn post(app: &TestApp, run_id: &str) -> (StatusCode, Value) {
    let body = PORT_BODY.replace("r_QOz6WoOB1Q2lmhZZ", run_id);
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers(PORT_SECRET, now(), &body))
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, json(response).await["jobs"]["port-deploy"].clone())
}

#[actix_web::test]
async fn an_accepted_call_is_answered_202_then_delivered_with_its_queue_item() {
    let app = spawn_app_with(queue()).await;
    let (status, job) = post(&app, "r_1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["triggered"], true);
    assert_eq!(job["resolvedVariables"]["RUN_ID"], "r_1");
    let id = job["delivery"].as_str().expect("delivery id").to_owned();

    let view = app.settled(&id, Duration::from_secs(5)).await;
    assert_eq!(view["state"], "done");
    assert_eq!(view["rule"], "port-deploy");
    assert_eq!(view["target"], "jenkins:main");
    assert_eq!(view["receipt"]["jobs"][0]["id"], 1);
    assert_eq!(view["receipt"]["jobs"][0]["url"], "queue/item/1/");
    assert_eq!(view["receipt"]["jobs"][0]["job"], "deploy-service");
    assert_eq!(view["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(view["attempts"][0]["status"], 200);
    assert!(view.get("body").is_none(), "the body is never shown");

    let sent = &app.jenkins.requests()[0];
    assert_eq!(sent.header("x-hookgate-delivery"), Some(id.as_str()));
    assert_eq!(sent.query, vec![("token".to_owned(), JOB_TOKEN.to_owned())]);
    assert!(
        String::from_utf8_lossy(&sent.body).contains("r_1"),
        "original body"
    );

    let (status, missing) = app.delivery("01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["jobs"], Value::Null);
}

#[actix_web::test]
async fn calls_accepted_while_jenkins_is_down_are_each_delivered_once_it_is_back() {
    // A budget that outlasts the outage, however slow the machine.
    let mut app = spawn_app_with(AppOptions {
        max_attempts: 10_000,
        ..queue()
    })
    .await;
    app.jenkins.down().await;

    const N: usize = 40;
    let posts = (0..N).map(|i| {
        let app = &app;
        async move { post(app, &format!("r_down_{i}")).await }
    });
    let answers = futures_util::future::join_all(posts).await;
    let mut accepted: Vec<String> = answers
        .iter()
        .map(|(status, job)| {
            assert_eq!(*status, StatusCode::ACCEPTED, "{job}");
            job["delivery"].as_str().expect("id").to_owned()
        })
        .collect();
    // Let the worker fail a few times against the closed port.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = app.delivery(&accepted[0]).await;
    assert_eq!(view["state"], "retrying", "{view}");
    assert!(
        view["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("unreachable"),
        "{view}"
    );

    app.jenkins
        .up()
        .expect("Jenkins comes back on the same port");
    eventually("every call delivered", Duration::from_secs(15), || {
        app.jenkins.delivered_ids().len() >= N
    })
    .await;
    // Give a stray duplicate the chance to show up before counting.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let mut delivered = app.jenkins.delivered_ids();
    delivered.sort();
    accepted.sort();
    assert_eq!(delivered, accepted, "each accepted call exactly once");
}

/// One case of the retry table: what Jenkins answers, then the final state and attempts.
async fn retry_case(
    script: Vec<Behaviour>,
    options: AppOptions,
    state: &str,
    attempts: usize,
) -> Value {
    let app = spawn_app_with(options).await;
    app.jenkins.script(script);
    let (status, job) = post(&app, "r_retry").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job["delivery"].as_str().expect("id").to_owned();
    let view = app.settled(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], state, "{view}");
    assert_eq!(
        view["attempts"].as_array().map(Vec::len),
        Some(attempts),
        "{view}"
    );
    assert_eq!(app.jenkins.requests().len(), attempts);
    view
}

#[actix_web::test]
async fn server_errors_and_throttling_are_retried_until_jenkins_accepts() {
    for code in [500, 502, 503, 429] {
        let view = retry_case(vec![Behaviour::Status(code)], queue(), "done", 2).await;
        assert_eq!(view["attempts"][0]["status"], code);
        assert_eq!(view["attempts"][1]["status"], 200);
    }
}

#[actix_web::test]
async fn retry_after_is_honoured_but_never_beyond_twice_the_scheduled_wait() {
    // Retry-After: 30 s, while the schedule is 10–20 ms: the wait is capped at 40 ms.
    let view = retry_case(vec![Behaviour::RetryAfter(503, 30)], queue(), "done", 2).await;
    let first = view["attempts"][0]["at"].as_i64().expect("at");
    let second = view["attempts"][1]["at"].as_i64().expect("at");
    let gap = second - first;
    assert!((10..1000).contains(&gap), "waited {gap} ms");
}

#[actix_web::test]
async fn a_timeout_is_retried() {
    let options = AppOptions {
        jenkins_timeout_secs: 1,
        ..queue()
    };
    let view = retry_case(
        vec![Behaviour::Delay(Duration::from_secs(2))],
        options,
        "done",
        2,
    )
    .await;
    assert!(
        view["attempts"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("did not answer"),
        "{view}"
    );
}

#[actix_web::test]
async fn a_wrong_job_token_or_refused_credentials_dead_letter_at_once() {
    for code in [404, 401, 403, 400] {
        let view = retry_case(vec![Behaviour::Status(code)], queue(), "dead", 1).await;
        assert_eq!(
            view["last_error"],
            format!("Jenkins answered {code}"),
            "{view}"
        );
    }
}

#[actix_web::test]
async fn attempts_run_out_after_max_attempts() {
    let options = AppOptions {
        max_attempts: 3,
        ..queue()
    };
    let view = retry_case(vec![Behaviour::Status(500); 10], options, "dead", 3).await;
    assert_eq!(
        view["last_error"],
        "gave up after 3 attempts: Jenkins answered 500"
    );
}

fn idempotent_rule(section: &str) -> String {
    format!("{}\n[idempotency]\n{section}\n", port_rule(""))
}

#[actix_web::test]
async fn a_repeat_within_the_ttl_is_a_duplicate_and_is_not_dispatched_again() {
    let app = spawn_app_with(AppOptions {
        rules: vec![(
            "port-deploy.toml",
            idempotent_rule("key = \"$.context.runId\"\nttl_secs = 2"),
        )],
        ..queue()
    })
    .await;
    let (status, first) = post(&app, "r_once").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["status"], "queued");
    let (status, repeat) = post(&app, "r_once").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(repeat["status"], "duplicate");
    assert_eq!(repeat["delivery"], first["delivery"]);
    // Another run is another call.
    let (_, other) = post(&app, "r_other").await;
    assert_eq!(other["status"], "queued");
    eventually("two deliveries", Duration::from_secs(5), || {
        app.jenkins.delivered_ids().len() == 2
    })
    .await;

    // After the TTL the same key is a new call.
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    let (_, later) = post(&app, "r_once").await;
    assert_eq!(later["status"], "queued");
    assert_ne!(later["delivery"], first["delivery"]);
    eventually("three deliveries", Duration::from_secs(5), || {
        app.jenkins.delivered_ids().len() == 3
    })
    .await;
}

#[actix_web::test]
async fn a_header_can_be_the_idempotency_key() {
    let app = spawn_app_with(AppOptions {
        rules: vec![(
            "port-deploy.toml",
            idempotent_rule("header = \"X-GitHub-Delivery\""),
        )],
        ..queue()
    })
    .await;
    let send = |delivery: &'static str| {
        let mut headers = port_headers(PORT_SECRET, now(), PORT_BODY);
        headers.insert("x-github-delivery", delivery.parse().expect("value"));
        app.client
            .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
            .headers(headers)
            .body(PORT_BODY)
            .send()
    };
    let statuses = [
        send("d-1").await.expect("request"),
        send("d-1").await.expect("request"),
        send("d-2").await.expect("request"),
    ];
    let mut kinds = Vec::new();
    for response in statuses {
        kinds.push(json(response).await["jobs"]["port-deploy"]["status"].clone());
    }
    assert_eq!(kinds, ["queued", "duplicate", "queued"]);
}

#[actix_web::test]
async fn invariant_a_store_error_answers_503_and_acknowledges_nothing() {
    let app = spawn_app_with(AppOptions {
        max_store_bytes: 64 * 1024,
        ..queue()
    })
    .await;
    // Bodies the store cannot hold: the database is capped at 64 KiB.
    let big = format!(
        r#"{{"action":"deploy_service","context":{{"runId":"r_big"}},"pad":"{}"}}"#,
        "x".repeat(200 * 1024)
    );
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(port_headers(PORT_SECRET, now(), &big))
        .body(big)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer = json(response).await;
    let job = &answer["jobs"]["port-deploy"];
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"], "The delivery store is unavailable.");

    // The public listener says only that it is not ready; the admin listener says why.
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(ready).await,
        serde_json::json!({"status": "unavailable"})
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.admin_address))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(ready).await,
        serde_json::json!({"status": "unavailable", "rules": 1, "store": "unwritable"})
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.jenkins.requests().is_empty(),
        "nothing was acknowledged or sent"
    );
}

#[actix_web::test]
async fn queue_metrics_report_depth_attempts_and_latency() {
    let app = spawn_app_with(queue()).await;
    app.jenkins.script([Behaviour::Status(503)]);
    let (_, job) = post(&app, "r_metrics").await;
    let id = job["delivery"].as_str().expect("id").to_owned();
    app.settled(&id, Duration::from_secs(5)).await;
    let text = app.metrics().await;
    for line in [
        "hookgate_requests_total{rule=\"port-deploy\",outcome=\"queued\"} 1",
        "hookgate_delivery_attempts_total{outcome=\"retry\"} 1",
        "hookgate_delivery_attempts_total{outcome=\"done\"} 1",
        "hookgate_queue_deliveries{state=\"done\"} 1",
        "hookgate_queue_deliveries{state=\"queued\"} 0",
        "hookgate_delivery_latency_seconds_count 1",
        "hookgate_queue_oldest_pending_age_seconds 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[actix_web::test]
async fn delivered_calls_are_purged_after_their_retention() {
    let app = spawn_app_with(AppOptions {
        done_retention_secs: 1,
        ..queue()
    })
    .await;
    let (_, job) = post(&app, "r_retention").await;
    let id = job["delivery"].as_str().expect("id").to_owned();
    let view = app.settled(&id, Duration::from_secs(5)).await;
    assert_eq!(view["state"], "done");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = app.delivery(&id).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "never purged");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One call whose job token several jobs share: GWT schedules each of them, and the delivery's
/// receipt keeps every queue item with its job (the run they belong to ends with the last).
#[actix_web::test]
async fn a_receipt_keeps_every_queue_item_of_gwts_answer() {
    let app = spawn_app_with(AppOptions {
        fake_jenkins: crate::helpers::fake_jenkins::FakeJenkinsConfig {
            jobs: vec![
                (JOB_TOKEN.to_owned(), "team/deploy-a".to_owned()),
                (JOB_TOKEN.to_owned(), "team/deploy-b".to_owned()),
            ],
            ..Default::default()
        },
        ..queue()
    })
    .await;
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer = json(response).await;
    let id = answer["jobs"]["port-deploy"]["delivery"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let view = app.settled(&id, Duration::from_secs(5)).await;
    assert_eq!(view["state"], "done");
    let jobs: Vec<(String, u64)> = view["receipt"]["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| {
            (
                job["job"].as_str().unwrap_or_default().to_owned(),
                job["id"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        jobs.iter().map(|(job, _)| job.as_str()).collect::<Vec<_>>(),
        ["team/deploy-a", "team/deploy-b"]
    );
    assert!(jobs.iter().all(|(_, id)| *id > 0), "{jobs:?}");
    assert_ne!(jobs[0].1, jobs[1].1);
}
