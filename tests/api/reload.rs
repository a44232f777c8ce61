//! Hot reload through real sockets: `POST /reload` adds a rule and rotates a token, a broken rule
//! file changes nothing, a request in flight finishes with its set and a steady load sees no
//! refusal, replay memory and queued deliveries survive it as they must, keys that need a
//! restart keep their value, and `rules.watch` reloads on its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::fake_jenkins::{Behaviour, FakeJenkinsConfig};
use crate::helpers::{
    AppOptions, JOB_TOKEN, PORT_BODY, PORT_SECRET, SENDER_TOKEN, TestApp, json, now, port_headers,
    port_rule, post_signed, spawn_app_with,
};

/// A second rule, reached with its own sender token (read from `new-sender.token`).
fn token_file_rule(name: &str) -> String {
    format!(
        "name = \"{name}\"\ntoken_file = \"new-sender.token\"\n[verify]\nscheme = \"none\"\n[dispatch]\njenkins = \"main\"\ntoken_env = \"JOB_TOKEN\"\n"
    )
}

async fn invoke_with(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .post(format!("{}?token={token}", app.invoke_url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request")
        .status()
}

/// The value of the `/metrics` line that starts with `series` (labels included).
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = app.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Reloads applied and refused, whether the last was applied, and the rules in use.
async fn reload_metrics(app: &TestApp) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    (
        metric(app, "hookgate_config_reloads_total{result=\"applied\"}").await,
        metric(app, "hookgate_config_reloads_total{result=\"refused\"}").await,
        metric(app, "hookgate_config_last_reload_successful").await,
        metric(app, "hookgate_rules_loaded").await,
    )
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
}

fn write(app: &TestApp, file: &str, text: &str) {
    std::fs::write(app.rules_dir.path().join(file), text).expect("write");
}

#[actix_web::test]
async fn a_reload_adds_a_rule_and_is_counted() {
    let app = spawn_app_with(AppOptions::default()).await;
    write(&app, "new-sender.token", "brand-new-sender-token\n");
    assert_eq!(
        invoke_with(&app, "brand-new-sender-token").await,
        StatusCode::NOT_FOUND
    );
    write(&app, "added.toml", &token_file_rule("added"));
    let (status, answer) = app.reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "applied");
    assert_eq!(answer["rules"], 2);
    assert_eq!(answer["restart_required"], json!([]));
    assert_eq!(
        invoke_with(&app, "brand-new-sender-token").await,
        StatusCode::OK
    );
    // The rule that was there serves as before.
    assert_eq!(app.post_port(PORT_BODY).await.status(), StatusCode::OK);
    assert_eq!(
        reload_metrics(&app).await,
        (Some(1.0), Some(0.0), Some(1.0), Some(2.0))
    );
}

#[actix_web::test]
async fn a_changed_token_is_refused_and_the_new_one_accepted_after_the_reload() {
    let app = spawn_app_with(AppOptions {
        rules: vec![
            ("rotating.toml", token_file_rule("rotating")),
            ("new-sender.token", "sender-token-before".to_owned()),
        ],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(
        invoke_with(&app, "sender-token-before").await,
        StatusCode::OK
    );
    // The secret mount is rotated; the gateway is told.
    write(&app, "new-sender.token", "sender-token-after");
    assert_eq!(
        invoke_with(&app, "sender-token-before").await,
        StatusCode::OK,
        "nothing changes before the reload"
    );
    let (status, answer) = app.reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        invoke_with(&app, "sender-token-before").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        invoke_with(&app, "sender-token-after").await,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn a_broken_rule_file_changes_nothing_and_every_problem_is_answered() {
    let app = spawn_app_with(AppOptions::default()).await;
    // A half-written file holding an inline secret, and a rule naming a Jenkins that is not
    // configured: both are reported, together.
    write(
        &app,
        "half.toml",
        "name = \"half\"\ntoken = \"inline-secret-being-writ",
    );
    write(
        &app,
        "elsewhere.toml",
        "name = \"elsewhere\"\n[verify]\nscheme = \"none\"\n[dispatch]\njenkins = \"nowhere\"\n",
    );
    let (status, answer) = app.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["status"], "refused");
    let problems = answer["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "{answer}");
    let half = problems
        .iter()
        .find(|p| p["file"].as_str().is_some_and(|f| f.ends_with("half.toml")))
        .expect("the half-written file is named");
    assert!(
        half["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("syntax error") && r.contains("line 2")),
        "{half}"
    );
    let elsewhere = problems
        .iter()
        .find(|p| {
            p["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("elsewhere.toml"))
        })
        .expect("the unknown Jenkins is named");
    assert_eq!(elsewhere["field"], "dispatch.jenkins", "{elsewhere}");
    // The file's text is not quoted back: it may hold a secret.
    assert!(!answer.to_string().contains("inline-secret"), "{answer}");
    // The set in use keeps serving.
    assert_eq!(app.post_port(PORT_BODY).await.status(), StatusCode::OK);
    assert_eq!(
        reload_metrics(&app).await,
        (Some(0.0), Some(1.0), Some(0.0), Some(1.0))
    );
    // Fixed, the next reload applies.
    std::fs::remove_file(app.rules_dir.path().join("half.toml")).expect("rm");
    std::fs::remove_file(app.rules_dir.path().join("elsewhere.toml")).expect("rm");
    assert_eq!(app.reload().await.0, StatusCode::OK);
    assert_eq!(
        metric(&app, "hookgate_config_last_reload_successful").await,
        Some(1.0)
    );
}

/// A request whose headers arrived before the reload finishes with the rule it selected, even
/// though the reload removed that rule while its body was still on the way.
#[actix_web::test]
async fn a_request_in_flight_finishes_with_the_set_it_started_with() {
    let app = spawn_app_with(AppOptions::default()).await;
    let headers = port_headers(PORT_SECRET, now(), PORT_BODY);
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /generic-webhook-trigger/invoke?token={SENDER_TOKEN} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nX-Port-Timestamp: {}\r\nX-Port-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        headers["x-port-timestamp"].to_str().expect("ascii"),
        headers["x-port-signature"].to_str().expect("ascii"),
        PORT_BODY.len()
    );
    let (first, rest) = PORT_BODY.split_at(PORT_BODY.len() / 2);
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(first.as_bytes()).expect("write");
    stream.flush().expect("flush");
    // Let the server take the request in before the set changes under it.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(app.rules_dir.path().join("port-deploy.toml")).expect("rm");
    let (status, answer) = app.reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["rules"], 0);
    let answered = actix_web::web::block(move || {
        stream.write_all(rest.as_bytes()).expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .expect("read");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.contains("\"triggered\":true"), "{answered}");
    // A request that arrives now meets the new set.
    assert_eq!(
        app.post_port(PORT_BODY).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn reloads_under_steady_load_refuse_no_request() {
    let app = spawn_app_with(AppOptions::default()).await;
    write(&app, "new-sender.token", "other-sender-token");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders = (0..4).map(|_| {
        let stop = std::sync::Arc::clone(&stop);
        let client = app.client.clone();
        let address = app.address.clone();
        async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response =
                    post_signed(&client, &address, SENDER_TOKEN, PORT_SECRET, PORT_BODY).await;
                statuses.push(response.status().as_u16());
            }
            statuses
        }
    });
    let load = futures_util::future::join_all(senders);
    let reloads = async {
        let mut applied = 0;
        for i in 0..12 {
            // Each reload really changes the set: a second rule comes and goes.
            if i % 2 == 0 {
                write(&app, "other.toml", &token_file_rule("other"));
            } else {
                std::fs::remove_file(app.rules_dir.path().join("other.toml")).expect("rm");
            }
            let (status, answer) = app.reload().await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            applied += 1;
            actix_web::rt::time::sleep(Duration::from_millis(30)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        applied
    };
    let (statuses, applied) = futures_util::join!(load, reloads);
    assert_eq!(applied, 12);
    let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
    assert!(statuses.len() >= 12, "the load ran: {}", statuses.len());
    let refused: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} of {} refused: {refused:?}",
        refused.len(),
        statuses.len()
    );
    assert_eq!(app.jenkins.requests().len(), statuses.len());
}

/// A reload must not reopen a signature's replay window: the rebuilt rule keeps the memory of
/// the rule it replaces.
#[actix_web::test]
async fn a_reload_keeps_the_replay_memory() {
    let replays_on = port_rule("").replace("reject_replays = false", "reject_replays = true");
    let app = spawn_app_with(AppOptions {
        rules: vec![("port-deploy.toml", replays_on)],
        ..AppOptions::default()
    })
    .await;
    let captured = port_headers(PORT_SECRET, now(), PORT_BODY);
    let send = || {
        app.client
            .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
            .headers(captured.clone())
            .body(PORT_BODY)
            .send()
    };
    assert_eq!(send().await.expect("send").status(), StatusCode::OK);
    write(&app, "new-sender.token", "other-sender-token");
    write(&app, "other.toml", &token_file_rule("other"));
    assert_eq!(app.reload().await.0, StatusCode::OK);
    assert_eq!(
        send().await.expect("send").status(),
        StatusCode::UNAUTHORIZED,
        "the captured call is still a replay"
    );
    assert_eq!(app.jenkins.requests().len(), 1);
}

/// Queue mode with two minutes between attempts: a call accepted while Jenkins answered 503,
/// waiting for its retry, and Jenkins answering normally again. Returns the gateway, the
/// delivery's id and how many requests Jenkins has had.
async fn a_call_waiting_for_its_retry() -> (TestApp, String, usize) {
    let app = spawn_app_with(AppOptions {
        queue: true,
        retry_ms: (120_000, 120_000),
        ..AppOptions::default()
    })
    .await;
    app.jenkins.set_behaviour(Behaviour::Status(503));
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = json(response).await["jobs"]["port-deploy"]["delivery"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    eventually("the first attempt", Duration::from_secs(10), || async {
        app.delivery_view(&id).await["state"] == "retrying"
    })
    .await;
    app.jenkins.set_behaviour(Behaviour::Normal);
    let sent = app.jenkins.requests().len();
    (app, id, sent)
}

/// Reloads, then waits for delivery `id` to be dead-lettered for `reason`, with nothing more
/// sent to Jenkins than the `sent` requests it had before.
async fn reloaded_then_dead(app: &TestApp, id: &str, sent: usize, reason: &str) {
    assert_eq!(app.reload().await.0, StatusCode::OK);
    eventually("the dead letter", Duration::from_secs(10), || async {
        app.delivery_view(id).await["state"] == "dead"
    })
    .await;
    let view = app.delivery_view(id).await;
    assert!(
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(reason)),
        "{view}"
    );
    assert_eq!(app.jenkins.requests().len(), sent, "nothing more was sent");
}

/// Queue mode: a call waiting for its retry when its rule is removed is dead-lettered at once,
/// with that reason, and Jenkins never hears of it again.
#[actix_web::test]
async fn a_queued_call_of_a_removed_rule_is_dead_lettered_not_sent() {
    let (app, id, sent) = a_call_waiting_for_its_retry().await;
    std::fs::remove_file(app.rules_dir.path().join("port-deploy.toml")).expect("rm");
    reloaded_then_dead(&app, &id, sent, "rule `port-deploy` is no longer loaded").await;
}

/// Queue mode: a call accepted before the job's token was rotated reaches Jenkins with the new
/// token; the token is read when the call is made, never stored with it.
#[actix_web::test]
async fn a_queued_call_is_sent_with_the_token_in_use_when_it_is_made() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        max_attempts: 10_000,
        fake_jenkins: FakeJenkinsConfig {
            jobs: vec![
                (JOB_TOKEN.to_owned(), "deploy-service".to_owned()),
                ("rotated-job-token".to_owned(), "deploy-service".to_owned()),
            ],
            basic_auth: None,
        },
        ..AppOptions::default()
    })
    .await;
    app.jenkins.set_behaviour(Behaviour::Status(503));
    let response = app.post_port(PORT_BODY).await;
    let id = json(response).await["jobs"]["port-deploy"]["delivery"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    eventually("a failed attempt", Duration::from_secs(10), || async {
        !app.jenkins.requests().is_empty()
    })
    .await;
    write(&app, "job.token", "rotated-job-token");
    write(
        &app,
        "port-deploy.toml",
        &port_rule("").replace("token_env = \"JOB_TOKEN\"", "token_file = \"job.token\""),
    );
    assert_eq!(app.reload().await.0, StatusCode::OK);
    app.jenkins.set_behaviour(Behaviour::Normal);
    eventually("the delivery", Duration::from_secs(10), || async {
        app.delivery_view(&id).await["state"] == "done"
    })
    .await;
    let delivered: Vec<_> = app
        .jenkins
        .requests()
        .into_iter()
        .filter(|r| r.answered == 200)
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].query,
        [("token".to_owned(), "rotated-job-token".to_owned())]
    );
}

#[actix_web::test]
async fn keys_that_need_a_restart_keep_their_value_and_are_named() {
    let app = spawn_app_with(AppOptions::default()).await;
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    {
        let mut settings = app.settings.lock().expect("settings");
        settings.server.listen = elsewhere.to_string();
        settings.delivery.done_retention_secs = 60;
        // A key that reloads, beside them: it takes effect.
        settings.server.max_body_bytes = 64;
    }
    let (status, answer) = app.reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["restart_required"],
        json!(["server.listen", "delivery.done_retention_secs"])
    );
    // Still listening where it was, and not on the new address; the new body limit applies.
    assert_eq!(
        app.post_port(PORT_BODY).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(TcpStream::connect(elsewhere).is_err());
}

/// Queue mode: a call accepted for `main` whose rule now dispatches to another Jenkins is
/// dead-lettered, not sent to either: the token it would carry belongs to the other one.
#[actix_web::test]
async fn a_queued_call_of_a_rule_moved_to_another_jenkins_is_dead_lettered() {
    let (app, id, sent) = a_call_waiting_for_its_retry().await;
    {
        let mut settings = app.settings.lock().expect("settings");
        let main = settings.jenkins["main"].clone();
        settings.jenkins.insert("other".to_owned(), main);
    }
    write(
        &app,
        "port-deploy.toml",
        &port_rule("").replace("jenkins = \"main\"", "jenkins = \"other\""),
    );
    reloaded_then_dead(
        &app,
        &id,
        sent,
        "now dispatches to Jenkins `other`, not `main`",
    )
    .await;
    // Calls accepted from now on go to `other` (the same fake here).
    assert_eq!(
        app.post_port(&PORT_BODY.replace("r_QOz6WoOB1Q2lmhZZ", "r_after"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
}

/// Queue mode: a rule removed and added back by two reloads has no memory to inherit; its
/// stored signatures are read back, so a call captured before is still a replay.
#[actix_web::test]
async fn a_rule_added_back_gets_its_stored_signatures_again() {
    let replays_on = port_rule("").replace("reject_replays = false", "reject_replays = true");
    let app = spawn_app_with(AppOptions {
        queue: true,
        rules: vec![("port-deploy.toml", replays_on.clone())],
        ..AppOptions::default()
    })
    .await;
    let captured = port_headers(PORT_SECRET, now(), PORT_BODY);
    let send = || {
        app.client
            .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
            .headers(captured.clone())
            .body(PORT_BODY)
            .send()
    };
    let first = json(send().await.expect("send")).await;
    let id = first["jobs"]["port-deploy"]["delivery"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    std::fs::remove_file(app.rules_dir.path().join("port-deploy.toml")).expect("rm");
    assert_eq!(app.reload().await.0, StatusCode::OK);
    write(&app, "port-deploy.toml", &replays_on);
    assert_eq!(app.reload().await.0, StatusCode::OK);
    let again = json(send().await.expect("send")).await;
    assert_eq!(
        again["jobs"]["port-deploy"]["delivery"], id,
        "answered as the stored call's duplicate: {again}"
    );
}

#[actix_web::test]
async fn a_config_that_needs_the_store_it_was_started_without_is_refused() {
    let app = spawn_app_with(AppOptions::default()).await;
    app.settings
        .lock()
        .expect("settings")
        .jenkins
        .get_mut("main")
        .expect("main")
        .events_token_env = Some("EVENTS_TOKEN".to_owned());
    let (status, answer) = app.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["problems"][0]["field"], "delivery.store", "{answer}");
    assert_eq!(app.post_port(PORT_BODY).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn the_admin_token_is_rotated_by_a_reload_and_reload_requires_it() {
    let app = spawn_app_with(AppOptions {
        admin_token: true,
        ..AppOptions::default()
    })
    .await;
    let without = app
        .client
        .post(format!("{}/reload", app.admin_address))
        .send()
        .await
        .expect("request");
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        metric(&app, "hookgate_config_reloads_total{result=\"applied\"}").await,
        Some(0.0),
        "a refused caller reloads nothing"
    );
    let get = app
        .client
        .get(format!("{}/reload", app.admin_address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The operator moves the admin token to another variable.
    app.settings.lock().expect("settings").admin.token_env = Some("NEW_SECRET".to_owned());
    assert_eq!(app.reload().await.0, StatusCode::OK);
    let metrics_with = |token: &'static str| {
        app.client
            .get(format!("{}/metrics", app.admin_address))
            .bearer_auth(token)
            .send()
    };
    let old = metrics_with(crate::helpers::ADMIN_TOKEN)
        .await
        .expect("request");
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = metrics_with("rotated-new-secret").await.expect("request");
    assert_eq!(new.status(), StatusCode::OK);
}

#[actix_web::test]
async fn rules_watch_reloads_on_a_saved_file_and_a_half_written_one_is_a_failed_reload() {
    let app = spawn_app_with(AppOptions {
        watch_rules: true,
        ..AppOptions::default()
    })
    .await;
    write(&app, "new-sender.token", "watched-sender-token");
    write(&app, "added.toml", &token_file_rule("added"));
    eventually("the watched reload", Duration::from_secs(15), || async {
        invoke_with(&app, "watched-sender-token").await == StatusCode::OK
    })
    .await;
    // The watcher is running: an editor's swap file, and a file of another kind, are not
    // rules, so they reload nothing.
    let applied = metric(&app, "hookgate_config_reloads_total{result=\"applied\"}").await;
    assert!(applied >= Some(1.0), "{applied:?}");
    write(&app, ".added.toml.swp", "binary junk");
    write(&app, "notes.txt", "not a rule");
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric(&app, "hookgate_config_reloads_total{result=\"applied\"}").await,
        applied
    );
    // Half a file: a failed reload, and the set in use serves on.
    write(
        &app,
        "added.toml",
        "name = \"added\"\ntoken_file = \"new-sen",
    );
    eventually("the refused reload", Duration::from_secs(15), || async {
        metric(&app, "hookgate_config_reloads_total{result=\"refused\"}").await >= Some(1.0)
    })
    .await;
    assert_eq!(
        invoke_with(&app, "watched-sender-token").await,
        StatusCode::OK
    );
    assert_eq!(app.post_port(PORT_BODY).await.status(), StatusCode::OK);
    // The rest of the write lands: applied again.
    write(&app, "added.toml", &token_file_rule("added"));
    eventually(
        "the reload after the fix",
        Duration::from_secs(15),
        || async { metric(&app, "hookgate_config_last_reload_successful").await == Some(1.0) },
    )
    .await;
}

/// The binary under SIGHUP: a rotated token file and a changed listen address in one reload
/// (the token applies, the address is kept and named), then a broken rule file whose problem is
/// logged exactly as `hookgate check` prints it while the set in use keeps serving.
#[actix_web::test]
async fn sighup_reloads_the_binary_and_logs_problems_as_check_prints_them() {
    use crate::binary::serve;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    let config = |listen: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [jenkins.main]\nurl = \"http://127.0.0.1:9\"\n[delivery]\nmode = \"direct\"\n"
        )
    };
    std::fs::write(dir.path().join("hookgate.toml"), config("127.0.0.1:0")).expect("write");
    std::fs::write(dir.path().join("rules/a.token"), "token-one\n").expect("write");
    std::fs::write(
        dir.path().join("rules/a.toml"),
        "name = \"a\"\ntoken_file = \"a.token\"\n[verify]\nscheme = \"none\"\n[dispatch]\njenkins = \"main\"\n",
    )
    .expect("write");
    let served = serve(dir.path(), &[]);
    let client = reqwest::Client::new();
    let dry_run = |token: &str| {
        client
            .post(format!(
                "{}/generic-webhook-trigger/invoke?token={token}",
                served.address
            ))
            .header("gwt-dry-run", "true")
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    assert_eq!(dry_run("token-one").await.expect("send").status(), 200);
    let logged = |needle: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = served.log.lock().expect("lock").clone();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(Instant::now() < deadline, "`{needle}` not logged:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::write(dir.path().join("rules/a.token"), "token-two\n").expect("write");
    std::fs::write(dir.path().join("hookgate.toml"), config("127.0.0.1:1")).expect("write");
    served.signal("-HUP");
    let log = logged("Reload applied.", 1);
    assert!(
        log.lines()
            .any(|l| l.contains("server.listen") && l.contains("changes only with a restart")),
        "{log}"
    );
    assert_eq!(dry_run("token-one").await.expect("send").status(), 404);
    assert_eq!(dry_run("token-two").await.expect("send").status(), 200);
    // A broken rule: what `check` prints is what the log says.
    std::fs::write(dir.path().join("rules/b.toml"), "name = \"b\"\n[verify\n").expect("write");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "--config", "hookgate.toml"])
        .current_dir(dir.path())
        .output()
        .expect("check runs");
    assert!(!check.status.success());
    let printed = String::from_utf8_lossy(&check.stderr).into_owned();
    let problem = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .expect("check prints the problem")
        .to_owned();
    assert!(problem.contains("rules/b.toml"), "{printed}");
    served.signal("-HUP");
    let log = logged("Reload refused", 1);
    assert!(
        log.contains(&problem),
        "`{problem}` is not in the log:\n{log}"
    );
    assert_eq!(dry_run("token-two").await.expect("send").status(), 200);
}
