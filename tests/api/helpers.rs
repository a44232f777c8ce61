//! `spawn_app()` and request helpers shared by every integration test.

#[path = "../../examples/support/fake_jenkins.rs"]
#[allow(dead_code)]
pub mod fake_jenkins;

#[path = "../../examples/support/fake_sinks.rs"]
#[allow(dead_code)]
pub mod fake_sinks;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use fake_jenkins::{FakeJenkins, FakeJenkinsConfig};
use fake_sinks::{FakeSinks, FakeSinksConfig};
use hookgate::config::{
    AdminSettings, DeliveryMode, DeliverySettings, JenkinsSettings, LogSettings, RulesSettings,
    ServerSettings, Settings, Source,
};
use hookgate::gateway::Gateway;
use hookgate::startup::Application;

/// Secrets every test rule can read through `*_env`.
pub const PORT_SECRET: &str = "my-client-secret";
pub const GITHUB_SECRET: &str = "gh-webhook-secret";
pub const GITLAB_SECRET: &str = "gitlab-webhook-token";
pub const SENDER_TOKEN: &str = "sender-token-1";
pub const JOB_TOKEN: &str = "jenkins-job-token";
pub const ADMIN_TOKEN: &str = "admin-bearer-token";
pub const EVENTS_TOKEN: &str = "jenkins-events-token";
pub const ALLSTACKS_TOKEN: &str = "allstacks-pat-value";
pub const ITOC360_TOKEN: &str = "itoc360-source-token";
/// Port's client credentials as the fake Port API takes them.
pub const PORT_CLIENT_ID: &str = "port-client-id-value";
pub const PORT_CLIENT_SECRET: &str = "port-client-secret-value";

/// Logs go to a sink unless `TEST_LOG` is set, so failures can be debugged with logs on.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let settings = LogSettings {
            level: "debug".to_owned(),
            ..LogSettings::default()
        };
        let _ = hookgate::telemetry::init(&settings);
    }
});

pub fn test_env() -> HashMap<String, String> {
    [
        ("PORT_SECRET", PORT_SECRET),
        ("GITHUB_SECRET", GITHUB_SECRET),
        ("GITLAB_SECRET", GITLAB_SECRET),
        ("SENDER_TOKEN", SENDER_TOKEN),
        ("JOB_TOKEN", JOB_TOKEN),
        ("NEW_SECRET", "rotated-new-secret"),
        ("JENKINS_API_TOKEN", "jenkins-api-token-value"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("EVENTS_TOKEN", EVENTS_TOKEN),
        ("ALLSTACKS_TOKEN", ALLSTACKS_TOKEN),
        ("ITOC360_TOKEN", ITOC360_TOKEN),
        ("PORT_CLIENT_ID", PORT_CLIENT_ID),
        ("PORT_CLIENT_SECRET", PORT_CLIENT_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// What a test can change about the gateway it spawns.
pub struct AppOptions {
    /// Rule files: (file name, content).
    pub rules: Vec<(&'static str, String)>,
    pub allow_ips: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub max_body_bytes: usize,
    pub jenkins_timeout_secs: u64,
    pub jenkins_auth: bool,
    /// Point the gateway at a port where nothing listens.
    pub jenkins_unreachable: bool,
    pub fake_jenkins: FakeJenkinsConfig,
    /// Queue mode with a store in a temporary directory (else direct mode).
    pub queue: bool,
    pub max_attempts: u32,
    pub max_store_bytes: u64,
    pub done_retention_secs: u64,
    /// Rate limits are off in tests unless a test sets them.
    pub rate_per_client: u32,
    pub rate_per_rule: u32,
    /// Replaces the defaults of the server section's other limits.
    pub server: ServerSettings,
    /// Open this store instead of a new one (a restart on the same data).
    pub store: Option<PathBuf>,
    /// Require `ADMIN_TOKEN` as a bearer token on the admin listener.
    pub admin_token: bool,
    /// Accept Notification events from `jenkins.main` with `EVENTS_TOKEN`.
    pub events_token: bool,
    pub events_allow_ips: Vec<String>,
    /// `[sinks.*]` tables in TOML; `{sinks}` stands for the fake sinks' base URL.
    pub sinks: String,
    /// `delivery.retry_initial_ms` and `retry_max_ms`.
    pub retry_ms: (u64, u64),
    /// `rules.watch`.
    pub watch_rules: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            rules: vec![("port-deploy.toml", port_rule(""))],
            allow_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            jenkins_timeout_secs: 5,
            jenkins_auth: false,
            jenkins_unreachable: false,
            fake_jenkins: FakeJenkinsConfig {
                jobs: vec![(JOB_TOKEN.to_owned(), "deploy-service".to_owned())],
                basic_auth: None,
            },
            queue: false,
            max_attempts: 5,
            max_store_bytes: 0,
            done_retention_secs: 7 * 24 * 3600,
            rate_per_client: 0,
            rate_per_rule: 0,
            server: ServerSettings::default(),
            store: None,
            admin_token: false,
            events_token: false,
            events_allow_ips: Vec::new(),
            sinks: String::new(),
            retry_ms: (20, 200),
            watch_rules: false,
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// The admin listener: `/metrics`, `/deliveries/{id}`, detailed `/readyz`.
    pub admin_address: String,
    pub jenkins: FakeJenkins,
    /// Fakes of Allstacks, itoc360 and a generic receiver (`{sinks}` in `AppOptions::sinks`).
    pub sinks: FakeSinks,
    pub client: reqwest::Client,
    pub rules_dir: tempfile::TempDir,
    pub store_dir: tempfile::TempDir,
    /// The store directory the gateway uses (`store_dir`, unless the options named another).
    pub store: PathBuf,
    /// What a reload reads as the config: change it, then [`TestApp::reload`].
    pub settings: Arc<Mutex<Settings>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    LazyLock::force(&TRACING);
    let jenkins = FakeJenkins::start(options.fake_jenkins)
        .await
        .expect("fake Jenkins starts");
    let sinks = FakeSinks::start(FakeSinksConfig {
        allstacks_token: ALLSTACKS_TOKEN.to_owned(),
        itoc360_token: ITOC360_TOKEN.to_owned(),
        port_client_id: PORT_CLIENT_ID.to_owned(),
        port_client_secret: PORT_CLIENT_SECRET.to_owned(),
        port_token_secs: 0,
    })
    .await
    .expect("fake sinks start");
    let sink_settings: BTreeMap<String, hookgate::config::SinkSettings> = {
        #[derive(serde::Deserialize)]
        struct Tables {
            #[serde(default)]
            sinks: BTreeMap<String, hookgate::config::SinkSettings>,
        }
        let text = options.sinks.replace("{sinks}", &sinks.url());
        toml::from_str::<Tables>(&text)
            .expect("test sinks parse")
            .sinks
    };
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = options
        .store
        .clone()
        .unwrap_or_else(|| store_dir.path().to_owned());
    for (name, text) in &options.rules {
        std::fs::write(rules_dir.path().join(name), text).expect("write rule");
    }
    let jenkins_url = if options.jenkins_unreachable {
        // A port that was free a moment ago refuses connections.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    } else {
        jenkins.url()
    };
    let settings = Settings {
        server: ServerSettings {
            listen: "127.0.0.1:0".to_owned(),
            max_body_bytes: options.max_body_bytes,
            trusted_proxies: options.trusted_proxies,
            allow_ips: options.allow_ips,
            rate_per_client: options.rate_per_client,
            burst_per_client: options.rate_per_client,
            rate_per_rule: options.rate_per_rule,
            burst_per_rule: options.rate_per_rule,
            ..options.server
        },
        admin: AdminSettings {
            listen: "127.0.0.1:0".to_owned(),
            token_env: options.admin_token.then(|| "ADMIN_TOKEN".to_owned()),
            token_file: None,
        },
        rules: RulesSettings {
            dir: rules_dir.path().to_owned(),
            watch: options.watch_rules,
        },
        jenkins: BTreeMap::from([(
            "main".to_owned(),
            JenkinsSettings {
                url: jenkins_url,
                user: options.jenkins_auth.then(|| "hookgate".to_owned()),
                api_token_env: options.jenkins_auth.then(|| "JENKINS_API_TOKEN".to_owned()),
                api_token_file: None::<PathBuf>,
                timeout_secs: options.jenkins_timeout_secs,
                max_in_flight: 8,
                public_url: None,
                events_token_env: options.events_token.then(|| "EVENTS_TOKEN".to_owned()),
                events_token_file: None,
                events_token: None,
                events_allow_ips: options.events_allow_ips.clone(),
            },
        )]),
        delivery: DeliverySettings {
            mode: if options.queue {
                DeliveryMode::Queue
            } else {
                DeliveryMode::Direct
            },
            store: store.clone(),
            retry_initial_ms: options.retry_ms.0,
            retry_max_ms: options.retry_ms.1,
            max_attempts: options.max_attempts,
            max_store_bytes: options.max_store_bytes,
            done_retention_secs: options.done_retention_secs,
        },
        sinks: sink_settings,
        log: LogSettings::default(),
    };
    let reloaded = Arc::new(Mutex::new(settings.clone()));
    let gateway = match Gateway::compile(settings, Source::BuiltIn, &test_env()) {
        Ok(gateway) => gateway,
        Err(problems) => panic!("test config does not compile:\n{problems}"),
    };
    let load = {
        let reloaded = Arc::clone(&reloaded);
        move || Ok(reloaded.lock().expect("settings").clone())
    };
    let app = Application::build_reloadable(gateway, Box::new(load), Box::new(test_env()))
        .expect("gateway binds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = format!("http://127.0.0.1:{}", app.admin_port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_address,
        jenkins,
        sinks,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        rules_dir,
        store_dir,
        store,
        settings: reloaded,
    }
}

impl TestApp {
    pub fn invoke_url(&self) -> String {
        format!("{}/generic-webhook-trigger/invoke", self.address)
    }

    pub fn hook_url(&self, rule: &str) -> String {
        format!("{}/hooks/{rule}", self.address)
    }

    /// `POST /jenkins/main/events?token=EVENTS_TOKEN` with the plugin's content type.
    pub async fn post_event(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/jenkins/main/events?token={EVENTS_TOKEN}",
                self.address
            ))
            .header("content-type", "application/json;charset=UTF-8")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// Waits until the fake sinks have answered at least `count` requests (the worker runs
    /// on its own; this polls instead of sleeping a guessed time).
    pub async fn sink_requests(&self, count: usize) -> Vec<fake_sinks::RecordedRequest> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let answered: Vec<_> = self
                .sinks
                .requests()
                .into_iter()
                .filter(|r| r.answered != 0)
                .collect();
            if answered.len() >= count || std::time::Instant::now() > deadline {
                return answered;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A delivery as the admin listener shows it.
    pub async fn delivery_view(&self, id: &str) -> serde_json::Value {
        let response = self
            .client
            .get(format!("{}/deliveries/{id}", self.admin_address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        json(response).await
    }

    /// The `/metrics` text, from the admin listener.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin_address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("metrics text")
    }

    /// `POST /reload` on the admin listener: its status and answer.
    pub async fn reload(&self) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}/reload", self.admin_address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        (response.status(), json(response).await)
    }

    /// POSTs `body` to `/invoke?token=SENDER_TOKEN` with Port headers signed at `now`.
    pub async fn post_port(&self, body: &str) -> reqwest::Response {
        post_signed(&self.client, &self.address, SENDER_TOKEN, PORT_SECRET, body).await
    }
}

/// POSTs `body` to `{address}/generic-webhook-trigger/invoke?token={token}`, signed now with
/// Port's scheme and `secret`.
pub async fn post_signed(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    secret: &str,
    body: &str,
) -> reqwest::Response {
    client
        .post(format!(
            "{address}/generic-webhook-trigger/invoke?token={token}"
        ))
        .headers(port_headers(secret, now(), body))
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn hmac_sha256(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Port-Timestamp` and `X-Port-Signature` for `body`, computed here independently of hookgate.
pub fn port_headers(secret: &str, timestamp: u64, body: &str) -> reqwest::header::HeaderMap {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(secret, &[ts.as_bytes(), b".", body.as_bytes()]);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("value"));
    headers.insert("x-port-timestamp", ts.parse().expect("value"));
    headers.insert(
        "x-port-signature",
        format!("v1,{}", STANDARD.encode(mac))
            .parse()
            .expect("value"),
    );
    headers
}

pub fn github_signature(secret: &str, body: &str) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret, &[body.as_bytes()]))
    )
}

/// The Port legacy run message the tests send (compact, as Port signs it).
pub const PORT_BODY: &str = r#"{"action":"deploy_service","resourceType":"run","status":"TRIGGERED","context":{"entity":"payments-api","blueprint":"service","runId":"r_QOz6WoOB1Q2lmhZZ"},"payload":{"properties":{"env":"prod","version":"1.4.2","service":"payments-api"}}}"#;

/// A Port rule with the sender token `SENDER_TOKEN`; `extra` is appended (e.g. `[allow]`).
pub fn port_rule(extra: &str) -> String {
    format!(
        r#"
token_env = "SENDER_TOKEN"
{extra}
[verify]
scheme = "port"
secret_env = "PORT_SECRET"
# These tests resend identical signed calls on purpose; signatures.rs covers replays.
reject_replays = false

[[variables]]
name = "ACTION"
jsonpath = "$.action"

[[variables]]
name = "SERVICE"
jsonpath = "$.payload.properties.service"

[[variables]]
name = "RUN_ID"
jsonpath = "$.context.runId"

[filter]
text = "$ACTION"
expression = "^deploy_service$"

[dispatch]
jenkins = "main"
token_env = "JOB_TOKEN"
"#
    )
}

/// Parses a response body as JSON, failing the test with the raw text if it is not.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
