//! The compiled gateway: settings, rules, allowlists and Jenkins targets, built once at
//! start-up with every problem reported together. `serve`, `check`, `test` and `sign` all
//! start from here, so they agree on what a valid configuration is.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::config::{DeliveryMode, DeliverySettings, Env, Problem, Problems, Settings, Source};
use crate::dispatch::JenkinsClient;
use crate::rules::{self, RuleSet};
use crate::verify::ip::{AllowList, TrustedProxies};

pub struct Gateway {
    pub settings: Settings,
    pub source: Source,
    pub listen: SocketAddr,
    pub global_allow: AllowList,
    pub trusted_proxies: TrustedProxies,
    pub rules: RuleSet,
    pub jenkins: JenkinsClient,
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
        let rules = rules::load_dir(&settings.rules.dir, &names, env)
            .map_err(|mut errors| problems.append(&mut errors.0))
            .ok();
        check_delivery(&settings.delivery, &file, &mut problems);
        if let Some(rules) = &rules {
            for rule in rules.iter() {
                rule.replays
                    .set_capacity(settings.server.replay_cache_entries);
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

        match (listen, jenkins, rules) {
            (Some(listen), Some(jenkins), Some(rules)) if problems.is_empty() => Ok(Self {
                settings,
                source,
                listen,
                global_allow,
                trusted_proxies,
                rules,
                jenkins,
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
        if !self.listen.ip().is_loopback() {
            warnings.push(Problem::new(
                &file,
                "server.listen",
                format!(
                    "{} is reachable from other hosts and hookgate speaks plain HTTP: terminate TLS in front of it and list that proxy in server.trusted_proxies",
                    self.listen
                ),
            ));
        }
        let store = &self.settings.delivery.store;
        if self.settings.delivery.mode == DeliveryMode::Queue && group_or_world_accessible(store) {
            warnings.push(Problem::new(
                &file,
                "delivery.store",
                format!(
                    "{} holds every accepted body and other users can enter it (chmod 700)",
                    store.display()
                ),
            ));
        }
        for rule in self.rules.iter() {
            let shown = rule.file.display().to_string();
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
            if !rule.inline_secrets.is_empty() && world_readable(&rule.file) {
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

#[cfg(unix)]
fn world_readable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
fn world_readable(_path: &std::path::Path) -> bool {
    false
}

#[cfg(unix)]
fn group_or_world_accessible(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn group_or_world_accessible(_path: &std::path::Path) -> bool {
    false
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
