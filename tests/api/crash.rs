//! Restart safety of the real binary in queue mode: `kill -9` at several moments under load,
//! then a restart, delivers every call that was answered 202; SIGTERM drains and exits.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::binary::{Served, serve};
use crate::helpers::fake_jenkins::{Behaviour, FakeJenkins, FakeJenkinsConfig};
use crate::helpers::{PORT_BODY, json, now, port_headers, post_signed};

const SECRET: &str = "crash-port-secret";
const SENDER: &str = "crash-sender-token";
const JOB: &str = "crash-job-token";

fn env() -> [(&'static str, &'static str); 3] {
    [
        ("CRASH_PORT", SECRET),
        ("CRASH_SENDER", SENDER),
        ("CRASH_JOB", JOB),
    ]
}

/// A config and one Port rule in `dir`, queue mode, store in `dir/store`.
fn write_config(dir: &Path, jenkins_url: &str) {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    std::fs::write(
        dir.join("hookgate.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nrate_per_client = 0\nrate_per_rule = 0\n[admin]\nlisten = \"127.0.0.1:0\"\n[jenkins.main]\nurl = \"{jenkins_url}\"\ntimeout_secs = 2\nmax_in_flight = 4\n\
             [delivery]\nmode = \"queue\"\nstore = \"store\"\nretry_initial_ms = 50\nretry_max_ms = 200\nmax_attempts = 10000\n"
        ),
    )
    .expect("write config");
    std::fs::write(
        dir.join("rules/port.toml"),
        "token_env = \"CRASH_SENDER\"\n[verify]\nscheme = \"port\"\nsecret_env = \"CRASH_PORT\"\n\
         [[variables]]\nname = \"RUN_ID\"\njsonpath = \"$.context.runId\"\n[dispatch]\ntoken_env = \"CRASH_JOB\"\n",
    )
    .expect("write rule");
}

/// Sends calls from `senders` concurrent loops until the gateway stops answering; returns the
/// delivery ids of the calls answered 202.
async fn load(served_address: String, senders: usize, acknowledged: Arc<Mutex<Vec<String>>>) {
    let client = reqwest::Client::new();
    let loops = (0..senders).map(|s| {
        let client = client.clone();
        let address = served_address.clone();
        let acknowledged = Arc::clone(&acknowledged);
        async move {
            for i in 0.. {
                let body = PORT_BODY.replace("r_QOz6WoOB1Q2lmhZZ", &format!("r_{s}_{i}"));
                let sent = client
                    .post(format!(
                        "{address}/generic-webhook-trigger/invoke?token={SENDER}"
                    ))
                    .headers(port_headers(SECRET, now(), &body))
                    .body(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != StatusCode::ACCEPTED {
                    break;
                }
                let Ok(text) = response.text().await else {
                    break;
                };
                let Ok(answer) = serde_json::from_str::<serde_json::Value>(&text) else {
                    break;
                };
                if let Some(id) = answer["jobs"]["port"]["delivery"].as_str() {
                    acknowledged.lock().expect("lock").push(id.to_owned());
                }
            }
        }
    });
    futures_util::future::join_all(loops).await;
}

async fn fake_jenkins() -> FakeJenkins {
    FakeJenkins::start(FakeJenkinsConfig {
        jobs: vec![(JOB.to_owned(), "deploy".to_owned())],
        basic_auth: None,
    })
    .await
    .expect("fake Jenkins")
}

async fn wait_for_all(jenkins: &FakeJenkins, expected: &BTreeSet<String>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let delivered: BTreeSet<String> = jenkins.delivered_ids().into_iter().collect();
        let missing: Vec<&String> = expected.difference(&delivered).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged calls never reached Jenkins, e.g. {:?}",
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn invariant_a_crash_at_any_moment_loses_no_acknowledged_call() {
    let jenkins = fake_jenkins().await;
    // A slow Jenkins keeps a backlog in the store, so kills land with deliveries pending,
    // in flight and half-recorded.
    jenkins.set_behaviour(Behaviour::Delay(Duration::from_millis(20)));
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &jenkins.url());

    let mut acknowledged_total = BTreeSet::new();
    // Kill points, counted from the first acknowledged call of each run.
    for kill_after_ms in [0u64, 50, 200, 600] {
        let mut served: Served = serve(dir.path(), &env());
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let load = actix_web::rt::spawn(load(served.address.clone(), 8, Arc::clone(&acknowledged)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while acknowledged.lock().expect("lock").is_empty() {
            assert!(Instant::now() < deadline, "no call was accepted");
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
        actix_web::rt::time::sleep(Duration::from_millis(kill_after_ms)).await;
        served.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        let _ = served.child.wait();
        let _ = load.await;
        let round: Vec<String> = acknowledged.lock().expect("lock").clone();
        acknowledged_total.extend(round);
    }

    // Restart with a prompt Jenkins: everything acknowledged in any round is delivered.
    jenkins.set_behaviour(Behaviour::Normal);
    let served = serve(dir.path(), &env());
    wait_for_all(&jenkins, &acknowledged_total, Duration::from_secs(60)).await;
    let delivered = jenkins.delivered_ids();
    let distinct: BTreeSet<&String> = delivered.iter().collect();
    eprintln!(
        "acknowledged {}, delivered {} ({} distinct; repeats are attempts cut short by a kill)",
        acknowledged_total.len(),
        delivered.len(),
        distinct.len()
    );
    drop(served);
}

#[actix_web::test]
async fn sigterm_drains_in_flight_attempts_and_keeps_the_rest_for_the_next_start() {
    let mut jenkins = fake_jenkins().await;
    jenkins.down().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &jenkins.url());
    let mut served = serve(dir.path(), &env());
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    // Five calls, stored while Jenkins is down.
    let client = reqwest::Client::new();
    for i in 0..5 {
        let body = PORT_BODY.replace("r_QOz6WoOB1Q2lmhZZ", &format!("r_term_{i}"));
        let response = post_signed(&client, &served.address, SENDER, SECRET, &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let answer = json(response).await;
        acknowledged.lock().expect("lock").push(
            answer["jobs"]["port"]["delivery"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let pid = served.child.id().to_string();
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = served.child.wait().expect("exits");
    assert!(exit.success(), "graceful exit, got {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "drained within the bound"
    );
    // The stderr reader thread may still be catching up with the last lines.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = served.log.lock().expect("lock").clone();
        if log.contains("hookgate stopped.") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no clean stop in the log:\n{log}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }

    jenkins.up().expect("Jenkins back");
    let _served = serve(dir.path(), &env());
    let expected: BTreeSet<String> = acknowledged.lock().expect("lock").iter().cloned().collect();
    wait_for_all(&jenkins, &expected, Duration::from_secs(20)).await;
}

fn hookgate(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("hookgate runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[actix_web::test]
async fn operators_list_show_retry_and_purge_while_the_gateway_runs() {
    let jenkins = fake_jenkins().await;
    // Jenkins refuses the job token: the delivery is dead-lettered at once.
    jenkins.set_behaviour(Behaviour::Status(404));
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &jenkins.url());
    let served = serve(dir.path(), &env());
    let client = reqwest::Client::new();
    let response = client
        .post(format!(
            "{}/generic-webhook-trigger/invoke?token={SENDER}",
            served.address
        ))
        .headers(port_headers(SECRET, now(), PORT_BODY))
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    let id = json(response).await["jobs"]["port"]["delivery"]
        .as_str()
        .expect("id")
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = hookgate(dir.path(), &["deliveries", "list", "--state", "dead"]);
        assert!(ok, "{out}");
        if out.contains(&id) {
            assert!(out.contains("last_error=Jenkins answered 404"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "never dead-lettered: {out}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, shown) = hookgate(dir.path(), &["deliveries", "show", &id]);
    assert!(ok, "{shown}");
    assert!(shown.contains("state:       dead"), "{shown}");
    assert!(shown.contains("status=404"), "{shown}");
    for secret in [SECRET, SENDER, JOB] {
        assert!(!shown.contains(secret), "{shown}");
    }

    // Fixed in Jenkins; the operator requeues every dead delivery.
    jenkins.set_behaviour(Behaviour::Normal);
    let (ok, out) = hookgate(dir.path(), &["deliveries", "retry", "--dead"]);
    assert!(ok && out.contains("1 dead delivery requeued"), "{out}");
    wait_for_all(
        &jenkins,
        &BTreeSet::from([id.clone()]),
        Duration::from_secs(10),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, shown) = hookgate(dir.path(), &["deliveries", "show", &id]);
        if shown.contains("state:       done") {
            assert!(shown.contains("jenkins:     queue item"), "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "never done: {shown}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out) = hookgate(
        dir.path(),
        &["deliveries", "purge", "--done", "--older-than", "7d"],
    );
    assert!(
        ok && out.contains("0 delivered calls older than 7days purged"),
        "{out}"
    );
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    let (ok, out) = hookgate(
        dir.path(),
        &["deliveries", "purge", "--done", "--older-than", "1ms"],
    );
    assert!(ok && out.contains("1 delivered call older than"), "{out}");
    let (ok, out) = hookgate(dir.path(), &["deliveries", "show", &id]);
    assert!(!ok && out.contains("no delivery"), "{out}");
    let (ok, out) = hookgate(dir.path(), &["deliveries", "retry"]);
    assert!(!ok, "an id or --dead is required: {out}");
    drop(served);
}

#[actix_web::test]
async fn invariant_an_idempotency_record_is_committed_with_its_delivery() {
    let mut jenkins = fake_jenkins().await;
    jenkins.down().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &jenkins.url());
    let rule = std::fs::read_to_string(dir.path().join("rules/port.toml")).expect("rule");
    std::fs::write(
        dir.path().join("rules/port.toml"),
        format!("{rule}[idempotency]\nkey = \"$.context.runId\"\n"),
    )
    .expect("write rule");
    let client = reqwest::Client::new();
    let send = |address: String| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!(
                    "{address}/generic-webhook-trigger/invoke?token={SENDER}"
                ))
                .headers(port_headers(SECRET, now(), PORT_BODY))
                .body(PORT_BODY)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            json(response).await["jobs"]["port"].clone()
        }
    };

    let mut served = serve(dir.path(), &env());
    let first = send(served.address.clone()).await;
    assert_eq!(first["status"], "queued");
    served.child.kill().expect("SIGKILL");
    let _ = served.child.wait();
    drop(served);

    let served = serve(dir.path(), &env());
    let repeat = send(served.address.clone()).await;
    assert_eq!(repeat["status"], "duplicate", "{repeat}");
    assert_eq!(repeat["delivery"], first["delivery"]);
    jenkins.up().expect("Jenkins back");
    let id = first["delivery"].as_str().expect("id").to_owned();
    wait_for_all(&jenkins, &BTreeSet::from([id]), Duration::from_secs(10)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jenkins.delivered_ids().len(), 1, "delivered exactly once");
}

/// A config with an events token and one forward sink at `sink_url`, queue mode, store in
/// `dir/store`.
fn write_events_config(dir: &Path, jenkins_url: &str, sink_url: &str) {
    write_config(dir, jenkins_url);
    let mut config = std::fs::read_to_string(dir.join("hookgate.toml")).expect("read");
    config = config.replace(
        "max_in_flight = 4\n",
        "max_in_flight = 4\nevents_token_env = \"CRASH_EVENTS\"\n",
    );
    config.push_str(&format!(
        "[sinks.relay]\nkind = \"forward\"\nurl = \"{sink_url}\"\nmax_in_flight = 4\n"
    ));
    std::fs::write(dir.join("hookgate.toml"), config).expect("write config");
}

/// Posts events with distinct build numbers from `senders` loops until the gateway stops
/// answering; records the build numbers of the events answered 202.
async fn post_events(address: String, senders: u64, acknowledged: Arc<Mutex<Vec<u64>>>) {
    let client = reqwest::Client::new();
    let loops = (0..senders).map(|s| {
        let client = client.clone();
        let address = address.clone();
        let acknowledged = Arc::clone(&acknowledged);
        async move {
            for i in 0u64.. {
                // Unique across rounds: a restart must not turn a new event into a duplicate.
                let number = now() * 1_000_000 + s * 100_000 + i;
                let body = format!(
                    r#"{{"name":"crash","url":"job/crash/","build":{{"number":{number},"phase":"FINALIZED","status":"SUCCESS","url":"job/crash/{number}/"}}}}"#
                );
                let sent = client
                    .post(format!("{address}/jenkins/main/events?token=crash-events-token"))
                    .header("content-type", "application/json;charset=UTF-8")
                    .body(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != StatusCode::ACCEPTED {
                    break;
                }
                if response.text().await.is_err() {
                    break;
                }
                acknowledged.lock().expect("lock").push(number);
            }
        }
    });
    futures_util::future::join_all(loops).await;
}

#[actix_web::test]
async fn a_kill_after_the_202_loses_no_event() {
    use crate::helpers::fake_sinks::{
        Behaviour as SinkBehaviour, FakeSinks, FakeSinksConfig, Sink,
    };
    let jenkins = fake_jenkins().await;
    let sinks = FakeSinks::start(FakeSinksConfig::default())
        .await
        .expect("fake sinks");
    // A slow receiver keeps deliveries pending and in flight when the kill lands.
    sinks.set_behaviour(
        Sink::Forward,
        SinkBehaviour::Delay(Duration::from_millis(20)),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    write_events_config(
        dir.path(),
        &jenkins.url(),
        &format!("{}/forward/crash", sinks.url()),
    );
    let mut env = env().to_vec();
    env.push(("CRASH_EVENTS", "crash-events-token"));
    let mut acknowledged_total = BTreeSet::new();
    for kill_after_ms in [0u64, 100, 400] {
        let mut served: Served = serve(dir.path(), &env);
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let load = actix_web::rt::spawn(post_events(
            served.address.clone(),
            4,
            Arc::clone(&acknowledged),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while acknowledged.lock().expect("lock").is_empty() {
            assert!(Instant::now() < deadline, "no event was accepted");
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
        actix_web::rt::time::sleep(Duration::from_millis(kill_after_ms)).await;
        served.child.kill().expect("SIGKILL");
        let _ = served.child.wait();
        let _ = load.await;
        acknowledged_total.extend(acknowledged.lock().expect("lock").iter().copied());
    }
    sinks.set_behaviour(Sink::Forward, SinkBehaviour::Normal);
    let served = serve(dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received: BTreeSet<u64> = sinks
            .requests()
            .iter()
            .filter(|r| r.answered == 200)
            .filter_map(|r| r.json()?["build"]["number"].as_u64())
            .collect();
        let missing: Vec<&u64> = acknowledged_total.difference(&received).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never reached the sink, e.g. {:?}",
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "acknowledged {} events, all delivered",
        acknowledged_total.len()
    );
    drop(served);
}
