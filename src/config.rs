//! Gateway configuration: the `hookgate.toml` model, its lookup and layering, and the
//! environment seam through which every secret is read.
//!
//! Layers, later wins: struct defaults → the config file (or the built-in defaults when there is
//! none) → `HOOKGATE__SECTION__KEY` environment overrides. Unknown keys are errors everywhere.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in defaults, used when no config file is found.
pub const BUILT_IN_DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "HOOKGATE_CONFIG";

/// Config file used when present in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "hookgate.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub rules: RulesSettings,
    /// Named Jenkins targets; rules refer to them by name in `dispatch.jenkins`.
    #[serde(default)]
    pub jenkins: BTreeMap<String, JenkinsSettings>,
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// Where Jenkins' build events go (`[sinks.<name>]`).
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSettings>,
    #[serde(default)]
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to listen on.
    pub listen: String,
    /// Larger bodies get 413 before anything else is read.
    pub max_body_bytes: usize,
    /// CIDRs or addresses; `X-Forwarded-For` is honoured only when the TCP peer is one of them.
    pub trusted_proxies: Vec<String>,
    /// Global allowlist checked before anything else; empty means any address.
    pub allow_ips: Vec<String>,
    /// Requests with more header lines get 431 (the HTTP parser itself refuses more than 96
    /// with 400).
    pub max_header_count: usize,
    /// Requests whose header names and values add up to more get 431.
    pub max_header_bytes: usize,
    /// The request head must arrive within this long after the connection is ready
    /// (slow-header clients are cut off with 408).
    pub header_timeout_ms: u64,
    /// The body must arrive within this long after the head (else 408).
    pub body_timeout_secs: u64,
    /// Idle keep-alive connections are closed after this long.
    pub keep_alive_secs: u64,
    /// Concurrent connections across all workers; past it new connections wait in the backlog.
    pub max_connections: usize,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Requests per second per client address, checked before any signature work (0 = off).
    pub rate_per_client: u32,
    /// Burst allowed per client address above the steady rate.
    pub burst_per_client: u32,
    /// Default per-rule rate of calls that pass verification (0 = off); a rule's `[rate]`
    /// overrides it.
    pub rate_per_rule: u32,
    pub burst_per_rule: u32,
    /// Signatures remembered per rule to refuse replays inside the timestamp window.
    pub replay_cache_entries: usize,
    /// TLS on the public listener; without it, hookgate speaks plain HTTP.
    pub tls: Option<TlsSettings>,
}

/// `[server.tls]`: the public listener's certificate, and optionally the CA its clients'
/// certificates must be signed by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: CA certificates; when set, a client certificate they signed is required.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 1024 * 1024,
            trusted_proxies: Vec::new(),
            allow_ips: Vec::new(),
            max_header_count: 64,
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 5000,
            body_timeout_secs: 30,
            keep_alive_secs: 15,
            max_connections: 4096,
            workers: 0,
            rate_per_client: 100,
            burst_per_client: 200,
            rate_per_rule: 200,
            burst_per_rule: 400,
            replay_cache_entries: 100_000,
            tls: None,
        }
    }
}

/// The operator listener: `/metrics`, `/deliveries/{id}` and the detailed `/readyz` are served
/// only here, never on `server.listen`, so the public side cannot read queue contents or
/// internal state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address and port of the admin listener; loopback by default.
    pub listen: String,
    /// Environment variable holding the bearer token every admin request must carry; required
    /// when `listen` is not a loopback address.
    pub token_env: Option<String>,
    /// Or a file holding it (one trailing newline is dropped).
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9091".to_owned(),
            token_env: None,
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Directory holding the rule files (`*.toml`, `*.yaml`, `*.yml`, `*.json`).
    pub dir: PathBuf,
    /// Reload when a rule file in `dir` is written, added or removed (debounced).
    pub watch: bool,
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("rules"),
            watch: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JenkinsSettings {
    /// Base URL; hookgate calls `{url}/generic-webhook-trigger/invoke`.
    pub url: String,
    /// Jenkins user for basic auth; needs `api_token_env` or `api_token_file`.
    pub user: Option<String>,
    pub api_token_env: Option<String>,
    pub api_token_file: Option<PathBuf>,
    /// The URL people open, for links sent to sinks (default: `url`).
    pub public_url: Option<String>,
    /// The token in the Notification plugin's URL (`?token=`, basic-auth password or Bearer);
    /// without one, events from this Jenkins are refused (404). Exactly one source.
    pub events_token_env: Option<String>,
    pub events_token_file: Option<PathBuf>,
    pub events_token: Option<InlineSecret>,
    /// The controller's addresses; events from elsewhere get 403 (empty: any address).
    #[serde(default)]
    pub events_allow_ips: Vec<String>,
    /// Deadline for one call, including the wait for a free slot under `max_in_flight`.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Concurrency cap toward this Jenkins.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_timeout_secs() -> u64 {
    10
}

fn default_max_in_flight() -> usize {
    32
}

/// One `[sinks.<name>]`: where build events go and how they are shaped. Keys of other kinds
/// are refused by `sinks::compile`, naming the kind they belong to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    pub kind: SinkKind,
    pub url: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token: Option<InlineSecret>,
    /// `alert` and `forward`: how the token travels.
    pub token_in: Option<TokenIn>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_sink_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default, rename = "match")]
    pub matching: MatchSettings,
    // kind = "allstacks"
    pub service_id: Option<i64>,
    pub job_type: Option<String>,
    pub repo_name: Option<String>,
    pub repo_id: Option<String>,
    pub commit_parameters: Option<Vec<String>>,
    pub triggered_by_parameter: Option<String>,
    pub optional_parameters: Option<Vec<String>>,
    pub statuses: Option<BTreeMap<String, String>>,
    // kind = "port": the client credentials `POST /v1/auth/access_token` takes.
    pub client_id_env: Option<String>,
    pub client_id_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Build parameters naming the run, for builds not triggered through hookgate.
    pub run_id_parameters: Option<Vec<String>>,
    /// Also add a run log line at each step (default true).
    pub logs: Option<bool>,
}

fn default_sink_max_in_flight() -> usize {
    8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Allstacks,
    /// Closes the loop of Port actions: run updates from triggers' outcomes and build events.
    Port,
    Alert,
    Forward,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Allstacks => "allstacks",
            SinkKind::Port => "port",
            SinkKind::Alert => "alert",
            SinkKind::Forward => "forward",
        }
    }
}

/// How a sink's token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenIn {
    /// `Authorization: Bearer <token>`.
    #[default]
    Bearer,
    /// `?token=<token>` on the URL, as itoc360's integrations URL takes it.
    Query,
}

/// `[sinks.<name>.match]`: which events reach the sink; absent keys take the kind's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSettings {
    pub jenkins: Option<Vec<String>>,
    pub jobs: Option<String>,
    pub phases: Option<Vec<String>>,
    pub results: Option<Vec<String>>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    pub mode: DeliveryMode,
    /// Directory of the embedded store (queue mode), relative to the working directory.
    pub store: PathBuf,
    /// First retry after about this long, then doubling with jitter.
    pub retry_initial_ms: u64,
    /// Cap on one wait between attempts.
    pub retry_max_ms: u64,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Delivered calls are kept this long for `hookgate deliveries`, then purged.
    pub done_retention_secs: u64,
    /// Cap on the store's size (0 = none); past it, calls get 503 as on a full disk.
    pub max_store_bytes: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::default(),
            store: PathBuf::from("var/hookgate"),
            retry_initial_ms: 1000,
            retry_max_ms: 300_000,
            max_attempts: 20,
            done_retention_secs: 7 * 24 * 3600,
            max_store_bytes: 1 << 30,
        }
    }
}

/// How an accepted call reaches Jenkins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Stored durably, answered 202, delivered by a worker with retries.
    #[default]
    Queue,
    /// Jenkins is called inside the request; its answer is returned to the sender.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter directive such as `info` or `hookgate=debug,actix_web=info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One configuration problem, reported with where it is and why.
/// A secret written in the config file: read like a string, printed as `[redacted]` by
/// `Debug`, so no `{:?}` of the settings shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct InlineSecret(String);

impl InlineSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InlineSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl Problem {
    pub fn new(
        file: impl fmt::Display,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.reason)
        }
    }
}

/// Every problem found while loading configuration and rules, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Read access to environment variables. Secrets and overrides are read through this seam so
/// tests can inject values without mutating the process environment.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable, for the `HOOKGATE__` override layer.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Where the settings came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    BuiltIn,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::BuiltIn => f.write_str("<built-in defaults>"),
        }
    }
}

/// Resolves which config file to use: `--config`, else `$HOOKGATE_CONFIG`, else
/// `./hookgate.toml` when it exists, else the built-in defaults.
pub fn locate(explicit: Option<&Path>, env: &dyn Env) -> Source {
    if let Some(path) = explicit {
        return Source::File(path.to_owned());
    }
    if let Some(path) = env.var(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Source::File(PathBuf::from(path));
    }
    let local = Path::new(DEFAULT_CONFIG_FILE);
    if local.is_file() {
        return Source::File(local.to_owned());
    }
    Source::BuiltIn
}

/// Loads settings from `source` with `HOOKGATE__` overrides taken from `env`.
pub fn load(source: &Source, env: &dyn Env) -> Result<Settings, Problems> {
    use config::{Config, Environment, File, FileFormat};

    let file = match source {
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Problems(vec![Problem::new(source, "", format!("cannot read: {e}"))])
            })?;
            File::from_str(&text, FileFormat::Toml)
        }
        Source::BuiltIn => File::from_str(BUILT_IN_DEFAULTS, FileFormat::Toml),
    };
    let overrides: config::Map<String, String> = env
        .vars()
        .into_iter()
        .filter(|(k, _)| k.starts_with("HOOKGATE__"))
        .collect();
    let built = Config::builder()
        .add_source(file)
        .add_source(
            Environment::with_prefix("HOOKGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.trusted_proxies")
                .with_list_parse_key("server.allow_ips")
                .ignore_empty(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| {
            Problems(vec![Problem::new(
                source,
                "",
                without_value(&without_excerpt(&e.to_string())),
            )])
        })?;
    serde_path_to_error::deserialize::<_, Settings>(built).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        Problems(vec![Problem::new(
            source,
            field,
            without_value(&e.into_inner().to_string()),
        )])
    })
}

/// A parser's message without the excerpt of the file it quotes (the TOML and YAML parsers
/// print the offending line under `|` margins). That line can hold a secret written inline, and
/// problems reach the log and `POST /reload`'s answer; the line and column stay.
pub fn without_excerpt(message: &str) -> String {
    let excerpt = |line: &str| {
        let line = line.trim_start();
        line.starts_with("-->")
            || line
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start()
                .starts_with('|')
    };
    message
        .lines()
        .filter(|line| !excerpt(line) && !line.trim().is_empty())
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A type or value error without the value it refused (`invalid type: integer `12345``): the
/// field may be a secret written inline. The field's path and what was expected stay.
pub fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some(quote) = rest.find(['`', '"', '\'']) else {
            continue;
        };
        // What was expected stays (the config crate adds the key after it); without it,
        // nothing after the value is kept.
        let tail = rest.rfind(", expected").filter(|end| *end > quote);
        let kind = rest[..quote].trim_end();
        let shown = format!("{prefix}{kind}");
        return format!(
            "{}{}",
            shown.trim_end(),
            tail.map_or("", |end| &rest[end..])
        );
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_kind_but_not_the_value() {
        for (message, expected) in [
            (
                "invalid type: integer `12345`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "invalid type: string \"s3cr, \\\"et\", expected u64",
                "invalid type: string, expected u64",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "invalid value: integer, expected u32",
            ),
            (
                "unknown variant `s3cret-pasted-here`, expected one of `port`, `github`",
                "unknown variant, expected one of `port`, `github`",
            ),
            ("invalid value: string \"s3cret\"", "invalid value: string"),
            (
                "invalid type: string \"s3cret\", expected an integer for key `server.workers` in the environment",
                "invalid type: string, expected an integer for key `server.workers` in the environment",
            ),
            (
                "invalid type: sequence, expected a string",
                "invalid type: sequence, expected a string",
            ),
            (
                "unknown field `tokn`, expected one of `token`",
                "unknown field `tokn`, expected one of `token`",
            ),
        ] {
            assert_eq!(without_value(message), expected, "{message}");
        }
    }

    #[test]
    fn a_syntax_error_keeps_its_position_but_not_the_line_it_quotes() {
        let Err(problems) = load_str(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"inline-half-written-secret\n",
            &[],
        ) else {
            panic!("a half-written string is a syntax error");
        };
        let shown = problems.to_string();
        assert!(!shown.contains("inline-half-written-secret"), "{shown}");
        assert!(shown.contains("line 3"), "{shown}");
        assert!(shown.contains("expected"), "{shown}");
    }

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Settings, Problems> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hookgate.toml");
        std::fs::write(&path, toml).expect("write");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load(&Source::File(path), &env)
    }

    /// An inline `token = "…"` / `events_token = "…"` is never printed by a `{:?}` of the
    /// settings (a debug log line, a panic message, a test failure).
    #[test]
    fn debug_of_the_settings_never_shows_an_inline_token() {
        let s = load_str(
            "[jenkins.main]\nurl = \"http://127.0.0.1:8081\"\nevents_token = \"inline-events-secret\"\n\n[sinks.oncall]\nkind = \"alert\"\nurl = \"https://api.itoc360.app/functions/v1/events\"\ntoken = \"inline-sink-secret\"\n",
            &[],
        )
        .expect("valid config");
        let shown = format!("{:?} {:?}", s.jenkins, s.sinks);
        assert!(!shown.contains("inline-events-secret"), "{shown}");
        assert!(!shown.contains("inline-sink-secret"), "{shown}");
    }

    #[test]
    fn defaults_apply_to_omitted_keys() {
        let s = load_str("", &[]).expect("empty config is valid");
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.server.max_body_bytes, 1_048_576);
        assert_eq!(s.admin.listen, "127.0.0.1:9091");
        assert!(s.admin.token_env.is_none() && s.admin.token_file.is_none());
        assert_eq!(s.rules.dir, PathBuf::from("rules"));
        assert_eq!(s.delivery.mode, DeliveryMode::Queue);
        assert_eq!(s.delivery.store, PathBuf::from("var/hookgate"));
        assert!(s.jenkins.is_empty());
    }

    #[test]
    fn built_in_defaults_target_the_demo_jenkins() {
        let s = load(&Source::BuiltIn, &HashMap::new()).expect("built-in defaults load");
        assert_eq!(s.jenkins["main"].url, "http://127.0.0.1:8081");
        assert_eq!(s.jenkins["main"].timeout_secs, 10);
        assert_eq!(s.jenkins["main"].max_in_flight, 32);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let err = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlistenn = 3\n", &[])
            .expect_err("unknown key must fail");
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].field, "server.listenn");
        assert!(err.0[0].reason.contains("listenn"), "{}", err.0[0].reason);
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load_str(
            "[server]\nlisten = \"127.0.0.1:1\"\n[jenkins.main]\nurl = \"http://a\"\n",
            &[
                ("HOOKGATE__SERVER__LISTEN", "0.0.0.0:9000"),
                ("HOOKGATE__SERVER__MAX_BODY_BYTES", "10"),
                ("HOOKGATE__SERVER__ALLOW_IPS", "10.0.0.0/8,192.168.1.1"),
                ("HOOKGATE__JENKINS__MAIN__URL", "http://b"),
                ("UNRELATED", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(s.server.listen, "0.0.0.0:9000");
        assert_eq!(s.server.max_body_bytes, 10);
        assert_eq!(s.server.allow_ips, vec!["10.0.0.0/8", "192.168.1.1"]);
        assert_eq!(s.jenkins["main"].url, "http://b");
    }

    #[test]
    fn the_admin_section_is_read_and_checked_for_unknown_keys() {
        let s = load_str(
            "[admin]\nlisten = \"10.0.0.5:9091\"\ntoken_env = \"ADMIN_TOKEN\"\n",
            &[("HOOKGATE__ADMIN__LISTEN", "10.0.0.6:9092")],
        )
        .expect("valid");
        assert_eq!(s.admin.listen, "10.0.0.6:9092");
        assert_eq!(s.admin.token_env.as_deref(), Some("ADMIN_TOKEN"));
        let err = load_str("[admin]\ntoken = \"inline\"\n", &[]).expect_err("must fail");
        assert_eq!(err.0[0].field, "admin.token");
    }

    #[test]
    fn unknown_environment_override_is_an_error() {
        let err = load_str("", &[("HOOKGATE__SERVER__LISTN", "x")]).expect_err("must fail");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn delivery_modes_and_unknown_ones() {
        let s = load_str("[delivery]\nmode = \"direct\"\nmax_attempts = 3\n", &[]).expect("valid");
        assert_eq!(s.delivery.mode, DeliveryMode::Direct);
        assert_eq!(s.delivery.max_attempts, 3);
        let err = load_str("[delivery]\nmode = \"later\"\n", &[]).expect_err("must fail");
        assert_eq!(err.0[0].field, "delivery.mode");
    }

    #[test]
    fn lookup_order_prefers_explicit_then_env() {
        let env: HashMap<String, String> =
            [(CONFIG_ENV.to_owned(), "/etc/x.toml".to_owned())].into();
        assert_eq!(
            locate(Some(Path::new("a.toml")), &env),
            Source::File("a.toml".into())
        );
        assert_eq!(locate(None, &env), Source::File("/etc/x.toml".into()));
    }
}
