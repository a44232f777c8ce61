//! The operator listener: its config checks (`[admin]`), what it serves, its bearer token, and
//! that nothing of it is reachable from the public listener.

use std::collections::HashMap;
use std::path::Path;

use hookgate::config::{self, Problems, Source};
use hookgate::gateway::Gateway;

use crate::helpers::test_env;

/// Compiles `hookgate.toml` text (with an empty rules directory) the way `serve` does.
fn compile(dir: &Path, toml: &str, env: &HashMap<String, String>) -> Result<Gateway, Problems> {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    let path = dir.join("hookgate.toml");
    std::fs::write(
        &path,
        format!(
            "{toml}\n[rules]\ndir = \"{}\"\n[jenkins.main]\nurl = \"http://127.0.0.1:1\"\n[delivery]\nmode = \"direct\"\n",
            dir.join("rules").display()
        ),
    )
    .expect("write");
    let source = Source::File(path);
    let settings = config::load(&source, env)?;
    Gateway::compile(settings, source, env)
}

fn problem_fields(result: Result<Gateway, Problems>) -> Vec<(String, String)> {
    match result {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .0
            .into_iter()
            .map(|p| (p.field, p.reason))
            .collect(),
    }
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = test_env();
    let problems = problem_fields(compile(
        dir.path(),
        "[admin]\nlisten = \"0.0.0.0:9091\"\n",
        &env,
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "admin.token_env");
    assert!(
        problems[0]
            .1
            .contains("required when admin.listen is not a loopback address"),
        "{problems:?}"
    );
    for toml in [
        "[admin]\nlisten = \"0.0.0.0:9091\"\ntoken_env = \"ADMIN_TOKEN\"\n",
        "[admin]\nlisten = \"[::1]:9091\"\n",
        "",
    ] {
        let gateway = compile(dir.path(), toml, &env).unwrap_or_else(|p| panic!("{toml}: {p}"));
        assert_eq!(gateway.admin_token.is_some(), toml.contains("token_env"));
    }
    let gateway = compile(dir.path(), "", &env).expect("defaults compile");
    assert_eq!(gateway.admin_listen.to_string(), "127.0.0.1:9091");
}

#[test]
fn admin_listen_and_token_problems_name_their_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("empty-token"), "\n").expect("write");
    let mut env = test_env();
    env.insert("EMPTY_TOKEN".to_owned(), String::new());
    let cases = [
        (
            "[admin]\nlisten = \"localhost\"\n",
            "admin.listen",
            "is not an address:port",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"0.0.0.0:8080\"\ntoken_env = \"ADMIN_TOKEN\"\n",
            "admin.listen",
            "overlaps server.listen",
        ),
        (
            "[admin]\nlisten = \"10.1.2.3:9091\"\ntoken_env = \"EMPTY_TOKEN\"\n",
            "admin.token_env",
            "environment variable EMPTY_TOKEN is empty",
        ),
        (
            "[admin]\ntoken_env = \"HOOKGATE_TEST_UNSET\"\n",
            "admin.token_env",
            "is not set",
        ),
        (
            &format!(
                "[admin]\nlisten = \"10.1.2.3:9091\"\ntoken_file = \"{}\"\n",
                dir.path().join("empty-token").display()
            ),
            "admin.token_file",
            "is empty",
        ),
    ];
    for (toml, field, reason) in cases {
        let problems = problem_fields(compile(dir.path(), toml, &env));
        assert!(
            problems
                .iter()
                .any(|(f, r)| f == field && r.contains(reason)),
            "{toml}: expected {field}: {reason}, got {problems:?}"
        );
        // A broken token never adds the "required" problem on top.
        assert_eq!(problems.len(), 1, "{toml}: {problems:?}");
    }
}
