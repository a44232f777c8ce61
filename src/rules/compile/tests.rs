//! Tests for rule loading: all three formats, and every problem reported at once with its file
//! and field.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::config::Problem;
use crate::rules::load_dir;

fn jenkins() -> BTreeSet<String> {
    ["main".to_owned()].into()
}

fn env() -> HashMap<String, String> {
    [
        ("PORT_SECRET".to_owned(), "s3cr3t".to_owned()),
        ("PORT_TOKEN".to_owned(), "t0k3n".to_owned()),
        ("JOB_TOKEN".to_owned(), "j0b".to_owned()),
        ("OLD_SECRET".to_owned(), "old".to_owned()),
    ]
    .into()
}

fn load(files: &[(&str, &str)]) -> Result<crate::rules::RuleSet, Vec<Problem>> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    load_dir(dir.path(), &jenkins(), &env()).map_err(|problems| {
        problems
            .0
            .into_iter()
            .map(|mut p| {
                // Keep only the file name so expectations do not depend on the temp dir.
                p.file = Path::new(&p.file)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p
            })
            .collect()
    })
}

fn problems(files: &[(&str, &str)]) -> Vec<(String, String, String)> {
    load(files)
        .expect_err("expected problems")
        .into_iter()
        .map(|p| (p.file, p.field, p.reason))
        .collect()
}

const PORT_TOML: &str = r#"
token_env = "PORT_TOKEN"
[verify]
scheme = "port"
secret_env = "PORT_SECRET"
[[variables]]
name = "ACTION"
jsonpath = "$.action"
[filter]
text = "$ACTION"
expression = "^deploy$"
[dispatch]
token_env = "JOB_TOKEN"
"#;

#[test]
fn toml_yaml_and_json_rules_load_with_names_from_their_stems() {
    let yaml = "verify:\n  scheme: github\n  secrets_env: [PORT_SECRET, OLD_SECRET]\ndispatch:\n  jenkins: main\n  body: variables\n";
    let json = r#"{"name": "explicit", "verify": {"scheme": "none"}, "allow": {"ips": ["10.0.0.0/8"]}, "dispatch": {}}"#;
    let rules = load(&[
        ("port.toml", PORT_TOML),
        ("gh.yaml", yaml),
        ("other.json", json),
        ("README.md", "not a rule"),
    ])
    .expect("valid rules");
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["gh", "explicit", "port"]);
    let port = rules.get("port").expect("port");
    assert_eq!(port.token.as_ref().map(|t| t.expose()), Some(&b"t0k3n"[..]));
    assert_eq!(port.signature.scheme().name(), "port");
    assert_eq!(rules.get("gh").expect("gh").signature.secret_count(), 2);
    assert_eq!(rules.get("explicit").expect("json").allow.len(), 1);
}

#[test]
fn every_problem_in_every_file_is_reported_with_file_and_field() {
    let broken = r#"
token_env = "UNSET_TOKEN"
[allow]
ips = ["10.0.0.0/33", "example.org"]
[verify]
scheme = "port"
secret_env = "UNSET_SECRET"
[[variables]]
name = "A"
jsonpath = "$..[?(@.x"
[[variables]]
name = "B"
jsonpath = "$.b"
regex_filter = "(unclosed"
[filter]
text = "$A"
expression = "[z-a]"
[dispatch]
jenkins = "nope"
"#;
    let unknown_key = "[verify]\nscheme = \"none\"\nsecert = \"x\"\n[dispatch]\n";
    let got = problems(&[("a.toml", broken), ("b.toml", unknown_key)]);
    let fields: Vec<(&str, &str)> = got
        .iter()
        .map(|(file, field, _)| (file.as_str(), field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("a.toml", "token"),
            ("a.toml", "allow.ips[0]"),
            ("a.toml", "allow.ips[1]"),
            ("a.toml", "verify.secret_env"),
            ("a.toml", "variables[0].jsonpath"),
            ("a.toml", "variables[1].regex_filter"),
            ("a.toml", "filter.expression"),
            ("a.toml", "dispatch.jenkins"),
            ("b.toml", "verify.secert"),
        ]
    );
    let reason = |field: &str| {
        got.iter()
            .find(|(_, f, _)| f == field)
            .map(|(_, _, r)| r.as_str())
            .unwrap_or_default()
    };
    assert_eq!(
        reason("token"),
        "environment variable UNSET_TOKEN is not set"
    );
    assert!(reason("dispatch.jenkins").contains("configured: main"));
    assert!(
        reason("verify.secert").contains("unknown field"),
        "{}",
        reason("verify.secert")
    );
}

#[test]
fn syntax_errors_name_the_file() {
    let got = problems(&[("bad.json", "{\"verify\": "), ("bad.yaml", "verify: [")]);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|(_, field, reason)| field.is_empty() && reason.starts_with("syntax error"))
    );
}

#[test]
fn verify_needs_exactly_one_secret_unless_none() {
    let no_secret = "[verify]\nscheme = \"github\"\n[dispatch]\n";
    let two =
        "[verify]\nscheme = \"github\"\nsecret = \"a\"\nsecret_env = \"PORT_SECRET\"\n[dispatch]\n";
    let none_with_secret = "[verify]\nscheme = \"none\"\nsecret = \"a\"\n[dispatch]\n";
    let missing_scheme = "[verify]\nsecret = \"a\"\n[dispatch]\n";
    let got = problems(&[
        ("a.toml", no_secret),
        ("b.toml", two),
        ("c.toml", none_with_secret),
        ("d.toml", missing_scheme),
    ]);
    let fields: Vec<(&str, &str)> = got
        .iter()
        .map(|(file, field, _)| (file.as_str(), field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("a.toml", "verify"),
            ("b.toml", "verify"),
            ("c.toml", "verify"),
            ("d.toml", "verify"),
        ]
    );
    assert!(got[3].2.contains("scheme"), "{}", got[3].2);
}

#[test]
fn duplicate_names_and_bad_names_are_refused() {
    let rule = "[verify]\nscheme = \"none\"\n[dispatch]\n";
    let named = "name = \"a\"\n[verify]\nscheme = \"none\"\n[dispatch]\n";
    let bad_name = "name = \"../x\"\n[verify]\nscheme = \"none\"\n[dispatch]\n";
    let got = problems(&[("a.toml", rule), ("b.toml", named), ("c.toml", bad_name)]);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("b.toml", "name"));
    assert!(got[0].2.contains("already used by"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("c.toml", "name"));
}

#[test]
fn secrets_never_appear_in_problems() {
    let rule = "token = \"inline-token-value\"\n[verify]\nscheme = \"port\"\nsecret_env = \"PORT_SECRET\"\nsecret = \"inline-secret\"\n[dispatch]\n";
    let got = problems(&[("a.toml", rule)]);
    for (_, _, reason) in &got {
        assert!(
            !reason.contains("inline-secret") && !reason.contains("s3cr3t"),
            "{reason}"
        );
    }
}

#[test]
fn an_empty_allow_section_is_an_error_not_allow_all() {
    let rule = "[allow]\nips = []\n[verify]\nscheme = \"none\"\n[dispatch]\n";
    let got = problems(&[("a.toml", rule)]);
    assert_eq!(got[0].1, "allow.ips");
}

#[test]
fn missing_rules_directory_is_a_problem() {
    let err = load_dir(Path::new("/nonexistent/rules"), &jenkins(), &env()).expect_err("missing");
    assert!(err.0[0].reason.contains("rules directory"));
}

#[test]
fn credentials_cannot_become_variables() {
    let rule = r#"
[verify]
scheme = "hmac"
header = "X-My-Signature"
secret = "k"
[[headers]]
name = "Authorization"
[[headers]]
name = "x-my-signature"
[[headers]]
name = "X-Request-Source"
[[query]]
name = "token"
[dispatch]
[idempotency]
header = "X-Gitlab-Token"
"#;
    let got = problems(&[("a.toml", rule)]);
    let fields: Vec<&str> = got.iter().map(|(_, f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "headers[0].name",
            "headers[1].name",
            "query[0].name",
            "idempotency.header"
        ]
    );
}

#[test]
fn replay_protection_needs_a_mac() {
    // A scheme without a timestamp is protected for its replay window.
    let rule = "[verify]\nscheme = \"github\"\nsecret = \"k\"\nreject_replays = true\nreplay_window_secs = 3600\n[dispatch]\n";
    load(&[("gh.toml", rule)]).expect("a github rule rejects replays for its window");
    // GitLab sends a shared token: nothing tells a replay from a new call.
    let rule = "[verify]\nscheme = \"gitlab\"\nsecret = \"k\"\nreject_replays = true\n[dispatch]\n";
    let got = problems(&[("gl.toml", rule)]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "verify.reject_replays");
}

#[test]
fn a_replay_window_is_only_for_schemes_without_a_timestamp() {
    for (scheme, extra) in [
        ("port", ""),
        (
            "hmac",
            "header = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\nsigned = \"{timestamp}.{body}\"\n",
        ),
        ("gitlab", ""),
    ] {
        let rule = format!(
            "[verify]\nscheme = \"{scheme}\"\nsecret = \"k\"\n{extra}replay_window_secs = 60\n[dispatch]\n"
        );
        let got = problems(&[("r.toml", rule.as_str())]);
        assert_eq!(got.len(), 1, "{scheme}: {got:?}");
        assert_eq!(got[0].1, "verify.replay_window_secs", "{scheme}");
    }
}

#[test]
fn a_timestamp_header_must_be_covered_by_the_signed_template() {
    // Issue 10, item 5: without {timestamp} in `signed`, rewriting the unsigned timestamp
    // header would move the window at will.
    for signed in ["", "signed = \"{body}\"\n"] {
        let rule = format!(
            "[verify]\nscheme = \"hmac\"\nsecret = \"k\"\nheader = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\n{signed}[dispatch]\n"
        );
        let got = problems(&[("r.toml", rule.as_str())]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, "verify.signed");
        assert!(got[0].2.contains("{timestamp}"), "{got:?}");
    }
}

/// PORT_TOML with a `[report]` section.
fn reporting(run_id: &str) -> String {
    format!("{PORT_TOML}\n[report]\nsink = \"port\"\nrun_id = \"{run_id}\"\n")
}

#[test]
fn a_report_reads_the_run_id_from_the_rules_own_variables() {
    let rules = load(&[("deploy.toml", &reporting("$ACTION"))]).expect("loads");
    let rule = rules.iter().next().expect("one rule");
    let report = rule.report.as_ref().expect("a report");
    assert_eq!(report.sink, "port");
    let variables: crate::extract::Variables = [("ACTION".to_owned(), "r_1".to_owned())].into();
    assert_eq!(report.run_id.render(&variables).as_deref(), Some("r_1"));
    // check(run_id, expected reason)
    let check = |run_id: &str, reason: &str| {
        let found = problems(&[("deploy.toml", &reporting(run_id))]);
        assert!(
            found.iter().any(|(file, field, why)| file == "deploy.toml"
                && field == "report.run_id"
                && why.contains(reason)),
            "{run_id}: {found:?}"
        );
    };
    check("", "must not be empty");
    check("r_fixed", "names no variable");
    check(
        "$RUN_ID",
        "reads RUN_ID but the rule resolves only [ACTION]",
    );
}
