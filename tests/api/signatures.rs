//! Every signature scheme through real HTTP: valid, wrong secret, missing header, stale
//! timestamp (where one is signed), and rotated secrets.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::helpers::{
    AppOptions, GITHUB_SECRET, GITLAB_SECRET, PORT_BODY, PORT_SECRET, SENDER_TOKEN, TestApp,
    github_signature, hmac_sha256, json, now, port_headers, spawn_app_with,
};

fn rule(verify: &str) -> String {
    format!(
        "token_env = \"SENDER_TOKEN\"\n[verify]\n{verify}\n[[variables]]\nname = \"ACTION\"\njsonpath = \"$.action\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n"
    )
}

/// These tests send one body signed in several ways (each secret, each encoding), which the
/// replay memory rightly takes for one request: it is off here and tested on its own.
const SAME_BYTES: &str = "\nreject_replays = false";

async fn app_with_rule(verify: &str) -> TestApp {
    spawn_app_with(AppOptions {
        rules: vec![("signed.toml", rule(verify))],
        ..AppOptions::default()
    })
    .await
}

async fn send(app: &TestApp, headers: HeaderMap, body: &str) -> StatusCode {
    let response = app
        .client
        .post(format!("{}?token={SENDER_TOKEN}", app.invoke_url()))
        .headers(headers)
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        // Every signature failure gets the same answer, whatever the reason.
        assert_eq!(
            json(response).await,
            serde_json::json!({"message": "Signature verification failed.", "jobs": null})
        );
    }
    status
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    map
}

#[actix_web::test]
async fn port_scheme() {
    let app =
        app_with_rule("scheme = \"port\"\nsecret_env = \"PORT_SECRET\"\ntolerance_secs = 60").await;
    let t = now();
    assert_eq!(
        send(&app, port_headers(PORT_SECRET, t, PORT_BODY), PORT_BODY).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, port_headers("wrong", t, PORT_BODY), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    let mut missing = port_headers(PORT_SECRET, t, PORT_BODY);
    missing.remove("x-port-signature");
    assert_eq!(
        send(&app, missing, PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    let mut no_ts = port_headers(PORT_SECRET, t, PORT_BODY);
    no_ts.remove("x-port-timestamp");
    assert_eq!(send(&app, no_ts, PORT_BODY).await, StatusCode::UNAUTHORIZED);
    // Correctly signed, but 62 s old or 62 s in the future: outside the 60 s window (the
    // clock is read again per request, and a second may tick before it is verified).
    for stale in [now() - 62, now() + 62] {
        assert_eq!(
            send(&app, port_headers(PORT_SECRET, stale, PORT_BODY), PORT_BODY).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Port's execution agent: signed over the compact form, sent with Python's spacing.
    let compact = r#"{"action":"deploy_service","context":{"runId":"r_1"},"note":"a, b: c"}"#;
    let spaced = r#"{"action": "deploy_service", "context": {"runId": "r_1"}, "note": "a, b: c"}"#;
    assert_eq!(
        send(&app, port_headers(PORT_SECRET, t, compact), spaced).await,
        StatusCode::OK
    );
    // Whitespace inside strings is signed content: changing it breaks the signature.
    let tampered = r#"{"action": "deploy_service", "context": {"runId": "r_1"}, "note": "a,b: c"}"#;
    assert_eq!(
        send(&app, port_headers(PORT_SECRET, t, compact), tampered).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.jenkins.requests().len(), 2);
}

#[actix_web::test]
async fn port_scheme_with_rotated_secrets() {
    let app = app_with_rule(&format!(
        "scheme = \"port\"\nsecrets_env = [\"NEW_SECRET\", \"PORT_SECRET\"]{SAME_BYTES}"
    ))
    .await;
    let t = now();
    assert_eq!(
        send(&app, port_headers(PORT_SECRET, t, PORT_BODY), PORT_BODY).await,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &app,
            port_headers("rotated-new-secret", t, PORT_BODY),
            PORT_BODY
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &app,
            port_headers("retired-secret", t, PORT_BODY),
            PORT_BODY
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
}

fn sha1_hex(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[actix_web::test]
async fn port_sha1_scheme() {
    let app = app_with_rule(&format!(
        "scheme = \"port-sha1\"\nsecrets_env = [\"NEW_SECRET\", \"PORT_SECRET\"]{SAME_BYTES}"
    ))
    .await;
    // Hex in either case, with or without the prefix (each on its own body: one MAC, however
    // spelt, is one signature and is accepted once).
    let other = PORT_BODY.replace("1.4.2", "1.4.3");
    for (value, body) in [
        (sha1_hex(PORT_SECRET, PORT_BODY), PORT_BODY),
        (
            format!("sha1={}", sha1_hex(PORT_SECRET, &other).to_uppercase()),
            other.as_str(),
        ),
    ] {
        assert_eq!(
            send(&app, headers(&[("x-port-signature", value)]), body).await,
            StatusCode::OK
        );
    }
    let rotated = sha1_hex("rotated-new-secret", PORT_BODY);
    assert_eq!(
        send(&app, headers(&[("x-port-signature", rotated)]), PORT_BODY).await,
        StatusCode::OK
    );
    let wrong = sha1_hex("wrong", PORT_BODY);
    assert_eq!(
        send(&app, headers(&[("x-port-signature", wrong)]), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, HeaderMap::new(), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn hmac_scheme_with_timestamp_template() {
    let app = app_with_rule(
        "scheme = \"hmac\"\nheader = \"X-Signature\"\nalgorithm = \"sha256\"\ntimestamp_header = \"X-Timestamp\"\nsigned = \"{timestamp}:{body}\"\nsecrets_env = [\"NEW_SECRET\", \"PORT_SECRET\"]\ntolerance_secs = 30\nreject_replays = false",
    )
    .await;
    let sign = |secret: &str, ts: u64| {
        let ts_text = ts.to_string();
        let mac = hmac_sha256(secret, &[ts_text.as_bytes(), b":", PORT_BODY.as_bytes()]);
        headers(&[
            ("x-timestamp", ts_text),
            ("x-signature", STANDARD.encode(mac)),
        ])
    };
    let t = now();
    assert_eq!(
        send(&app, sign(PORT_SECRET, t), PORT_BODY).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, sign("rotated-new-secret", t), PORT_BODY).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, sign("wrong", t), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, sign(PORT_SECRET, t - 31), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    let mut missing = sign(PORT_SECRET, t);
    missing.remove("x-signature");
    assert_eq!(
        send(&app, missing, PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn github_scheme() {
    let app = app_with_rule(&format!(
        "scheme = \"github\"\nsecrets_env = [\"NEW_SECRET\", \"GITHUB_SECRET\"]{SAME_BYTES}"
    ))
    .await;
    let good = github_signature(GITHUB_SECRET, PORT_BODY);
    assert_eq!(
        send(&app, headers(&[("x-hub-signature-256", good)]), PORT_BODY).await,
        StatusCode::OK
    );
    let rotated = github_signature("rotated-new-secret", PORT_BODY);
    assert_eq!(
        send(
            &app,
            headers(&[("x-hub-signature-256", rotated)]),
            PORT_BODY
        )
        .await,
        StatusCode::OK
    );
    let sha1 = format!("sha1={}", sha1_hex(GITHUB_SECRET, PORT_BODY));
    assert_eq!(
        send(&app, headers(&[("x-hub-signature", sha1)]), PORT_BODY).await,
        StatusCode::OK
    );
    let wrong = github_signature("wrong", PORT_BODY);
    assert_eq!(
        send(&app, headers(&[("x-hub-signature-256", wrong)]), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, HeaderMap::new(), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn gitlab_scheme() {
    let app =
        app_with_rule("scheme = \"gitlab\"\nsecrets_env = [\"NEW_SECRET\", \"GITLAB_SECRET\"]")
            .await;
    for secret in [GITLAB_SECRET, "rotated-new-secret"] {
        assert_eq!(
            send(
                &app,
                headers(&[("x-gitlab-token", secret.to_owned())]),
                PORT_BODY
            )
            .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(
            &app,
            headers(&[("x-gitlab-token", "wrong".to_owned())]),
            PORT_BODY
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, HeaderMap::new(), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn none_scheme_accepts_unsigned_calls_only_because_it_says_so() {
    let app = app_with_rule("scheme = \"none\"").await;
    assert_eq!(
        send(&app, HeaderMap::new(), PORT_BODY).await,
        StatusCode::OK
    );
    assert_eq!(app.jenkins.requests().len(), 1);
}

#[actix_web::test]
async fn invariant_only_a_verified_signature_is_remembered() {
    let app = app_with_rule("scheme = \"port\"\nsecret_env = \"PORT_SECRET\"").await;
    let t = now();
    let captured = port_headers(PORT_SECRET, t, PORT_BODY);
    assert_eq!(
        send(&app, captured.clone(), PORT_BODY).await,
        StatusCode::OK
    );
    // The same bytes again: refused with the same answer as any signature failure.
    assert_eq!(
        send(&app, captured.clone(), PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
    // The sender re-signing (a new timestamp) is a new request.
    assert_eq!(
        send(&app, port_headers(PORT_SECRET, t - 1, PORT_BODY), PORT_BODY).await,
        StatusCode::OK
    );
    // A forged signature is never remembered, so it cannot block the genuine one.
    let body = PORT_BODY.replace("r_QOz6WoOB1Q2lmhZZ", "r_next");
    let genuine = port_headers(PORT_SECRET, t, &body);
    let mut forged = genuine.clone();
    forged.insert(
        "x-port-timestamp",
        (t + 1).to_string().parse().expect("value"),
    );
    assert_eq!(send(&app, forged, &body).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, genuine, &body).await, StatusCode::OK);
    assert_eq!(app.jenkins.requests().len(), 3);

    // The hmac scheme with a timestamp header is protected too.
    let app = app_with_rule(
        "scheme = \"hmac\"\nheader = \"X-Signature\"\nalgorithm = \"sha256\"\ntimestamp_header = \"X-Timestamp\"\nsigned = \"{timestamp}.{body}\"\nsecret_env = \"PORT_SECRET\"",
    )
    .await;
    let ts = t.to_string();
    let mac = hex::encode(hmac_sha256(
        PORT_SECRET,
        &[ts.as_bytes(), b".", PORT_BODY.as_bytes()],
    ));
    let signed = headers(&[("x-timestamp", ts.clone()), ("x-signature", mac)]);
    assert_eq!(send(&app, signed.clone(), PORT_BODY).await, StatusCode::OK);
    assert_eq!(
        send(&app, signed, PORT_BODY).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn replay_protection_can_be_turned_off_per_rule() {
    let app =
        app_with_rule("scheme = \"port\"\nsecret_env = \"PORT_SECRET\"\nreject_replays = false")
            .await;
    let captured = port_headers(PORT_SECRET, now(), PORT_BODY);
    for _ in 0..2 {
        assert_eq!(
            send(&app, captured.clone(), PORT_BODY).await,
            StatusCode::OK
        );
    }
}
