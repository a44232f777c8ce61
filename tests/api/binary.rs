//! The `hookgate` binary itself: `check`, `test`, `sign`, `--version`, and a full `serve`
//! scenario at debug level whose log must not contain any secret, token or MAC.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::fake_jenkins::{Behaviour, FakeJenkins, FakeJenkinsConfig};
use crate::helpers::{
    AppOptions, github_signature, hmac_sha256, now, port_headers, spawn_app_with,
};

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("HOOKGATE_CONFIG")
        .env("JOB_TOKEN", crate::helpers::JOB_TOKEN)
        .output()
        .expect("hookgate runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every demo secret shipped in `examples/secrets/`.
fn demo_secrets() -> Vec<String> {
    std::fs::read_dir(repo().join("examples/secrets"))
        .expect("secrets dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_none_or(|x| x != "md"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .expect("read")
                .trim()
                .to_owned()
        })
        .collect()
}

#[test]
fn version_is_printed() {
    let output = run(&["--version"], repo());
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("hookgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_shipped_rule_passes_check_and_no_secret_is_printed() {
    let output = run(&["check"], repo());
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "{out}\n{err}");
    for rule in ["port-deploy", "github-push", "gitlab-push"] {
        assert!(out.contains(&format!("  {rule}  ")), "{out}");
    }
    assert!(out.contains("ok: 3 rules compiled"), "{out}");
    assert!(
        out.contains(
            "admin: listen 127.0.0.1:9091 (/metrics, /deliveries/{id}, /readyz; no token)"
        ),
        "{out}"
    );
    for secret in demo_secrets() {
        assert!(
            !out.contains(&secret) && !err.contains(&secret),
            "{secret} printed"
        );
    }
    // The example config compiles too.
    let output = run(&["check", "--config", "examples/hookgate.toml"], repo());
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_lists_every_problem_with_file_and_field_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        "[server]\nallow_ips = [\"10.0.0.0/99\"]\n[jenkins.main]\nurl = \"ftp://x\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/a.toml"),
        "[verify]\nscheme = \"port\"\nsecret_env = \"HOOKGATE_TEST_UNSET\"\n[filter]\nexpression = \"(\"\n[dispatch]\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/b.yaml"),
        "verify:\n  scheme: none\n  algoritm: sha1\ndispatch: {}\n",
    )
    .expect("write");
    let output = run(&["check"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    for expected in [
        "hookgate.toml: server.allow_ips[0]:",
        "hookgate.toml: jenkins.main.url:",
        "a.toml: verify.secret_env: environment variable HOOKGATE_TEST_UNSET is not set",
        "a.toml: filter.expression:",
        "b.yaml: verify.algoritm: unknown field",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(err.contains("5 problems"), "{err}");
}

#[test]
fn check_and_serve_refuse_a_non_loopback_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    let config = "[admin]\nlisten = \"0.0.0.0:0\"\n[jenkins.main]\nurl = \"http://127.0.0.1:1\"\n";
    std::fs::write(dir.path().join("hookgate.toml"), config).expect("write");
    for command in ["check", "serve"] {
        let output = run(&[command], dir.path());
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command}: {}",
            stdout(&output)
        );
        let err = stderr(&output);
        assert!(
            err.contains(
                "hookgate.toml: admin.token_env: required when admin.listen is not a loopback address"
            ),
            "{command}: {err}"
        );
    }
    // With a token from a file it passes, and the summary says a token is required.
    std::fs::write(dir.path().join("admin-token"), "an-admin-token\n").expect("write");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        config.replace(
            "[jenkins.main]",
            "token_file = \"admin-token\"\n[jenkins.main]",
        ),
    )
    .expect("write");
    let output = run(&["check"], dir.path());
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(
        out.contains(
            "admin: listen 0.0.0.0:0 (/metrics, /deliveries/{id}, /readyz; bearer token required)"
        ),
        "{out}"
    );
    assert!(
        out.contains("warning: hookgate.toml: admin.listen: 0.0.0.0:0 is reachable"),
        "{out}"
    );
    assert!(!out.contains("an-admin-token"), "{out}");
}

#[test]
fn invariant_a_broken_rule_stops_start_up_with_every_problem_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        "[jenkins.main]\nurl = \"http://127.0.0.1:1\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/a.toml"),
        "[verify]\nscheme = \"github\"\nsecret_env = \"HOOKGATE_TEST_UNSET\"\n[dispatch]\n",
    )
    .expect("write");
    // An empty secret is refused too: an empty HMAC key would accept forged calls.
    std::fs::write(dir.path().join("rules/empty-secret"), "\n").expect("write");
    std::fs::write(
        dir.path().join("rules/b.toml"),
        "[verify]\nscheme = \"port\"\nsecret_file = \"empty-secret\"\n[dispatch]\n",
    )
    .expect("write");
    let check = run(&["check"], dir.path());
    let serve = run(&["serve"], dir.path());
    assert_eq!(serve.status.code(), Some(1));
    for line in [
        "a.toml: verify.secret_env: environment variable HOOKGATE_TEST_UNSET is not set",
        "b.toml: verify.secret_file:",
    ] {
        assert!(stderr(&check).contains(line), "{}", stderr(&check));
        assert!(stderr(&serve).contains(line), "{}", stderr(&serve));
    }
    assert!(stderr(&serve).contains("is empty"), "{}", stderr(&serve));
}

#[test]
fn test_command_shows_variables_filter_and_what_would_be_sent() {
    let output = run(
        &["test", "port-deploy", "examples/payloads/port-deploy.json"],
        repo(),
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(out.contains("verification: skipped"), "{out}");
    assert!(out.contains("  ACTION = deploy_service"), "{out}");
    assert!(out.contains("  result:     matched"), "{out}");
    assert!(
        out.contains("idempotency key: r_QOz6WoOB1Q2lmhZZ (repeats within 86400 s are duplicates)"),
        "{out}"
    );
    assert!(
        out.contains("POST http://127.0.0.1:8081/generic-webhook-trigger/invoke?token=[redacted]"),
        "{out}"
    );
    for secret in demo_secrets() {
        assert!(!out.contains(&secret), "{secret} printed");
    }
    // A payload the filter rejects: exit 2, nothing would be sent.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"action":"restart","context":{"runId":"r_1"}}"#).expect("write");
    let output = run(
        &["test", "port-deploy", other.to_str().expect("utf-8")],
        repo(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stdout(&output).contains("would send: nothing"));
    // Headers and query parameters are taken into account.
    let output = run(
        &[
            "test",
            "github-push",
            "examples/payloads/github-push.json",
            "--header",
            "X-GitHub-Event: push",
        ],
        repo(),
    );
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("  x_github_event = push"));
}

#[actix_web::test]
async fn sign_prints_headers_that_the_gateway_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("port-secret");
    std::fs::write(&secret_file, "a-signing-secret\n").expect("write");
    let rule = format!(
        "token = \"sign-token\"\n[verify]\nscheme = \"port\"\nsecret_file = \"{}\"\n[[variables]]\nname = \"ACTION\"\njsonpath = \"$.action\"\n[dispatch]\ntoken_env = \"JOB_TOKEN\"\n",
        secret_file.display()
    );
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/signed.toml"), &rule).expect("write");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        "[jenkins.main]\nurl = \"http://127.0.0.1:1\"\n",
    )
    .expect("write");
    let body = r#"{"action":"deploy_service"}"#;
    std::fs::write(dir.path().join("body.json"), body).expect("write");
    let output = run(&["sign", "--rule", "signed", "body.json"], dir.path());
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(
        out.contains("curl -sS -X POST 'http://127.0.0.1:8080/hooks/signed'"),
        "{out}"
    );
    assert!(out.contains("--data-binary '@body.json'"), "{out}");
    let header = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let app = spawn_app_with(AppOptions {
        rules: vec![("signed.toml", rule.clone())],
        ..AppOptions::default()
    })
    .await;
    let response = app
        .client
        .post(app.hook_url("signed"))
        .header("x-port-timestamp", header("X-Port-Timestamp"))
        .header("x-port-signature", header("X-Port-Signature"))
        .bearer_auth("sign-token")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
}

/// A running `hookgate serve` whose stderr is collected.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) log: Arc<Mutex<String>>,
    pub(crate) address: String,
    pub(crate) admin_address: String,
}

impl Served {
    /// Sends the gateway a signal by name (`-HUP`, `-TERM`), as `kill` and systemd do.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(dir: &Path, env: &[(&str, &str)]) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", "hookgate.toml"])
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hookgate starts");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    // Owned by `Served` from here on, so a start-up failure still kills and reaps the child.
    let mut served = Served {
        child,
        log: Arc::clone(&log),
        address: String::new(),
        admin_address: String::new(),
    };
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().expect("lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log.lock().expect("lock").clone();
        let line = text.lines().find(|l| l.contains("hookgate is listening."));
        let field = |name: &str| {
            line.and_then(|l| l.split(&format!(" {name}=")).nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(|address| format!("http://{address}"))
        };
        if let (Some(address), Some(admin)) = (field("listen"), field("admin")) {
            served.address = address;
            served.admin_address = admin;
            return served;
        }
        assert!(Instant::now() < deadline, "hookgate did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[actix_web::test]
async fn invariant_no_log_line_or_answer_contains_a_secret_token_or_mac() {
    const PORT_SECRET: &str = "leak-port-client-secret";
    const GH_SECRET: &str = "leak-github-secret";
    const GL_SECRET: &str = "leak-gitlab-secret";
    const SENDER: &str = "leak-sender-token";
    const JOB: &str = "leak-job-token";
    const API: &str = "leak-jenkins-api-token";
    const LOCKED: &str = "leak-locked-token";
    const LIMITED: &str = "leak-limited-token";
    const ADMIN: &str = "leak-admin-token";
    const WRONG_ADMIN: &str = "leak-wrong-admin-token";
    let jenkins = FakeJenkins::start(FakeJenkinsConfig {
        jobs: vec![(JOB.to_owned(), "deploy".to_owned())],
        basic_auth: Some(("hookgate".to_owned(), API.to_owned())),
    })
    .await
    .expect("fake Jenkins");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 4096\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"LEAK_ADMIN\"\n[jenkins.main]\nurl = \"{}\"\nuser = \"hookgate\"\napi_token_env = \"LEAK_API\"\ntimeout_secs = 2\n[delivery]\nmode = \"direct\"\n[log]\nlevel = \"debug\"\n",
            jenkins.url()
        ),
    )
    .expect("write");
    let variables = "[[variables]]\nname = \"ACTION\"\njsonpath = \"$.action\"\n[[headers]]\nname = \"X-Port-Timestamp\"\n";
    std::fs::write(
        dir.path().join("rules/port.toml"),
        format!("token_env = \"LEAK_SENDER\"\n[verify]\nscheme = \"port\"\nsecret_env = \"LEAK_PORT\"\n{variables}[dispatch]\ntoken_env = \"LEAK_JOB\"\n"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/gh.toml"),
        format!("token_env = \"LEAK_SENDER\"\n[verify]\nscheme = \"github\"\nsecret_env = \"LEAK_GH\"\n{variables}[dispatch]\ntoken_env = \"LEAK_JOB\"\nbody = \"variables\"\n"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/gl.toml"),
        "[verify]\nscheme = \"gitlab\"\nsecret_env = \"LEAK_GL\"\n[dispatch]\ntoken_env = \"LEAK_JOB\"\n",
    )
    .expect("write");
    // A rule only 10.0.0.0/8 may call (403 from loopback), and one limited to 1 call/s (429).
    std::fs::write(
        dir.path().join("rules/locked.toml"),
        "token_env = \"LEAK_LOCKED\"\n[allow]\nips = [\"10.0.0.0/8\"]\n[verify]\nscheme = \"none\"\n[dispatch]\ntoken_env = \"LEAK_JOB\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/limited.toml"),
        "token_env = \"LEAK_LIMITED\"\n[verify]\nscheme = \"none\"\n[rate]\nper_sec = 1\nburst = 1\n[dispatch]\ntoken_env = \"LEAK_JOB\"\n",
    )
    .expect("write");
    let served = serve(
        dir.path(),
        &[
            ("LEAK_LOCKED", LOCKED),
            ("LEAK_LIMITED", LIMITED),
            ("LEAK_PORT", PORT_SECRET),
            ("LEAK_GH", GH_SECRET),
            ("LEAK_GL", GL_SECRET),
            ("LEAK_SENDER", SENDER),
            ("LEAK_JOB", JOB),
            ("LEAK_API", API),
            ("LEAK_ADMIN", ADMIN),
        ],
    );
    let client = reqwest::Client::new();
    let invoke = format!("{}/generic-webhook-trigger/invoke", served.address);
    let body = r#"{"action":"deploy_service","context":{"runId":"r_1"}}"#;
    let t = now();
    let port = port_headers(PORT_SECRET, t, body);
    let port_mac = port["x-port-signature"].to_str().expect("ascii").to_owned();
    let gh_mac = github_signature(GH_SECRET, body);
    let wrong_mac = github_signature("not-the-secret", body);
    let mut seen = Vec::new();
    let send = |request: reqwest::RequestBuilder| {
        let request = request.build().expect("request");
        let client = client.clone();
        async move {
            let response = client.execute(request).await.expect("response");
            let status = response.status();
            (status, response.text().await.expect("body"))
        }
    };
    // Triggered through both rules (fan-out), by every token source.
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port.clone())
                .header("x-hub-signature-256", &gh_mac)
                .body(body),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(&invoke)
                .bearer_auth(SENDER)
                .headers(port_headers(PORT_SECRET, t - 2, body))
                .body(body),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(&invoke)
                .header("token", SENDER)
                .header("x-hub-signature-256", &wrong_mac)
                .body(body),
        )
        .await,
    );
    // A captured request replayed inside its window.
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port.clone())
                .body(body),
        )
        .await,
    );
    // Rejections: wrong token, wrong signature, stale timestamp, bad JSON, too large, dry run.
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}-wrong"))
                .body(body),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .header("x-port-timestamp", t.to_string())
                .header("x-port-signature", "v1,AAAA")
                .body(body),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port_headers(PORT_SECRET, t - 3600, body)),
        )
        .await,
    );
    let bad = "{\"action\":";
    // Fan-out: the Port rule gets as far as parsing (400), the GitHub rule fails its
    // signature (401); the earliest failing check decides.
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port_headers(PORT_SECRET, t, bad))
                .body(bad),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(format!("{}/hooks/port?token={SENDER}", served.address))
                .headers(port_headers(PORT_SECRET, t - 10, bad))
                .body(bad),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .body("x".repeat(5000)),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port_headers(PORT_SECRET, t - 3, body))
                .header("gwt-dry-run", "true")
                .body(body),
        )
        .await,
    );
    // GitLab: its token header doubles as the GWT token source.
    seen.push(
        send(
            client
                .post(format!("{}/hooks/gl", served.address))
                .header("x-gitlab-token", GL_SECRET)
                .body(body),
        )
        .await,
    );
    seen.push(
        send(
            client
                .post(format!("{}/hooks/gl", served.address))
                .header("x-gitlab-token", "wrong-gitlab")
                .body(body),
        )
        .await,
    );
    // Jenkins failing and slow.
    jenkins.set_behaviour(Behaviour::Status(500));
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port_headers(PORT_SECRET, t - 4, body))
                .body(body),
        )
        .await,
    );
    jenkins.set_behaviour(Behaviour::Delay(Duration::from_secs(3)));
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .headers(port_headers(PORT_SECRET, t - 5, body))
                .body(body),
        )
        .await,
    );
    // Every other refusal: rule allowlist, rule rate, compressed body, header flood, method,
    // unknown path; and OPTIONS. Then the operator endpoints: absent on the public listener,
    // and on the admin listener with the token, a wrong one and none.
    jenkins.set_behaviour(Behaviour::Normal);
    let base = served.address.clone();
    let admin = served.admin_address.clone();
    seen.push(send(client.post(format!("{invoke}?token={LOCKED}")).body(body)).await);
    seen.push(send(client.post(format!("{invoke}?token={LIMITED}")).body(body)).await);
    seen.push(send(client.post(format!("{invoke}?token={LIMITED}")).body(body)).await);
    seen.push(
        send(
            client
                .post(format!("{invoke}?token={SENDER}"))
                .header("content-encoding", "gzip")
                .body(body),
        )
        .await,
    );
    let mut flood = client.post(format!("{invoke}?token={SENDER}"));
    for i in 0..80 {
        flood = flood.header(format!("x-flood-{i}"), SENDER);
    }
    seen.push(send(flood.body(body)).await);
    seen.push(send(client.get(format!("{base}/hooks/port?token={SENDER}"))).await);
    seen.push(send(client.get(format!("{base}/nope?token={SENDER}"))).await);
    seen.push(send(client.request(reqwest::Method::OPTIONS, &invoke)).await);
    seen.push(send(client.get(format!("{base}/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV"))).await);
    seen.push(send(client.get(format!("{base}/metrics"))).await);
    seen.push(
        send(
            client
                .get(format!("{admin}/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV"))
                .bearer_auth(ADMIN),
        )
        .await,
    );
    seen.push(send(client.get(format!("{admin}/metrics")).bearer_auth(ADMIN)).await);
    seen.push(
        send(
            client
                .get(format!("{admin}/metrics"))
                .bearer_auth(WRONG_ADMIN),
        )
        .await,
    );
    seen.push(send(client.get(format!("{admin}/metrics"))).await);

    let statuses: Vec<u16> = seen.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(
        statuses,
        vec![
            200, 200, 401, 401, 404, 401, 401, 401, 400, 413, 200, 200, 401, 502, 504, //
            403, 200, 429, 415, 431, 405, 404, 200, 404, 404, //
            404, 200, 401, 401
        ]
    );
    // The three accepted calls reached Jenkins (fan-out twice, bearer once), plus GitLab.
    assert!(jenkins.requests().len() >= 5);

    let port_raw_mac = port_mac.trim_start_matches("v1,").to_owned();
    let gh_raw_mac = gh_mac.trim_start_matches("sha256=").to_owned();
    let raw_hex = hex::encode(hmac_sha256(
        PORT_SECRET,
        &[t.to_string().as_bytes(), b".", body.as_bytes()],
    ));
    let forbidden = [
        PORT_SECRET,
        GH_SECRET,
        GL_SECRET,
        SENDER,
        JOB,
        API,
        LOCKED,
        LIMITED,
        ADMIN,
        WRONG_ADMIN,
        &port_raw_mac,
        &gh_raw_mac,
        &raw_hex,
        "wrong-gitlab",
    ];
    std::thread::sleep(Duration::from_millis(300));
    let log = served.log.lock().expect("lock").clone();
    assert!(
        log.contains("DEBUG") || log.contains("INFO"),
        "logging is on:\n{log}"
    );
    assert!(log.contains("request_id"), "{log}");
    for needle in forbidden {
        assert!(!log.contains(needle), "log leaks `{needle}`:\n{log}");
        for (status, text) in &seen {
            assert!(
                !text.contains(needle),
                "{status} answer leaks `{needle}`: {text}"
            );
        }
    }
    drop(served);
}

#[test]
fn check_warns_about_unsafe_but_valid_configurations() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        "[server]\nlisten = \"0.0.0.0:8080\"\n[jenkins.main]\nurl = \"http://127.0.0.1:1\"\n[delivery]\ndone_retention_secs = 3600\n",
    )
    .expect("write");
    let open = dir.path().join("rules/open.toml");
    std::fs::write(
        &open,
        "token = \"inline-sender-token\"\n[verify]\nscheme = \"none\"\n[dispatch]\ntoken = \"inline-job-token\"\n",
    )
    .expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    // Two rules signed with one secret, one of them tokenless; and port-sha1 without replay
    // protection. The store directory exists and is open to other users.
    std::fs::write(dir.path().join("shared-secret"), "one-secret-for-both\n").expect("write");
    std::fs::write(
        dir.path().join("rules/signed.toml"),
        "token_file = \"../shared-secret\"\n[verify]\nscheme = \"port-sha1\"\nsecret_file = \"../shared-secret\"\nreject_replays = false\n[dispatch]\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("rules/tokenless.toml"),
        "[verify]\nscheme = \"port-sha1\"\nsecret_file = \"../shared-secret\"\n[dispatch]\n",
    )
    .expect("write");
    let store = dir.path().join("var/hookgate");
    std::fs::create_dir_all(&store).expect("mkdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let output = run(&["check"], dir.path());
    let out = stdout(&output);
    assert!(output.status.success(), "warnings do not fail check: {out}");
    for expected in [
        "warning: rules/tokenless.toml: token: this rule has no token and verifies with the same secret as `signed`",
        "warning: rules/tokenless.toml: verify: signatures are remembered for 86400 s but delivered calls are kept 3600 s",
        "warning: rules/signed.toml: verify.reject_replays: port-sha1 signs no timestamp",
        "warning: hookgate.toml: delivery.store: var/hookgate holds every accepted body and other users can enter it",
        "warning: hookgate.toml: server.listen: 0.0.0.0:8080 is reachable from other hosts",
        "warning: rules/open.toml: verify.scheme: `none` with no IP allowlist",
        "warning: rules/open.toml: token: the secret is written in the rule file",
        "warning: rules/open.toml: dispatch.token: the secret is written in the rule file",
        "the file holds a secret and is readable by every user",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in\n{out}");
    }
    assert!(
        !out.contains("inline-sender-token")
            && !out.contains("inline-job-token")
            && !out.contains("one-secret-for-both"),
        "{out}"
    );
}

/// `[jenkins.main]` with an events token and three sinks of `sinks_url`, for the binary tests.
fn events_config(dir: &Path, sinks_url: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    std::fs::write(
        dir.join("hookgate.toml"),
        format!(
            r#"[server]
listen = "127.0.0.1:0"
rate_per_client = 0
[admin]
listen = "127.0.0.1:0"
[jenkins.main]
url = "http://127.0.0.1:9"
events_token_env = "EV_TOKEN"
[delivery]
store = "store"
retry_initial_ms = 20
retry_max_ms = 50
max_attempts = 3
[log]
level = "debug"
[sinks.dora]
kind = "allstacks"
url = "{sinks_url}/webhook/company/1234/cicd_job"
token_env = "EV_PAT"
service_id = 42
[sinks.oncall]
kind = "alert"
url = "{sinks_url}/functions/v1/events"
token_env = "EV_ITOC"
token_in = "query"
[sinks.relay]
kind = "forward"
url = "{sinks_url}/forward/relay"
token_env = "EV_RELAY"
{extra}"#
        ),
    )
    .expect("write config");
}

#[test]
fn test_event_shows_each_sink_and_why_not_with_credentials_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    events_config(dir.path(), "http://127.0.0.1:9", "");
    let env = [
        ("EV_TOKEN", "tev-events-token"),
        ("EV_PAT", "tev-allstacks-pat"),
        ("EV_ITOC", "tev-itoc-token"),
        ("EV_RELAY", "tev-relay-token"),
    ];
    let run_event = |file: &str| {
        let output = Command::new(BIN)
            .args(["test-event", &repo().join(file).display().to_string()])
            .current_dir(dir.path())
            .env_remove("HOOKGATE_CONFIG")
            .envs(env)
            .output()
            .expect("runs");
        let (out, err) = (stdout(&output), stderr(&output));
        for (_, secret) in env {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{secret}:\n{out}{err}"
            );
        }
        (output.status.code(), out, err)
    };
    let (code, out, err) = run_event("examples/payloads/jenkins-freestyle-started.json");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("sink dora: skipped: phase STARTED is not in match.phases [FINALIZED]"),
        "{out}"
    );
    assert!(out.contains("sink oncall: matches; would send:"), "{out}");
    assert!(
        out.contains("  POST http://127.0.0.1:9/functions/v1/events?token=[redacted]"),
        "{out}"
    );
    assert!(out.contains("  Authorization: Bearer [redacted]"), "{out}");
    // The forwarded body is the event's bytes, exactly.
    let started =
        std::fs::read_to_string(repo().join("examples/payloads/jenkins-freestyle-started.json"))
            .expect("sample");
    assert!(out.contains(started.trim()), "{out}");

    let (code, out, _) = run_event("examples/payloads/jenkins-pipeline-finalized.json");
    assert_eq!(code, Some(0));
    assert!(
        out.contains("sink dora: matches, but would be dead-lettered: cannot build the Allstacks record: no repository"),
        "{out}"
    );

    // Nothing would be sent: exit 2. A body the endpoint would refuse: exit 1 with the reason.
    let only_dora = dir.path().join("only-dora.toml");
    let config = std::fs::read_to_string(dir.path().join("hookgate.toml")).expect("config");
    std::fs::write(
        &only_dora,
        &config[..config.find("[sinks.oncall]").expect("oncall")],
    )
    .expect("write");
    let output = Command::new(BIN)
        .args([
            "test-event",
            &repo()
                .join("examples/payloads/jenkins-freestyle-queued.json")
                .display()
                .to_string(),
            "--config",
            "only-dora.toml",
        ])
        .current_dir(dir.path())
        .envs(env)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"url":"job/x/","build":{"number":1}}"#).expect("write");
    let (code, _, err) = run_event(bad.to_str().expect("utf-8"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("the endpoint would answer 400: Missing `build.phase`."),
        "{err}"
    );
}

#[test]
fn check_reports_every_sink_problem_with_its_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    events_config(
        dir.path(),
        "http://127.0.0.1:9",
        r#"[sinks.dora.match]
phases = ["DONE"]
results = ["SUCCESS", "ABORTED"]
jobs = "("
[sinks.bad]
kind = "forward"
url = "http://x.example/hook?token=abc"
service_id = 7
timeout_secs = 0
[sinks.bad.match]
jenkins = ["nope"]
parameters = { TARGET_ENV = "[" }
[sinks.nopat]
kind = "allstacks"
url = "ftp://x"
optional_parameters = ["A","B","C","D","E","F","G","H","I","J","K","L","M","N"]
statuses = { SUCCESS = "Passed", DONE = "Failed" }
"#,
    );
    let output = Command::new(BIN)
        .args(["check"])
        .current_dir(dir.path())
        .env_remove("HOOKGATE_CONFIG")
        .env("EV_TOKEN", "x")
        .env("EV_ITOC", "x")
        .env("EV_RELAY", "x")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    for expected in [
        "hookgate.toml: sinks.dora.token_env: environment variable EV_PAT is not set",
        "hookgate.toml: sinks.dora.match.phases[0]: `DONE` is not a phase",
        "hookgate.toml: sinks.dora.match.jobs: ",
        "hookgate.toml: sinks.dora.statuses: match.results takes ABORTED but statuses has no entry for it",
        "hookgate.toml: sinks.bad.url: a token in the URL would be logged",
        "hookgate.toml: sinks.bad.service_id: only for kind = \"allstacks\", not \"forward\"",
        "hookgate.toml: sinks.bad.timeout_secs: must be at least 1",
        "hookgate.toml: sinks.bad.match.jenkins[0]: no Jenkins target `nope`",
        "hookgate.toml: sinks.bad.match.parameters.TARGET_ENV: ",
        "hookgate.toml: sinks.nopat.url: must use http or https",
        "hookgate.toml: sinks.nopat.token_env: required",
        "hookgate.toml: sinks.nopat.service_id: required",
        "hookgate.toml: sinks.nopat.optional_parameters: at most 13",
        "hookgate.toml: sinks.nopat.statuses.SUCCESS: `Passed` is not an Allstacks status",
        "hookgate.toml: sinks.nopat.statuses.DONE: `DONE` is not a Jenkins result",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(!err.contains("abc"), "the URL's token is not echoed: {err}");
}

#[actix_web::test]
async fn invariant_no_log_line_answer_or_cli_output_leaks_an_events_token_or_a_sink_credential() {
    use crate::helpers::fake_sinks::{FakeSinks, FakeSinksConfig, Sink};
    const EVENTS: &str = "leak-events-token";
    const PAT: &str = "leak-allstacks-pat";
    const ITOC: &str = "leak-itoc360-token";
    const RELAY: &str = "leak-relay-token";
    // The fakes expect other credentials: Allstacks and itoc360 refuse (401/404) and log it.
    let sinks = FakeSinks::start(FakeSinksConfig {
        allstacks_token: "the-real-pat".to_owned(),
        itoc360_token: "the-real-itoc".to_owned(),
        ..FakeSinksConfig::default()
    })
    .await
    .expect("fake sinks");
    let dir = tempfile::tempdir().expect("tempdir");
    events_config(
        dir.path(),
        &sinks.url(),
        // A sink nobody listens for: network errors must not quote its URL and token.
        "[sinks.gone]\nkind = \"forward\"\nurl = \"http://127.0.0.1:9/gone\"\ntoken_env = \"EV_RELAY\"\ntoken_in = \"query\"\n",
    );
    let env = [
        ("EV_TOKEN", EVENTS),
        ("EV_PAT", PAT),
        ("EV_ITOC", ITOC),
        ("EV_RELAY", RELAY),
    ];
    let served = serve(dir.path(), &env);
    let client = reqwest::Client::new();
    let url = format!("{}/jenkins/main/events", served.address);
    let finalized =
        std::fs::read_to_string(repo().join("examples/payloads/jenkins-failure-finalized.json"))
            .expect("sample");
    let mut seen = Vec::new();
    for request in [
        client
            .post(format!("{url}?token={EVENTS}"))
            .body(finalized.clone()),
        client
            .post(&url)
            .basic_auth("hookgate", Some(EVENTS))
            .body(finalized.clone()),
        client
            .post(&url)
            .bearer_auth(EVENTS)
            .body(finalized.clone()),
        client
            .post(format!("{url}?token={EVENTS}x"))
            .body(finalized.clone()),
        client
            .post(&url)
            .basic_auth(EVENTS, Some("wrong"))
            .body(finalized.clone()),
        client
            .post(format!("{url}?token={EVENTS}"))
            .header("content-type", "application/xml")
            .body("<job/>"),
        client
            .post(format!("{url}?token={EVENTS}"))
            .body("{\"url\":"),
        client
            .post(format!(
                "{}/jenkins/other/events?token={EVENTS}",
                served.address
            ))
            .body("{}"),
    ] {
        let response = request.send().await.expect("response");
        let status = response.status().as_u16();
        seen.push((status, response.text().await.expect("text")));
    }
    let statuses: Vec<u16> = seen.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [202, 202, 202, 401, 401, 415, 400, 404]);
    // Wait for the refusals and the retries to be logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sinks.requests_to(Sink::Allstacks).is_empty()
        || !served.log.lock().expect("lock").contains("dead-lettered")
    {
        assert!(Instant::now() < deadline, "the sinks were never called");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let store_dir = dir.path().display().to_string();
    let mut outputs = Vec::new();
    for sink in ["dora", "oncall", "relay", "gone"] {
        let output = Command::new(BIN)
            .args(["deliveries", "list", "--sink", sink])
            .current_dir(&store_dir)
            .envs(env)
            .output()
            .expect("runs");
        let text = stdout(&output);
        for id in text.lines().filter_map(|l| l.split_whitespace().next()) {
            if id.len() == 26 {
                let shown = Command::new(BIN)
                    .args(["deliveries", "show", id])
                    .current_dir(&store_dir)
                    .output()
                    .expect("runs");
                outputs.push(stdout(&shown) + &stderr(&shown));
            }
        }
        outputs.push(text + &stderr(&output));
    }
    let test_event = Command::new(BIN)
        .args([
            "test-event",
            &repo()
                .join("examples/payloads/jenkins-failure-finalized.json")
                .display()
                .to_string(),
        ])
        .current_dir(&store_dir)
        .envs(env)
        .output()
        .expect("runs");
    outputs.push(stdout(&test_event) + &stderr(&test_event));
    let log = served.log.lock().expect("lock").clone();
    assert!(log.contains("refused hookgate's credentials"), "{log}");
    assert!(
        outputs.iter().any(|o| o.contains("the sink answered 401")),
        "{outputs:?}"
    );
    for secret in [EVENTS, PAT, ITOC, RELAY] {
        assert!(!log.contains(secret), "log leaks `{secret}`:\n{log}");
        for (status, text) in &seen {
            assert!(
                !text.contains(secret),
                "{status} answer leaks `{secret}`: {text}"
            );
        }
        for output in &outputs {
            assert!(
                !output.contains(secret),
                "CLI output leaks `{secret}`:\n{output}"
            );
        }
    }
    drop(served);
}

/// A rule's `[report]` must name a sink of kind port; `check` says which sinks there are.
#[test]
fn check_refuses_a_report_to_a_sink_that_is_not_a_port_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    events_config(dir.path(), "http://127.0.0.1:9", "");
    let rule = |sink: &str| {
        format!(
            r#"token = "sender-token"
[verify]
scheme = "none"
[[variables]]
name = "RUN_ID"
jsonpath = "$.context.runId"
[dispatch]
token = "job-token"
[report]
sink = "{sink}"
run_id = "$RUN_ID"
"#
        )
    };
    std::fs::write(dir.path().join("rules/to-relay.toml"), rule("relay")).expect("write");
    std::fs::write(dir.path().join("rules/to-nothing.toml"), rule("port")).expect("write");
    let check = || {
        Command::new(BIN)
            .args(["check"])
            .current_dir(dir.path())
            .env_remove("HOOKGATE_CONFIG")
            .env("EV_TOKEN", "x")
            .env("EV_PAT", "x")
            .env("EV_ITOC", "x")
            .env("EV_RELAY", "x")
            .env("EV_PORT_ID", "port-id-value")
            .env("EV_PORT_SECRET", "port-secret-value")
            .output()
            .expect("runs")
    };
    let output = check();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    for expected in [
        "to-relay.toml: report.sink: sink `relay` is of kind \"forward\"; a report goes to a sink of kind \"port\"",
        "to-nothing.toml: report.sink: no sink `port`; port sinks configured: []",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    // With a port sink, both rules pass, and `check` names the run each one reports.
    let mut config = std::fs::read_to_string(dir.path().join("hookgate.toml")).expect("read");
    config.push_str("[sinks.port]\nkind = \"port\"\nurl = \"https://api.getport.io\"\nclient_id_env = \"EV_PORT_ID\"\nclient_secret_env = \"EV_PORT_SECRET\"\n");
    std::fs::write(dir.path().join("hookgate.toml"), config).expect("write");
    std::fs::write(dir.path().join("rules/to-relay.toml"), rule("port")).expect("write");
    let output = check();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "{out}\n{err}");
    assert!(
        out.contains("-> jenkins.main (body=original) report=port run=$RUN_ID"),
        "{out}"
    );
    assert!(
        out.contains("sink port  kind=port url=https://api.getport.io token=client id and secret"),
        "{out}"
    );
    assert!(!out.contains("port-secret-value") && !out.contains("port-id-value"));
}
