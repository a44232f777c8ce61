//! The rule file as written by users (`rules/*.toml|yaml|json`), before compilation.
//!
//! Every struct rejects unknown keys: in security configuration a misspelt key
//! (`alow`, `secert_env`) must be an error, not a silently ignored default.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::InlineSecret;

/// One rule file: binds one kind of incoming call to one Jenkins job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Unique rule name; defaults to the file stem.
    pub name: Option<String>,
    /// Free text shown by `hookgate check`.
    pub description: Option<String>,
    /// The token senders pass, inline (prefer `token_env` or `token_file`).
    pub token: Option<InlineSecret>,
    /// Name of the environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token (relative paths are relative to the rule file).
    pub token_file: Option<PathBuf>,
    /// Per-rule IP allowlist; omitted means any address.
    pub allow: Option<AllowSection>,
    /// Signature verification; required, `scheme = "none"` must be written out.
    pub verify: VerifySection,
    /// GWT `genericVariables`: JSONPath into the body.
    #[serde(default)]
    pub variables: Vec<VariableEntry>,
    /// GWT `genericHeaderVariables`.
    #[serde(default)]
    pub headers: Vec<HeaderEntry>,
    /// GWT `genericRequestVariables`.
    #[serde(default)]
    pub query: Vec<QueryEntry>,
    /// GWT `regexpFilterText` / `regexpFilterExpression`.
    pub filter: Option<FilterSection>,
    /// Where and how the call goes to Jenkins.
    pub dispatch: DispatchSection,
    /// Queue mode: a repeat of the same call within the TTL is answered, not dispatched again.
    pub idempotency: Option<IdempotencySection>,
    /// This rule's rate of verified calls (overrides `server.rate_per_rule`).
    pub rate: Option<RateSection>,
    /// Which Port run each call stands for, reported to a port sink.
    pub report: Option<ReportSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// A `[sinks.<name>]` of kind `port`.
    pub sink: String,
    /// Template over the resolved variables, e.g. `$RUN_ID`.
    pub run_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    /// Calls per second that pass verification; 0 turns the rule's limit off.
    pub per_sec: u32,
    /// Burst above the steady rate (default: twice `per_sec`).
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowSection {
    /// Single addresses, CIDRs or `a-b` ranges, IPv4 or IPv6.
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    Port,
    PortSha1,
    Hmac,
    Github,
    Gitlab,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    pub scheme: SchemeName,
    /// Inline secret (prefer `secret_env`, `secrets_env` or `secret_file`).
    pub secret: Option<InlineSecret>,
    pub secret_env: Option<String>,
    /// Newest first; every listed secret is accepted (rotation).
    pub secrets_env: Option<Vec<String>>,
    pub secret_file: Option<PathBuf>,
    /// Replay window for timestamped schemes.
    pub tolerance_secs: Option<u64>,
    /// `hmac` only: the header carrying the signature.
    pub header: Option<String>,
    /// `hmac` only.
    pub algorithm: Option<HmacAlgorithm>,
    /// `hmac` only: header carrying a Unix timestamp in seconds.
    pub timestamp_header: Option<String>,
    /// `hmac` only: template of the signed bytes, with `{timestamp}` and `{body}`.
    pub signed: Option<String>,
    /// Refuse a signature already used inside its window (default true; not for `gitlab` or
    /// `none`, which carry no MAC).
    pub reject_replays: Option<bool>,
    /// Schemes without a signed timestamp (`github`, `port-sha1`, `hmac` without
    /// `timestamp_header`): how long a verified signature is remembered (default one day).
    pub replay_window_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableEntry {
    pub name: String,
    pub jsonpath: String,
    /// Every match is deleted from the value (GWT `regexpFilter`).
    pub regex_filter: Option<String>,
    /// Used when the path is unresolved, resolves to JSON null, or to "".
    pub default: Option<String>,
    /// GWT `shouldNotFlatten` inverted; defaults to true.
    pub flatten: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEntry {
    /// The HTTP header name, matched case-insensitively.
    pub name: String,
    pub regex_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryEntry {
    /// The query (or form) parameter name, matched case-sensitively.
    pub name: String,
    pub regex_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSection {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub expression: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    /// Forward the received bytes unchanged.
    #[default]
    Original,
    /// Forward a JSON object of the resolved variables.
    Variables,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSection {
    /// Name of a `[jenkins.<name>]` target.
    #[serde(default = "default_jenkins")]
    pub jenkins: String,
    /// The GWT token of the Jenkins job, inline.
    pub token: Option<InlineSecret>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub body: BodyMode,
}

fn default_jenkins() -> String {
    "main".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySection {
    /// JSONPath into the body whose value identifies one call, e.g. Port's `$.context.runId`.
    pub key: Option<String>,
    /// Or a header that does, e.g. `X-GitHub-Delivery`.
    pub header: Option<String>,
    #[serde(default = "default_idempotency_ttl")]
    pub ttl_secs: u64,
}

fn default_idempotency_ttl() -> u64 {
    86_400
}
