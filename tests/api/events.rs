//! Build events out of Jenkins through real sockets: every answer of
//! `POST /jenkins/{target}/events`, the records each sink receives from the fakes' point of
//! view, duplicates, ordering, retries and dead letters.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::fake_sinks::{Behaviour, Sink};
use crate::helpers::*;

const QUEUED: &str = include_str!("../../examples/payloads/jenkins-freestyle-queued.json");
const STARTED: &str = include_str!("../../examples/payloads/jenkins-freestyle-started.json");
const COMPLETED: &str = include_str!("../../examples/payloads/jenkins-freestyle-completed.json");
const FINALIZED: &str = include_str!("../../examples/payloads/jenkins-freestyle-finalized.json");
const PIPELINE: &str = include_str!("../../examples/payloads/jenkins-pipeline-finalized.json");
const FAILURE: &str = include_str!("../../examples/payloads/jenkins-failure-finalized.json");

/// The Allstacks sink of PRODUCT.md's example, pointed at the fake.
const DORA: &str = r#"
[sinks.dora]
kind = "allstacks"
url = "{sinks}/webhook/company/1234/cicd_job"
token_env = "ALLSTACKS_TOKEN"
service_id = 42
job_type = "Production Deploy"
optional_parameters = ["TARGET_ENV"]
"#;

const FORWARD: &str = r#"
[sinks.relay]
kind = "forward"
url = "{sinks}/forward/jenkins"
"#;

const ONCALL: &str = r#"
[sinks.oncall]
kind = "alert"
url = "{sinks}/functions/v1/events"
token_env = "ITOC360_TOKEN"
"#;

async fn spawn_with_sinks(sinks: &str) -> TestApp {
    spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: sinks.to_owned(),
        ..AppOptions::default()
    })
    .await
}

/// Waits until at least `at_least` deliveries to `sink` are stored and every one is done or
/// dead; returns their admin views, oldest first.
async fn settled(app: &TestApp, sink: &str, at_least: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let admin = hookgate::store::Admin::open(&app.store).expect("store");
        let target = format!("sink:{sink}");
        let rows = admin
            .list(
                hookgate::store::ListFilter {
                    target: Some(&target),
                    ..Default::default()
                },
                1000,
            )
            .expect("list");
        let pending = rows.iter().any(|r| {
            matches!(
                r.state,
                hookgate::store::State::Queued | hookgate::store::State::Retrying
            )
        });
        if (!pending && rows.len() >= at_least) || std::time::Instant::now() > deadline {
            let mut views = Vec::new();
            for row in rows.iter().rev() {
                views.push(app.delivery_view(&row.id).await);
            }
            return views;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

fn with(body: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(body).expect("sample event");
    edit(&mut value);
    value.to_string()
}

#[actix_web::test]
async fn every_answer_of_the_events_endpoint() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        max_body_bytes: 4096,
        sinks: format!("{DORA}{FORWARD}"),
        ..AppOptions::default()
    })
    .await;
    let url = |target: &str, query: &str| format!("{}/jenkins/{target}/events{query}", app.address);
    let post = |url: String, body: &'static str| {
        app.client
            .post(url)
            .header("content-type", "application/json;charset=UTF-8")
            .body(body)
    };
    let token = format!("?token={EVENTS_TOKEN}");

    // 413 before anything else is looked at, even on an unknown target.
    let big = "x".repeat(5000);
    let response = app
        .client
        .post(url("nowhere", ""))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // 404: no such target, the same text as a target without an events token.
    let response = post(url("nowhere", &token), QUEUED).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json(response).await["message"],
        "Did not find an event source for this path."
    );

    // 401: no token, a wrong one, a wrong password in basic auth.
    for request in [
        post(url("main", ""), QUEUED),
        post(url("main", "?token=wrong"), QUEUED),
        post(url("main", ""), QUEUED).basic_auth("hookgate", Some("wrong")),
        post(url("main", ""), QUEUED).bearer_auth(format!("{EVENTS_TOKEN}x")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let text = response.text().await.unwrap();
        assert!(!text.contains(EVENTS_TOKEN), "{text}");
    }

    // 415: the plugin's XML format, or anything that is not JSON.
    for content_type in ["application/xml;charset=UTF-8", "text/plain"] {
        let response = app
            .client
            .post(url("main", &token))
            .header("content-type", content_type)
            .body("<job><name>x</name></job>")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            json(response).await["message"],
            "hookgate reads the Notification plugin's JSON format."
        );
    }

    // 400 with the reason; nothing but url, build.number and build.phase is required.
    for (body, reason) in [
        ("{", "Body is not JSON: error at line 1, column 1."),
        (
            r#"{"build":{"number":1,"phase":"QUEUED"}}"#,
            "Missing `url`.",
        ),
        (
            r#"{"url":"job/x/","build":{"phase":"QUEUED"}}"#,
            "Missing `build.number`.",
        ),
        (
            r#"{"url":"job/x/","build":{"number":1}}"#,
            "Missing `build.phase`.",
        ),
        (
            r#"{"url":"job/x/","build":{"number":1,"phase":"DONE"}}"#,
            "`build.phase` must be one of QUEUED, STARTED, COMPLETED, FINALIZED, NONE.",
        ),
    ] {
        let response = post(url("main", &token), body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json(response).await["message"], reason, "{body}");
    }

    // 202, from each place the plugin can put the token.
    let minimal =
        r#"{"url":"job/x/","build":{"number":1,"phase":"QUEUED","extra":[1,2]},"new_key":true}"#;
    let response = post(url("main", &token), minimal).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let first = json(response).await;
    assert_eq!(first["message"], "Accepted.");
    assert_eq!(first["duplicate"], false);
    assert_eq!(
        first["sinks"],
        json!({"dora": "skipped", "relay": "queued"}),
        "Allstacks takes FINALIZED only"
    );
    let event = first["event"].as_str().unwrap().to_owned();
    assert_eq!(event.len(), 26, "a ULID: {event}");
    let started = r#"{"url":"job/x/","build":{"number":1,"phase":"STARTED"}}"#;
    let response = post(url("main", ""), started)
        .basic_auth("hookgate", Some(EVENTS_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let completed = r#"{"url":"job/x/","build":{"number":1,"phase":"COMPLETED"}}"#;
    let response = post(url("main", ""), completed)
        .bearer_auth(EVENTS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // The same (target, build, phase) again is the plugin's duplicate: the first id, nothing
    // queued again.
    let response = post(url("main", &token), minimal).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let repeat = json(response).await;
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(repeat["event"], event.as_str());
    let relayed = settled(&app, "relay", 3).await;
    assert_eq!(relayed.len(), 3, "QUEUED, STARTED, COMPLETED once each");

    let metrics = app.metrics().await;
    for line in [
        r#"hookgate_events_total{jenkins="main",phase="QUEUED",outcome="accepted"} 1"#,
        r#"hookgate_events_total{jenkins="main",phase="QUEUED",outcome="duplicate"} 1"#,
        r#"hookgate_events_total{jenkins="main",phase="",outcome="unauthorized"} 4"#,
        r#"hookgate_events_total{jenkins="",phase="",outcome="not_found"} 1"#,
        r#"hookgate_sink_deliveries_total{sink="relay",outcome="done"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[actix_web::test]
async fn a_target_without_an_events_token_and_a_controller_outside_its_allowlist_are_refused() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        ..AppOptions::default()
    })
    .await;
    let response = app.post_event(QUEUED).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json(response).await["message"],
        "Did not find an event source for this path."
    );

    let app = spawn_app_with(AppOptions {
        events_token: true,
        events_allow_ips: vec!["10.1.2.3".to_owned()],
        ..AppOptions::default()
    })
    .await;
    // The token is checked first, so a scan without it learns nothing about the allowlist.
    let response = app
        .client
        .post(format!("{}/jenkins/main/events", app.address))
        .body(QUEUED)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.post_event(QUEUED).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn a_freestyle_build_gives_exactly_one_allstacks_record_from_its_four_phases() {
    let app = spawn_with_sinks(DORA).await;
    for (body, fate) in [
        (QUEUED, "skipped"),
        (STARTED, "skipped"),
        (COMPLETED, "skipped"),
        (FINALIZED, "queued"),
    ] {
        let response = app.post_event(body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(json(response).await["sinks"]["dora"], fate);
    }
    let received = app.sink_requests(1).await;
    assert_eq!(received.len(), 1);
    let record = &received[0];
    assert_eq!(record.sink, Sink::Allstacks);
    assert_eq!(record.answered, 200, "{}", record.verdict);
    assert_eq!(
        record.header("authorization"),
        Some(format!("Bearer {ALLSTACKS_TOKEN}").as_str())
    );
    assert_eq!(record.header("content-type"), Some("application/json"));
    // PRODUCT.md's field rules over jenkins-events.md §1.6's build 128: the start is the
    // STARTED event's timestamp, the duration 95.4 s rounds to 95, the repository comes from
    // the https scm url, `origin/` is cut from the branch, and the queue wait is
    // STARTED − QUEUED = 12.345 s.
    assert_eq!(
        record.json().unwrap(),
        json!({
            "job_id": "https://jenkins.example.com/job/payments-deploy/128/",
            "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "service_id": 42,
            "job_start_time": 1768212000,
            "job_duration": 95,
            "status": "Succeeded",
            "repo_name": "acme/payments-api",
            "job_type": "Production Deploy",
            "optional": [
                {"key": "build_number", "value": 128, "type": "integer"},
                {"key": "job_path", "value": "job/payments-deploy/", "type": "string"},
                {"key": "jenkins_url", "value": "https://jenkins.example.com/job/payments-deploy/128/", "type": "string"},
                {"key": "branch", "value": "main", "type": "string"},
                {"key": "tests_total", "value": 412, "type": "integer"},
                {"key": "tests_failed", "value": 0, "type": "integer"},
                {"key": "queue_seconds", "value": 12, "type": "duration"},
                {"key": "TARGET_ENV", "value": "production", "type": "string"},
            ],
        })
    );
    let views = settled(&app, "dora", 1).await;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0]["state"], "done");
    assert_eq!(views[0]["event"]["phase"], "FINALIZED");
}

#[actix_web::test]
async fn a_pipeline_build_with_git_commit_as_a_parameter_gives_its_record() {
    let app = spawn_with_sinks(&format!("{DORA}repo_name = \"acme/payments-api\"\n")).await;
    let response = app.post_event(PIPELINE).await;
    assert_eq!(json(response).await["sinks"]["dora"], "queued");
    let received = app.sink_requests(1).await;
    // Without a STARTED event the start is timestamp − duration (1768215764118 − 182733 ms,
    // rounded down); the commit comes from the GIT_COMMIT parameter.
    assert_eq!(
        received[0].json().unwrap(),
        json!({
            "job_id": "https://jenkins.example.com/job/team/job/payments/job/main/57/",
            "commit_sha": "a26211c79a6b26ca0f4b636b5bc68266812d6ba9",
            "service_id": 42,
            "job_start_time": 1768215581,
            "job_duration": 183,
            "status": "Succeeded",
            "repo_name": "acme/payments-api",
            "job_type": "Production Deploy",
            "optional": [
                {"key": "build_number", "value": 57, "type": "integer"},
                {"key": "job_path", "value": "job/team/job/payments/job/main/", "type": "string"},
                {"key": "jenkins_url", "value": "https://jenkins.example.com/job/team/job/payments/job/main/57/", "type": "string"},
                {"key": "TARGET_ENV", "value": "production", "type": "string"},
            ],
        })
    );
    assert_eq!(received[0].answered, 200, "{}", received[0].verdict);
}

#[actix_web::test]
async fn a_build_with_no_commit_anywhere_is_dead_with_what_to_configure_and_never_sent() {
    let app = spawn_with_sinks(&format!("{DORA}repo_name = \"acme/payments-api\"\n")).await;
    let no_commit = with(PIPELINE, |event| {
        event["build"]["parameters"]
            .as_object_mut()
            .unwrap()
            .remove("GIT_COMMIT");
    });
    let response = app.post_event(&no_commit).await;
    assert_eq!(json(response).await["sinks"]["dora"], "queued");
    let views = settled(&app, "dora", 1).await;
    assert_eq!(views[0]["state"], "dead");
    let reason = views[0]["last_error"].as_str().unwrap();
    assert!(
        reason.contains("no commit SHA") && reason.contains("GIT_COMMIT, COMMIT_SHA"),
        "{reason}"
    );
    assert!(reason.contains("sinks.dora.commit_parameters"), "{reason}");
    assert!(
        app.sinks.requests().is_empty(),
        "nothing Allstacks would refuse is sent"
    );
}

#[actix_web::test]
async fn unstable_is_failed_and_aborted_or_not_built_are_not_sent_by_default() {
    let app = spawn_with_sinks(DORA).await;
    let build = |number: u64, status: &str| {
        let status = status.to_owned();
        with(FAILURE, move |event| {
            event["build"]["number"] = json!(number);
            event["build"]["url"] = json!(format!("job/payments-deploy/{number}/"));
            event["build"]["full_url"] = json!(format!(
                "https://jenkins.example.com/job/payments-deploy/{number}/"
            ));
            event["build"]["status"] = json!(status);
        })
    };
    for (number, status, fate) in [
        (1, "UNSTABLE", "queued"),
        (2, "ABORTED", "skipped"),
        (3, "NOT_BUILT", "skipped"),
        (4, "FAILURE", "queued"),
    ] {
        let response = app.post_event(&build(number, status)).await;
        assert_eq!(json(response).await["sinks"]["dora"], fate, "{status}");
    }
    let received = app.sink_requests(2).await;
    let mut statuses: Vec<(i64, String)> = received
        .iter()
        .map(|r| {
            let record = r.json().unwrap();
            (
                record["optional"][0]["value"].as_i64().unwrap(),
                record["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [(1, "Failed".to_owned()), (4, "Failed".to_owned())]
    );
    // The ssh scp form gives the repository too.
    assert_eq!(
        received[0].json().unwrap()["repo_name"],
        "acme/payments-api"
    );
}

#[actix_web::test]
async fn match_selects_by_job_phase_and_parameter() {
    let app = spawn_with_sinks(
        r#"
[sinks.deploys]
kind = "forward"
url = "{sinks}/forward/deploys"
[sinks.deploys.match]
jobs = "^job/payments-"
phases = ["STARTED", "FINALIZED"]
parameters = { TARGET_ENV = "^production$" }
"#,
    )
    .await;
    let staging = with(STARTED, |event| {
        event["build"]["parameters"]["TARGET_ENV"] = json!("staging");
        event["build"]["number"] = json!(200);
        event["build"]["url"] = json!("job/payments-deploy/200/");
    });
    let other_job = with(STARTED, |event| {
        event["url"] = json!("job/billing/");
        event["build"]["url"] = json!("job/billing/1/");
    });
    let no_parameters = with(FINALIZED, |event| {
        event["build"].as_object_mut().unwrap().remove("parameters");
        event["build"]["number"] = json!(300);
        event["build"]["url"] = json!("job/payments-deploy/300/");
    });
    for (body, fate) in [
        (QUEUED, "skipped"),
        (STARTED, "queued"),
        (COMPLETED, "skipped"),
        (FINALIZED, "queued"),
        (staging.as_str(), "skipped"),
        (other_job.as_str(), "skipped"),
        (no_parameters.as_str(), "skipped"),
    ] {
        let response = app.post_event(body).await;
        assert_eq!(json(response).await["sinks"]["deploys"], fate, "{body}");
    }
    let received = app.sink_requests(2).await;
    assert_eq!(received.len(), 2);
}

#[actix_web::test]
async fn forward_relays_the_events_bytes_unchanged() {
    let app = spawn_with_sinks(FORWARD).await;
    // Gson's HTML escapes (\u003d, \u0027) and the key order must arrive as sent.
    let response = app.post_event(FAILURE).await;
    assert_eq!(json(response).await["sinks"]["relay"], "queued");
    let received = app.sink_requests(1).await;
    assert_eq!(received[0].body, FAILURE.as_bytes());
    assert_eq!(received[0].path, "/forward/jenkins");
    assert_eq!(
        received[0].header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(received[0].header("authorization"), None);
}

#[actix_web::test]
async fn a_sink_that_is_down_gets_the_event_when_it_is_back() {
    let mut app = spawn_with_sinks(FORWARD).await;
    app.sinks.down().await;
    let response = app.post_event(FINALIZED).await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "stored, whatever the sink"
    );
    // A few attempts fail against the closed port (retries start at 20 ms in tests).
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    app.sinks.up().expect("the sink comes back on its port");
    let received = app.sink_requests(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, FINALIZED.as_bytes());
    let views = settled(&app, "relay", 1).await;
    assert_eq!(views[0]["state"], "done");
    assert!(
        views[0]["attempts"].as_array().unwrap().len() >= 2,
        "{}",
        views[0]
    );
}

#[actix_web::test]
async fn a_401_from_the_sink_is_dead_at_once_and_raises_the_auth_gauge() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: DORA.replace("ALLSTACKS_TOKEN", "EVENTS_TOKEN"),
        ..AppOptions::default()
    })
    .await;
    app.post_event(FINALIZED).await;
    let views = settled(&app, "dora", 1).await;
    assert_eq!(views[0]["state"], "dead");
    assert_eq!(views[0]["attempts"].as_array().unwrap().len(), 1);
    let reason = views[0]["last_error"].as_str().unwrap();
    assert!(reason.starts_with("the sink answered 401"), "{reason}");
    assert!(!reason.contains(EVENTS_TOKEN), "{reason}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"hookgate_sink_auth_failed{sink="dora"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"hookgate_sink_deliveries_total{sink="dora",outcome="dead"} 1"#),
        "{metrics}"
    );
    // A reload rebuilds the sink's target: the gauge says what the last answer said.
    assert_eq!(app.reload().await.0, StatusCode::OK);
    assert!(
        app.metrics()
            .await
            .contains(r#"hookgate_sink_auth_failed{sink="dora"} 1"#)
    );
    // A reload that removes the sink takes its gauge away (its alert would fire forever).
    app.settings.lock().expect("settings").sinks.remove("dora");
    assert_eq!(app.reload().await.0, StatusCode::OK);
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains(r#"hookgate_sink_auth_failed{sink="dora"}"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_later_phase_waits_while_the_first_is_retrying() {
    let app = spawn_with_sinks(FORWARD).await;
    // The receiver refuses the first two calls (as a restarting consumer would).
    app.sinks.script(
        Sink::Forward,
        [Behaviour::Status(503), Behaviour::Status(503)],
    );
    for body in [QUEUED, STARTED, COMPLETED, FINALIZED] {
        assert_eq!(app.post_event(body).await.status(), StatusCode::ACCEPTED);
    }
    let received = app.sink_requests(6).await;
    let phases: Vec<(String, u16)> = received
        .iter()
        .map(|r| {
            (
                r.json().unwrap()["build"]["phase"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                r.answered,
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("QUEUED".to_owned(), 503),
            ("QUEUED".to_owned(), 503),
            ("QUEUED".to_owned(), 200),
            ("STARTED".to_owned(), 200),
            ("COMPLETED".to_owned(), 200),
            ("FINALIZED".to_owned(), 200),
        ]
    );
}

#[actix_web::test]
async fn the_plugins_retry_duplicates_reach_each_sink_once() {
    let app = spawn_with_sinks(&format!("{DORA}{FORWARD}")).await;
    // The plugin's failed flag is never reset: once an attempt failed, every remaining retry
    // is sent even after a success (jenkins-events.md §1.4), so one phase arrives three times.
    for _ in 0..3 {
        assert_eq!(
            app.post_event(FINALIZED).await.status(),
            StatusCode::ACCEPTED
        );
    }
    // COMPLETED after FINALIZED: the record was sent already, the relay still gets it.
    let response = app.post_event(COMPLETED).await;
    let answer = json(response).await;
    assert_eq!(answer["sinks"]["dora"], "skipped");
    let received = app.sink_requests(3).await;
    let to = |sink| received.iter().filter(|r| r.sink == sink).count();
    assert_eq!(to(Sink::Allstacks), 1);
    assert_eq!(to(Sink::Forward), 2, "FINALIZED once, COMPLETED once");
}

#[actix_web::test]
async fn alerts_are_classified_as_itoc360_does_for_every_phase_and_result() {
    let app = spawn_with_sinks(ONCALL).await;
    let results = [
        None,
        Some("SUCCESS"),
        Some("UNSTABLE"),
        Some("FAILURE"),
        Some("NOT_BUILT"),
        Some("ABORTED"),
    ];
    let mut expected = Vec::new();
    let mut number = 0;
    for phase in ["QUEUED", "STARTED", "COMPLETED", "FINALIZED", "NONE"] {
        for result in results {
            number += 1;
            // vendor/itoc360-jenkins-integration.txt: FINALIZED + SUCCESS resolves, every other
            // phase or result alerts; FAILURE is high, UNSTABLE and ABORTED medium, SUCCESS
            // low; PRODUCT.md adds NOT_BUILT medium and no result yet low.
            let status = if phase == "FINALIZED" && result == Some("SUCCESS") {
                "resolve"
            } else {
                "trigger"
            };
            let severity = match result {
                Some("FAILURE") => "high",
                Some("UNSTABLE" | "ABORTED" | "NOT_BUILT") => "medium",
                _ => "low",
            };
            let body = with(QUEUED, |event| {
                event["url"] = json!(format!("job/job-{number}/"));
                event["build"]["phase"] = json!(phase);
                event["build"]["url"] = json!(format!("job/job-{number}/1/"));
                if let Some(result) = result {
                    event["build"]["status"] = json!(result);
                }
            });
            let response = app.post_event(&body).await;
            assert_eq!(json(response).await["sinks"]["oncall"], "queued");
            expected.push((format!("main:job/job-{number}/"), status, severity));
        }
    }
    let received = app.sink_requests(expected.len()).await;
    assert_eq!(received.len(), expected.len());
    let mut got: Vec<(String, String, String)> = received
        .iter()
        .map(|r| {
            assert_eq!(r.answered, 200, "{}", r.verdict);
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {ITOC360_TOKEN}").as_str())
            );
            let alert = r.json().unwrap();
            (
                alert["id"].as_str().unwrap().to_owned(),
                alert["status"].as_str().unwrap().to_owned(),
                alert["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut expected: Vec<(String, String, String)> = expected
        .into_iter()
        .map(|(id, status, severity)| (id, status.to_owned(), severity.to_owned()))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

#[actix_web::test]
async fn a_failed_build_raises_an_alert_that_the_next_success_resolves() {
    let app =
        spawn_with_sinks(&ONCALL.replace("token_env", "token_in = \"query\"\ntoken_env")).await;
    app.post_event(FAILURE).await;
    assert_eq!(app.sink_requests(1).await.len(), 1);
    assert_eq!(app.sinks.open_alerts().len(), 1, "the failure is open");
    app.post_event(FINALIZED).await;
    let received = app.sink_requests(2).await;
    assert_eq!(
        received[1].query,
        [("token".to_owned(), ITOC360_TOKEN.to_owned())]
    );
    assert_eq!(received[1].header("authorization"), None);
    assert!(
        app.sinks.open_alerts().is_empty(),
        "one id per job: the next success resolves it"
    );
}

#[actix_web::test]
async fn an_event_the_store_cannot_take_is_a_503() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        max_store_bytes: 256 * 1024,
        sinks: FORWARD.to_owned(),
        ..AppOptions::default()
    })
    .await;
    // Sizeable events (a long log tail) fill the store's room for new data.
    let mut refused = None;
    for number in 1..400u64 {
        let body = with(FAILURE, |event| {
            event["build"]["number"] = json!(number);
            event["build"]["url"] = json!(format!("job/payments-deploy/{number}/"));
            event["build"]["log"] = json!("x".repeat(16 * 1024));
        });
        let response = app.post_event(&body).await;
        if response.status() != StatusCode::ACCEPTED {
            refused = Some((number, response.status(), json(response).await));
            break;
        }
    }
    let (number, status, answer) = refused.expect("a 256 KiB store fills up");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["message"], "The delivery store is unavailable.");
    // Nothing of the refused event was kept: no delivery relays it.
    let admin = hookgate::store::Admin::open(&app.store).expect("store");
    let rows = admin
        .list(hookgate::store::ListFilter::default(), 1000)
        .expect("list");
    let build = format!("job/payments-deploy/{number}/ FINALIZED");
    assert!(
        rows.iter()
            .all(|r| r.event.as_deref() != Some(build.as_str())),
        "the refused event has no delivery"
    );
    assert_eq!(
        rows.len() as u64,
        number - 1,
        "every accepted event has its delivery"
    );
}

#[actix_web::test]
async fn an_operator_retries_a_dead_sink_delivery() {
    let app = spawn_with_sinks(FORWARD).await;
    // A 400 is permanent: the receiver refused this event as it is.
    app.sinks.script(Sink::Forward, [Behaviour::Status(400)]);
    app.post_event(FINALIZED).await;
    let views = settled(&app, "relay", 1).await;
    assert_eq!(views[0]["state"], "dead");
    assert_eq!(views[0]["target"], "sink:relay");
    assert!(
        views[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("the sink answered 400"),
        "{}",
        views[0]
    );
    // Fixed on the receiver's side: `hookgate deliveries retry <id>` sends it again.
    let id = views[0]["id"].as_str().unwrap().to_owned();
    let mut admin = hookgate::store::Admin::open(&app.store).expect("store");
    admin.retry(&id, false).expect("requeued");
    let received = app.sink_requests(2).await;
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].answered, 200);
    assert_eq!(received[1].body, FINALIZED.as_bytes());
    let views = settled(&app, "relay", 1).await;
    assert_eq!(views[0]["state"], "done");
}

/// A receiver that refuses every request with a 401 whose body quotes the request line and the
/// `Authorization` header, as many APIs' error pages do ("invalid token …").
async fn echoing_refuser() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    actix_web::rt::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            actix_web::rt::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                let authorization = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .unwrap_or("")
                    .to_owned();
                let body =
                    json!({"error": "invalid token", "request": line, "header": authorization})
                        .to_string();
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

/// A sink that is slow or black-holed, with more builds waiting than one scan reads, never
/// holds back a Jenkins trigger accepted after them: targets without a free slot are left out
/// of the worker's scan.
#[actix_web::test]
async fn a_backlogged_sink_does_not_hold_back_jenkins_triggers() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: r#"
[sinks.relay]
kind = "forward"
url = "{sinks}/forward/jenkins"
timeout_secs = 1
max_in_flight = 1
"#
        .to_owned(),
        ..AppOptions::default()
    })
    .await;
    // The receiver hangs (a black-holed address behaves the same way).
    app.sinks
        .set_behaviour(Sink::Forward, Behaviour::Delay(Duration::from_secs(60)));
    for number in 1..=300u64 {
        let body = with(FINALIZED, |event| {
            event["build"]["number"] = json!(number);
            event["build"]["url"] = json!(format!("job/payments-deploy/{number}/"));
        });
        assert_eq!(app.post_event(&body).await.status(), StatusCode::ACCEPTED);
    }
    // A trigger for Jenkins, which is up and answers at once.
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.jenkins.requests().is_empty() && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.jenkins.requests().len(),
        1,
        "a slow sink's backlog must not stop deliveries to Jenkins (or to other sinks)"
    );
}

/// A sink's refusal is kept as the delivery's reason, logged and shown by `hookgate
/// deliveries`, with the sink's own token (`?token=` or Bearer) redacted: an error page that
/// quotes the request does not leak it.
#[actix_web::test]
async fn a_sinks_answer_quoting_its_credential_is_not_kept_as_the_reason() {
    let refuser = echoing_refuser().await;
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: format!(
            r#"
[sinks.byquery]
kind = "alert"
url = "{refuser}/functions/v1/events"
token_env = "ITOC360_TOKEN"
token_in = "query"

[sinks.bybearer]
kind = "alert"
url = "{refuser}/functions/v1/events"
token_env = "ALLSTACKS_TOKEN"
"#
        ),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.post_event(FAILURE).await.status(), StatusCode::ACCEPTED);
    for (sink, secret) in [("byquery", ITOC360_TOKEN), ("bybearer", ALLSTACKS_TOKEN)] {
        let views = settled(&app, sink, 1).await;
        assert_eq!(views[0]["state"], "dead", "{}", views[0]);
        let shown = views[0].to_string();
        assert!(
            shown.starts_with('{') && shown.contains("the sink answered 401"),
            "{shown}"
        );
        assert!(
            !shown.contains(secret),
            "sink {sink}'s token is kept and shown as the delivery's reason: {shown}"
        );
    }
}

/// An alert's id is one per job, so its deliveries are ordered per job: a failure's alert that
/// is slow to be taken never lands after the next build's resolve.
#[actix_web::test]
async fn a_slow_failure_alert_does_not_land_after_the_next_builds_resolve() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: r#"
[sinks.oncall]
kind = "alert"
url = "{sinks}/functions/v1/events"
token_env = "ITOC360_TOKEN"
match.phases = ["FINALIZED"]
"#
        .to_owned(),
        ..AppOptions::default()
    })
    .await;
    // Build 129 fails; its alert is slow to be taken (a busy on-call API, or a retry).
    app.sinks.script(
        Sink::Itoc360,
        [Behaviour::Delay(Duration::from_millis(800))],
    );
    assert_eq!(app.post_event(FAILURE).await.status(), StatusCode::ACCEPTED);
    // Build 130 of the same job succeeds right after.
    let success = with(FINALIZED, |event| {
        event["build"]["number"] = json!(130);
        event["build"]["url"] = json!("job/payments-deploy/130/");
        event["build"]["full_url"] = json!("https://jenkins.example.com/job/payments-deploy/130/");
    });
    assert_eq!(
        app.post_event(&success).await.status(),
        StatusCode::ACCEPTED
    );
    let views = settled(&app, "oncall", 2).await;
    assert!(views.iter().all(|v| v["state"] == "done"), "{views:?}");
    let order: Vec<u64> = app
        .sinks
        .take_answered()
        .iter()
        .map(|r| r.json().unwrap()["build"].as_u64().unwrap())
        .collect();
    assert!(
        app.sinks.open_alerts().is_empty(),
        "job payments-deploy's last build succeeded, yet its alert is open (answered in order {order:?})"
    );
}

/// `hookgate deliveries retry --dead` leaves a dead delivery that a later one of its ordering
/// key has overtaken (a STARTED alert after the build's FINALIZED SUCCESS resolved it); by id
/// it needs `--force`.
#[actix_web::test]
async fn retrying_a_dead_earlier_phase_does_not_reopen_a_resolved_alert() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: r#"
[sinks.oncall]
kind = "alert"
url = "{sinks}/functions/v1/events"
token_env = "ITOC360_TOKEN"
"#
        .to_owned(),
        ..AppOptions::default()
    })
    .await;
    // STARTED is refused (a 400 is permanent: dead at once), FINALIZED SUCCESS then resolves.
    app.sinks.script(Sink::Itoc360, [Behaviour::Status(400)]);
    app.post_event(STARTED).await;
    let views = settled(&app, "oncall", 1).await;
    assert_eq!(views[0]["state"], "dead");
    app.post_event(FINALIZED).await;
    let views = settled(&app, "oncall", 2).await;
    assert_eq!(views[1]["state"], "done");
    assert!(app.sinks.open_alerts().is_empty());
    // The operator clears the dead letters after an outage: the overtaken STARTED stays dead,
    // and retrying it by id needs --force.
    let mut admin = hookgate::store::Admin::open(&app.store).expect("store");
    let done = admin.retry_dead().expect("retry --dead");
    assert_eq!((done.requeued, done.superseded), (0, 1));
    let stale = views[0]["id"].as_str().unwrap().to_owned();
    let refused = admin.retry(&stale, false).expect_err("overtaken");
    assert!(refused.to_string().contains("--force"), "{refused}");
    let views = settled(&app, "oncall", 2).await;
    assert_eq!(
        views[0]["state"], "dead",
        "the overtaken STARTED stays dead"
    );
    assert_eq!(views[1]["state"], "done");
    assert!(
        app.sinks.open_alerts().is_empty(),
        "the build finished SUCCESS, yet its stale STARTED alert was raised again after the resolve"
    );
}

/// `hookgate deliveries list` escapes control characters in `build.url` (from the event) and
/// the sink's answer: an event cannot forge lines of the listing or send terminal escape
/// sequences to the operator's terminal.
#[actix_web::test]
async fn deliveries_list_does_not_print_control_characters_from_an_event() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: r#"
[sinks.relay]
kind = "forward"
url = "{sinks}/forward/jenkins"
"#
        .to_owned(),
        ..AppOptions::default()
    })
    .await;
    let hostile = with(FINALIZED, |event| {
        event["build"]["url"] =
            json!("job/x/1/\u{1b}]0;owned\u{7}\n01FAKEFAKEFAKEFAKEFAKEFAKE  done      forged");
    });
    assert_eq!(
        app.post_event(&hostile).await.status(),
        StatusCode::ACCEPTED
    );
    settled(&app, "relay", 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["deliveries", "list"])
        .current_dir(dir.path())
        .env_remove("HOOKGATE_CONFIG")
        .env("HOOKGATE__DELIVERY__STORE", &app.store)
        .output()
        .expect("hookgate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "one delivery, one line: {stdout:?}"
    );
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{stdout:?}"
    );
}

/// A sink removed from the config while its deliveries were pending: after the restart they
/// are dead-lettered with a reason an operator can act on (put the sink back and `deliveries
/// retry --dead`), not left queued forever.
#[actix_web::test]
async fn deliveries_of_a_removed_sink_are_dead_lettered_after_the_restart() {
    let app = spawn_with_sinks(FORWARD).await;
    // The receiver hangs, so the delivery is still pending when the config changes.
    app.sinks
        .set_behaviour(Sink::Forward, Behaviour::Delay(Duration::from_secs(60)));
    assert_eq!(
        app.post_event(FINALIZED).await.status(),
        StatusCode::ACCEPTED
    );
    let restarted = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        store: Some(app.store.clone()),
        ..AppOptions::default()
    })
    .await;
    let views = settled(&restarted, "relay", 1).await;
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0]["state"], "dead", "{views:?}");
    assert_eq!(
        views[0]["last_error"], "target `sink:relay` is no longer configured",
        "{views:?}"
    );
}
