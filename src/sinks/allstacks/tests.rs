//! Tests of the `cicd_job` record against PRODUCT.md "`kind = "allstacks"`" and the worked example
//! of `jenkins-events.md` §5.4, and of the validator against Allstacks' pages
//! (vendor/allstacks-cicd-job-endpoint.txt, vendor/allstacks-dora-metrics-webhooks.txt).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{
    DEFAULT_COMMIT_PARAMETERS, MAX_OPTIONAL, RecordRules, Unbuildable, build_record,
    default_statuses, validate_cicd_job,
};
use crate::events::facts::BuildFacts;
use crate::events::model::Event;
use crate::events::model::tests::{COMPLETED_128, FINALIZED_129, QUEUED_128, STARTED_128, parse};

const SHA_40: &str = "1e9c3a7f5b0d4c2e8a6f9b3d7c1e5a0f2b4d6c8e";
const SHA_64: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn rules() -> RecordRules {
    RecordRules {
        sink: "dora".into(),
        jenkins: "main".into(),
        service_id: 4711,
        job_type: None,
        repo_name: None,
        repo_id: None,
        commit_parameters: DEFAULT_COMMIT_PARAMETERS.map(str::to_owned).to_vec(),
        triggered_by_parameter: None,
        optional_parameters: Vec::new(),
        statuses: default_statuses(),
    }
}

fn facts_of(bodies: &[&str]) -> BuildFacts {
    let mut facts = BuildFacts::default();
    for body in bodies {
        facts.absorb(&parse(body));
    }
    facts
}

#[track_caller]
fn record(event: &Event, facts: &BuildFacts, rules: &RecordRules) -> Value {
    match build_record(event, facts, rules) {
        Ok(record) => {
            assert_eq!(validate_cicd_job(&record), Ok(()), "{record}");
            record
        }
        Err(reason) => panic!("unbuildable: {reason}"),
    }
}

#[track_caller]
fn reason(event: &Event, facts: &BuildFacts, rules: &RecordRules) -> String {
    match build_record(event, facts, rules) {
        Ok(record) => panic!("built {record}"),
        Err(reason) => reason.to_string(),
    }
}

/// An event of `build` fields on top of the three required ones.
fn event(build: Value) -> Event {
    let mut build = build;
    if build.get("number").is_none() {
        build["number"] = json!(42);
    }
    if build.get("phase").is_none() {
        build["phase"] = json!("FINALIZED");
    }
    parse(&json!({"url": "job/deploy/job/payments/", "build": build}).to_string())
}

/// A finished build with everything a record needs but the commit.
fn finished(extra: Value) -> Value {
    let mut build = json!({
        "timestamp": 1_700_000_100_000_i64, "duration": 100_000, "status": "SUCCESS",
        "scm": {"url": "https://github.com/acme/payments-api.git"},
    });
    if let (Some(target), Value::Object(extra)) = (build.as_object_mut(), extra) {
        target.extend(extra);
    }
    build
}

#[test]
fn the_worked_example_of_section_5_4_with_the_started_time_seen() {
    // jenkins-events.md §5.4: the FINALIZED failure of §1.6, STARTED seen at 1768212000000.
    // PRODUCT.md differs from §5.4 in: job_type only when configured (here it is), the
    // `optional` entries and their order (build_number, job_path, jenkins_url, branch,
    // tests_total, tests_failed), and job_id is the full URL.
    let started = parse(&STARTED_128.replace("128", "129"));
    let mut facts = BuildFacts::default();
    facts.absorb(&started);
    let mut rules = rules();
    rules.job_type = Some("DEPLOY".into());
    let record = record(&parse(FINALIZED_129), &facts, &rules);
    assert_eq!(
        record,
        json!({
            "job_id": "https://jenkins.example.com/job/payments-deploy/129/",
            "commit_sha": SHA_40,
            "service_id": 4711,
            "job_start_time": 1768212000,
            "job_duration": 95,
            "status": "Failed",
            "repo_name": "acme/payments-api",
            "job_type": "DEPLOY",
            "optional": [
                {"key": "build_number", "value": 129, "type": "integer"},
                {"key": "job_path", "value": "job/payments-deploy/", "type": "string"},
                {"key": "jenkins_url", "value": "https://jenkins.example.com/job/payments-deploy/129/", "type": "string"},
                {"key": "branch", "value": "main", "type": "string"},
                {"key": "tests_total", "value": 412, "type": "integer"},
                {"key": "tests_failed", "value": 3, "type": "integer"},
            ],
        })
    );
    let keys: Vec<&String> = record
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "job_id",
            "commit_sha",
            "service_id",
            "job_start_time",
            "job_duration",
            "status",
            "repo_name",
            "job_type",
            "optional"
        ]
    );
}

#[test]
fn the_worked_example_without_the_started_event_starts_at_timestamp_minus_duration() {
    // jenkins-events.md §5.4: "otherwise 1768212097270−95400 ms → 1768212001"; no job_type
    // configured, so none is sent (PRODUCT.md).
    let record = record(&parse(FINALIZED_129), &BuildFacts::default(), &rules());
    assert_eq!(record["job_start_time"], 1768212001);
    assert!(record.get("job_type").is_none());
}

#[test]
fn a_freestyle_build_with_git_and_all_its_phases_seen() {
    // jenkins-events.md §1.6, build 128: QUEUED, STARTED, then COMPLETED with the Git facts.
    let facts = facts_of(&[QUEUED_128, STARTED_128]);
    let mut rules = rules();
    rules.optional_parameters = vec!["TARGET_ENV".into(), "MISSING".into()];
    let record = record(&parse(COMPLETED_128), &facts, &rules);
    assert_eq!(
        record,
        json!({
            "job_id": "https://jenkins.example.com/job/payments-deploy/128/",
            "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "service_id": 4711,
            "job_start_time": 1768212000,
            "job_duration": 95,
            "status": "Succeeded",
            "repo_name": "acme/payments-api",
            "optional": [
                {"key": "build_number", "value": 128, "type": "integer"},
                {"key": "job_path", "value": "job/payments-deploy/", "type": "string"},
                {"key": "jenkins_url", "value": "https://jenkins.example.com/job/payments-deploy/128/", "type": "string"},
                {"key": "branch", "value": "main", "type": "string"},
                {"key": "tests_total", "value": 412, "type": "integer"},
                {"key": "tests_failed", "value": 0, "type": "integer"},
                // 1768212000000 − 1768211987655 ms = 12.345 s.
                {"key": "queue_seconds", "value": 12, "type": "duration"},
                {"key": "TARGET_ENV", "value": "production", "type": "string"},
            ],
        })
    );
}

#[test]
fn a_pipeline_build_passing_its_commit_as_a_parameter() {
    // jenkins-events.md §1.6: a Pipeline job that exports no GIT_* sends an empty scm.
    let mut rules = rules();
    rules.repo_name = Some("acme/payments-api".into());
    rules.triggered_by_parameter = Some("DEPLOYER_EMAIL".into());
    let event = event(json!({
        "timestamp": 1_700_000_100_000_i64, "duration": 100_000, "status": "SUCCESS",
        "url": "job/deploy/job/payments/42/",
        "scm": {"changes": [], "culprits": []},
        "parameters": {"DEPLOYER_EMAIL": " jdoe@example.com ", "GIT_COMMIT": SHA_40},
    }));
    assert_eq!(
        record(&event, &BuildFacts::default(), &rules),
        json!({
            "job_id": "main/job/deploy/job/payments/42/",
            "commit_sha": SHA_40,
            "service_id": 4711,
            "job_start_time": 1_700_000_000,
            "job_duration": 100,
            "status": "Succeeded",
            "repo_name": "acme/payments-api",
            "triggered_by": "jdoe@example.com",
            "optional": [
                {"key": "build_number", "value": 42, "type": "integer"},
                {"key": "job_path", "value": "job/deploy/job/payments/", "type": "string"},
            ],
        })
    );
}

#[test]
fn the_commit_comes_from_scm_then_earlier_phases_then_parameters_in_order() {
    let scm_sha = "a".repeat(40);
    let earlier_sha = "b".repeat(40);
    let param_sha = "c".repeat(40);
    let with_all = event(finished(json!({
        "scm": {"url": "git@github.com:a/b.git", "commit": scm_sha},
        "parameters": {"COMMIT_SHA": param_sha, "GIT_COMMIT": "d".repeat(40)},
    })));
    let facts = BuildFacts {
        scm_commit: Some(earlier_sha.clone()),
        ..BuildFacts::default()
    };
    assert_eq!(
        record(&with_all, &facts, &rules())["commit_sha"],
        json!(scm_sha)
    );

    let without_scm = event(finished(json!({"parameters": {"COMMIT_SHA": param_sha}})));
    assert_eq!(
        record(&without_scm, &facts, &rules())["commit_sha"],
        json!(earlier_sha)
    );
    let none = BuildFacts::default();
    assert_eq!(
        record(&without_scm, &none, &rules())["commit_sha"],
        json!(param_sha)
    );

    // GIT_COMMIT comes first in commit_parameters, whatever the payload order.
    let both = event(finished(
        json!({"parameters": {"COMMIT_SHA": param_sha, "GIT_COMMIT": "d".repeat(40)}}),
    ));
    assert_eq!(
        record(&both, &none, &rules())["commit_sha"],
        json!("d".repeat(40))
    );
    // A blank parameter is not "set".
    let blank = event(finished(
        json!({"parameters": {"GIT_COMMIT": "  ", "COMMIT_SHA": param_sha}}),
    ));
    assert_eq!(
        record(&blank, &none, &rules())["commit_sha"],
        json!(param_sha)
    );
    // A parameter only an earlier phase carried still counts.
    let earlier_params = BuildFacts {
        parameters: vec![("GIT_COMMIT".into(), param_sha.clone())],
        ..BuildFacts::default()
    };
    let bare = event(finished(json!({})));
    assert_eq!(
        record(&bare, &earlier_params, &rules())["commit_sha"],
        json!(param_sha)
    );
}

#[test]
fn no_commit_anywhere_says_what_to_configure() {
    let bare = event(finished(json!({})));
    assert_eq!(
        reason(&bare, &BuildFacts::default(), &rules()),
        "no commit SHA: build.scm.commit is absent and none of the build parameters GIT_COMMIT, COMMIT_SHA is set; export GIT_COMMIT to the run's environment or pass the commit as a build parameter named in sinks.dora.commit_parameters"
    );
    let mut none = rules();
    none.commit_parameters.clear();
    none.sink = "deploys".into();
    assert_eq!(
        reason(&bare, &BuildFacts::default(), &none),
        "no commit SHA: build.scm.commit is absent and sinks.deploys.commit_parameters is empty; export GIT_COMMIT to the run's environment or name the build parameter that holds the commit in sinks.deploys.commit_parameters"
    );
}

#[track_caller]
fn check_commit(commit: Value, expected: Result<&str, &str>) {
    let with_scm = event(finished(
        json!({"scm": {"url": "git@github.com:a/b.git", "commit": commit}}),
    ));
    let got = build_record(&with_scm, &BuildFacts::default(), &rules())
        .map(|record| record["commit_sha"].as_str().unwrap_or_default().to_owned())
        .map_err(|reason| reason.to_string());
    assert_eq!(
        got,
        expected.map(str::to_owned).map_err(str::to_owned),
        "for {commit}"
    );
}

#[test]
fn commits_are_trimmed_lower_cased_and_must_be_full() {
    check_commit(json!(SHA_40), Ok(SHA_40));
    check_commit(json!(SHA_64), Ok(SHA_64));
    check_commit(json!(SHA_40.to_uppercase()), Ok(SHA_40));
    check_commit(json!(SHA_64.to_uppercase()), Ok(SHA_64));
    check_commit(json!(format!("\t{SHA_40}\n")), Ok(SHA_40));
    check_commit(
        json!("1e9c3a7"),
        Err("commit `1e9c3a7` (from build.scm.commit) is not a full 40- or 64-hex SHA"),
    );
    check_commit(
        json!(&SHA_40[..39]),
        Err(
            "commit `1e9c3a7f5b0d4c2e8a6f9b3d7c1e5a0f2b4d6c8` (from build.scm.commit) is not a full 40- or 64-hex SHA",
        ),
    );
    check_commit(
        json!(format!("{SHA_40}0")),
        Err(
            "commit `1e9c3a7f5b0d4c2e8a6f9b3d7c1e5a0f2b4d6c8e0` (from build.scm.commit) is not a full 40- or 64-hex SHA",
        ),
    );
    check_commit(
        json!(format!("g{}", &SHA_40[1..])),
        Err(
            "commit `ge9c3a7f5b0d4c2e8a6f9b3d7c1e5a0f2b4d6c8e` (from build.scm.commit) is not a full 40- or 64-hex SHA",
        ),
    );
    check_commit(
        json!(format!("{} {}", &SHA_40[..20], &SHA_40[20..])),
        Err(
            "commit `1e9c3a7f5b0d4c2e8a6f 9b3d7c1e5a0f2b4d6c8e` (from build.scm.commit) is not a full 40- or 64-hex SHA",
        ),
    );
    check_commit(
        json!("HEAD\u{1b}[31m"),
        Err("commit `HEAD\\u{1b}[31m` (from build.scm.commit) is not a full 40- or 64-hex SHA"),
    );
    check_commit(
        json!("x".repeat(100)),
        Err(&format!(
            "commit `{}…` (from build.scm.commit) is not a full 40- or 64-hex SHA",
            "x".repeat(64)
        )),
    );
}

#[test]
fn an_abbreviated_commit_parameter_is_named_in_the_reason() {
    let short = event(finished(json!({"parameters": {"GIT_COMMIT": "abc123"}})));
    assert_eq!(
        reason(&short, &BuildFacts::default(), &rules()),
        "commit `abc123` (from build parameter GIT_COMMIT) is not a full 40- or 64-hex SHA"
    );
    let facts = BuildFacts {
        scm_commit: Some("abc123".into()),
        ..BuildFacts::default()
    };
    assert_eq!(
        reason(&event(finished(json!({}))), &facts, &rules()),
        "commit `abc123` (from build.scm.commit of an earlier phase) is not a full 40- or 64-hex SHA"
    );
}

#[track_caller]
fn check_status(status: Option<&str>, expected: Result<&str, &str>) {
    let mut build = finished(json!({"scm": {"url": "git@github.com:a/b.git", "commit": SHA_40}}));
    match status {
        Some(status) => build["status"] = json!(status),
        None => {
            if let Some(build) = build.as_object_mut() {
                build.remove("status");
            }
        }
    }
    let got = build_record(&event(build), &BuildFacts::default(), &rules())
        .map(|record| record["status"].as_str().unwrap_or_default().to_owned())
        .map_err(|reason| reason.to_string());
    assert_eq!(
        got,
        expected.map(str::to_owned).map_err(str::to_owned),
        "for {status:?}"
    );
}

#[test]
fn results_map_through_the_default_statuses() {
    check_status(Some("SUCCESS"), Ok("Succeeded"));
    check_status(Some("FAILURE"), Ok("Failed"));
    check_status(Some("UNSTABLE"), Ok("Failed"));
    check_status(
        Some("ABORTED"),
        Err("build.status ABORTED has no entry in sinks.dora.statuses"),
    );
    check_status(
        Some("NOT_BUILT"),
        Err("build.status NOT_BUILT has no entry in sinks.dora.statuses"),
    );
    check_status(
        Some("success"),
        Err("build.status success has no entry in sinks.dora.statuses"),
    );
    check_status(
        None,
        Err("build.status is absent (the build has not finished)"),
    );
}

#[test]
fn configured_statuses_replace_the_defaults_and_must_be_allstacks_ones() {
    let build = event(finished(
        json!({"status": "ABORTED", "scm": {"url": "git@h:a/b.git", "commit": SHA_40}}),
    ));
    let mut rules = rules();
    rules.statuses = vec![("ABORTED".into(), "On Hold".into())];
    assert_eq!(
        record(&build, &BuildFacts::default(), &rules)["status"],
        "On Hold"
    );
    rules.statuses = vec![("ABORTED".into(), "failed".into())];
    assert_eq!(
        reason(&build, &BuildFacts::default(), &rules),
        "sinks.dora.statuses maps ABORTED to `failed`, which is not one of Succeeded, Failed, On Hold"
    );
    assert!(matches!(
        build_record(&build, &BuildFacts::default(), &rules),
        Err(Unbuildable::NotAnAllstacksStatus { .. })
    ));
}

#[track_caller]
fn check_times(
    timestamp: Option<i64>,
    duration: Option<i64>,
    started: Option<i64>,
    expected: Result<(i64, i64), &str>,
) {
    let mut build = json!({"status": "SUCCESS", "scm": {"url": "git@h:a/b.git", "commit": SHA_40}});
    if let Some(timestamp) = timestamp {
        build["timestamp"] = json!(timestamp);
    }
    if let Some(duration) = duration {
        build["duration"] = json!(duration);
    }
    let facts = BuildFacts {
        started_at_ms: started,
        ..BuildFacts::default()
    };
    let got = build_record(&event(build), &facts, &rules())
        .map(|record| {
            (
                record["job_start_time"].as_i64().unwrap_or(i64::MIN),
                record["job_duration"].as_i64().unwrap_or(i64::MIN),
            )
        })
        .map_err(|reason| reason.to_string());
    assert_eq!(
        got,
        expected.map_err(str::to_owned),
        "{timestamp:?} {duration:?} {started:?}"
    );
}

#[test]
fn start_time_and_duration_in_whole_seconds() {
    // Start: floor of the STARTED time when seen, else of timestamp − duration.
    check_times(
        Some(1_700_000_095_400),
        Some(95_400),
        None,
        Ok((1_700_000_000, 95)),
    );
    check_times(
        Some(1_700_000_095_400),
        Some(95_400),
        Some(1_699_999_999_999),
        Ok((1_699_999_999, 95)),
    );
    check_times(
        None,
        Some(95_400),
        Some(1_700_000_000_999),
        Ok((1_700_000_000, 95)),
    );
    check_times(Some(1_999), Some(1_000), None, Ok((0, 1)));
    check_times(Some(500), Some(1_500), None, Ok((-1, 2)));
    check_times(Some(-1), Some(0), None, Ok((-1, 0)));
    check_times(Some(0), Some(0), Some(-1_001), Ok((-2, 0)));
    // Duration: rounded half up, never negative.
    check_times(Some(10_000), Some(0), None, Ok((10, 0)));
    check_times(Some(10_000), Some(499), None, Ok((9, 0)));
    check_times(Some(10_000), Some(500), None, Ok((9, 1)));
    check_times(Some(10_000), Some(1_499), None, Ok((8, 1)));
    check_times(Some(10_000), Some(1_500), None, Ok((8, 2)));
    check_times(Some(10_000), Some(-5_000), None, Ok((15, 0)));
    check_times(
        Some(10_000),
        Some(i64::MIN),
        None,
        Ok((i64::MAX.div_euclid(1000), 0)),
    );
    check_times(
        Some(i64::MIN),
        Some(i64::MAX),
        None,
        Ok((i64::MIN.div_euclid(1000), i64::MAX / 1000 + 1)),
    );
    check_times(
        Some(i64::MAX),
        Some(i64::MAX),
        None,
        Ok((0, i64::MAX / 1000 + 1)),
    );
    check_times(Some(10_000), None, None, Err("build.duration is absent"));
    check_times(
        None,
        Some(1_000),
        None,
        Err(
            "no start time: build.timestamp is absent and hookgate did not see the build's STARTED event",
        ),
    );
}

#[test]
fn the_repository_is_configured_id_then_name_then_read_from_the_scm_url() {
    let build = event(finished(
        json!({"scm": {"url": "https://jdoe:s3cret@github.com/acme/payments-api.git", "commit": SHA_40}}),
    ));
    let none = BuildFacts::default();
    let from_url = record(&build, &none, &rules());
    assert_eq!(from_url["repo_name"], "acme/payments-api");
    assert!(!from_url.to_string().contains("s3cret"));

    let mut named = rules();
    named.repo_name = Some("acme/renamed".into());
    assert_eq!(record(&build, &none, &named)["repo_name"], "acme/renamed");
    named.repo_id = Some("12345".into());
    let by_id = record(&build, &none, &named);
    assert_eq!(by_id["repo_id"], "12345");
    assert!(by_id.get("repo_name").is_none());
    named.repo_id = Some(" ".into());
    assert_eq!(record(&build, &none, &named)["repo_name"], "acme/renamed");

    let no_url = event(finished(json!({"scm": {"commit": SHA_40}})));
    let facts = BuildFacts {
        scm_url: Some("git@gitlab.com:group/sub/repo.git".into()),
        ..BuildFacts::default()
    };
    assert_eq!(
        record(&no_url, &facts, &rules())["repo_name"],
        "group/sub/repo"
    );
    assert_eq!(
        reason(&no_url, &none, &rules()),
        "no repository: build.scm.url is absent and sinks.dora sets neither repo_name nor repo_id; set sinks.dora.repo_name or repo_id"
    );
    let unreadable = event(finished(
        json!({"scm": {"url": "file:///srv/s3cret/repo.git", "commit": SHA_40}}),
    ));
    let why = reason(&unreadable, &none, &rules());
    assert_eq!(
        why,
        "no repository: build.scm.url names no repository path hookgate can read; set sinks.dora.repo_name or repo_id"
    );
}

#[test]
fn triggered_by_and_job_type_appear_only_when_known() {
    let build = event(finished(json!({
        "scm": {"url": "git@h:a/b.git", "commit": SHA_40, "culprits": ["jdoe"]},
        "parameters": {"DEPLOYER_EMAIL": "", "BUILD_USER": "ops@example.com"},
    })));
    let none = BuildFacts::default();
    let plain = record(&build, &none, &rules());
    assert!(
        plain.get("triggered_by").is_none(),
        "culprits are not used: {plain}"
    );
    assert!(plain.get("job_type").is_none());
    let mut configured = rules();
    configured.triggered_by_parameter = Some("DEPLOYER_EMAIL".into());
    configured.job_type = Some(String::new());
    let blank = record(&build, &none, &configured);
    assert!(blank.get("triggered_by").is_none());
    assert!(blank.get("job_type").is_none());
    configured.triggered_by_parameter = Some("BUILD_USER".into());
    configured.job_type = Some("Production Deploy".into());
    let known = record(&build, &none, &configured);
    assert_eq!(known["triggered_by"], "ops@example.com");
    assert_eq!(known["job_type"], "Production Deploy");
}

#[test]
fn optional_entries_are_capped_at_twenty() {
    let names: Vec<String> = (0..25).map(|i| format!("P{i:02}")).collect();
    let parameters: serde_json::Map<String, Value> = names
        .iter()
        .map(|name| (name.clone(), json!(format!("v-{name}"))))
        .collect();
    let mut rules = rules();
    rules.optional_parameters = names;
    // With all seven built-in entries known, 13 parameters fit.
    let facts = facts_of(&[QUEUED_128, STARTED_128]);
    let full = parse(&COMPLETED_128.replace(
        r#""parameters":{"TARGET_ENV":"production"}"#,
        &format!(r#""parameters":{}"#, Value::Object(parameters.clone())),
    ));
    let optional = record(&full, &facts, &rules)["optional"].clone();
    let keys: Vec<&str> = optional
        .as_array()
        .map(|entries| entries.iter().filter_map(|e| e["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), MAX_OPTIONAL);
    assert_eq!(
        &keys[..7],
        [
            "build_number",
            "job_path",
            "jenkins_url",
            "branch",
            "tests_total",
            "tests_failed",
            "queue_seconds"
        ]
    );
    assert_eq!(keys[7], "P00");
    assert_eq!(keys[19], "P12");
    // With only the two always-known ones, 18 parameters fit.
    let bare = event(finished(
        json!({"scm": {"url": "git@h:a/b.git", "commit": SHA_40}, "parameters": parameters}),
    ));
    let optional = record(&bare, &BuildFacts::default(), &rules)["optional"].clone();
    let count = optional.as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(count, MAX_OPTIONAL);
    assert_eq!(optional[19]["key"], "P17");
}

#[test]
fn a_parameter_named_like_a_built_in_entry_does_not_duplicate_it() {
    let mut rules = rules();
    rules.optional_parameters = vec![
        "branch".into(),
        "TARGET_ENV".into(),
        "TARGET_ENV".into(),
        "BLANK".into(),
    ];
    let build = event(finished(json!({
        "scm": {"url": "git@h:a/b.git", "commit": SHA_40, "branch": "origin/release/1.2"},
        "parameters": {"branch": "other", "TARGET_ENV": "production", "BLANK": " "},
    })));
    assert_eq!(
        record(&build, &BuildFacts::default(), &rules)["optional"],
        json!([
            {"key": "build_number", "value": 42, "type": "integer"},
            {"key": "job_path", "value": "job/deploy/job/payments/", "type": "string"},
            {"key": "branch", "value": "release/1.2", "type": "string"},
            {"key": "TARGET_ENV", "value": "production", "type": "string"},
        ])
    );
}

#[test]
fn the_branch_loses_only_a_leading_origin() {
    for (branch, expected) in [
        ("origin/main", Some("main")),
        ("main", Some("main")),
        ("feature/origin/x", Some("feature/origin/x")),
        ("origin/", None),
        ("upstream/main", Some("upstream/main")),
    ] {
        let build = event(finished(
            json!({"scm": {"url": "git@h:a/b.git", "commit": SHA_40, "branch": branch}}),
        ));
        let optional = record(&build, &BuildFacts::default(), &rules())["optional"].clone();
        let found = optional
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["key"] == "branch"))
            .and_then(|e| e["value"].as_str().map(str::to_owned));
        assert_eq!(found.as_deref(), expected, "for {branch}");
    }
}

#[test]
fn queue_seconds_is_never_negative() {
    let facts = BuildFacts {
        queued_at_ms: Some(10_000),
        started_at_ms: Some(4_000),
        ..BuildFacts::default()
    };
    let build = event(finished(
        json!({"scm": {"url": "git@h:a/b.git", "commit": SHA_40}}),
    ));
    let optional = record(&build, &facts, &rules())["optional"].clone();
    assert_eq!(
        optional[2],
        json!({"key": "queue_seconds", "value": 0, "type": "duration"})
    );
}

/// A record Allstacks accepts: the vendor page's sample payload, with its typos mended
/// (vendor/allstacks-dora-metrics-webhooks.txt "Examples").
fn vendor_sample() -> Value {
    json!({
        "job_id": "1",
        "status": "Succeeded",
        "commit_sha": "a2e7da86cc392417b0d9f605b28038aae80b002f",
        "triggered_by": "testuser@org.com",
        "repo_id": "12345",
        "service_id": 2,
        "job_start_time": 1704018030,
        "job_duration": 300,
        "job_type": "Production Deploy",
        "optional": [
            {"key": "microservice", "value": ["frontend", "backend"], "type": "string"},
            {"key": "lead_time", "value": 20, "type": "duration"},
            {"key": "float_key", "value": 20.5, "type": "float"},
            {"key": "qa_approved_on", "value": 1704018030, "type": "timestamp"},
        ],
    })
}

#[track_caller]
fn check_valid(
    change: impl FnOnce(&mut serde_json::Map<String, Value>),
    expected: Result<(), &str>,
) {
    let mut body = vendor_sample();
    if let Some(record) = body.as_object_mut() {
        change(record);
    }
    assert_eq!(
        validate_cicd_job(&body),
        expected.map_err(str::to_owned),
        "for {body}"
    );
}

fn set(key: &'static str, value: Value) -> impl FnOnce(&mut serde_json::Map<String, Value>) {
    move |record| {
        record.insert(key.into(), value);
    }
}

fn remove(key: &'static str) -> impl FnOnce(&mut serde_json::Map<String, Value>) {
    move |record| {
        record.remove(key);
    }
}

#[test]
fn the_validator_accepts_the_vendor_samples() {
    check_valid(|_| {}, Ok(()));
    // vendor/allstacks-cicd-job-endpoint.txt "Sample Payload": `"triggered_by": ""` is blank,
    // which Allstacks reads as "Custom CD Agent".
    check_valid(set("triggered_by", json!("")), Ok(()));
    check_valid(remove("triggered_by"), Ok(()));
    check_valid(remove("job_type"), Ok(()));
    check_valid(remove("optional"), Ok(()));
    check_valid(set("optional", json!([])), Ok(()));
    check_valid(
        |r| {
            r.remove("repo_id");
            r.insert("repo_name".into(), json!("acme/x"));
        },
        Ok(()),
    );
    check_valid(set("repo_name", json!("acme/x")), Ok(()));
    check_valid(set("status", json!("Failed")), Ok(()));
    check_valid(set("status", json!("On Hold")), Ok(()));
    check_valid(set("commit_sha", json!(SHA_64)), Ok(()));
    check_valid(set("commit_sha", json!(SHA_40.to_uppercase())), Ok(()));
    check_valid(set("job_duration", json!(0)), Ok(()));
    check_valid(set("service_id", json!(u64::MAX)), Ok(()));
}

#[test]
fn the_validator_refuses_each_documented_rule_broken() {
    // Base fields: vendor/allstacks-cicd-job-endpoint.txt "Base Fields".
    for key in [
        "job_id",
        "commit_sha",
        "service_id",
        "job_start_time",
        "job_duration",
        "status",
    ] {
        let message = format!("missing field `{key}`");
        check_valid(remove(key), Err(&message));
    }
    check_valid(set("job_id", json!(1)), Err("`job_id` must be a string"));
    check_valid(set("job_id", json!("")), Err("`job_id` must not be empty"));
    check_valid(
        set("commit_sha", json!(null)),
        Err("`commit_sha` must be a string"),
    );
    let sha = "`commit_sha` must be the full SHA: 40 or 64 hex characters";
    check_valid(set("commit_sha", json!("a2e7da8")), Err(sha));
    check_valid(set("commit_sha", json!(format!("{SHA_40}0"))), Err(sha));
    check_valid(set("commit_sha", json!("z".repeat(40))), Err(sha));
    check_valid(
        set("commit_sha", json!(format!(" {}", &SHA_40[1..]))),
        Err(sha),
    );
    check_valid(
        set("service_id", json!("2")),
        Err("`service_id` must be an integer"),
    );
    check_valid(
        set("service_id", json!(2.0)),
        Err("`service_id` must be an integer"),
    );
    check_valid(
        set("job_start_time", json!(1704018030.5)),
        Err("`job_start_time` must be an integer"),
    );
    check_valid(
        set("job_start_time", json!("2024-01-01T00:00:00Z")),
        Err("`job_start_time` must be an integer"),
    );
    check_valid(
        set("job_duration", json!(null)),
        Err("`job_duration` must be an integer"),
    );
    check_valid(
        set("job_duration", json!(300.0)),
        Err("`job_duration` must be an integer"),
    );
    let status = "`status` must be one of Succeeded, Failed, On Hold";
    for wrong in ["succeeded", "SUCCESS", "Success", "On hold", "OnHold", ""] {
        check_valid(set("status", json!(wrong)), Err(status));
    }
    check_valid(set("status", json!(1)), Err("`status` must be a string"));
    let repo = "one of `repo_id` and `repo_name` is required";
    check_valid(remove("repo_id"), Err(repo));
    check_valid(set("repo_id", json!("")), Err(repo));
    check_valid(
        set("repo_id", json!(12345)),
        Err("`repo_id` must be a string"),
    );
    check_valid(
        |r| {
            r.remove("repo_id");
            r.insert("repo_name".into(), json!(["a"]));
        },
        Err("`repo_name` must be a string"),
    );
    check_valid(
        set("triggered_by", json!(null)),
        Err("`triggered_by` must be a string"),
    );
    check_valid(
        set("job_type", json!(7)),
        Err("`job_type` must be a string"),
    );
    check_valid(
        set("jenkins_url", json!("x")),
        Err("unknown field `jenkins_url`"),
    );
    assert_eq!(
        validate_cicd_job(&json!([])),
        Err("the body must be a JSON object".into())
    );
    assert_eq!(
        validate_cicd_job(&json!("x")),
        Err("the body must be a JSON object".into())
    );
}

#[test]
fn the_validator_refuses_bad_optional_entries() {
    // vendor/allstacks-cicd-job-endpoint.txt "Optional Fields".
    let entry =
        |key: &str, value: Value, kind: &str| json!({"key": key, "value": value, "type": kind});
    let many: Vec<Value> = (0..21)
        .map(|i| entry(&format!("k{i}"), json!(i), "integer"))
        .collect();
    check_valid(set("optional", Value::Array(many[..20].to_vec())), Ok(()));
    check_valid(
        set("optional", Value::Array(many)),
        Err("`optional` has 21 entries; at most 20 are allowed"),
    );
    check_valid(
        set("optional", json!({"key": "a"})),
        Err("`optional` must be a list"),
    );
    check_valid(
        set("optional", json!(["a"])),
        Err("`optional[0]` must be an object with key, value and type"),
    );
    let values: Vec<Value> = (0..21).map(Value::from).collect();
    check_valid(
        set(
            "optional",
            json!([entry("a", json!(values[..20]), "integer")]),
        ),
        Ok(()),
    );
    check_valid(
        set("optional", json!([entry("a", json!(values), "integer")])),
        Err("`optional[0].value` has 21 values; at most 20 are allowed"),
    );
    let cases: [(Value, Result<(), &str>); 22] = [
        (entry("a", json!("x"), "string"), Ok(())),
        (entry("a", json!(["x", "y"]), "string"), Ok(())),
        (entry("a", json!(3), "integer"), Ok(())),
        (entry("a", json!(3), "float"), Ok(())),
        (entry("a", json!(-3.25), "float"), Ok(())),
        (entry("a", json!(60), "duration"), Ok(())),
        (
            entry("a", json!([1704018030, 1704018031]), "timestamp"),
            Ok(()),
        ),
        (
            entry("a", json!(3), "string"),
            Err("`optional[0].value` must be a string (type string)"),
        ),
        (
            entry("a", json!("3"), "integer"),
            Err("`optional[0].value` must be an integer (type integer)"),
        ),
        (
            entry("a", json!(3.5), "integer"),
            Err("`optional[0].value` must be an integer (type integer)"),
        ),
        (
            entry("a", json!("3.5"), "float"),
            Err("`optional[0].value` must be a number (type float)"),
        ),
        (
            entry("a", json!(1.5), "duration"),
            Err("`optional[0].value` must be an integer (type duration)"),
        ),
        (
            entry("a", json!("PT5S"), "duration"),
            Err("`optional[0].value` must be an integer (type duration)"),
        ),
        (
            entry("a", json!("2024-01-01"), "timestamp"),
            Err("`optional[0].value` must be an integer (type timestamp)"),
        ),
        (
            entry("a", json!([1, "2"]), "timestamp"),
            Err("every value of `optional[0].value` must be an integer (type timestamp)"),
        ),
        (
            entry("a", json!(null), "string"),
            Err("`optional[0].value` must be a string (type string)"),
        ),
        (
            entry("a", json!("x"), "boolean"),
            Err("`optional[0].type` must be one of string, integer, float, duration, timestamp"),
        ),
        (
            entry("a", json!("x"), "String"),
            Err("`optional[0].type` must be one of string, integer, float, duration, timestamp"),
        ),
        (
            json!({"key": "a", "value": "x"}),
            Err("`optional[0]` has no `type`"),
        ),
        (
            json!({"key": "a", "type": "string"}),
            Err("`optional[0]` has no `value`"),
        ),
        (
            json!({"value": "x", "type": "string"}),
            Err("`optional[0]` has no `key`"),
        ),
        (
            json!({"key": "", "value": "x", "type": "string"}),
            Err("`optional[0].key` must not be empty"),
        ),
    ];
    for (case, expected) in cases {
        check_valid(set("optional", json!([case])), expected);
    }
    check_valid(
        set(
            "optional",
            json!([{"key": 1, "value": "x", "type": "string"}]),
        ),
        Err("`optional[0].key` must be a string"),
    );
    check_valid(
        set(
            "optional",
            json!([entry("a", json!(1), "integer"), {"key": "b", "value": "x", "type": "string", "unit": "s"}]),
        ),
        Err("`optional[1]` has an unknown field `unit`"),
    );
}

fn sha() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{40}",
        "[0-9A-F]{64}",
        "[0-9a-fA-F]{40}",
        "[ \t]{0,2}[0-9a-f]{64}[ \n]{0,2}",
    ]
}

fn scm_url() -> impl Strategy<Value = String> {
    prop_oneof![
        "https://github\\.com/[a-z]{1,8}/[a-z-]{1,12}(\\.git)?",
        "git@github\\.com:[a-z]{1,8}/[a-z-]{1,12}\\.git",
        "ssh://git@host(:[0-9]{2,4})?/[a-z]{1,8}/[a-z]{1,8}/[a-z]{1,8}\\.git",
        "https://[a-z]{1,5}:[a-z0-9]{1,8}@gitlab\\.com/[a-z]{1,8}/[a-z]{1,8}",
    ]
}

fn maybe<T: std::fmt::Debug + Clone>(
    inner: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), inner.prop_map(Some)]
}

proptest! {
    /// The property the sinks issue asks for: a well-formed finished event with a full commit
    /// and a repository gives a record that Allstacks' documented validation accepts.
    #[test]
    fn a_finished_event_with_a_full_commit_and_a_repository_gives_a_valid_record(
        number in any::<u64>(),
        phase in prop::sample::select(vec!["COMPLETED", "FINALIZED", "STARTED", "NONE"]),
        status in prop::sample::select(vec!["SUCCESS", "FAILURE", "UNSTABLE"]),
        timestamp in any::<i64>(),
        duration in any::<i64>(),
        full_url in maybe("https://ci\\.example\\.com/job/[a-z]{1,6}/[0-9]{1,4}/"),
        commit in sha(),
        commit_in_parameter in any::<bool>(),
        url in scm_url(),
        branch in maybe("(origin/)?[a-z/]{0,12}"),
        tests in maybe((any::<i64>(), any::<i64>())),
        parameters in prop::collection::vec(("[A-Z_]{1,6}", "\\PC{0,10}"), 0..30),
        started in maybe(any::<i64>()),
        queued in maybe(any::<i64>()),
        service_id in any::<i64>(),
        job_type in maybe("\\PC{0,10}"),
        repo_id in maybe("[0-9]{0,6}"),
        optional_parameters in prop::collection::vec("[A-Z_]{1,6}", 0..30),
        triggered_by in maybe("[A-Z_]{1,6}"),
    ) {
        let mut parameter_map = serde_json::Map::new();
        for (name, value) in parameters {
            parameter_map.insert(name, json!(value));
        }
        let mut scm = json!({"url": url});
        if commit_in_parameter {
            parameter_map.insert("GIT_COMMIT".into(), json!(commit));
        } else {
            scm["commit"] = json!(commit);
        }
        if let Some(branch) = branch {
            scm["branch"] = json!(branch);
        }
        let mut build = json!({
            "number": number, "phase": phase, "status": status, "timestamp": timestamp,
            "duration": duration, "scm": scm, "parameters": parameter_map,
        });
        if let Some(full_url) = full_url {
            build["full_url"] = json!(full_url);
        }
        if let Some((total, failed)) = tests {
            build["test_summary"] = json!({"total": total, "failed": failed});
        }
        let event = parse(&json!({"url": "job/x/", "build": build}).to_string());
        let facts = BuildFacts { started_at_ms: started, queued_at_ms: queued, ..BuildFacts::default() };
        let mut rules = rules();
        rules.service_id = service_id;
        rules.job_type = job_type;
        rules.repo_id = repo_id;
        rules.optional_parameters = optional_parameters;
        rules.triggered_by_parameter = triggered_by;
        let built = build_record(&event, &facts, &rules);
        prop_assert!(built.is_ok(), "{:?}", built);
        if let Ok(record) = built {
            prop_assert_eq!(validate_cicd_job(&record), Ok(()), "{}", record);
            let expected = commit.trim().to_ascii_lowercase();
            prop_assert_eq!(record["commit_sha"].as_str(), Some(expected.as_str()));
        }
    }

    /// Whatever the event and facts, a record that is built is one Allstacks accepts.
    #[test]
    fn every_record_built_is_one_allstacks_accepts(
        status in maybe(prop::sample::select(vec!["SUCCESS", "FAILURE", "UNSTABLE", "ABORTED", "NOT_BUILT", "x"])),
        commit in maybe(prop_oneof!["[0-9a-f]{40}", "[0-9a-fA-Fg ]{0,70}"]),
        url in maybe(prop_oneof![scm_url(), "\\PC{0,20}"]),
        timestamp in maybe(any::<i64>()),
        duration in maybe(any::<i64>()),
        statuses in prop::collection::vec(
            (prop::sample::select(vec!["SUCCESS", "ABORTED", "x"]), prop::sample::select(vec!["Succeeded", "Failed", "On Hold", "failed", ""])),
            0..4,
        ),
        repo_name in maybe("\\PC{0,8}"),
    ) {
        let mut build = json!({"number": 1, "phase": "FINALIZED", "scm": {}});
        if let Some(status) = status { build["status"] = json!(status); }
        if let Some(commit) = commit { build["scm"]["commit"] = json!(commit); }
        if let Some(url) = url { build["scm"]["url"] = json!(url); }
        if let Some(timestamp) = timestamp { build["timestamp"] = json!(timestamp); }
        if let Some(duration) = duration { build["duration"] = json!(duration); }
        let event = parse(&json!({"url": "job/x/", "build": build}).to_string());
        let mut rules = rules();
        rules.statuses = statuses.into_iter().map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
        rules.repo_name = repo_name;
        if let Ok(record) = build_record(&event, &BuildFacts::default(), &rules) {
            prop_assert_eq!(validate_cicd_job(&record), Ok(()), "{}", record);
        }
    }
}
