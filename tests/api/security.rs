//! The holes an adversarial review found (issue 10), each shown through real sockets: a full
//! store re-sending accepted calls, replays by re-encoding a MAC or resending an untimestamped
//! signature, compacting bytes that were never signed, unsigned query parameters in a signed
//! form, refused calls using up their signature, fan-out stored in part, unbounded request
//! variables, and a world-readable store.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::KeyInit as _;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::helpers::fake_jenkins::Behaviour;
use crate::helpers::{
    AppOptions, GITHUB_SECRET, PORT_BODY, PORT_SECRET, SENDER_TOKEN, TestApp, github_signature,
    hmac_sha256, json, now, port_headers, port_rule, spawn_app_with,
};

/// A rule with the sender token, the given `[verify]` lines (replay protection at its
/// default), one JSONPath variable and `extra` sections.
fn rule(verify: &str, extra: &str) -> String {
    format!(
        "token_env = \"SENDER_TOKEN\"\n[verify]\n{verify}\n[[variables]]\nname = \"ACTION\"\njsonpath = \"$.action\"\n{extra}\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n"
    )
}

const PORT_VERIFY: &str = "scheme = \"port\"\nsecret_env = \"PORT_SECRET\"";
const HMAC_VERIFY: &str = "scheme = \"hmac\"\nheader = \"X-Signature\"\nalgorithm = \"sha256\"\nsecret_env = \"PORT_SECRET\"";
const GITHUB_VERIFY: &str = "scheme = \"github\"\nsecret_env = \"GITHUB_SECRET\"";

fn options(rules: Vec<(&'static str, String)>, queue: bool) -> AppOptions {
    AppOptions {
        rules,
        queue,
        ..AppOptions::default()
    }
}

async fn send(app: &TestApp, headers: HeaderMap, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(headers)
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

fn with(mut headers: HeaderMap, name: &'static str, value: &str) -> HeaderMap {
    headers.insert(name, value.parse().expect("header value"));
    headers
}

fn json_headers() -> HeaderMap {
    with(HeaderMap::new(), "content-type", "application/json")
}

/// Polls `condition` until it holds, failing the test after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Another connection to the gateway's store, holding its write lock until `COMMIT`, as an
/// operator command or a stalled disk would.
fn hold_write_lock(app: &TestApp) -> rusqlite::Connection {
    let lock =
        rusqlite::Connection::open(app.store.join(hookgate::store::FILE_NAME)).expect("open");
    lock.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    lock
}

fn distinct_deliveries(app: &TestApp) -> BTreeSet<String> {
    app.jenkins
        .requests()
        .iter()
        .filter_map(|r| r.header("x-hookgate-delivery").map(str::to_owned))
        .collect()
}

/// Item 1: once new calls are refused because the store is at `max_store_bytes`, the attempts
/// already made must still be recorded, or every scan sends them to Jenkins again.
#[actix_web::test]
async fn item1_a_full_store_never_triggers_an_accepted_call_twice() {
    // The empty schema takes a page per table and index (schema 6 added three), so the cap
    // leaves room for a few dozen calls.
    let app = spawn_app_with(AppOptions {
        max_store_bytes: 192 * 1024,
        ..options(vec![("port-deploy.toml", port_rule(""))], true)
    })
    .await;
    // The first attempts hold every slot toward Jenkins while small calls fill the store, so
    // most outcomes are written once it is full: they need pages of their own.
    app.jenkins
        .script([Behaviour::Delay(Duration::from_secs(2)); 8]);
    let mut accepted = 0;
    let mut refused = false;
    for i in 0..1000 {
        let body = PORT_BODY.replace("r_QOz6WoOB1Q2lmhZZ", &format!("r_full_{i}"));
        let response = send(&app, port_headers(PORT_SECRET, now(), &body), &body).await;
        match response.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}: {}", json(response).await),
        }
    }
    assert!(refused, "the store never filled up");
    assert!(accepted > 5, "only {accepted} calls fitted");
    eventually(
        "every accepted call delivered",
        Duration::from_secs(10),
        || distinct_deliveries(&app).len() == accepted,
    )
    .await;
    // Long enough for dozens of scans: none may send a delivered call again.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.jenkins.requests().len(),
        accepted,
        "Jenkins was called more often than calls were accepted"
    );
}

/// Item 1: an outcome the store cannot take (here another process holds the write lock past the
/// busy timeout) is kept in memory and written once the store allows; Jenkins is not called a
/// second time meanwhile.
#[actix_web::test]
async fn item1_an_outcome_the_store_refuses_is_kept_until_written_and_not_sent_again() {
    let app = spawn_app_with(options(vec![("port-deploy.toml", port_rule(""))], true)).await;
    // The attempt's outcome is written after the lock below is taken.
    app.jenkins
        .script([Behaviour::Delay(Duration::from_millis(500))]);
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = json(response).await["jobs"]["port-deploy"]["delivery"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let lock = hold_write_lock(&app);
    // The gateway's writer gives up after its 5 s busy timeout; hold the lock past that.
    actix_web::rt::time::sleep(Duration::from_millis(6500)).await;
    lock.execute_batch("COMMIT").expect("release");
    let admin = hookgate::store::Admin::open(&app.store).expect("store");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = admin.get(&id).expect("read").expect("delivery");
        if view.state == hookgate::store::State::Done {
            assert_eq!(view.attempts.len(), 1, "{view:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never recorded: {view:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.jenkins.requests().len(), 1, "the call was sent again");
}

/// Item 2: one MAC however it is spelt (base64 without padding; hex in either case; a prefix
/// in either case; base64) is one signature.
#[actix_web::test]
async fn item2_a_re_encoded_mac_is_still_a_replay() {
    let app = spawn_app_with(options(vec![("port.toml", rule(PORT_VERIFY, ""))], false)).await;
    let captured = port_headers(PORT_SECRET, now(), PORT_BODY);
    assert_eq!(
        send(&app, captured.clone(), PORT_BODY).await.status(),
        StatusCode::OK
    );
    let padded = captured["x-port-signature"].to_str().expect("ascii");
    let unpadded = padded.trim_end_matches('=').to_owned();
    assert_ne!(padded, unpadded, "the test vector has padding to strip");
    let response = send(
        &app,
        with(captured, "x-port-signature", &unpadded),
        PORT_BODY,
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let app = spawn_app_with(options(vec![("hmac.toml", rule(HMAC_VERIFY, ""))], false)).await;
    let mac = hmac_sha256(PORT_SECRET, &[PORT_BODY.as_bytes()]);
    let spellings = [
        hex::encode(&mac),
        hex::encode_upper(&mac),
        format!("sha256={}", hex::encode(&mac)),
        format!("SHA256={}", hex::encode_upper(&mac)),
        STANDARD.encode(&mac),
        STANDARD_NO_PAD.encode(&mac),
    ];
    let mut statuses = Vec::new();
    for spelling in &spellings {
        let headers = with(json_headers(), "x-signature", spelling);
        statuses.push(send(&app, headers, PORT_BODY).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401]);
    assert_eq!(app.jenkins.requests().len(), 1);
}

/// Item 3: the agent's spaced body still verifies, but whitespace inside a literal or a number
/// is never removed, so `tr ue` or `1 2` cannot pass as the signed `true` or `12`.
#[actix_web::test]
async fn item3_port_compaction_never_accepts_bytes_that_were_not_signed() {
    // No JSONPath variables: the body is forwarded without being parsed.
    let verify = format!("{PORT_VERIFY}\nreject_replays = false");
    let text = format!(
        "token_env = \"SENDER_TOKEN\"\n[verify]\n{verify}\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n"
    );
    let app = spawn_app_with(options(vec![("port.toml", text)], false)).await;
    let signed = r#"{"deploy":true,"replicas":12}"#;
    let headers = port_headers(PORT_SECRET, now(), signed);
    let spaced = r#"{"deploy": true, "replicas": 12}"#;
    assert_eq!(
        send(&app, headers.clone(), spaced).await.status(),
        StatusCode::OK
    );
    for forged in [
        r#"{"deploy":tr ue,"replicas":12}"#,
        r#"{"deploy":true,"replicas":1 2}"#,
        r#"{"deploy": t r u e, "replicas": 1 2}"#,
    ] {
        let response = send(&app, headers.clone(), forged).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{forged}");
    }
    let forwarded: Vec<Vec<u8>> = app.jenkins.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(forwarded, vec![spaced.as_bytes().to_vec()]);
}

/// Item 4: the JSONPath document of a form post is its signed body; an unsigned query string
/// (or a relabelled content type) adds nothing to it.
#[actix_web::test]
async fn item4_unsigned_query_parameters_never_reach_a_signed_form_document() {
    let text = format!(
        "token_env = \"SENDER_TOKEN\"\n[verify]\n{HMAC_VERIFY}\n[[variables]]\nname = \"ENV\"\njsonpath = \"$.env[0]\"\ndefault = \"none\"\n[[query]]\nname = \"env\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n"
    );
    let app = spawn_app_with(options(vec![("form.toml", text)], false)).await;
    let post = |body: &'static str, content_type: &'static str| {
        let mac = hex::encode(hmac_sha256(PORT_SECRET, &[body.as_bytes()]));
        let headers = with(
            with(HeaderMap::new(), "content-type", content_type),
            "x-signature",
            &mac,
        );
        app.client
            .post(format!(
                "{}?token={SENDER_TOKEN}&env=prod",
                app.invoke_url()
            ))
            .headers(headers)
            .body(body)
            .send()
    };
    let answer = json(
        post("env=staging", "application/x-www-form-urlencoded")
            .await
            .expect("request"),
    )
    .await;
    let variables = &answer["jobs"]["form"]["resolvedVariables"];
    assert_eq!(variables["ENV"], "staging", "{answer}");
    // A `[[query]]` variable reads a name the signed form has from the form only.
    assert_eq!(variables["env"], "staging", "{answer}");
    assert_eq!(variables["env_0"], "staging", "{answer}");
    assert!(variables.get("env_1").is_none(), "{answer}");
    // A JSON delivery relabelled as a form: nothing comes from the query.
    let answer = json(
        post(r#"{"env":"staging"}"#, "application/x-www-form-urlencoded")
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        answer["jobs"]["form"]["resolvedVariables"]["ENV"], "none",
        "{answer}"
    );
}

/// Item 6: an untimestamped signature (GitHub) is remembered for the replay window; fresh
/// `X-GitHub-Delivery` ids (unsigned) do not make a captured delivery new. In queue mode the
/// repeats are answered as duplicates of the stored call, also after a restart.
#[actix_web::test]
async fn item6_a_github_delivery_resent_with_fresh_delivery_ids_is_queued_once() {
    let github = rule(
        GITHUB_VERIFY,
        "[idempotency]\nheader = \"X-GitHub-Delivery\"",
    );
    let app = spawn_app_with(options(vec![("gh.toml", github.clone())], true)).await;
    let body = r#"{"action":"push","ref":"refs/heads/main"}"#;
    let signed = with(
        json_headers(),
        "x-hub-signature-256",
        &github_signature(GITHUB_SECRET, body),
    );
    let mut answers = Vec::new();
    for delivery in ["d-1", "d-2", "d-3", "d-4"] {
        let response = send(
            &app,
            with(signed.clone(), "x-github-delivery", delivery),
            body,
        )
        .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        answers.push(json(response).await["jobs"]["gh"].clone());
    }
    let first = answers[0]["delivery"].clone();
    let statuses: Vec<&Value> = answers.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, ["queued", "duplicate", "duplicate", "duplicate"]);
    assert!(
        answers.iter().all(|a| a["delivery"] == first),
        "{answers:?}"
    );
    eventually("the delivery", Duration::from_secs(5), || {
        app.jenkins.requests().len() == 1
    })
    .await;
    // Its outcome is committed a moment after Jenkins answered; until then a second gateway on
    // the same store would make the attempt again (at-least-once), which is not what this
    // test is about.
    let admin = hookgate::store::Admin::open(&app.store).expect("store");
    eventually("the delivery's outcome", Duration::from_secs(5), || {
        admin
            .list(hookgate::store::ListFilter::default(), 10)
            .expect("list")
            .iter()
            .all(|row| row.state == hookgate::store::State::Done)
    })
    .await;

    // A restart on the same store does not reopen the window.
    let restarted = spawn_app_with(AppOptions {
        store: Some(app.store.clone()),
        ..options(vec![("gh.toml", github)], true)
    })
    .await;
    let response = send(&restarted, with(signed, "x-github-delivery", "d-5"), body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job = json(response).await["jobs"]["gh"].clone();
    assert_eq!(job["status"], "duplicate");
    assert_eq!(job["delivery"], first);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(restarted.jenkins.requests().is_empty());
    assert_eq!(app.jenkins.requests().len(), 1);

    // In direct mode nothing is stored, so a repeat is refused outright, also when only the
    // SHA-1 signature GitHub sends beside the SHA-256 one is kept.
    let direct = spawn_app_with(options(vec![("gh.toml", rule(GITHUB_VERIFY, ""))], false)).await;
    let mut sha1 = hmac::Hmac::<sha1::Sha1>::new_from_slice(GITHUB_SECRET.as_bytes()).expect("key");
    hmac::Mac::update(&mut sha1, body.as_bytes());
    let sha1 = format!(
        "sha1={}",
        hex::encode(hmac::Mac::finalize(sha1).into_bytes())
    );
    let signed = with(
        with(
            json_headers(),
            "x-hub-signature-256",
            &github_signature(GITHUB_SECRET, body),
        ),
        "x-hub-signature",
        &sha1,
    );
    assert_eq!(
        send(&direct, signed.clone(), body).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&direct, signed, body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let only_sha1 = with(json_headers(), "x-hub-signature", &sha1);
    assert_eq!(
        send(&direct, only_sha1, body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(direct.jenkins.requests().len(), 1);
}

/// Item 8: a call answered 429, or evaluated as a dry run, was not accepted, so the sender's
/// retry of the same signed request is not a replay.
#[actix_web::test]
async fn item8_a_call_refused_with_429_or_dry_run_keeps_its_signature() {
    let text = rule(PORT_VERIFY, "[rate]\nper_sec = 1\nburst = 1");
    let app = spawn_app_with(options(vec![("port.toml", text)], false)).await;
    let t = now();
    let dry = port_headers(PORT_SECRET, t, PORT_BODY);
    let response = send(&app, with(dry.clone(), "gwt-dry-run", "true"), PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["dry_run"], true);
    // The real call after its dry run is accepted (and uses the rule's one call per second).
    assert_eq!(send(&app, dry, PORT_BODY).await.status(), StatusCode::OK);
    let other = PORT_BODY.replace("1.4.2", "1.4.3");
    let limited = port_headers(PORT_SECRET, t, &other);
    let response = send(&app, limited.clone(), &other).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    actix_web::rt::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(
        send(&app, limited, &other).await.status(),
        StatusCode::OK,
        "the retry the 429 asked for"
    );
    assert_eq!(app.jenkins.requests().len(), 2);
}

/// Item 9: when a call was stored and its answer lost, the sender's identical retry is told
/// the truth: a duplicate of the delivery it made.
#[actix_web::test]
async fn item9_a_senders_retry_of_a_stored_call_is_answered_as_its_duplicate() {
    let app = spawn_app_with(options(vec![("port.toml", rule(PORT_VERIFY, ""))], true)).await;
    let headers = port_headers(PORT_SECRET, now(), PORT_BODY);
    let first = json(send(&app, headers.clone(), PORT_BODY).await).await["jobs"]["port"].clone();
    assert_eq!(first["status"], "queued");
    let response = send(&app, headers, PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let again = json(response).await["jobs"]["port"].clone();
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["delivery"], first["delivery"]);
    assert_eq!(again["resolvedVariables"]["ACTION"], "deploy_service");
    eventually("the delivery", Duration::from_secs(5), || {
        app.jenkins.requests().len() == 1
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.jenkins.requests().len(), 1);
}

/// Item 10: the store holds every accepted body, so only hookgate's user may read it.
#[cfg(unix)]
#[actix_web::test]
async fn item10_the_store_is_readable_by_hookgates_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(AppOptions {
        store: Some(parent.path().join("var").join("hookgate")),
        ..options(vec![("port-deploy.toml", port_rule(""))], true)
    })
    .await;
    assert_eq!(
        app.post_port(PORT_BODY).await.status(),
        StatusCode::ACCEPTED
    );
    let mode = |name: &str| {
        let path = if name.is_empty() {
            app.store.clone()
        } else {
            app.store.join(name)
        };
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "store directory");
    assert_eq!(
        std::fs::metadata(parent.path().join("var"))
            .expect("parent")
            .permissions()
            .mode()
            & 0o777,
        0o700,
        "directories hookgate creates on the way"
    );
    for file in [
        "deliveries.sqlite3",
        "deliveries.sqlite3-wal",
        "deliveries.sqlite3-shm",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

/// Item 11: a per-rule rate limit that refuses one matched rule of a fan-out refuses the call,
/// so the sender's retry cannot trigger the other rule twice.
#[actix_web::test]
async fn item11_a_rate_limited_rule_refuses_the_whole_fan_out_call() {
    let limited = port_rule("").replace("[dispatch]", "[rate]\nper_sec = 1\nburst = 1\n[dispatch]");
    let app = spawn_app_with(options(
        vec![("a.toml", port_rule("")), ("b.toml", limited)],
        true,
    ))
    .await;
    assert_eq!(
        app.post_port(PORT_BODY).await.status(),
        StatusCode::ACCEPTED
    );
    let response = app.post_port(PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let answer = json(response).await;
    assert_eq!(answer["jobs"]["a"]["status"], "failed", "{answer}");
    assert_eq!(answer["jobs"]["b"]["status"], "failed", "{answer}");
    eventually(
        "the first call's deliveries",
        Duration::from_secs(5),
        || app.jenkins.requests().len() >= 2,
    )
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.jenkins.requests().len(),
        2,
        "the refused call stored part of itself"
    );
}

/// Item 12: header, query and form variables draw on the same per-request budget as body
/// variables, so a 1 MiB `a=&a=&…` form cannot become hundreds of thousands of entries.
#[actix_web::test]
async fn item12_one_variable_budget_covers_header_query_and_form_variables() {
    let text = "token_env = \"SENDER_TOKEN\"\n[verify]\nscheme = \"none\"\n[[query]]\nname = \"a\"\n[[headers]]\nname = \"X-Many\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n".to_owned();
    let app = spawn_app_with(options(vec![("many.toml", text)], false)).await;
    let body = "a=&".repeat(340_000);
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("gwt-dry-run", "true")
        .header("x-many", "1")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(response).await;
    let variables = answer["jobs"]["many"]["resolvedVariables"]
        .as_object()
        .expect("variables")
        .len();
    assert!(
        variables <= hookgate::extract::MAX_VARIABLES,
        "{variables} variables"
    );
    assert!(
        variables > 1000,
        "the budget still allows many: {variables}"
    );
}

/// Invariant: no JSON is parsed before a rule's signature verifies. Invalid JSON with a bad
/// signature is a 401 (the parser never saw it); with a good one, a 400 with the position.
#[actix_web::test]
async fn invariant_no_json_is_parsed_before_a_signature_verifies() {
    let app = spawn_app_with(options(vec![("port.toml", rule(PORT_VERIFY, ""))], false)).await;
    let broken = r#"{"action": "deploy_service", "#;
    let forged = port_headers("not-the-secret", now(), broken);
    let response = send(&app, forged, broken).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let signed = port_headers(PORT_SECRET, now(), broken);
    let response = send(&app, signed, broken).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(response).await["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 1")),
    );
    assert!(app.jenkins.requests().is_empty());
}

/// Item 12: unsigned query parameters cannot use up the budget before the signed body's
/// variables are read.
#[actix_web::test]
async fn item12_query_parameters_cannot_crowd_out_the_bodys_variables() {
    let text = format!(
        "token_env = \"SENDER_TOKEN\"\n[verify]\n{HMAC_VERIFY}\n[[variables]]\nname = \"SERVICE\"\njsonpath = \"$.payload.properties.service\"\ndefault = \"api\"\n[[query]]\nname = \"env\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n"
    );
    let app = spawn_app_with(options(vec![("crowd.toml", text)], false)).await;
    let mac = hex::encode(hmac_sha256(PORT_SECRET, &[PORT_BODY.as_bytes()]));
    let flood = "env&".repeat(hookgate::extract::MAX_VARIABLES + 1);
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}&{flood}", app.invoke_url()))
        .headers(with(json_headers(), "x-signature", &mac))
        .body(PORT_BODY)
        .send()
        .await
        .expect("request");
    let answer = json(response).await;
    assert_eq!(
        answer["jobs"]["crowd"]["resolvedVariables"]["SERVICE"], "payments-api",
        "{}",
        answer["jobs"]["crowd"]["status"]
    );
}

/// Item 8, across a fan-out: a rule that filtered a call refused as a whole (429), or a dry run,
/// has not used up its signature either, so the retry is filtered again, not refused as a
/// replay.
#[actix_web::test]
async fn item8_a_refused_fan_out_call_leaves_every_rules_signature_usable() {
    let never = rule(
        PORT_VERIFY,
        "[filter]\ntext = \"$ACTION\"\nexpression = \"^never$\"",
    );
    let limited = rule(PORT_VERIFY, "[rate]\nper_sec = 1\nburst = 1");
    let app = spawn_app_with(options(
        vec![("never.toml", never), ("limited.toml", limited)],
        false,
    ))
    .await;
    let statuses = |answer: &Value| {
        (
            answer["jobs"]["never"]["status"].clone(),
            answer["jobs"]["limited"]["status"].clone(),
        )
    };
    let t = now();
    let first = port_headers(PORT_SECRET, t, PORT_BODY);
    let response = send(&app, with(first.clone(), "gwt-dry-run", "true"), PORT_BODY).await;
    assert_eq!(
        statuses(&json(response).await),
        (Value::from("filtered"), Value::from("triggered"))
    );
    let response = send(&app, first, PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::OK, "after its dry run");
    let other = PORT_BODY.replace("1.4.2", "1.4.3");
    let second = port_headers(PORT_SECRET, t, &other);
    let response = send(&app, second.clone(), &other).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let response = send(&app, second, &other).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        statuses(&json(response).await),
        (Value::from("filtered"), Value::from("triggered"))
    );
}

/// Item 9, when the sender gives up while the store commits (its connection closes before the
/// answer): the call is still stored and its signature remembered, so the sender's retry is told
/// it is a duplicate instead of storing the call twice.
#[actix_web::test]
async fn item9_a_call_whose_sender_gave_up_waiting_is_stored_once() {
    let app = spawn_app_with(options(vec![("port.toml", rule(PORT_VERIFY, ""))], true)).await;
    let headers = port_headers(PORT_SECRET, now(), PORT_BODY);
    // Another connection holds the write lock, so the commit waits (within the busy timeout).
    let lock = hold_write_lock(&app);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let gave_up = impatient
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(headers.clone())
        .body(PORT_BODY)
        .send()
        .await;
    assert!(gave_up.is_err(), "the sender should have timed out");
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    lock.execute_batch("COMMIT").expect("release");
    drop(lock);
    let admin = hookgate::store::Admin::open(&app.store).expect("store");
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .list(hookgate::store::ListFilter::default(), 10)
        .expect("list")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the call was never stored");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let response = send(&app, headers, PORT_BODY).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job = json(response).await["jobs"]["port"].clone();
    assert_eq!(job["status"], "duplicate", "{job}");
    let stored = admin
        .list(hookgate::store::ListFilter::default(), 10)
        .expect("list");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(job["delivery"], stored[0].id.as_str());
}
