//! Rules: loading every file in `rules.dir`, compiling each into a [`Rule`], and finding the
//! rules a request selects.
//!
//! Compilation happens at start-up and on each reload: JSONPath parsed, regexes compiled,
//! allowlists parsed, secrets read. A broken rule stops the process (or refuses the reload)
//! with every problem listed (file, field, reason), and nothing is compiled per request.

mod compile;
pub mod model;
pub mod template;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Env, Problem, Problems};
use crate::extract::{BodyVariable, IdempotencySpec, RequestVariable, Shape};
use crate::filter::Filter;
use crate::secret::Secret;
use crate::verify::ip::AllowList;
use crate::verify::replay::ReplayGuard;
use crate::verify::signature::SignatureCheck;
use crate::verify::token::{self, Candidate, TokenIndex};
use model::BodyMode;
use template::Template;

/// File extensions read from `rules.dir`.
pub const RULE_EXTENSIONS: [&str; 4] = ["toml", "yaml", "yml", "json"];

/// One compiled rule, immutable and shared by every request.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    /// The token senders must pass; `None` for a tokenless rule.
    pub token: Option<Secret>,
    /// Empty when the rule has no `[allow]` section.
    pub allow: AllowList,
    pub signature: SignatureCheck,
    pub body_variables: Vec<BodyVariable>,
    /// The parts of a JSON body the variables and idempotency key read.
    pub body_shape: Shape,
    pub header_variables: Vec<RequestVariable>,
    pub query_variables: Vec<RequestVariable>,
    pub filter: Filter,
    pub dispatch: DispatchSpec,
    /// Queue mode: how repeats of one call are recognised.
    pub idempotency: Option<IdempotencySpec>,
    /// `[report]`: the Port run each call stands for, and the port sink told of it.
    pub report: Option<ReportSpec>,
    /// `(per_sec, burst)` from `[rate]`; `None` uses the server's default.
    pub rate: Option<(u32, u32)>,
    /// Fields holding a secret written inline in the rule file (for `check`'s warnings).
    pub inline_secrets: Vec<&'static str>,
    /// `verify.reject_replays`: refuse a signature seen before inside its window.
    pub reject_replays: bool,
    /// Shared with the claims of calls in progress, which may outlive the request that made
    /// them (an accepted call is recorded even when its sender has gone).
    pub replays: Arc<ReplayGuard>,
}

impl Rule {
    /// Whether the body must be JSON for this rule (it has JSONPath variables).
    pub fn needs_json(&self) -> bool {
        !self.body_variables.is_empty()
            || self
                .idempotency
                .as_ref()
                .is_some_and(IdempotencySpec::needs_json)
    }
}

/// A rule's `[report]`, compiled; the gateway checks that `sink` is a port sink.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub sink: String,
    pub run_id: Template,
}

/// Where a rule's calls go.
#[derive(Debug)]
pub struct DispatchSpec {
    /// Name of the `[jenkins.<name>]` target.
    pub jenkins: String,
    /// The Jenkins job's GWT token; `None` calls Jenkins without one.
    pub token: Option<Secret>,
    pub body: BodyMode,
}

/// Every loaded rule, indexed by name and by token.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    by_name: HashMap<String, usize>,
    tokens: TokenIndex,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        let rules: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
        let by_name = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (rule.name.clone(), i))
            .collect();
        let tokens = TokenIndex::build(&rules);
        Self {
            rules,
            by_name,
            tokens,
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.by_name.get(name).map(|&i| &self.rules[i])
    }

    /// The rules `/generic-webhook-trigger/invoke` selects for this token (fan-out).
    pub fn candidates(&self, token: Option<&[u8]>) -> Vec<Candidate<'_>> {
        self.tokens.candidates(&self.rules, token)
    }

    /// Gives each rule the replay memory of the rule with its name in `previous`, so a reload
    /// reopens no signature's window (and a request of either set that claims a signature
    /// claims it for both). Returns the rules that had none to take (new names).
    pub fn inherit_replays(&mut self, previous: &RuleSet) -> Vec<String> {
        let mut fresh = Vec::new();
        for rule in &mut self.rules {
            let name = rule.name.clone();
            let before = previous
                .get(&name)
                .map(|before| Arc::clone(&before.replays));
            // The set was just built: nothing else holds its rules yet.
            match (before, Arc::get_mut(rule)) {
                (Some(before), Some(rule)) => rule.replays = before,
                _ => fresh.push(name),
            }
        }
        fresh
    }

    /// The rule `/hooks/{name}` selects, if it exists and its token (if any) was given.
    pub fn named(&self, name: &str, token: Option<&[u8]>) -> Option<Candidate<'_>> {
        self.get(name).and_then(|rule| token::named(rule, token))
    }
}

/// Whether a header authenticates requests, so a rule may not capture it as a variable.
pub fn carries_credential_header(header: &str) -> bool {
    compile::is_credential_header(header)
}

/// Whether `name` may name a rule (it appears in URLs, headers and metric labels).
pub fn validate_rule_name(name: &str) -> Result<(), String> {
    compile::validate_rule_name(name)
}

/// Loads and compiles every rule file in `dir`. `jenkins` holds the configured target names.
/// Compiles one rule from text, as if read from `path` (whose extension picks the format and
/// whose directory anchors relative secret files). Used by `load_dir` and the fuzz targets.
pub fn compile_text(
    text: &str,
    path: &Path,
    jenkins: &BTreeSet<String>,
    env: &dyn Env,
) -> Result<Rule, Vec<Problem>> {
    let file = compile::parse_text(text, path).map_err(|problem| vec![problem])?;
    compile::compile(file, path, jenkins, env)
}

pub fn load_dir(
    dir: &Path,
    jenkins: &BTreeSet<String>,
    env: &dyn Env,
) -> Result<RuleSet, Problems> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Problems(vec![Problem::new(
            dir.display(),
            "",
            format!("cannot read the rules directory: {e}"),
        )])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| is_rule_file(path))
        .collect();
    files.sort();

    let mut rules = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        match compile::compile_file(&file, jenkins, env) {
            Ok(rule) => {
                if let Some(first) = seen.get(&rule.name) {
                    problems.push(Problem::new(
                        file.display(),
                        "name",
                        format!(
                            "rule name `{}` is already used by {}",
                            rule.name,
                            first.display()
                        ),
                    ));
                    continue;
                }
                seen.insert(rule.name.clone(), file.clone());
                rules.push(rule);
            }
            Err(mut errors) => problems.append(&mut errors),
        }
    }
    if problems.is_empty() {
        Ok(RuleSet::new(rules))
    } else {
        Err(Problems(problems))
    }
}

fn is_rule_file(path: &Path) -> bool {
    path.is_file() && is_rule_file_name(path)
}

/// Whether `load_dir` reads a file at `path` (it may be gone: `rules.watch` sees removals):
/// a rule extension, and not hidden (editors' swap and backup files are).
pub fn is_rule_file_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && RULE_EXTENSIONS.contains(&ext)
}
