//! `hookgate import-gwt` on realistic `config.xml` samples (written from GWT's XML form, as
//! `GET /job/<name>/config.xml` returns it, freestyle and Pipeline): the printed rule is compared
//! whole, passes `check` once its placeholders are set, and `hookgate test` with it resolves the
//! variables the job's GWT trigger would.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

fn samples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gwt-import"))
}

fn import(sample: &str, name: &str) -> Output {
    Command::new(BIN)
        .args(["import-gwt", &samples().join(sample).display().to_string()])
        .args(["--name", name])
        .env_remove("HOOKGATE_CONFIG")
        .output()
        .expect("hookgate runs")
}

/// Imports `sample` as `name`, checks the printed rule against `tests/gwt-import/<name>.toml`,
/// then runs `check` and `hookgate test` with it on `payload`; returns `test --json`'s answer.
fn import_and_test(
    sample: &str,
    name: &str,
    placeholders: &[&str],
    payload: &str,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let output = import(sample, name);
    let (rule, warnings) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "{warnings}");
    let expected =
        std::fs::read_to_string(samples().join(format!("{name}.toml"))).expect("expected rule");
    assert_eq!(rule, expected, "the printed rule changed:\n{rule}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join(format!("rules/{name}.toml")), &rule).expect("write");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        "[jenkins.main]\nurl = \"http://127.0.0.1:9\"\n[delivery]\nmode = \"direct\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("payload.json"), payload).expect("write");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env_remove("HOOKGATE_CONFIG")
            .envs(placeholders.iter().map(|name| (*name, "placeholder-value")))
            .output()
            .expect("hookgate runs")
    };
    let check = run(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut args = vec!["test", name, "payload.json", "--json"];
    args.extend_from_slice(extra);
    let tested = run(&args);
    let answer: serde_json::Value = serde_json::from_slice(&tested.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&tested.stdout),
            String::from_utf8_lossy(&tested.stderr)
        )
    });
    (warnings, answer)
}

#[test]
fn a_freestyle_jobs_trigger_becomes_a_rule_that_resolves_what_gwt_did() {
    let push = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/api"},"commits":[{"id":"a1"},{"id":"b2"}]}"#;
    let (warnings, answer) = import_and_test(
        "freestyle-push.xml",
        "push-build",
        &["PUSH_BUILD_TOKEN", "PUSH_BUILD_JENKINS_TOKEN"],
        push,
        &["--header", "X-GitHub-Event: push", "--query", "env=prod-1"],
    );
    let variables = &answer["resolvedVariables"];
    // GWT: the regexpFilter's matches deleted, a list flattened with _<n>, headers lower-cased
    // with `_`, request variables filtered.
    assert_eq!(variables["ref"], "main", "{answer}");
    assert_eq!(variables["repo"], "acme/api");
    assert_eq!(variables["commits_0"], "a1");
    assert_eq!(variables["commits_1"], "b2");
    assert_eq!(variables["x_github_event"], "push");
    assert_eq!(variables["env"], "prod");
    assert_eq!(answer["triggered"], true, "{answer}");
    for expected in ["causeString `Push to $ref of $repo`", "printPostContent"] {
        assert!(warnings.contains(expected), "{warnings}");
    }
    // The token is never printed, on either stream.
    let output = import("freestyle-push.xml", "push-build");
    for stream in [&output.stdout, &output.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains("freestyle-push-token-value"));
    }
}

#[test]
fn a_pipeline_jobs_trigger_becomes_a_rule_and_says_what_it_leaves_out() {
    let port = r#"{"action":"rollback_service","context":{"runId":"r_7"},"payload":{"properties":{"env":"prod"}}}"#;
    let (warnings, answer) = import_and_test(
        "pipeline-port.xml",
        "port-deploy",
        &["PORT_DEPLOY_TOKEN", "PORT_DEPLOY_JENKINS_TOKEN"],
        port,
        &[],
    );
    let variables = &answer["resolvedVariables"];
    assert_eq!(variables["RUN_ID"], "r_7", "{answer}");
    assert_eq!(variables["ACTION"], "rollback_service");
    // shouldNotFlattern (GWT's own spelling): the object as JSON, not flattened.
    assert_eq!(variables["PROPERTIES"], r#"{"env":"prod"}"#);
    assert!(variables.get("PROPERTIES_env").is_none(), "{answer}");
    assert_eq!(answer["triggered"], true);
    for expected in [
        "variable `LEGACY_ID` is left out: an XPath expression",
        "the token is the Jenkins credential `port-deploy-gwt-token` (tokenCredentialId)",
        "silentResponse",
        "overrideQuietPeriod",
        "causeString `Port run $RUN_ID`",
    ] {
        assert!(
            warnings.contains(expected),
            "missing `{expected}`:\n{warnings}"
        );
    }
}

#[test]
fn a_file_without_a_generic_trigger_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.xml");
    std::fs::write(&path, "<project><triggers/></project>").expect("write");
    let output = Command::new(BIN)
        .args(["import-gwt", &path.display().to_string()])
        .env_remove("HOOKGATE_CONFIG")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no Generic Webhook Trigger"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_tokenless_job_gets_a_rule_without_tokens_and_credentials_are_left_out() {
    let push = r#"{"repository":{"name":"webapp"}}"#;
    let (warnings, answer) = import_and_test(
        "tokenless-gitea.xml",
        "gitea-webapp",
        &[],
        push,
        &[
            "--header",
            "X-Gitea-Event: push",
            "--header",
            "X-Hub-Signature: sha1=abc",
        ],
    );
    let variables = &answer["resolvedVariables"];
    assert_eq!(variables["GITEA_REPO"], "webapp", "{answer}");
    assert_eq!(variables["x_gitea_event"], "push");
    // A signature header never becomes a variable (it would be echoed and sent to Jenkins).
    assert!(variables.get("x_hub_signature").is_none(), "{answer}");
    assert_eq!(answer["triggered"], true);
    for expected in [
        "the job has no token: the rule takes any caller",
        "headers variable `X-Hub-Signature` is left out",
        "query variable `token` is left out",
        "variable `UNUSED` is left out: it has no expression",
    ] {
        assert!(
            warnings.contains(expected),
            "missing `{expected}`:\n{warnings}"
        );
    }
}

#[test]
fn a_name_hookgate_cannot_take_is_refused() {
    let output = import("tokenless-gitea.xml", ".hidden");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not a valid rule name"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
