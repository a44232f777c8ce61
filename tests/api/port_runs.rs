//! Closing the loop of a Port action through real sockets: a signed Port call, the fake Jenkins
//! (GWT's answer, then the Notification plugin's events posted back to hookgate), and the run's
//! updates as the fake Port API received them, in queue and direct mode.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::fake_jenkins::{FakeJenkinsConfig, Notify};
use crate::helpers::fake_sinks::{Behaviour, PortRun, Sink};
use crate::helpers::{
    AppOptions, JOB_TOKEN, PORT_BODY, PORT_CLIENT_SECRET, TestApp, json, port_rule, spawn_app_with,
};

/// The run id in [`PORT_BODY`].
const RUN: &str = "r_QOz6WoOB1Q2lmhZZ";

/// A port sink on the fake Port API, taking every Jenkins' STARTED and FINALIZED (its default).
fn port_sink(extra: &str) -> String {
    format!(
        "[sinks.port]\nkind = \"port\"\nurl = \"{{sinks}}\"\nclient_id_env = \"PORT_CLIENT_ID\"\nclient_secret_env = \"PORT_CLIENT_SECRET\"\n{extra}\n"
    )
}

/// The Port rule of the other tests, reporting its calls' runs to the port sink.
fn reported_rule() -> String {
    port_rule("[report]\nsink = \"port\"\nrun_id = \"$RUN_ID\"\n")
}

fn options(queue: bool) -> AppOptions {
    AppOptions {
        rules: vec![("port-deploy.toml", reported_rule())],
        queue,
        events_token: true,
        sinks: port_sink(""),
        ..AppOptions::default()
    }
}

/// A gateway whose fake Jenkins posts every build's events back to it.
async fn spawn(options: AppOptions) -> TestApp {
    let app = spawn_app_with(options).await;
    let mut notify = Notify::to(format!(
        "{}/jenkins/main/events?token={}",
        app.address,
        crate::helpers::EVENTS_TOKEN
    ));
    notify.duration_ms = 2_000;
    app.jenkins.set_notify(Some(notify));
    app
}

/// Waits until the fake Port's run `run` satisfies `done`, failing with what it holds.
async fn run_until(app: &TestApp, run: &str, done: impl Fn(&PortRun) -> bool) -> PortRun {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = app.sinks.port_runs().get(run).cloned();
        if let Some(found) = &found
            && done(found)
        {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never got there: {found:#?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ended(app: &TestApp, run: &str) -> PortRun {
    run_until(app, run, |run| run.status != "IN_PROGRESS").await
}

/// Lets the worker go on for a while, for tests that check nothing more arrives.
async fn settle() {
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
}

fn labels(run: &PortRun) -> Vec<String> {
    run.updates
        .iter()
        .map(|u| {
            let label = u["statusLabel"].as_str().unwrap_or("-");
            match u["status"].as_str() {
                Some(status) => format!("{status} {label}"),
                None => label.to_owned(),
            }
        })
        .collect()
}

/// The whole loop in one mode: "Queued in Jenkins" with the queue item's link, "Running" with the
/// build's, then the terminal status with Jenkins' result, each with its log line.
async fn full_loop(queue: bool, result: &str) {
    let app = spawn(options(queue)).await;
    app.jenkins.set_result("deploy-service", result);
    let response = app.post_port(PORT_BODY).await;
    let status = response.status();
    let answer = json(response).await;
    assert!(status.is_success(), "{answer}");
    let run = ended(&app, RUN).await;
    let jenkins = app.jenkins.url();
    let build = format!("{jenkins}/job/deploy-service/1/");
    let status = if result == "SUCCESS" {
        "SUCCESS"
    } else {
        "FAILURE"
    };
    assert_eq!(
        run.updates,
        [
            json!({"statusLabel": "Queued in Jenkins", "link": [format!("{jenkins}/queue/item/1/")]}),
            json!({"statusLabel": "Running", "link": [build], "externalRunId": build}),
            json!({
                "status": status,
                "statusLabel": result,
                "summary": format!("deploy-service #1: {result} after 2.0 sec"),
                "link": [build],
            }),
        ],
        "queue mode: {queue}"
    );
    assert_eq!(
        run.logs,
        [
            format!("Queued in Jenkins: {jenkins}/queue/item/1/"),
            format!("Running: {build}"),
            format!("deploy-service #1: {result} after 2.0 sec"),
        ]
    );
    // COMPLETED and the duplicate-free rest send nothing more; one token served every call.
    settle().await;
    assert_eq!(app.sinks.port_runs()[RUN].updates.len(), 3);
    assert_eq!(app.sinks.port_tokens_issued(), 1);
}

#[actix_web::test]
async fn a_port_run_ends_with_jenkins_success_in_queue_mode() {
    full_loop(true, "SUCCESS").await;
}

#[actix_web::test]
async fn a_port_run_ends_with_jenkins_failure_in_queue_mode() {
    full_loop(true, "FAILURE").await;
}

#[actix_web::test]
async fn a_port_run_ends_with_jenkins_success_in_direct_mode() {
    full_loop(false, "SUCCESS").await;
}

#[actix_web::test]
async fn a_port_run_ends_with_jenkins_failure_in_direct_mode() {
    full_loop(false, "UNSTABLE").await;
}

/// GWT answers 404 when no job has the token: the trigger is dead-lettered (queue mode) or
/// failed (direct mode), and the run fails with the reason instead of hanging.
async fn dead_trigger(queue: bool) {
    let app = spawn(AppOptions {
        fake_jenkins: FakeJenkinsConfig {
            jobs: vec![("another-jobs-token".to_owned(), "other".to_owned())],
            basic_auth: None,
        },
        ..options(queue)
    })
    .await;
    let response = app.post_port(PORT_BODY).await;
    let status = response.status();
    assert_eq!(
        status,
        if queue {
            StatusCode::ACCEPTED
        } else {
            StatusCode::BAD_GATEWAY
        }
    );
    let run = ended(&app, RUN).await;
    assert_eq!(run.status, "FAILURE");
    assert_eq!(run.updates.len(), 1, "{:?}", run.updates);
    let summary = run.summary.unwrap_or_default();
    assert!(
        summary.starts_with("hookgate could not trigger Jenkins: Jenkins answered 404"),
        "{summary}"
    );
    assert!(!summary.contains(JOB_TOKEN), "{summary}");
    assert_eq!(run.logs, [summary]);
}

#[actix_web::test]
async fn a_dead_lettered_trigger_fails_its_run_in_queue_mode() {
    dead_trigger(true).await;
}

#[actix_web::test]
async fn a_trigger_jenkins_refused_fails_its_run_in_direct_mode() {
    dead_trigger(false).await;
}

/// Every rule filtered the call: its run fails at once, naming the rule.
async fn filter_miss(queue: bool) {
    let app = spawn(options(queue)).await;
    let body = PORT_BODY.replace("deploy_service", "restart_service");
    let response = app.post_port(&body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    assert_eq!(
        answer["jobs"]["port-deploy"]["status"], "filtered",
        "{answer}"
    );
    let run = ended(&app, RUN).await;
    assert_eq!(
        run.updates,
        [json!({
            "status": "FAILURE",
            "summary": "No Jenkins job was triggered: port-deploy's filter did not match."
        })]
    );
    assert!(app.jenkins.requests().is_empty());
}

#[actix_web::test]
async fn a_filtered_call_fails_its_run_in_queue_mode() {
    filter_miss(true).await;
}

#[actix_web::test]
async fn a_filtered_call_fails_its_run_in_direct_mode() {
    filter_miss(false).await;
}

/// A Notification event of `job` #`number` in `phase`, as the plugin sends it.
fn event(
    job: &str,
    number: u64,
    phase: &str,
    queue_id: u64,
    parameters: Value,
    status: Option<&str>,
) -> String {
    let mut build = json!({
        "full_url": format!("https://ci.example.com/job/{job}/{number}/"),
        "number": number,
        "queue_id": queue_id,
        "timestamp": 1_700_000_000_000u64,
        "phase": phase,
        "url": format!("job/{job}/{number}/"),
        "parameters": parameters,
    });
    if let Some(status) = status {
        build["status"] = status.into();
        build["duration"] = 65_000.into();
    }
    json!({"name": job, "display_name": job, "url": format!("job/{job}/"), "build": build})
        .to_string()
}

/// A build started by hand with `PORT_RUN_ID` reports to that run; events arriving twice or out
/// of order (COMPLETED after FINALIZED, FINALIZED twice, a late STARTED) and another build naming
/// the same run after its end leave it with one terminal update.
async fn hand_build(queue: bool) {
    let app = spawn(options(queue)).await;
    let params = json!({"PORT_RUN_ID": "r_byhand", "ENV": "prod"});
    for (number, phase, status) in [
        (12, "STARTED", None),
        (12, "FINALIZED", Some("FAILURE")),
        (12, "COMPLETED", Some("FAILURE")),
        (12, "FINALIZED", Some("FAILURE")),
        (12, "STARTED", None),
        (13, "STARTED", None),
        (13, "FINALIZED", Some("SUCCESS")),
    ] {
        let response = app
            .post_event(&event(
                "nightly",
                number,
                phase,
                900 + number,
                params.clone(),
                status,
            ))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let run = ended(&app, "r_byhand").await;
    settle().await;
    let run_now = app.sinks.port_runs()["r_byhand"].clone();
    assert_eq!(run_now, run, "nothing after the terminal update");
    assert_eq!(labels(&run), ["Running", "FAILURE FAILURE"]);
    assert_eq!(
        run.summary.as_deref(),
        Some("nightly #12: FAILURE after 1 min 5 sec")
    );
    // Out of order for real: a build's FINALIZED before its STARTED ends the run, and the
    // STARTED after it sends nothing.
    let params = json!({"PORT_RUN_ID": "r_reordered"});
    for (phase, status) in [("FINALIZED", Some("SUCCESS")), ("STARTED", None)] {
        let body = event("nightly", 14, phase, 914, params.clone(), status);
        assert_eq!(app.post_event(&body).await.status(), StatusCode::ACCEPTED);
    }
    ended(&app, "r_reordered").await;
    settle().await;
    assert_eq!(
        labels(&app.sinks.port_runs()["r_reordered"]),
        ["SUCCESS SUCCESS"]
    );
}

#[actix_web::test]
async fn a_build_started_by_hand_with_port_run_id_reports_once_whatever_the_order() {
    hand_build(true).await;
}

#[actix_web::test]
async fn a_build_started_by_hand_reports_once_whatever_the_order_in_direct_mode() {
    hand_build(false).await;
}

/// GWT's silent response names no queue item: the run is "Queued in Jenkins" without a link and
/// is not ended; a build naming it through its parameters ends it.
#[actix_web::test]
async fn after_gwts_silent_response_the_build_parameters_name_the_run() {
    use crate::helpers::fake_jenkins::Behaviour as JenkinsBehaviour;
    let app = spawn_app_with(options(true)).await;
    app.jenkins.set_behaviour(JenkinsBehaviour::Silent);
    let mut notify = Notify::to(format!(
        "{}/jenkins/main/events?token={}",
        app.address,
        crate::helpers::EVENTS_TOKEN
    ));
    notify.parameters = vec![("PORT_RUN_ID".to_owned(), RUN.to_owned())];
    app.jenkins.set_notify(Some(notify));
    assert_eq!(
        app.post_port(PORT_BODY).await.status(),
        StatusCode::ACCEPTED
    );
    let run = ended(&app, RUN).await;
    assert_eq!(run.updates[0], json!({"statusLabel": "Queued in Jenkins"}));
    assert_eq!(
        labels(&run),
        ["Queued in Jenkins", "Running", "SUCCESS SUCCESS"]
    );
}

/// In direct mode a call Jenkins does not answer in time may still have started the job: the
/// run hears of it and stays open.
#[actix_web::test]
async fn a_direct_call_jenkins_does_not_answer_leaves_the_run_open() {
    use crate::helpers::fake_jenkins::Behaviour as JenkinsBehaviour;
    let app = spawn(AppOptions {
        jenkins_timeout_secs: 1,
        ..options(false)
    })
    .await;
    app.jenkins
        .set_behaviour(JenkinsBehaviour::Delay(Duration::from_millis(1_500)));
    assert_eq!(
        app.post_port(PORT_BODY).await.status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    let run = run_until(&app, RUN, |run| !run.updates.is_empty()).await;
    settle().await;
    assert_eq!(run.status, "IN_PROGRESS");
    assert_eq!(
        run.updates,
        [json!({"statusLabel": "Jenkins did not answer"})]
    );
    assert!(
        run.logs[0].starts_with("Jenkins did not answer the trigger, so the build may still run: Jenkins did not answer within"),
        "{:?}",
        run.logs
    );
}

/// A build hookgate did not trigger and that names no run sends nothing to Port; its delivery
/// says why it was skipped.
async fn uncorrelated(queue: bool) {
    let app = spawn(options(queue)).await;
    for phase in ["QUEUED", "STARTED", "COMPLETED", "FINALIZED"] {
        let status = (phase == "FINALIZED" || phase == "COMPLETED").then_some("SUCCESS");
        let response = app
            .post_event(&event(
                "other-job",
                3,
                phase,
                4242,
                json!({"ENV": "prod"}),
                status,
            ))
            .await;
        let answer = json(response).await;
        let fate = if phase == "STARTED" || phase == "FINALIZED" {
            "queued"
        } else {
            "skipped"
        };
        assert_eq!(answer["sinks"]["port"], fate, "{phase}: {answer}");
    }
    settle().await;
    assert!(app.sinks.port_runs().is_empty());
    assert!(app.sinks.requests_to(Sink::Port).is_empty());
}

#[actix_web::test]
async fn an_uncorrelated_build_sends_nothing_to_port() {
    uncorrelated(true).await;
}

#[actix_web::test]
async fn an_uncorrelated_build_sends_nothing_to_port_in_direct_mode() {
    uncorrelated(false).await;
}

/// One call whose job token two jobs share triggers both; the run ends when the second one
/// finalizes, SUCCESS only if both succeeded, with one line per build in its summary.
async fn two_jobs(queue: bool) {
    let app = spawn(AppOptions {
        fake_jenkins: FakeJenkinsConfig {
            jobs: vec![
                (JOB_TOKEN.to_owned(), "deploy-api".to_owned()),
                (JOB_TOKEN.to_owned(), "deploy-worker".to_owned()),
            ],
            basic_auth: None,
        },
        ..options(queue)
    })
    .await;
    app.jenkins.set_result("deploy-worker", "FAILURE");
    assert!(app.post_port(PORT_BODY).await.status().is_success());
    ended(&app, RUN).await;
    settle().await;
    let run = app.sinks.port_runs()[RUN].clone();
    let terminal: Vec<&Value> = run
        .updates
        .iter()
        .filter(|u| u.get("status").is_some())
        .collect();
    assert_eq!(terminal.len(), 1, "{:?}", run.updates);
    assert_eq!(run.status, "FAILURE");
    assert_eq!(run.status_label.as_deref(), Some("FAILURE"));
    let summary = run.summary.clone().unwrap_or_default();
    assert!(
        summary.contains("deploy-api #1: SUCCESS after 2.0 sec")
            && summary.contains("deploy-worker #1: FAILURE after 2.0 sec"),
        "{summary}"
    );
    // Both builds were running before the end, and the first update linked both queue items.
    assert_eq!(run.updates[0]["link"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        labels(&run).iter().filter(|l| *l == "Running").count(),
        2,
        "{:?}",
        labels(&run)
    );
}

#[actix_web::test]
async fn two_jobs_of_one_call_end_the_run_together() {
    two_jobs(true).await;
}

#[actix_web::test]
async fn two_jobs_of_one_call_end_the_run_together_in_direct_mode() {
    two_jobs(false).await;
}

/// Port down, then up: the updates wait in the outbox and arrive in order.
async fn port_down_then_up(queue: bool) {
    let mut app = spawn(AppOptions {
        max_attempts: 1000,
        ..options(queue)
    })
    .await;
    app.sinks.down().await;
    assert!(app.post_port(PORT_BODY).await.status().is_success());
    // The build runs and finishes while Port is unreachable.
    let sent = app
        .jenkins
        .notifications_settled(4, Duration::from_secs(10))
        .await;
    assert_eq!(sent.len(), 4);
    settle().await;
    app.sinks.up().expect("fake Port comes back");
    let run = ended(&app, RUN).await;
    assert_eq!(
        labels(&run),
        ["Queued in Jenkins", "Running", "SUCCESS SUCCESS"]
    );
}

#[actix_web::test]
async fn updates_made_while_port_is_down_arrive_in_order_once_it_is_up() {
    port_down_then_up(true).await;
}

#[actix_web::test]
async fn updates_made_while_port_is_down_arrive_once_it_is_up_in_direct_mode() {
    port_down_then_up(false).await;
}

/// A 401 to a fresh token dead-letters the update with Port's message and raises the auth gauge;
/// 429 and 5xx are retried.
#[actix_web::test]
async fn port_refusing_a_fresh_token_dead_letters_and_5xx_is_retried() {
    let app = spawn(AppOptions {
        sinks: port_sink("logs = false"),
        ..options(true)
    })
    .await;
    // The token, then a PATCH answered 503; its retry (the token cached) 429; then as Port.
    app.sinks.script(
        Sink::Port,
        [
            Behaviour::Normal,
            Behaviour::Status(503),
            Behaviour::RetryAfter(429, 0),
        ],
    );
    let params = json!({"PORT_RUN_ID": "r_retried"});
    app.post_event(&event("nightly", 1, "STARTED", 1, params, None))
        .await;
    let run = run_until(&app, "r_retried", |run| !run.updates.is_empty()).await;
    assert_eq!(labels(&run), ["Running"]);
    // Now every PATCH is refused, with a fresh token too.
    app.sinks.expire_port_tokens();
    app.sinks.script(
        Sink::Port,
        [
            Behaviour::Status(401),
            Behaviour::Normal,
            Behaviour::Status(401),
        ],
    );
    let params = json!({"PORT_RUN_ID": "r_refused"});
    let response = app
        .post_event(&event("nightly", 2, "STARTED", 2, params, None))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.metrics().await;
        if metrics.contains("hookgate_sink_auth_failed{sink=\"port\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!app.sinks.port_runs().contains_key("r_refused"));
    // The gauge is set when the answer comes, the dead letter once its outcome is committed.
    let dead = dead_letters(&app, deadline).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].starts_with("Port answered 401"), "{dead:?}");
}

/// The reasons of the dead deliveries, once there is one (an answer's gauge or log line comes
/// before its outcome is committed); fails the test at `deadline`.
async fn dead_letters(app: &TestApp, deadline: Instant) -> Vec<String> {
    loop {
        let dead = hookgate_dead(app).await;
        if !dead.is_empty() {
            return dead;
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reasons of the dead deliveries, from the store.
async fn hookgate_dead(app: &TestApp) -> Vec<String> {
    let admin = hookgate::store::Admin::open(&app.store).expect("store");
    admin
        .list(
            hookgate::store::ListFilter {
                state: Some(hookgate::store::State::Dead),
                ..Default::default()
            },
            100,
        )
        .expect("list")
        .into_iter()
        .filter_map(|d| d.last_error)
        .collect()
}

/// The token is fetched once for many updates, and once more after Port stops taking it.
async fn token_cache(queue: bool) {
    let app = spawn(options(queue)).await;
    assert!(app.post_port(PORT_BODY).await.status().is_success());
    ended(&app, RUN).await;
    assert_eq!(app.sinks.port_tokens_issued(), 1);
    app.sinks.expire_port_tokens();
    let second = PORT_BODY.replace(RUN, "r_second");
    assert!(app.post_port(&second).await.status().is_success());
    let run = ended(&app, "r_second").await;
    assert_eq!(run.status, "SUCCESS");
    assert_eq!(app.sinks.port_tokens_issued(), 2);
    for request in app.sinks.requests_to(Sink::Port) {
        if request.path != "/v1/auth/access_token" {
            let text = format!("{:?}", request.masked_headers());
            assert!(!text.contains(PORT_CLIENT_SECRET), "{text}");
        }
    }
}

#[actix_web::test]
async fn the_access_token_is_cached_across_runs_and_refreshed_after_a_401() {
    token_cache(true).await;
}

#[actix_web::test]
async fn the_access_token_is_cached_and_refreshed_in_direct_mode() {
    token_cache(false).await;
}

/// A reload rebuilds the port sink: with its URL and credentials unchanged it keeps the token
/// (a save under `rules.watch` costs no token call); with them changed it fetches its own.
#[actix_web::test]
async fn a_reload_keeps_the_access_token_of_unchanged_credentials() {
    let app = spawn(options(true)).await;
    assert!(app.post_port(PORT_BODY).await.status().is_success());
    ended(&app, RUN).await;
    assert_eq!(app.sinks.port_tokens_issued(), 1);
    assert_eq!(app.reload().await.0, StatusCode::OK);
    let second = PORT_BODY.replace(RUN, "r_second");
    assert!(app.post_port(&second).await.status().is_success());
    assert_eq!(ended(&app, "r_second").await.status, "SUCCESS");
    assert_eq!(app.sinks.port_tokens_issued(), 1, "the token was kept");
    // Another URL (the same fake, spelled with a trailing slash): another token.
    {
        let mut settings = app.settings.lock().expect("settings");
        let port = settings.sinks.get_mut("port").expect("port sink");
        port.url = format!("{}/", port.url);
    }
    assert_eq!(app.reload().await.0, StatusCode::OK);
    let third = PORT_BODY.replace(RUN, "r_third");
    assert!(app.post_port(&third).await.status().is_success());
    assert_eq!(ended(&app, "r_third").await.status, "SUCCESS");
    assert_eq!(app.sinks.port_tokens_issued(), 2);
}

/// Port answers 404 for a run it does not know: the update is dead-lettered with Port's answer,
/// and the next update of another run goes through.
#[actix_web::test]
async fn an_unknown_run_is_dead_lettered_with_ports_answer() {
    let app = spawn(AppOptions {
        sinks: port_sink("logs = false"),
        ..options(true)
    })
    .await;
    // The token, then the PATCH.
    app.sinks
        .script(Sink::Port, [Behaviour::Normal, Behaviour::Status(404)]);
    let params = json!({"PORT_RUN_ID": "r_unknown"});
    app.post_event(&event("nightly", 1, "STARTED", 1, params, None))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = dead_letters(&app, deadline).await;
    assert!(dead[0].starts_with("Port answered 404"), "{dead:?}");
    let params = json!({"PORT_RUN_ID": "r_known"});
    app.post_event(&event("nightly", 2, "STARTED", 2, params, None))
        .await;
    run_until(&app, "r_known", |run| !run.updates.is_empty()).await;
}

/// A filtered call whose report the full store cannot take is refused whole (503), so the
/// sender's retry can still end the run; it is never answered as handled with the run left
/// hanging.
#[actix_web::test]
async fn a_filtered_call_the_full_store_cannot_report_is_refused() {
    use crate::helpers::fake_jenkins::Behaviour as JenkinsBehaviour;
    let app = spawn_app_with(AppOptions {
        max_store_bytes: 192 * 1024,
        ..options(true)
    })
    .await;
    // Jenkins holds the first calls, so no outcome frees or fills pages meanwhile.
    app.jenkins
        .set_behaviour(JenkinsBehaviour::Delay(Duration::from_secs(5)));
    let mut filled = false;
    for i in 0..1000 {
        let body = PORT_BODY.replace(RUN, &format!("r_fill_{i}"));
        match app.post_port(&body).await.status() {
            StatusCode::ACCEPTED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                filled = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(filled, "the store never filled up");
    let filtered = PORT_BODY
        .replace("deploy_service", "restart_service")
        .replace(RUN, "r_filtered");
    let response = app.post_port(&filtered).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// The real binary at debug level, a Port call, and every build event: a `kill -9` while the
/// run's updates wait in the store (Port unreachable), then a restart with Port back, delivers
/// each update once; then Port refusing the token and the client credentials. No log line,
/// answer or CLI output holds the client secret, an access token, or any other secret.
async fn killed_and_credentials(mode: &str) {
    use crate::binary::serve;
    use crate::helpers::fake_jenkins::FakeJenkins;
    use crate::helpers::fake_sinks::{FakeSinks, FakeSinksConfig};
    use crate::helpers::post_signed;

    const SECRET: &str = "loop-port-webhook-secret";
    const SENDER: &str = "loop-sender-token";
    const JOB: &str = "loop-job-token";
    const EVENTS: &str = "loop-events-token";
    const CLIENT_ID: &str = "loop-port-client-id";
    const CLIENT_SECRET: &str = "loop-port-client-secret";
    const WRONG_SECRET: &str = "loop-wrong-client-secret";
    const ADMIN: &str = "loop-admin-token";
    let jenkins = FakeJenkins::start(FakeJenkinsConfig {
        jobs: vec![(JOB.to_owned(), "deploy".to_owned())],
        basic_auth: None,
    })
    .await
    .expect("fake Jenkins");
    let mut port = FakeSinks::start(FakeSinksConfig {
        port_client_id: CLIENT_ID.to_owned(),
        port_client_secret: CLIENT_SECRET.to_owned(),
        ..FakeSinksConfig::default()
    })
    .await
    .expect("fake Port");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nrate_per_client = 0\nrate_per_rule = 0\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"LOOP_ADMIN\"\n\
             [jenkins.main]\nurl = \"{}\"\ntimeout_secs = 2\nevents_token_env = \"LOOP_EVENTS\"\n\
             [delivery]\nmode = \"{mode}\"\nstore = \"store\"\nretry_initial_ms = 50\nretry_max_ms = 200\nmax_attempts = 10000\n\
             [log]\nlevel = \"debug\"\n\
             [sinks.port]\nkind = \"port\"\nurl = \"{}\"\nclient_id_env = \"LOOP_CLIENT_ID\"\nclient_secret_env = \"LOOP_CLIENT_SECRET\"\n",
            jenkins.url(),
            port.port_url()
        ),
    )
    .expect("write config");
    std::fs::write(
        dir.path().join("rules/deploy.toml"),
        "token_env = \"LOOP_SENDER\"\n[verify]\nscheme = \"port\"\nsecret_env = \"LOOP_SECRET\"\n\
         [[variables]]\nname = \"RUN_ID\"\njsonpath = \"$.context.runId\"\n\
         [report]\nsink = \"port\"\nrun_id = \"$RUN_ID\"\n[dispatch]\ntoken_env = \"LOOP_JOB\"\n",
    )
    .expect("write rule");
    let env = |client_secret: &'static str| {
        [
            ("LOOP_SECRET", SECRET),
            ("LOOP_SENDER", SENDER),
            ("LOOP_JOB", JOB),
            ("LOOP_EVENTS", EVENTS),
            ("LOOP_ADMIN", ADMIN),
            ("LOOP_CLIENT_ID", CLIENT_ID),
            ("LOOP_CLIENT_SECRET", client_secret),
        ]
    };
    let notify = |address: &str| {
        let mut notify = Notify::to(format!("{address}/jenkins/main/events?token={EVENTS}"));
        notify.duration_ms = 1_500;
        jenkins.set_notify(Some(notify));
    };
    let mut logs = Vec::new();
    let client = reqwest::Client::new();

    // Port is down: the trigger goes through, the build runs, and its updates wait.
    port.down().await;
    let mut served = serve(dir.path(), &env(CLIENT_SECRET));
    notify(&served.address);
    let response = post_signed(&client, &served.address, SENDER, SECRET, PORT_BODY).await;
    assert!(response.status().is_success(), "{}", response.status());
    let sent = jenkins
        .notifications_settled(4, Duration::from_secs(15))
        .await;
    assert!(sent.iter().all(|n| n.answered == 202), "{sent:?}");
    settle().await;
    served.child.kill().expect("SIGKILL");
    let _ = served.child.wait();
    logs.push(served.log.lock().expect("lock").clone());
    drop(served);

    // Back up, and Port with it: every update arrives once, in order.
    port.up().expect("fake Port up");
    let served = serve(dir.path(), &env(CLIENT_SECRET));
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let run = port.port_runs().get(RUN).cloned();
        if let Some(run) = run.as_ref().filter(|r| r.status != "IN_PROGRESS") {
            break run.clone();
        }
        assert!(Instant::now() < deadline, "the run never ended: {run:?}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        labels(&run),
        ["Queued in Jenkins", "Running", "SUCCESS SUCCESS"]
    );
    assert_eq!(run.logs.len(), 3, "{:?}", run.logs);

    // Port stops taking the token, and a fresh one: the update is dead with Port's answer.
    port.expire_port_tokens();
    port.script(
        Sink::Port,
        [
            Behaviour::Status(401),
            Behaviour::Normal,
            Behaviour::Status(401),
        ],
    );
    let hand = event(
        "nightly",
        5,
        "STARTED",
        77,
        json!({"PORT_RUN_ID": "r_refused"}),
        None,
    );
    let post_event = |address: String, body: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{address}/jenkins/main/events?token={EVENTS}"))
                .header("content-type", "application/json;charset=UTF-8")
                .body(body)
                .send()
                .await
                .expect("event")
        }
    };
    assert_eq!(
        post_event(served.address.clone(), hand).await.status(),
        StatusCode::ACCEPTED
    );
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = client
            .get(format!("{}/metrics", served.admin_address))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains("hookgate_sink_auth_failed{sink=\"port\"} 1") {
            answers.push(metrics);
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // The gauge is set when the answer comes; the dead letter is committed just after.
    loop {
        let listed = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["deliveries", "list", "--state", "dead"])
            .current_dir(dir.path())
            .envs(env(CLIENT_SECRET))
            .output()
            .expect("hookgate runs");
        if String::from_utf8_lossy(&listed.stdout).contains("Port answered 401") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused update was never dead-lettered"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    logs.push(served.log.lock().expect("lock").clone());
    drop(served);

    // Wrong client credentials: Port refuses them at the token endpoint.
    let served = serve(dir.path(), &env(WRONG_SECRET));
    let hand = event(
        "nightly",
        6,
        "STARTED",
        78,
        json!({"PORT_RUN_ID": "r_wrong"}),
        None,
    );
    assert_eq!(
        post_event(served.address.clone(), hand).await.status(),
        StatusCode::ACCEPTED
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served
        .log
        .lock()
        .expect("lock")
        .contains("Port refused the sink's client id and secret.")
    {
        assert!(Instant::now() < deadline, "no refusal logged");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // What operators see: the list and every delivery, on the CLI and the admin listener.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .current_dir(dir.path())
            .envs(env(WRONG_SECRET))
            .output()
            .expect("hookgate runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    // The refusal is logged when Port answers; the dead letter is committed just after.
    let reasons = loop {
        let reasons = cli(&["deliveries", "list", "--state", "dead"]);
        if reasons.contains("Port refused the client id and secret (401)") {
            break reasons;
        }
        assert!(
            Instant::now() < deadline,
            "the refused credentials were never dead-lettered: {reasons}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    let list = cli(&["deliveries", "list", "--limit", "100"]);
    assert!(reasons.contains("Port answered 401"), "{reasons}");
    assert!(
        reasons.contains("Port refused the client id and secret (401)"),
        "{reasons}"
    );
    answers.push(list.clone());
    let ids: Vec<String> = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|id| id.len() == 26)
        .map(str::to_owned)
        .collect();
    assert!(ids.len() >= 6, "{list}");
    for id in &ids {
        answers.push(cli(&["deliveries", "show", id]));
        answers.push(
            client
                .get(format!("{}/deliveries/{id}", served.admin_address))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("delivery")
                .text()
                .await
                .expect("text"),
        );
    }
    logs.push(served.log.lock().expect("lock").clone());
    drop(served);

    let tokens: Vec<String> = (1..=port.port_tokens_issued())
        .map(|n| format!("fake-port-token-{n}"))
        .collect();
    assert!(tokens.len() >= 2, "tokens were issued: {tokens:?}");
    let log = logs.join("\n");
    assert!(log.contains("DEBUG"), "logging is on");
    let mut forbidden = vec![
        CLIENT_SECRET,
        WRONG_SECRET,
        SECRET,
        SENDER,
        JOB,
        EVENTS,
        ADMIN,
    ];
    forbidden.extend(tokens.iter().map(String::as_str));
    for needle in forbidden {
        assert!(!log.contains(needle), "the log leaks `{needle}`:\n{log}");
        for answer in &answers {
            assert!(!answer.contains(needle), "`{needle}` shown: {answer}");
        }
    }
}

/// Jenkins starts a build before its answer to the trigger is recorded: the build's STARTED
/// waits for the answer, then reports to the run, instead of being skipped as uncorrelated.
async fn an_event_before_the_triggers_answer(queue: bool) {
    use crate::helpers::fake_jenkins::Behaviour as JenkinsBehaviour;
    // No notify: the test posts the build's event itself, before GWT has answered.
    let app = spawn_app_with(options(queue)).await;
    app.jenkins
        .set_behaviour(JenkinsBehaviour::Delay(Duration::from_millis(800)));
    let started = event("deploy-service", 1, "STARTED", 1, json!({}), None);
    let call = async {
        let response = app.post_port(PORT_BODY).await;
        assert!(response.status().is_success(), "{}", response.status());
    };
    let early = async {
        // Queue mode answers at once: give the worker time to be waiting on Jenkins.
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        let response = app.post_event(&started).await;
        assert_eq!(json(response).await["sinks"]["port"], "queued");
    };
    futures_util::future::join(call, early).await;
    let run = run_until(&app, RUN, |run| run.updates.len() >= 2).await;
    assert_eq!(labels(&run), ["Queued in Jenkins", "Running"]);
}

#[actix_web::test]
async fn a_build_event_waits_for_its_triggers_answer_in_queue_mode() {
    an_event_before_the_triggers_answer(true).await;
}

#[actix_web::test]
async fn a_build_event_waits_for_its_triggers_answer_in_direct_mode() {
    an_event_before_the_triggers_answer(false).await;
}

#[actix_web::test]
async fn invariant_a_killed_gateway_still_ends_the_run_and_never_logs_port_credentials() {
    killed_and_credentials("queue").await;
}

#[actix_web::test]
async fn a_killed_direct_mode_gateway_still_ends_the_run_and_never_logs_port_credentials() {
    killed_and_credentials("direct").await;
}
