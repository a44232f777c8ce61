//! Tests for the signature schemes, including Port's published test vectors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use std::collections::BTreeSet;

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    map
}

fn section(scheme: SchemeName) -> VerifySection {
    VerifySection {
        scheme,
        secret: None,
        secret_env: None,
        secrets_env: None,
        secret_file: None,
        tolerance_secs: None,
        header: None,
        algorithm: None,
        timestamp_header: None,
        signed: None,
        reject_replays: None,
        replay_window_secs: None,
    }
}

fn check(section: &VerifySection, secrets: &[&str]) -> SignatureCheck {
    SignatureCheck::new(
        Scheme::compile(section).expect("valid scheme"),
        secrets.iter().map(|s| Secret::new(*s)).collect(),
    )
}

const PORT_BODY: &str = r#"{"context":{"runId":"r_abc"},"payload":{"properties":{"env":"prod"}}}"#;

/// The port-agent test fixture's run message, compact as the agent signs it (825 bytes).
const AGENT_MESSAGE: &str = r#"{"action":"Create","resourceType":"run","status":"TRIGGERED","trigger":{"by":{"orgId":"test_org","userId":"test_user"},"origin":"UI","at":"2022-11-16T16:31:32.447Z"},"context":{"entity":null,"blueprint":"Service","runId":"r_jE5FhDURh4Uen2Qr"},"payload":{"entity":null,"action":{"id":"action_34aweFQtayw7SCVb","identifier":"Create","title":"Create","icon":"DefaultBlueprint","userInputs":{"properties":{"foo":{"type":"string","description":"Description"},"bar":{"type":"number","description":"Description"}},"required":[]},"invocationMethod":{"type":"WEBHOOK","agent":true,"url":"http://localhost:80/api/test"},"trigger":"CREATE","description":"","blueprint":"Service","createdAt":"2022-11-15T09:58:52.863Z","createdBy":"test_user","updatedAt":"2022-11-15T09:58:52.863Z","updatedBy":"test_user"},"properties":{}},"headers":{}}"#;

#[test]
fn port_accepts_the_published_test_vector() {
    let c = check(&section(SchemeName::Port), &["my-client-secret"]);
    let h = headers(&[
        ("X-Port-Timestamp", "1700000000"),
        (
            "X-Port-Signature",
            "v1,pUDia5lAeUeEk84mAV+M4DFCy3jI8SRvROZbs2AqbP8=",
        ),
    ]);
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), at(1_700_000_000)),
        Ok(())
    );
}

#[test]
fn port_accepts_the_agent_fixture_vector() {
    assert_eq!(AGENT_MESSAGE.len(), 825);
    let c = check(&section(SchemeName::Port), &["test"]);
    let h = headers(&[
        ("x-port-timestamp", "1713277889"),
        (
            "x-port-signature",
            "v1,uuBMfcio3oscejO5bOtL97K1AmiZjxDvou7sChjMNeE=",
        ),
    ]);
    assert_eq!(
        c.verify(&h, AGENT_MESSAGE.as_bytes(), at(1_713_277_900)),
        Ok(())
    );
}

/// Python's `json.dumps` default separators, as the execution agent sends the body.
fn spaced(compact: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in compact.chars() {
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' || c == ':' {
            out.push(' ');
        }
    }
    out
}

#[test]
fn port_accepts_a_spaced_body_signed_over_its_compact_form() {
    let wire = spaced(AGENT_MESSAGE);
    assert!(wire.contains("\"action\": \"Create\", "));
    // Strings with separators inside must survive compaction untouched.
    assert!(wire.contains("\"2022-11-16T16:31:32.447Z\""));
    let c = check(&section(SchemeName::Port), &["test"]);
    let h = headers(&[
        ("x-port-timestamp", "1713277889"),
        (
            "x-port-signature",
            "v1,uuBMfcio3oscejO5bOtL97K1AmiZjxDvou7sChjMNeE=",
        ),
    ]);
    assert_eq!(c.verify(&h, wire.as_bytes(), at(1_713_277_889)), Ok(()));
}

#[test]
fn compaction_keeps_whitespace_inside_strings() {
    let body = br#"{ "a" : "x y\" z" , "b": [1, 2] }"#;
    assert_eq!(
        compact_json(body).as_deref(),
        Some(&br#"{"a":"x y\" z","b":[1,2]}"#[..])
    );
    assert_eq!(compact_json(b"{\"a\":1}"), None);
}

#[test]
fn compaction_removes_whitespace_only_between_the_tokens_of_valid_json() {
    // Issue 10, item 3: inside a literal or a number whitespace changes the meaning, and such
    // bytes are not JSON at all, so nothing is compacted and they can never verify.
    for body in [
        &br#"{"a": tr ue}"#[..],
        br#"{"a": 1 2}"#,
        br#"{"a": n ull, "b": 1}"#,
        br#"[1 2]"#,
        br#"{"a": -1 .5}"#,
        br#"{"a": 1} trailing"#,
        b"{\"a\": \"unterminated}",
    ] {
        assert_eq!(
            compact_json(body),
            None,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        compact_json(b" {\n\t\"a\" : [ true , null , -1.5e3 ] }\r\n").as_deref(),
        Some(&br#"{"a":[true,null,-1.5e3]}"#[..])
    );
}

#[test]
fn a_spaced_literal_never_verifies_against_the_compact_signature() {
    let c = check(&section(SchemeName::Port), &["s"]);
    let signed = br#"{"deploy":true,"replicas":12}"#;
    let mac = compute_mac(HmacAlgorithm::Sha256, b"s", &[b"1000.", signed]);
    let value = format!("v1,{}", STANDARD.encode(&mac));
    let h = headers(&[("x-port-timestamp", "1000"), ("x-port-signature", &value)]);
    assert!(
        c.verify(&h, br#"{"deploy": true, "replicas": 12}"#, at(1000))
            .is_ok()
    );
    for forged in [
        &br#"{"deploy":tr ue,"replicas":12}"#[..],
        br#"{"deploy":true,"replicas":1 2}"#,
    ] {
        assert_eq!(
            c.verify(&h, forged, at(1000)),
            Err(SignatureError::Mismatch),
            "{}",
            String::from_utf8_lossy(forged)
        );
    }
}

#[test]
fn a_millisecond_timestamp_is_refused_with_a_reason_saying_so() {
    let c = check(&section(SchemeName::Port), &["s"]);
    let body = b"{}";
    let mac = compute_mac(HmacAlgorithm::Sha256, b"s", &[b"1700000000000.", body]);
    let value = format!("v1,{}", STANDARD.encode(&mac));
    let h = headers(&[
        ("x-port-timestamp", "1700000000000"),
        ("x-port-signature", &value),
    ]);
    let error = c
        .verify(&h, body, at(1_700_000_000))
        .expect_err("milliseconds are outside any window");
    assert_eq!(
        error,
        SignatureError::MillisecondTimestamp("x-port-timestamp".into())
    );
    assert!(error.to_string().contains("milliseconds"), "{error}");
    // An ordinary stale timestamp keeps its own reason.
    let h = headers(&[
        ("x-port-timestamp", "1699000000"),
        ("x-port-signature", &value),
    ]);
    assert_eq!(
        c.verify(&h, body, at(1_700_000_000)),
        Err(SignatureError::StaleTimestamp(300))
    );
}

#[test]
fn one_mac_however_spelt_is_one_signature() {
    // Issue 10, item 2: the replay memory is keyed on the decoded MAC, so re-encoding the
    // header never makes a captured request new.
    let mut s = section(SchemeName::Hmac);
    s.header = Some("X-Signature".into());
    let c = check(&s, &["k"]);
    let mac = compute_mac(HmacAlgorithm::Sha256, b"k", &[b"body"]);
    let digests: BTreeSet<[u8; 16]> = [
        hex::encode(&mac),
        hex::encode_upper(&mac),
        format!("sha256={}", hex::encode(&mac)),
        format!("SHA256={}", hex::encode_upper(&mac)),
        STANDARD.encode(&mac),
        STANDARD_NO_PAD.encode(&mac),
    ]
    .iter()
    .map(|value| {
        let signed = c
            .verify_signed(&headers(&[("x-signature", value)]), b"body", at(1))
            .expect("verifies")
            .expect("a MAC");
        signed.digest(c.scheme())
    })
    .collect();
    assert_eq!(digests.len(), 1);
}

#[test]
fn port_rejects_wrong_secret_missing_headers_and_stale_timestamps() {
    let c = check(&section(SchemeName::Port), &["other-secret"]);
    let good = [
        ("X-Port-Timestamp", "1700000000"),
        (
            "X-Port-Signature",
            "v1,pUDia5lAeUeEk84mAV+M4DFCy3jI8SRvROZbs2AqbP8=",
        ),
    ];
    let now = at(1_700_000_000);
    assert_eq!(
        c.verify(&headers(&good), PORT_BODY.as_bytes(), now),
        Err(SignatureError::Mismatch)
    );
    let c = check(&section(SchemeName::Port), &["my-client-secret"]);
    assert_eq!(
        c.verify(&headers(&good[..1]), PORT_BODY.as_bytes(), now),
        Err(SignatureError::MissingHeader("x-port-signature".into()))
    );
    assert_eq!(
        c.verify(&headers(&good[1..]), PORT_BODY.as_bytes(), now),
        Err(SignatureError::MissingHeader("x-port-timestamp".into()))
    );
    // Just inside and just outside the default 300 s window, both directions.
    for (offset_now, expected) in [
        (1_700_000_300, Ok(())),
        (1_699_999_700, Ok(())),
        (1_700_000_301, Err(SignatureError::StaleTimestamp(300))),
        (1_699_999_699, Err(SignatureError::StaleTimestamp(300))),
    ] {
        assert_eq!(
            c.verify(&headers(&good), PORT_BODY.as_bytes(), at(offset_now)),
            expected,
            "now = {offset_now}"
        );
    }
    // A signature without the `v1,` version is malformed, not merely wrong.
    let h = headers(&[
        ("X-Port-Timestamp", "1700000000"),
        (
            "X-Port-Signature",
            "pUDia5lAeUeEk84mAV+M4DFCy3jI8SRvROZbs2AqbP8=",
        ),
    ]);
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), now),
        Err(SignatureError::Malformed("x-port-signature".into()))
    );
    let h = headers(&[
        ("X-Port-Timestamp", "17e8"),
        (
            "X-Port-Signature",
            "v1,pUDia5lAeUeEk84mAV+M4DFCy3jI8SRvROZbs2AqbP8=",
        ),
    ]);
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), now),
        Err(SignatureError::Malformed("x-port-timestamp".into()))
    );
}

#[test]
fn port_window_is_configurable() {
    let mut s = section(SchemeName::Port);
    s.tolerance_secs = Some(10);
    let c = check(&s, &["my-client-secret"]);
    let h = headers(&[
        ("X-Port-Timestamp", "1700000000"),
        (
            "X-Port-Signature",
            "v1,pUDia5lAeUeEk84mAV+M4DFCy3jI8SRvROZbs2AqbP8=",
        ),
    ]);
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), at(1_700_000_010)),
        Ok(())
    );
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), at(1_700_000_011)),
        Err(SignatureError::StaleTimestamp(10))
    );
}

#[test]
fn invariant_every_configured_secret_is_tried() {
    let c = check(
        &section(SchemeName::Port),
        &["new-secret", "my-client-secret"],
    );
    let h = headers(&[
        ("X-Port-Timestamp", "1700000000"),
        (
            "X-Port-Signature",
            "v1,pUDia5lAeUeEk84mAV+M4DFCy3jI8SRvROZbs2AqbP8=",
        ),
    ]);
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), at(1_700_000_000)),
        Ok(())
    );
    let signed_with_new = c.sign(PORT_BODY.as_bytes(), at(1_700_000_000));
    let h = headers(
        &signed_with_new
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        c.verify(&h, PORT_BODY.as_bytes(), at(1_700_000_000)),
        Ok(())
    );
    let old_only = check(&section(SchemeName::Port), &["my-client-secret"]);
    assert_eq!(
        old_only.verify(&h, PORT_BODY.as_bytes(), at(1_700_000_000)),
        Err(SignatureError::Mismatch)
    );
}

/// GWT's HMACVerifierTest vectors: body `whatever`, secret `this is secret`.
const GWT_BODY: &[u8] = b"whatever";

fn hmac_section(algorithm: HmacAlgorithm) -> VerifySection {
    let mut s = section(SchemeName::Hmac);
    s.header = Some("X-Signature".into());
    s.algorithm = Some(algorithm);
    s
}

#[test]
fn hmac_accepts_hex_in_any_case_with_or_without_prefix_and_base64() {
    let c = check(&hmac_section(HmacAlgorithm::Sha256), &["this is secret"]);
    let mac = compute_mac(HmacAlgorithm::Sha256, b"this is secret", &[GWT_BODY]);
    // The upper-case hex of this MAC is GWT's documented base64-of-hex vector.
    assert_eq!(
        STANDARD.encode(hex::encode_upper(&mac)),
        "NzEyMTJGODU0RTIzQzU3NUQ3QjFBQUQ0QzM0NjcwRkYwOEVCRjcyMUMzODM3NjY4NjEzRTk2Qzg3RjZFRThCMg=="
    );
    for value in [
        hex::encode(&mac),
        hex::encode_upper(&mac),
        format!("sha256={}", hex::encode(&mac)),
        format!("SHA256={}", hex::encode(&mac)),
        STANDARD.encode(&mac),
        STANDARD_NO_PAD.encode(&mac),
    ] {
        let h = headers(&[("x-signature", &value)]);
        assert_eq!(c.verify(&h, GWT_BODY, SystemTime::now()), Ok(()), "{value}");
    }
    let mut wrong = hex::encode(&mac);
    wrong.replace_range(0..1, if wrong.starts_with('7') { "8" } else { "7" });
    let h = headers(&[("x-signature", &wrong)]);
    assert_eq!(
        c.verify(&h, GWT_BODY, SystemTime::now()),
        Err(SignatureError::Mismatch)
    );
    let h = headers(&[("x-signature", "sha1=abc")]);
    assert_eq!(
        c.verify(&h, GWT_BODY, SystemTime::now()),
        Err(SignatureError::Malformed("x-signature".into()))
    );
}

#[test]
fn hmac_supports_sha1_and_sha512() {
    for (alg, len) in [(HmacAlgorithm::Sha1, 20), (HmacAlgorithm::Sha512, 64)] {
        let c = check(&hmac_section(alg), &["k"]);
        let mac = compute_mac(alg, b"k", &[b"body"]);
        assert_eq!(mac.len(), len);
        let h = headers(&[("x-signature", &hex::encode(&mac))]);
        assert_eq!(c.verify(&h, b"body", SystemTime::now()), Ok(()));
        assert_eq!(
            c.verify(&h, b"bodY", SystemTime::now()),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn hmac_with_timestamp_signs_the_template_and_enforces_the_window() {
    let mut s = hmac_section(HmacAlgorithm::Sha256);
    s.timestamp_header = Some("X-Timestamp".into());
    s.signed = Some("v0:{timestamp}:{body}".into());
    s.tolerance_secs = Some(60);
    let c = check(&s, &["k"]);
    let mac = compute_mac(HmacAlgorithm::Sha256, b"k", &[b"v0:1000:body"]);
    let h = headers(&[("x-signature", &hex::encode(&mac)), ("x-timestamp", "1000")]);
    assert_eq!(c.verify(&h, b"body", at(1_030)), Ok(()));
    assert_eq!(
        c.verify(&h, b"body", at(1_061)),
        Err(SignatureError::StaleTimestamp(60))
    );
    let h = headers(&[("x-signature", &hex::encode(&mac))]);
    assert_eq!(
        c.verify(&h, b"body", at(1_000)),
        Err(SignatureError::MissingHeader("x-timestamp".into()))
    );
    // `sign` produces headers that verify.
    let signed = c.sign(b"body", at(5_000));
    let h = headers(
        &signed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(c.verify(&h, b"body", at(5_000)), Ok(()));
}

#[test]
fn hmac_scheme_compilation_reports_every_problem() {
    let mut s = section(SchemeName::Hmac);
    s.signed = Some("{timestamp}.{nope}".into());
    let problems = Scheme::compile(&s).expect_err("invalid");
    let fields: Vec<&str> = problems.iter().map(|(f, _)| *f).collect();
    assert_eq!(fields, vec!["header", "signed"]);

    let mut s = section(SchemeName::Hmac);
    s.header = Some("X-Sig".into());
    s.signed = Some("{timestamp}.{body}".into());
    let problems = Scheme::compile(&s).expect_err("invalid");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].1.contains("timestamp_header"));

    let mut s = section(SchemeName::Github);
    s.header = Some("X-Sig".into());
    s.tolerance_secs = Some(5);
    let fields: Vec<&str> = Scheme::compile(&s)
        .expect_err("invalid")
        .iter()
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(fields, vec!["header", "tolerance_secs"]);
}

#[test]
fn github_prefers_sha256_and_falls_back_to_sha1() {
    let c = check(&section(SchemeName::Github), &["gh-secret"]);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sha256 = format!(
        "sha256={}",
        hex::encode(compute_mac(HmacAlgorithm::Sha256, b"gh-secret", &[body]))
    );
    let sha1 = format!(
        "sha1={}",
        hex::encode(compute_mac(HmacAlgorithm::Sha1, b"gh-secret", &[body]))
    );
    let now = SystemTime::now();
    assert_eq!(
        c.verify(&headers(&[("X-Hub-Signature-256", &sha256)]), body, now),
        Ok(())
    );
    assert_eq!(
        c.verify(&headers(&[("X-Hub-Signature", &sha1)]), body, now),
        Ok(())
    );
    // When both are sent, SHA-256 decides: a broken SHA-256 is not rescued by SHA-1.
    let h = headers(&[
        ("X-Hub-Signature-256", "sha256=00"),
        ("X-Hub-Signature", &sha1),
    ]);
    assert_eq!(
        c.verify(&h, body, now),
        Err(SignatureError::Malformed("x-hub-signature-256".into()))
    );
    let unprefixed = sha256.trim_start_matches("sha256=").to_owned();
    assert_eq!(
        c.verify(&headers(&[("X-Hub-Signature-256", &unprefixed)]), body, now),
        Err(SignatureError::Malformed("x-hub-signature-256".into()))
    );
    assert_eq!(
        c.verify(&headers(&[]), body, now),
        Err(SignatureError::MissingHeader("x-hub-signature-256".into()))
    );
    let other = check(&section(SchemeName::Github), &["other"]);
    assert_eq!(
        other.verify(&headers(&[("X-Hub-Signature-256", &sha256)]), body, now),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn gitlab_token_must_equal_one_of_the_secrets() {
    let c = check(&section(SchemeName::Gitlab), &["new", "old"]);
    let now = SystemTime::now();
    assert_eq!(
        c.verify(&headers(&[("X-Gitlab-Token", "old")]), b"", now),
        Ok(())
    );
    assert_eq!(
        c.verify(&headers(&[("X-Gitlab-Token", "new")]), b"", now),
        Ok(())
    );
    assert_eq!(
        c.verify(&headers(&[("X-Gitlab-Token", "ne")]), b"", now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        c.verify(&headers(&[]), b"", now),
        Err(SignatureError::MissingHeader("x-gitlab-token".into()))
    );
}

#[test]
fn port_sha1_accepts_hex_and_base64() {
    let c = check(&section(SchemeName::PortSha1), &["s"]);
    let mac = compute_mac(HmacAlgorithm::Sha1, b"s", &[b"{}"]);
    let now = SystemTime::now();
    for value in [
        hex::encode(&mac),
        format!("sha1={}", hex::encode_upper(&mac)),
        STANDARD.encode(&mac),
    ] {
        assert_eq!(
            c.verify(&headers(&[("X-Port-Signature", &value)]), b"{}", now),
            Ok(()),
            "{value}"
        );
    }
}

#[test]
fn repeated_signature_headers_are_refused() {
    let c = check(&section(SchemeName::PortSha1), &["s"]);
    let mac = hex::encode(compute_mac(HmacAlgorithm::Sha1, b"s", &[b"{}"]));
    let h = headers(&[("X-Port-Signature", "junk"), ("X-Port-Signature", &mac)]);
    assert_eq!(
        c.verify(&h, b"{}", SystemTime::now()),
        Err(SignatureError::RepeatedHeader("x-port-signature".into()))
    );
}

#[test]
fn errors_never_contain_header_values() {
    let c = check(&section(SchemeName::Github), &["gh-secret"]);
    let h = headers(&[("X-Hub-Signature-256", "sha256=deadbeefcafe")]);
    let err = c
        .verify(&h, b"x", SystemTime::now())
        .expect_err("malformed");
    assert!(!err.to_string().contains("deadbeef"), "{err}");
}

proptest! {
    #[test]
    fn a_signature_verifies_only_with_the_right_secret_and_bytes(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        other in proptest::collection::vec(any::<u8>(), 1..64),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut hmac = section(SchemeName::Hmac);
        hmac.header = Some("X-Signature".to_owned());
        hmac.algorithm = Some(HmacAlgorithm::Sha512);
        hmac.timestamp_header = Some("X-Timestamp".to_owned());
        hmac.signed = Some("{timestamp}:{body}".to_owned());
        let sections = [
            section(SchemeName::Github),
            section(SchemeName::Port),
            section(SchemeName::PortSha1),
            hmac,
        ];
        for section in &sections {
            let scheme = Scheme::compile(section).expect("valid");
            let good = SignatureCheck::new(scheme.clone(), vec![Secret::new(secret.clone())]);
            let now = SystemTime::now();
            let signed = good.sign(&body, now);
            let h = headers(&signed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
            prop_assert_eq!(good.verify(&h, &body, now), Ok(()), "{}", scheme.name());
            if other != secret {
                let bad = SignatureCheck::new(scheme.clone(), vec![Secret::new(other.clone())]);
                prop_assert_eq!(bad.verify(&h, &body, now), Err(SignatureError::Mismatch));
            }
            if !body.is_empty() {
                let mut tampered = body.clone();
                let i = flip.index(tampered.len());
                tampered[i] ^= 1 << bit;
                prop_assert_eq!(
                    good.verify(&h, &tampered, now),
                    Err(SignatureError::Mismatch),
                    "{}", scheme.name()
                );
            }
        }
    }
}

#[test]
fn githubs_sha1_and_sha256_signatures_of_one_body_are_one_signature() {
    // GitHub sends both headers; dropping the SHA-256 one must not make a captured delivery new.
    let c = check(&section(SchemeName::Github), &["gh"]);
    let body = b"{\"ref\":\"refs/heads/main\"}";
    let sha256 = format!(
        "sha256={}",
        hex::encode(compute_mac(HmacAlgorithm::Sha256, b"gh", &[body]))
    );
    let sha1 = format!(
        "sha1={}",
        hex::encode(compute_mac(HmacAlgorithm::Sha1, b"gh", &[body]))
    );
    let digest = |pairs: &[(&str, &str)]| {
        c.verify_signed(&headers(pairs), body, at(1))
            .expect("verifies")
            .expect("signed")
            .digest(c.scheme())
    };
    let both = digest(&[("x-hub-signature-256", &sha256), ("x-hub-signature", &sha1)]);
    assert_eq!(both, digest(&[("x-hub-signature", &sha1)]));
    assert_eq!(both, digest(&[("x-hub-signature-256", &sha256)]));
}

#[test]
fn a_spaced_copy_and_the_compact_original_are_one_port_signature() {
    let c = check(&section(SchemeName::Port), &["s"]);
    let compact = br#"{"a":[1,2],"b":"x y"}"#;
    let mac = compute_mac(HmacAlgorithm::Sha256, b"s", &[b"1000.", compact]);
    let value = format!("v1,{}", STANDARD.encode(&mac));
    let h = headers(&[("x-port-timestamp", "1000"), ("x-port-signature", &value)]);
    let digest = |body: &[u8]| {
        c.verify_signed(&h, body, at(1000))
            .expect("verifies")
            .expect("signed")
            .digest(c.scheme())
    };
    assert_eq!(digest(compact), digest(br#"{"a": [1, 2], "b": "x y"}"#));
    assert_eq!(
        digest(compact),
        digest(b"{ \"a\" :[ 1 ,2 ] ,\"b\":\"x y\" }")
    );
}

#[test]
fn a_timestamp_with_a_leading_zero_is_malformed() {
    // With `{body}{timestamp}`, `amount=10` + `01700000000` signs the bytes of `amount=100` +
    // `1700000000`; only canonical decimals are accepted, so the digit cannot move.
    let mut s = section(SchemeName::Hmac);
    s.header = Some("X-Signature".into());
    s.timestamp_header = Some("X-Timestamp".into());
    s.signed = Some("{body}{timestamp}".into());
    let c = check(&s, &["k"]);
    let mac = hex::encode(compute_mac(
        HmacAlgorithm::Sha256,
        b"k",
        &[b"amount=1001700000000"],
    ));
    let genuine = headers(&[("x-signature", &mac), ("x-timestamp", "1700000000")]);
    assert_eq!(c.verify(&genuine, b"amount=100", at(1_700_000_000)), Ok(()));
    let shifted = headers(&[("x-signature", &mac), ("x-timestamp", "01700000000")]);
    assert_eq!(
        c.verify(&shifted, b"amount=10", at(1_700_000_000)),
        Err(SignatureError::Malformed("x-timestamp".into()))
    );
}
