//! The compiled gateway: settings, rules, allowlists and Jenkins targets, built once at
//! start-up with every problem reported together. `serve`, `check`, `test` and `sign` all
//! start from here, so they agree on what a valid configuration is.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::{
    AdminSettings, DeliveryMode, DeliverySettings, Env, Problem, Problems, Settings, SinkKind,
    Source,
};
use crate::dispatch::JenkinsClient;
use crate::events::sources::EventSources;
use crate::rules::{self, RuleSet};
use crate::secret::{Secret, SecretSource};
use crate::sinks::sink::Sinks;
use crate::verify::ip::{AllowList, TrustedProxies};

pub struct Gateway {
    pub settings: Settings,
    pub source: Source,
    pub listen: SocketAddr,
    /// The operator listener (`[admin]`), never the same socket as `listen`.
    pub admin_listen: SocketAddr,
    /// The bearer token every admin request must carry, when one is configured.
    pub admin_token: Option<Secret>,
    pub global_allow: AllowList,
    pub trusted_proxies: TrustedProxies,
    pub rules: RuleSet,
    pub jenkins: JenkinsClient,
    /// Jenkins targets that may post build events, and where those go.
    pub event_sources: EventSources,
    pub sinks: Sinks,
    /// `[server.tls]`, loaded: the public listener then speaks only TLS.
    pub tls: Option<crate::server::tls::Tls>,
}

impl Gateway {
    /// Compiles `settings` (loaded from `source`) and every rule.
    pub fn compile(settings: Settings, source: Source, env: &dyn Env) -> Result<Self, Problems> {
        let file = source.to_string();
        let mut problems = Vec::new();

        let listen = settings
            .server
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.push(Problem::new(
                    &file,
                    "server.listen",
                    format!(
                        "`{}` is not an address:port such as 127.0.0.1:8080",
                        settings.server.listen
                    ),
                ));
            })
            .ok();
        let (admin_listen, admin_token) =
            check_admin(&settings.admin, listen, &file, env, &mut problems);
        if settings.server.max_body_bytes == 0 {
            problems.push(Problem::new(
                &file,
                "server.max_body_bytes",
                "must be at least 1",
            ));
        }
        let global_allow = AllowList::parse(&settings.server.allow_ips).unwrap_or_else(|errors| {
            for (i, reason) in errors {
                problems.push(Problem::new(
                    &file,
                    format!("server.allow_ips[{i}]"),
                    reason,
                ));
            }
            AllowList::default()
        });
        let trusted_proxies = TrustedProxies::parse(&settings.server.trusted_proxies)
            .unwrap_or_else(|errors| {
                for (i, reason) in errors {
                    problems.push(Problem::new(
                        &file,
                        format!("server.trusted_proxies[{i}]"),
                        reason,
                    ));
                }
                TrustedProxies::default()
            });
        let jenkins = JenkinsClient::build(&settings.jenkins, &file, env)
            .map_err(|mut errors| problems.append(&mut errors))
            .ok();
        let names: BTreeSet<String> = settings.jenkins.keys().cloned().collect();
        let event_sources = EventSources::compile(&settings.jenkins, &file, env)
            .map_err(|mut errors| problems.append(&mut errors))
            .ok();
        let sinks = Sinks::compile(&settings.sinks, &names, &file, env)
            .map_err(|mut errors| problems.append(&mut errors))
            .ok();
        let rules = rules::load_dir(&settings.rules.dir, &names, env)
            .map_err(|mut errors| problems.append(&mut errors.0))
            .ok();
        check_delivery(&settings.delivery, &file, &mut problems);
        let tls = settings.server.tls.as_ref().and_then(|tls| {
            crate::server::tls::load(tls)
                .map_err(|(field, reason)| {
                    problems.push(Problem::new(&file, format!("server.tls.{field}"), reason));
                })
                .ok()
        });
        if let Some(rules) = &rules {
            for rule in rules.iter() {
                rule.replays
                    .set_capacity(settings.server.replay_cache_entries);
            }
        }
        if let Some(rules) = &rules {
            for rule in rules.iter() {
                let Some(report) = &rule.report else { continue };
                let reason = match settings.sinks.get(&report.sink) {
                    Some(sink) if sink.kind == SinkKind::Port => continue,
                    Some(sink) => format!(
                        "sink `{}` is of kind \"{}\"; a report goes to a sink of kind \"port\"",
                        report.sink,
                        sink.kind.as_str()
                    ),
                    None => {
                        let ports: Vec<&String> = settings
                            .sinks
                            .iter()
                            .filter(|(_, sink)| sink.kind == SinkKind::Port)
                            .map(|(name, _)| name)
                            .collect();
                        format!(
                            "no sink `{}`; port sinks configured: [{}]",
                            report.sink,
                            ports
                                .iter()
                                .map(|n| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                };
                problems.push(Problem::new(
                    rule.file.display().to_string(),
                    "report.sink",
                    reason,
                ));
            }
        }
        if let Some(rules) = &rules
            && settings.delivery.mode == DeliveryMode::Direct
        {
            for rule in rules.iter().filter(|r| r.idempotency.is_some()) {
                problems.push(Problem::new(
                    rule.file.display().to_string(),
                    "idempotency",
                    "needs delivery.mode = \"queue\" (direct mode keeps no record of earlier calls)",
                ));
            }
        }

        match (listen, admin_listen, jenkins, rules, event_sources, sinks) {
            (
                Some(listen),
                Some(admin_listen),
                Some(jenkins),
                Some(rules),
                Some(event_sources),
                Some(sinks),
            ) if problems.is_empty() => Ok(Self {
                settings,
                source,
                listen,
                admin_listen,
                admin_token,
                global_allow,
                trusted_proxies,
                rules,
                jenkins,
                event_sources,
                sinks,
                tls,
            }),
            _ => Err(Problems(problems)),
        }
    }
}

impl Gateway {
    /// Configurations that work but are unsafe; `check` prints them and `serve` logs them.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Vec::new();
        let file = self.source.to_string();
        if !self.listen.ip().is_loopback() && self.tls.is_none() {
            warnings.push(Problem::new(
                &file,
                "server.listen",
                format!(
                    "{} is reachable from other hosts and hookgate speaks plain HTTP: set [server.tls], or terminate TLS in front of it and list that proxy in server.trusted_proxies",
                    self.listen
                ),
            ));
        }
        let store = &self.settings.delivery.store;
        if self.settings.delivery.mode == DeliveryMode::Queue && mode_has(store, SHARED) {
            warnings.push(Problem::new(
                &file,
                "delivery.store",
                format!(
                    "{} holds every accepted body and other users can enter it (chmod 700)",
                    store.display()
                ),
            ));
        }
        if !self.admin_listen.ip().is_loopback() {
            warnings.push(Problem::new(
                &file,
                "admin.listen",
                format!(
                    "{} is reachable from other hosts and hookgate speaks plain HTTP: the admin token crosses the network in clear unless TLS is terminated in front of it",
                    self.admin_listen
                ),
            ));
        }
        for source in self.event_sources.iter().filter(|s| s.inline_token) {
            warnings.push(Problem::new(
                &file,
                format!("jenkins.{}.events_token", source.name),
                "the token is written in the config file; prefer events_token_env or events_token_file",
            ));
        }
        for (name, sink) in &self.settings.sinks {
            if sink.token.is_some() {
                warnings.push(Problem::new(
                    &file,
                    format!("sinks.{name}.token"),
                    "the token is written in the config file; prefer token_env or token_file",
                ));
            }
        }
        if !self.sinks.is_empty() && self.event_sources.is_empty() {
            warnings.push(Problem::new(
                &file,
                "sinks",
                "no Jenkins target has an events token (jenkins.<name>.events_token_env), so no event reaches a sink",
            ));
        }
        // Replays are remembered per rule. A tokenless rule needs nothing but a signature, so a
        // request captured on its way to another rule with the same secret can be sent to it.
        for rule in self.rules.iter().filter(|r| r.token.is_none()) {
            let signed_alike = self.rules.iter().find(|other| {
                !std::sync::Arc::ptr_eq(other, rule)
                    && rule.signature.secret_count() > 0
                    && rule.signature.shares_a_secret_with(&other.signature)
            });
            if let Some(other) = signed_alike {
                warnings.push(Problem::new(
                    rule.file.display().to_string(),
                    "token",
                    format!(
                        "this rule has no token and verifies with the same secret as `{}`: a call captured on its way there can be sent here once; give this rule a token",
                        other.name
                    ),
                ));
            }
        }
        for rule in self.rules.iter() {
            let shown = rule.file.display().to_string();
            // Signatures are reloaded from the stored deliveries at start-up, so a delivery
            // purged before its signature's window ends takes that memory with it.
            let retention = self.settings.delivery.done_retention_secs;
            if let Some(window) = rule.signature.replay_memory_secs()
                && rule.reject_replays
                && self.settings.delivery.mode == DeliveryMode::Queue
                && window > retention
            {
                warnings.push(Problem::new(
                    &shown,
                    "verify",
                    format!(
                        "signatures are remembered for {window} s but delivered calls are kept {retention} s (delivery.done_retention_secs): after a restart, older signatures are forgotten"
                    ),
                ));
            }
            if rule.signature.scheme().name() == "port-sha1" && !rule.reject_replays {
                warnings.push(Problem::new(
                    &shown,
                    "verify.reject_replays",
                    "port-sha1 signs no timestamp: without replay protection a captured call can be sent again at any time",
                ));
            }
            if rule.signature.scheme().name() == "none"
                && rule.allow.is_empty()
                && self.global_allow.is_empty()
            {
                warnings.push(Problem::new(
                    &shown,
                    "verify.scheme",
                    "`none` with no IP allowlist: anyone who learns the token can trigger the job",
                ));
            }
            for field in &rule.inline_secrets {
                warnings.push(Problem::new(
                    &shown,
                    *field,
                    "the secret is written in the rule file; prefer *_env or *_file on a secret mount",
                ));
            }
            if !rule.inline_secrets.is_empty() && mode_has(&rule.file, WORLD_READABLE) {
                warnings.push(Problem::new(
                    &shown,
                    "",
                    "the file holds a secret and is readable by every user (chmod o-r)",
                ));
            }
        }
        warnings
    }
}

/// Whether any of the permission bits in `mask` is set on `path` (always false off Unix).
#[cfg(unix)]
fn mode_has(path: &Path, mask: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & mask != 0)
}

#[cfg(not(unix))]
fn mode_has(_path: &Path, _mask: u32) -> bool {
    false
}

/// Other users may read it.
const WORLD_READABLE: u32 = 0o004;
/// Group or other users may read, write or enter it.
const SHARED: u32 = 0o077;

/// Parses `admin.listen` and reads the admin token. Off loopback a token is required: the
/// admin endpoints expose queue state and delivery history to whoever can reach them.
fn check_admin(
    admin: &AdminSettings,
    public: Option<SocketAddr>,
    file: &str,
    env: &dyn Env,
    problems: &mut Vec<Problem>,
) -> (Option<SocketAddr>, Option<Secret>) {
    let listen = admin.listen.parse::<SocketAddr>().ok();
    if listen.is_none() {
        problems.push(Problem::new(
            file,
            "admin.listen",
            format!(
                "`{}` is not an address:port such as 127.0.0.1:9091",
                admin.listen
            ),
        ));
    }
    // One socket cannot serve both sides; refusing it here names the field instead of
    // failing later with "address in use". Port 0 picks a fresh port for each.
    if let (Some(admin_addr), Some(public)) = (listen, public)
        && admin_addr.port() != 0
        && admin_addr.port() == public.port()
        && (admin_addr.ip() == public.ip()
            || admin_addr.ip().is_unspecified()
            || public.ip().is_unspecified())
    {
        problems.push(Problem::new(
            file,
            "admin.listen",
            format!(
                "{admin_addr} overlaps server.listen {public}: the admin endpoints need their own listener"
            ),
        ));
    }
    let field = if admin.token_file.is_some() && admin.token_env.is_none() {
        "admin.token_file"
    } else {
        "admin.token_env"
    };
    let token = SecretSource {
        inline: None,
        env: admin.token_env.as_deref(),
        file: admin.token_file.as_deref(),
    }
    .read(Path::new("."), env);
    let token = match token {
        Ok(token) => token,
        Err(reason) => {
            problems.push(Problem::new(file, field, reason));
            return (listen, None);
        }
    };
    if token.is_none()
        && let Some(listen) = listen
        && !listen.ip().is_loopback()
    {
        problems.push(Problem::new(
            file,
            "admin.token_env",
            format!(
                "required when admin.listen is not a loopback address ({listen}); or admin.token_file"
            ),
        ));
    }
    (listen, token)
}

fn check_delivery(delivery: &DeliverySettings, file: &str, problems: &mut Vec<Problem>) {
    if delivery.retry_initial_ms == 0 {
        problems.push(Problem::new(
            file,
            "delivery.retry_initial_ms",
            "must be at least 1",
        ));
    }
    if delivery.retry_max_ms < delivery.retry_initial_ms {
        problems.push(Problem::new(
            file,
            "delivery.retry_max_ms",
            "must be at least delivery.retry_initial_ms",
        ));
    }
    if delivery.max_attempts == 0 {
        problems.push(Problem::new(
            file,
            "delivery.max_attempts",
            "must be at least 1",
        ));
    }
    if delivery.mode == DeliveryMode::Queue && delivery.store.as_os_str().is_empty() {
        problems.push(Problem::new(
            file,
            "delivery.store",
            "must name a directory",
        ));
    }
}
