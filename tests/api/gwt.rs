//! The GWT scenario corpus (`tests/gwt/*.toml`): the plugin's own published scenarios (its
//! Cucumber features and the JUnit resolver/renderer tests), rewritten as hookgate rules, run
//! through `serve` (real sockets, fake Jenkins) and through `hookgate test --json`, each call
//! checked against what GWT's assertions say: the variables, the rendered filter text, and
//! whether the job is triggered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::helpers::{AppOptions, JOB_TOKEN, json, spawn_app_with};

/// One corpus file: the GWT source it reproduces and its cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    /// The file in `jenkinsci/generic-webhook-trigger-plugin` (at 4c0b8adc) the cases come from.
    source: String,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

/// One configuration (a scenario's Givens) and the calls made against it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Unique over the corpus; the rule's name.
    name: String,
    /// The scenario or JUnit test this case reproduces.
    scenario: String,
    /// The rule's `[[variables]]`, `[[headers]]`, `[[query]]` and `[filter]` sections; the
    /// runner adds `verify` (none) and `dispatch`.
    rule: String,
    #[serde(rename = "call")]
    calls: Vec<Call>,
}

/// One request (a scenario's When) and what GWT's Thens say about it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    #[serde(default)]
    body: String,
    #[serde(default = "json_content_type")]
    content_type: String,
    /// Header lines in order; a repeated name gives several values.
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// Query parameters in order; a repeated name gives several values.
    #[serde(default)]
    query: Vec<(String, String)>,
    /// GWT's `variables are resolved to`: each listed variable has this value, where `""` also
    /// stands for "not resolved" (as the plugin's step definitions read a missing entry).
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// The listed variables are all there are (JUnit's `hasSize` / `containsOnlyKeys`); `""`
    /// then means resolved to the empty string.
    #[serde(default)]
    complete: bool,
    /// `filter text is rendered to`.
    rendered: Option<String>,
    /// `the job is triggered` / `is not triggered`.
    triggered: Option<bool>,
}

fn json_content_type() -> String {
    "application/json".to_owned()
}

/// What one path (serve or test) answered for a call.
#[derive(PartialEq)]
struct Answer {
    variables: BTreeMap<String, String>,
    rendered: String,
    triggered: bool,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gwt")
}

/// Every corpus file, in name order.
fn load() -> Vec<(String, CorpusFile)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/gwt exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no corpus files in tests/gwt");
    let files: Vec<(String, CorpusFile)> = paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read corpus file");
            let file: CorpusFile =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, file)
        })
        .collect();
    let mut names = std::collections::HashSet::new();
    for (file, corpus) in &files {
        assert!(
            corpus.source.starts_with("src/test/"),
            "{file}: source must name the plugin's test file"
        );
        for case in &corpus.cases {
            assert!(
                names.insert(case.name.clone()),
                "{file}: case name {} twice",
                case.name
            );
            assert!(!case.calls.is_empty(), "{file}: {} has no call", case.name);
        }
    }
    files
}

/// The rule file a case's snippet becomes: tokenless, unsigned, dispatching to the fake job.
fn rule_text(case: &Case) -> String {
    format!(
        "description = {:?}\n[verify]\nscheme = \"none\"\n\n{}\n\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n",
        case.scenario, case.rule
    )
}

/// Compares one answer with GWT's assertions; returns the differences.
fn compare(answer: &Answer, call: &Call) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, expected) in &call.variables {
        let got = answer.variables.get(name);
        let same = if call.complete {
            got == Some(expected)
        } else {
            got.map_or("", String::as_str) == expected
        };
        if !same {
            problems.push(format!(
                "variable {name}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    if call.complete {
        for name in answer.variables.keys() {
            if !call.variables.contains_key(name) {
                problems.push(format!(
                    "unexpected variable {name} = {:?}",
                    answer.variables[name]
                ));
            }
        }
    }
    if let Some(rendered) = &call.rendered
        && &answer.rendered != rendered
    {
        problems.push(format!(
            "rendered filter text: expected {rendered:?}, got {:?}",
            answer.rendered
        ));
    }
    if let Some(triggered) = call.triggered
        && answer.triggered != triggered
    {
        problems.push(format!(
            "triggered: expected {triggered}, got {} (rendered {:?})",
            answer.triggered, answer.rendered
        ));
    }
    problems
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("resolvedVariables is not an object: {value}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect()
}

/// Collects every difference of every call, so one run lists all broken scenarios.
fn report(path: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} GWT scenario call(s) differ through {path}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One call of the corpus, with where it comes from.
struct Probe<'c> {
    file: &'c str,
    case: &'c Case,
    index: usize,
    call: &'c Call,
}

impl Probe<'_> {
    fn label(&self) -> String {
        format!("{} {} call {}", self.file, self.case.name, self.index)
    }
}

/// Posts one call; returns the rule's job entry, or why there is none.
async fn post(
    app: &crate::helpers::TestApp,
    url: &str,
    call: &Call,
    dry_run: bool,
    rule: &str,
) -> Result<Value, String> {
    let url = reqwest::Url::parse_with_params(url, &call.query).expect("url");
    let mut request = app
        .client
        .post(url)
        .header("content-type", &call.content_type)
        .body(call.body.clone());
    if dry_run {
        request = request.header("gwt-dry-run", "true");
    }
    for (name, value) in &call.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = json(response).await;
    let job = &body["jobs"][rule];
    if !status.is_success() || job.is_null() {
        return Err(format!("{status} {body}"));
    }
    Ok(job.clone())
}

fn answer_of(job: &Value) -> Answer {
    Answer {
        variables: string_map(&job["resolvedVariables"]),
        rendered: job["regexpFilterText"].as_str().expect("text").to_owned(),
        triggered: job["triggered"].as_bool().expect("triggered"),
    }
}

/// Every call goes three ways: to its rule's own endpoint (`/hooks/{rule}`, a real dispatch to
/// the fake Jenkins); to `/generic-webhook-trigger/invoke` without a token, which selects every
/// corpus rule at once, so the body is parsed whole and shared (as a dry run); and through
/// `hookgate test --json`. Each answer must say what GWT's assertions say, and the three must
/// agree with each other, down to the body `hookgate test` says it would send and the body
/// Jenkins received.
#[actix_web::test]
async fn every_gwt_scenario_resolves_and_filters_as_gwt_through_serve_and_hookgate_test() {
    let files = load();
    let rules: Vec<(&'static str, String)> = files
        .iter()
        .flat_map(|(_, file)| &file.cases)
        .map(|case| {
            let name: &'static str = Box::leak(format!("{}.toml", case.name).into_boxed_str());
            (name, rule_text(case))
        })
        .collect();
    let probes: Vec<Probe<'_>> = files
        .iter()
        .flat_map(|(file, corpus)| {
            corpus.cases.iter().flat_map(move |case| {
                case.calls
                    .iter()
                    .enumerate()
                    .map(move |(index, call)| Probe {
                        file,
                        case,
                        index,
                        call,
                    })
            })
        })
        .collect();
    let app = spawn_app_with(AppOptions {
        rules,
        ..AppOptions::default()
    })
    .await;

    let mut failures = Vec::new();
    let mut served: Vec<Option<Value>> = Vec::with_capacity(probes.len());
    for probe in &probes {
        let name = &probe.case.name;
        match post(&app, &app.hook_url(name), probe.call, false, name).await {
            Ok(job) => {
                let answer = answer_of(&job);
                failures.extend(
                    compare(&answer, probe.call)
                        .into_iter()
                        .map(|p| format!("{} (serve): {p}", probe.label())),
                );
                served.push(Some(job));
            }
            Err(error) => {
                failures.push(format!("{} (serve): {error}", probe.label()));
                served.push(None);
            }
        }
    }
    // Every triggered call reached Jenkins once, in order, and nothing else did.
    let received = app.jenkins.requests();
    let triggered = served
        .iter()
        .flatten()
        .filter(|job| job["triggered"] == true)
        .count();
    assert_eq!(received.len(), triggered, "Jenkins calls");

    for (probe, first) in probes.iter().zip(&served) {
        let name = &probe.case.name;
        match post(&app, &app.invoke_url(), probe.call, true, name).await {
            Ok(job) => {
                let shared = answer_of(&job);
                failures.extend(
                    compare(&shared, probe.call)
                        .into_iter()
                        .map(|p| format!("{} (fan-out): {p}", probe.label())),
                );
                if let Some(first) = first
                    && answer_of(first) != shared
                {
                    failures.push(format!(
                        "{}: the fan-out answer differs from the rule's own",
                        probe.label()
                    ));
                }
            }
            Err(error) => failures.push(format!("{} (fan-out): {error}", probe.label())),
        }
    }
    assert_eq!(
        app.jenkins.requests().len(),
        received.len(),
        "dry runs dispatched"
    );

    let reports = hookgate_test_all(&probes);
    let mut sent = received.iter();
    for ((probe, report), first) in probes.iter().zip(reports).zip(&served) {
        let label = probe.label();
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                failures.push(format!("{label} (hookgate test): {error}"));
                continue;
            }
        };
        let tested = answer_of(&report);
        failures.extend(
            compare(&tested, probe.call)
                .into_iter()
                .map(|p| format!("{label} (hookgate test): {p}")),
        );
        let Some(first) = first else { continue };
        let served_answer = answer_of(first);
        if served_answer != tested {
            failures.push(format!("{label}: hookgate test differs from serve"));
        }
        if served_answer.triggered {
            let jenkins = sent.next().expect("a Jenkins call per triggered answer");
            let would_send = report["wouldSend"]["body"].as_str().unwrap_or_default();
            if would_send.as_bytes() != jenkins.body.as_slice() {
                failures.push(format!(
                    "{label}: hookgate test would send {would_send:?}, Jenkins received {:?}",
                    String::from_utf8_lossy(&jenkins.body)
                ));
            }
        } else if !report["wouldSend"].is_null() {
            failures.push(format!("{label}: hookgate test would send a filtered call"));
        }
    }
    report("the corpus", failures);
}

/// Runs `hookgate test --json` for every call, a few processes at a time; each run compiles
/// only its case's rule (a config and rules directory per case).
fn hookgate_test_all(probes: &[Probe<'_>]) -> Vec<Result<Value, String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut written = std::collections::HashSet::new();
    for probe in probes {
        let case = probe.case;
        if !written.insert(case.name.as_str()) {
            continue;
        }
        let rules = dir.path().join(&case.name);
        std::fs::create_dir(&rules).expect("mkdir");
        std::fs::write(rules.join("rule.toml"), rule_text(case)).expect("write rule");
        std::fs::write(
            dir.path().join(format!("{}.toml", case.name)),
            format!(
                "[rules]\ndir = {:?}\n[jenkins.main]\nurl = \"http://127.0.0.1:9\"\n",
                rules.display().to_string()
            ),
        )
        .expect("write config");
    }
    let workers = 4;
    let mut results: Vec<(usize, Result<Value, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let dir = dir.path();
                scope.spawn(move || {
                    probes
                        .iter()
                        .enumerate()
                        .skip(worker)
                        .step_by(workers)
                        .map(|(n, probe)| {
                            let config = dir.join(format!("{}.toml", probe.case.name));
                            let payload =
                                dir.join(format!("{}-{}.payload", probe.case.name, probe.index));
                            (n, test_one(&config, &payload, probe.call))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("worker"))
            .collect()
    });
    results.sort_by_key(|(n, _)| *n);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Runs `hookgate test --json` for one call: its report, checked against its exit code.
fn test_one(config: &Path, payload: &Path, call: &Call) -> Result<Value, String> {
    std::fs::write(payload, &call.body).expect("write payload");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command
        .arg("--config")
        .arg(config)
        .args(["test", "rule"])
        .arg(payload)
        .arg("--json")
        .arg("--header")
        .arg(format!("Content-Type: {}", call.content_type))
        .env_remove("HOOKGATE_CONFIG")
        .env("JOB_TOKEN", JOB_TOKEN);
    for (name, value) in &call.headers {
        command.arg("--header").arg(format!("{name}: {value}"));
    }
    for (name, value) in &call.query {
        command.arg("--query").arg(format!("{name}={value}"));
    }
    let output = command.output().expect("hookgate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).map_err(|_| {
        format!(
            "not JSON: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if report.get("error").is_some() {
        return Err(report.to_string());
    }
    // The exit code says the same as the report: 0 would dispatch, 2 filtered.
    let triggered = report["triggered"] == true;
    let code = output.status.code();
    if code != Some(if triggered { 0 } else { 2 }) {
        return Err(format!("exit {code:?} for triggered = {triggered}"));
    }
    Ok(report)
}
