//! Tests of the Notification event model against the plugin's payloads
//! (reference `jenkins-events.md` §1.5–1.6) and against bodies the plugin never sends.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Build, Event, EventError, Phase, Scm, TestSummary};

/// `jenkins-events.md` §1.6, QUEUED.
pub(crate) const QUEUED_128: &str = r#"{"name":"payments-deploy","display_name":"payments-deploy","url":"job/payments-deploy/",
 "build":{"full_url":"https://jenkins.example.com/job/payments-deploy/128/","number":128,"queue_id":5123,
  "timestamp":1768211987655,"duration":0,"phase":"QUEUED","url":"job/payments-deploy/128/",
  "scm":{"changes":[],"culprits":[]},"parameters":{"TARGET_ENV":"production"},"log":"","artifacts":{}}}"#;

/// `jenkins-events.md` §1.6: "STARTED: identical to QUEUED except `"phase":"STARTED"` and
/// `"timestamp":1768212000000`".
pub(crate) const STARTED_128: &str = r#"{"name":"payments-deploy","display_name":"payments-deploy","url":"job/payments-deploy/",
 "build":{"full_url":"https://jenkins.example.com/job/payments-deploy/128/","number":128,"queue_id":5123,
  "timestamp":1768212000000,"duration":0,"phase":"STARTED","url":"job/payments-deploy/128/",
  "scm":{"changes":[],"culprits":[]},"parameters":{"TARGET_ENV":"production"},"log":"","artifacts":{}}}"#;

/// `jenkins-events.md` §1.6, COMPLETED.
pub(crate) const COMPLETED_128: &str = r#"{"name":"payments-deploy","display_name":"payments-deploy","url":"job/payments-deploy/",
 "build":{"full_url":"https://jenkins.example.com/job/payments-deploy/128/","number":128,"queue_id":5123,
  "timestamp":1768212095400,"duration":95400,"phase":"COMPLETED","status":"SUCCESS",
  "url":"job/payments-deploy/128/",
  "scm":{"url":"https://github.com/acme/payments-api.git","branch":"origin/main",
         "commit":"9fceb02d0ae598e95dc970b74767f19372d61af8",
         "changes":["src/main/java/acme/Pay.java"],"culprits":["jdoe"]},
  "parameters":{"TARGET_ENV":"production"},"log":"",
  "test_summary":{"total":412,"failed":0,"passed":410,"skipped":2,"failed_tests":[]},
  "artifacts":{"payments.jar":{"archive":"https://jenkins.example.com/job/payments-deploy/128/artifact/target/payments.jar"}}}}"#;

/// `jenkins-events.md` §1.6, FINALIZED, failed run.
pub(crate) const FINALIZED_129: &str = r#"{"name":"payments-deploy","display_name":"payments-deploy","url":"job/payments-deploy/",
 "build":{"full_url":"https://jenkins.example.com/job/payments-deploy/129/","number":129,"queue_id":5131,
  "timestamp":1768212097270,"duration":95400,"phase":"FINALIZED","status":"FAILURE",
  "url":"job/payments-deploy/129/",
  "scm":{"url":"git@github.com:acme/payments-api.git","branch":"origin/main",
         "commit":"1e9c3a7f5b0d4c2e8a6f9b3d7c1e5a0f2b4d6c8e","changes":[],"culprits":[]},
  "log":"...\nERROR: helm upgrade failed\nFinished: FAILURE\n",
  "test_summary":{"total":412,"failed":3,"passed":407,"skipped":2,"failed_tests":["acme.PayTest.refund"]},
  "artifacts":{}}}"#;

pub(crate) fn parse(body: &str) -> Event {
    Event::parse(body.as_bytes()).unwrap_or_else(|error| panic!("{error}: {body}"))
}

fn queued_128() -> Event {
    Event {
        name: Some("payments-deploy".into()),
        display_name: Some("payments-deploy".into()),
        url: "job/payments-deploy/".into(),
        build: Build {
            full_url: Some("https://jenkins.example.com/job/payments-deploy/128/".into()),
            number: 128,
            queue_id: Some(5123),
            timestamp: Some(1768211987655),
            duration: Some(0),
            phase: Phase::Queued,
            status: None,
            url: Some("job/payments-deploy/128/".into()),
            scm: Scm::default(),
            parameters: vec![("TARGET_ENV".into(), "production".into())],
            test_summary: None,
            notes: None,
        },
    }
}

#[test]
fn the_queued_example_is_read_field_by_field() {
    assert_eq!(parse(QUEUED_128), queued_128());
}

#[test]
fn the_started_example_differs_from_queued_only_in_phase_and_timestamp() {
    let mut expected = queued_128();
    expected.build.phase = Phase::Started;
    expected.build.timestamp = Some(1768212000000);
    assert_eq!(parse(STARTED_128), expected);
}

#[test]
fn the_completed_example_carries_result_scm_and_tests() {
    let event = parse(COMPLETED_128);
    assert_eq!(event.build.phase, Phase::Completed);
    assert_eq!(event.build.status.as_deref(), Some("SUCCESS"));
    assert_eq!(event.build.duration, Some(95400));
    assert_eq!(
        event.build.scm,
        Scm {
            url: Some("https://github.com/acme/payments-api.git".into()),
            branch: Some("origin/main".into()),
            commit: Some("9fceb02d0ae598e95dc970b74767f19372d61af8".into()),
            changes: vec!["src/main/java/acme/Pay.java".into()],
            culprits: vec!["jdoe".into()],
        }
    );
    assert_eq!(
        event.build.test_summary,
        Some(TestSummary {
            total: Some(412),
            failed: Some(0),
            passed: Some(410),
            skipped: Some(2),
        })
    );
}

#[test]
fn the_finalized_example_has_no_parameters_and_a_scp_scm_url() {
    let event = parse(FINALIZED_129);
    assert_eq!(event.build.phase, Phase::Finalized);
    assert_eq!(event.build.status.as_deref(), Some("FAILURE"));
    assert_eq!(event.build.number, 129);
    assert_eq!(event.build.queue_id, Some(5131));
    assert_eq!(
        event.build.scm.url.as_deref(),
        Some("git@github.com:acme/payments-api.git")
    );
    assert!(event.build.parameters.is_empty());
    assert_eq!(
        event.build.test_summary.as_ref().and_then(|t| t.failed),
        Some(3)
    );
    assert_eq!(event.build_key(), "job/payments-deploy/129/");
    assert_eq!(event.job_name(), "payments-deploy");
}

/// The smallest body the endpoint accepts: the three required fields.
fn minimal(number: Value, phase: Value) -> String {
    json!({"url": "job/x/", "build": {"number": number, "phase": phase}}).to_string()
}

#[track_caller]
fn check_error(body: &str, expected: &str) {
    match Event::parse(body.as_bytes()) {
        Ok(event) => panic!("accepted {body}: {event:?}"),
        Err(error) => assert_eq!(error.to_string(), expected, "for {body}"),
    }
}

#[test]
fn malformed_bodies_are_refused_with_a_reason_naming_the_field() {
    let phases = "`build.phase` must be one of QUEUED, STARTED, COMPLETED, FINALIZED, NONE.";
    let number = "`build.number` must be a non-negative integer.";
    check_error("", "Body is not JSON: error at line 1, column 0.");
    check_error("   ", "Body is not JSON: error at line 1, column 3.");
    check_error("{", "Body is not JSON: error at line 1, column 1.");
    check_error(
        "{\"url\":\"job/x/\",\n\"build\":{,}}",
        "Body is not JSON: error at line 2, column 10.",
    );
    check_error(
        "{'url':'x'}",
        "Body is not JSON: error at line 1, column 2.",
    );
    check_error(
        r#"{"url":"job/x/","build":{"number":1,"phase":"QUEUED"}} trailing"#,
        "Body is not JSON: error at line 1, column 56.",
    );
    check_error(
        "<job><url>job/x/</url></job>",
        "Body is not JSON: error at line 1, column 1.",
    );
    assert_eq!(
        Event::parse(b"{\"url\":\"job/\xff/\"}").map_err(|e| e.to_string()),
        Err("Body is not JSON: error at line 1, column 13.".to_owned()),
        "bytes that are not UTF-8"
    );
    check_error("[]", "The body must be a JSON object.");
    check_error("null", "The body must be a JSON object.");
    check_error("\"job/x/\"", "The body must be a JSON object.");
    check_error("128", "The body must be a JSON object.");
    check_error("{}", "Missing `url`.");
    check_error(r#"{"url":null,"build":{}}"#, "Missing `url`.");
    check_error(r#"{"url":7,"build":{}}"#, "`url` must be a string.");
    check_error(r#"{"url":["job/x/"]}"#, "`url` must be a string.");
    check_error(r#"{"url":"","build":{}}"#, "`url` must not be empty.");
    check_error(r#"{"url":"job/x/"}"#, "Missing `build`.");
    check_error(r#"{"url":"job/x/","build":null}"#, "Missing `build`.");
    check_error(
        r#"{"url":"job/x/","build":[]}"#,
        "`build` must be an object.",
    );
    check_error(
        r#"{"url":"job/x/","build":"128"}"#,
        "`build` must be an object.",
    );
    check_error(
        r#"{"url":"job/x/","build":{"phase":"QUEUED"}}"#,
        "Missing `build.number`.",
    );
    check_error(
        &minimal(Value::Null, json!("QUEUED")),
        "Missing `build.number`.",
    );
    check_error(&minimal(json!(-1), json!("QUEUED")), number);
    check_error(&minimal(json!(1.5), json!("QUEUED")), number);
    check_error(&minimal(json!(128.0), json!("QUEUED")), number);
    check_error(&minimal(json!("128"), json!("QUEUED")), number);
    check_error(&minimal(json!(true), json!("QUEUED")), number);
    check_error(
        r#"{"url":"job/x/","build":{"number":18446744073709551616,"phase":"QUEUED"}}"#,
        number,
    );
    check_error(
        r#"{"url":"job/x/","build":{"number":1}}"#,
        "Missing `build.phase`.",
    );
    check_error(&minimal(json!(1), Value::Null), "Missing `build.phase`.");
    check_error(&minimal(json!(1), json!("queued")), phases);
    check_error(&minimal(json!(1), json!("Started")), phases);
    check_error(&minimal(json!(1), json!(" QUEUED")), phases);
    check_error(&minimal(json!(1), json!("DELETED")), phases);
    check_error(&minimal(json!(1), json!("")), phases);
    check_error(&minimal(json!(1), json!(2)), phases);
    check_error(&minimal(json!(1), json!(["QUEUED"])), phases);
}

#[test]
fn reasons_never_quote_the_body() {
    let secret = "s3cr3t-token-value";
    for body in [
        format!(
            "{{\"url\":\"{secret}\",\"build\":{{\"number\":\"{secret}\",\"phase\":\"QUEUED\"}}}}"
        ),
        format!("{{\"url\":\"job/x/\",\"build\":{{\"number\":1,\"phase\":\"{secret}\"}}}}"),
        format!("{{\"{secret}\": }}"),
    ] {
        let reason = Event::parse(body.as_bytes())
            .map(|_| ())
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(!reason.is_empty(), "accepted {body}");
        assert!(!reason.contains(secret), "{reason}");
    }
}

#[test]
fn every_phase_name_is_read_and_nothing_else() {
    for phase in Phase::ALL {
        let event = parse(&minimal(json!(3), json!(phase.as_str())));
        assert_eq!(event.build.phase, phase);
        assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        assert_eq!(phase.to_string(), phase.as_str());
        assert_eq!(
            serde_json::to_value(phase).ok(),
            Some(json!(phase.as_str()))
        );
    }
    assert_eq!(
        Phase::ALL.map(Phase::as_str),
        ["QUEUED", "STARTED", "COMPLETED", "FINALIZED", "NONE"]
    );
}

#[test]
fn phases_sort_in_lifecycle_order() {
    let mut shuffled = [
        Phase::None,
        Phase::Finalized,
        Phase::Queued,
        Phase::Completed,
        Phase::Started,
    ];
    shuffled.sort();
    assert_eq!(shuffled, Phase::ALL);
}

#[test]
fn the_minimal_body_gives_an_event_with_every_optional_field_absent() {
    let event = parse(&minimal(json!(0), json!("NONE")));
    assert_eq!(
        event,
        Event {
            name: None,
            display_name: None,
            url: "job/x/".into(),
            build: Build {
                full_url: None,
                number: 0,
                queue_id: None,
                timestamp: None,
                duration: None,
                phase: Phase::None,
                status: None,
                url: None,
                scm: Scm::default(),
                parameters: Vec::new(),
                test_summary: None,
                notes: None,
            },
        }
    );
}

/// A body with `build` fields replaced by `fields` (a JSON object's members).
fn with_build_fields(fields: &str) -> Event {
    parse(&format!(
        r#"{{"url":"job/x/","build":{{"number":5,"phase":"COMPLETED",{fields}}}}}"#
    ))
}

#[test]
fn fields_of_the_wrong_type_count_as_absent() {
    let absent = with_build_fields(r#""unused":0"#);
    for fields in [
        r#""full_url":5"#,
        r#""full_url":null"#,
        r#""full_url":"""#,
        r#""queue_id":-4"#,
        r#""queue_id":"5123""#,
        r#""queue_id":1.5"#,
        r#""timestamp":"1768212000000""#,
        r#""timestamp":1.768e12"#,
        r#""timestamp":99999999999999999999"#,
        r#""duration":{"ms":5}"#,
        r#""duration":null"#,
        r#""status":false"#,
        r#""status":"""#,
        r#""url":["job/x/5/"]"#,
        r#""scm":"git@github.com:a/b.git""#,
        r#""scm":null"#,
        r#""scm":{"url":1,"branch":[],"commit":{},"changes":"a","culprits":7}"#,
        r#""parameters":[["A","1"]]"#,
        r#""parameters":"A=1""#,
        r#""parameters":{"A":null,"B":[1],"C":{"x":1}}"#,
        r#""test_summary":[1,2]"#,
        r#""notes":12"#,
    ] {
        let event = with_build_fields(fields);
        assert_eq!(event, absent, "for {fields}");
    }
    let root = parse(
        r#"{"name":["a"],"display_name":{},"url":"job/x/","build":{"number":5,"phase":"COMPLETED"}}"#,
    );
    assert_eq!(root.name, None);
    assert_eq!(root.display_name, None);
}

#[test]
fn list_elements_of_the_wrong_type_are_skipped() {
    let event =
        with_build_fields(r#""scm":{"changes":["a",1,null,"b"],"culprits":[{"id":"x"},"jdoe"]}"#);
    assert_eq!(event.build.scm.changes, ["a", "b"]);
    assert_eq!(event.build.scm.culprits, ["jdoe"]);
}

#[test]
fn parameters_keep_payload_order_and_numbers_and_booleans_become_text() {
    let event = with_build_fields(
        r#""parameters":{"Z_LAST":"z","DRY_RUN":true,"REPLICAS":3,"RATIO":0.5,"SKIP":null,"A_FIRST":"","LIST":["x"]}"#,
    );
    assert_eq!(
        event.build.parameters,
        [
            ("Z_LAST".to_owned(), "z".to_owned()),
            ("DRY_RUN".to_owned(), "true".to_owned()),
            ("REPLICAS".to_owned(), "3".to_owned()),
            ("RATIO".to_owned(), "0.5".to_owned()),
            ("A_FIRST".to_owned(), String::new()),
        ]
    );
    assert_eq!(event.parameter("REPLICAS"), Some("3"));
    assert_eq!(event.parameter("A_FIRST"), Some(""));
    assert_eq!(event.parameter("SKIP"), None);
    assert_eq!(event.parameter("z_last"), None);
}

#[test]
fn a_test_summary_may_lack_any_count() {
    let event = with_build_fields(r#""test_summary":{"total":3,"failed":"1"}"#);
    assert_eq!(
        event.build.test_summary,
        Some(TestSummary {
            total: Some(3),
            failed: None,
            passed: None,
            skipped: None,
        })
    );
}

#[test]
fn unknown_keys_and_a_bom_free_utf8_body_are_fine() {
    let event = parse(
        r#"{"url":"job/caf%C3%A9/","future":{"x":1},"build":{"number":1,"phase":"STARTED","artifacts":{"a":{"archive":"nullartifact/a"}},"log":"é","notes":"Déployé"}}"#,
    );
    assert_eq!(event.build.notes.as_deref(), Some("Déployé"));
    assert_eq!(event.job_name(), "café");
}

#[track_caller]
fn check_job_name(url: &str, name: Option<&str>, expected: &str) {
    let mut body = json!({"url": url, "build": {"number": 1, "phase": "QUEUED"}});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    assert_eq!(parse(&body.to_string()).job_name(), expected, "for {url}");
}

#[test]
fn the_job_name_is_the_folder_path_of_url() {
    check_job_name("job/payments-deploy/", None, "payments-deploy");
    check_job_name("job/team/job/payments/", None, "team/payments");
    check_job_name("job/team/job/payments", None, "team/payments");
    check_job_name(
        "job/team/job/payments/job/main/",
        Some("main"),
        "team/payments/main",
    );
    check_job_name(
        "job/team/job/payments/job/PR-42/",
        Some("PR-42"),
        "team/payments/PR-42",
    );
    check_job_name("job/my%20team/job/pay%2Bments/", None, "my team/pay+ments");
    check_job_name("job/feature%252Fx/", None, "feature%2Fx");
    check_job_name("job/job/job/job/", None, "job/job");
    check_job_name("/job/a//job/b/", None, "a/b");
    check_job_name("job/100%25/", None, "100%");
    check_job_name("job/bad%zz%/", None, "bad%zz%");
    check_job_name("job/bad%+1/", None, "bad%+1");
    check_job_name("job/%ff%fe/", None, "\u{FFFD}\u{FFFD}");
    // Not a chain of `job/<name>`: the leaf name, else the url itself.
    check_job_name("view/all/job/x/", Some("x"), "x");
    check_job_name("job/", Some("x"), "x");
    check_job_name("job/a/b/", Some("b"), "b");
    check_job_name("https://jenkins.example.com/job/a/", Some("a"), "a");
    check_job_name("view/all/", None, "view/all/");
    check_job_name("/", None, "/");
}

#[test]
fn the_build_key_is_build_url_or_made_from_url_and_number() {
    assert_eq!(parse(QUEUED_128).build_key(), "job/payments-deploy/128/");
    assert_eq!(
        parse(&minimal(json!(7), json!("QUEUED"))).build_key(),
        "job/x/7/"
    );
    let no_slash = parse(r#"{"url":"job/x","build":{"number":7,"phase":"QUEUED"}}"#);
    assert_eq!(no_slash.build_key(), "job/x/7/");
    let empty_url = parse(r#"{"url":"job/x/","build":{"number":7,"phase":"QUEUED","url":""}}"#);
    assert_eq!(empty_url.build_key(), "job/x/7/");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z_./:% -]{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["QUEUED", "STARTED", "FINALIZED", "NONE", "SUCCESS"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "url",
                        "build",
                        "number",
                        "phase",
                        "scm",
                        "parameters",
                        "status",
                        "timestamp",
                        "duration",
                        "test_summary",
                        "commit",
                        "changes",
                        "x",
                    ]),
                    inner
                ),
                0..8
            )
            .prop_map(|members| {
                Value::Object(
                    members
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::parse(&body);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_json(value in json_value()) {
        let _ = Event::parse(value.to_string().as_bytes());
        let wrapped = json!({"url": "job/x/", "build": value});
        let _ = Event::parse(wrapped.to_string().as_bytes());
    }

    #[test]
    fn a_well_formed_event_keeps_its_required_fields(
        url in "(job/[a-z0-9%-]{1,8}/){1,3}",
        number in any::<u64>(),
        phase in prop::sample::select(Phase::ALL.to_vec()),
        extras in prop::collection::vec(
            (prop::sample::select(vec!["status", "timestamp", "scm", "parameters", "queue_id", "log"]), json_value()),
            0..5
        ),
    ) {
        let mut build = serde_json::Map::new();
        for (key, value) in extras {
            build.insert(key.to_owned(), value);
        }
        build.insert("number".into(), json!(number));
        build.insert("phase".into(), json!(phase.as_str()));
        let body = json!({"url": url, "build": build}).to_string();
        let event = Event::parse(body.as_bytes());
        prop_assert!(event.is_ok(), "{:?} for {}", event, body);
        if let Ok(event) = event {
            prop_assert_eq!(&event.url, &url);
            prop_assert_eq!(event.build.number, number);
            prop_assert_eq!(event.build.phase, phase);
        }
    }
}

#[test]
fn errors_compare_by_kind() {
    assert_eq!(Event::parse(b"{}"), Err(EventError::MissingUrl));
    assert_eq!(
        Event::parse(b"{"),
        Err(EventError::NotJson { line: 1, column: 1 })
    );
}
