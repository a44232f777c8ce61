//! Where build events may come from: each `[jenkins.<name>]` with an events token is an event
//! source at `/jenkins/<name>/events`, optionally held to its controller's addresses.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::{Env, InlineSecret, JenkinsSettings, Problem};
use crate::secret::{Secret, SecretSource};
use crate::verify::ip::{AllowList, ClientAddr};

/// One Jenkins target that may post events.
#[derive(Debug)]
pub struct EventSource {
    pub name: String,
    token: Secret,
    allow: AllowList,
    /// `events_token` written in the config file (a warning for `check`).
    pub inline_token: bool,
}

impl EventSource {
    /// Constant time, over SHA-256 digests (`Secret::matches`).
    pub fn token_matches(&self, given: &[u8]) -> bool {
        self.token.matches(given)
    }

    pub fn allows(&self, client: ClientAddr) -> bool {
        self.allow.allows(client)
    }
}

/// Every event source by Jenkins target name.
#[derive(Debug, Default)]
pub struct EventSources(HashMap<String, EventSource>);

impl EventSources {
    /// Reads each target's events token and allowlist, reporting every problem.
    pub fn compile(
        jenkins: &BTreeMap<String, JenkinsSettings>,
        file: &str,
        env: &dyn Env,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut sources = HashMap::new();
        for (name, settings) in jenkins {
            let field = |key: &str| format!("jenkins.{name}.{key}");
            if let Some(public) = &settings.public_url {
                let parsed = url::Url::parse(public);
                if !parsed
                    .as_ref()
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                {
                    problems.push(Problem::new(
                        file,
                        field("public_url"),
                        format!("`{public}` is not an http or https URL"),
                    ));
                }
            }
            let allow = AllowList::parse(&settings.events_allow_ips).unwrap_or_else(|errors| {
                for (i, reason) in errors {
                    problems.push(Problem::new(
                        file,
                        format!("{}[{i}]", field("events_allow_ips")),
                        reason,
                    ));
                }
                AllowList::default()
            });
            let token_field = if settings.events_token_file.is_some() {
                "events_token_file"
            } else if settings.events_token.is_some() {
                "events_token"
            } else {
                "events_token_env"
            };
            let token = SecretSource {
                inline: settings.events_token.as_ref().map(InlineSecret::expose),
                env: settings.events_token_env.as_deref(),
                file: settings.events_token_file.as_deref(),
            }
            .read(Path::new("."), env);
            match token {
                Ok(Some(token)) => {
                    sources.insert(
                        name.clone(),
                        EventSource {
                            name: name.clone(),
                            token,
                            allow,
                            inline_token: settings.events_token.is_some(),
                        },
                    );
                }
                Ok(None) if !settings.events_allow_ips.is_empty() => problems.push(Problem::new(
                    file,
                    field("events_allow_ips"),
                    "needs an events token (events_token_env or events_token_file): without one, events from this Jenkins are refused",
                )),
                Ok(None) => {}
                Err(reason) => problems.push(Problem::new(file, field(token_field), reason)),
            }
        }
        if problems.is_empty() {
            Ok(Self(sources))
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, name: &str) -> Option<&EventSource> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &EventSource> {
        self.0.values()
    }
}
