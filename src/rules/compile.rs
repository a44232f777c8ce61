//! Rule file → [`Rule`]: parsing any of the three formats, then compiling every section while
//! collecting all problems instead of stopping at the first.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::model::{RuleFile, SchemeName};
use super::template::Template;
use super::{DispatchSpec, ReportSpec, Rule};
use crate::config::{Env, InlineSecret, Problem};
use crate::extract::{BodyVariable, CompileError, IdempotencySpec, RequestVariable, Shape};
use crate::filter::Filter;
use crate::secret::{Secret, SecretSource};
use crate::verify::ip::AllowList;
use crate::verify::signature::{Scheme, SignatureCheck};

/// Reads, parses and compiles one rule file.
pub(super) fn compile_file(
    path: &Path,
    jenkins: &BTreeSet<String>,
    env: &dyn Env,
) -> Result<Rule, Vec<Problem>> {
    let file = parse_file(path).map_err(|problem| vec![problem])?;
    compile(file, path, jenkins, env)
}

fn parse_file(path: &Path) -> Result<RuleFile, Problem> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::new(path.display(), "", format!("cannot read: {e}")))?;
    parse_text(&text, path)
}

/// Parses rule text in the format `path`'s extension names (JSON for anything unknown).
pub(super) fn parse_text(text: &str, path: &Path) -> Result<RuleFile, Problem> {
    let shown = path.display();
    // Every format is first read into one generic tree so that one deserialiser, with field
    // paths in its errors, serves all three.
    let tree: serde_json::Value = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(text).map_err(|e| e.to_string()),
        Some("yaml" | "yml") => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
        _ => serde_json::from_str(text).map_err(|e| e.to_string()),
    }
    .map_err(|reason| {
        Problem::new(
            &shown,
            "",
            format!("syntax error: {}", crate::config::without_excerpt(&reason)),
        )
    })?;
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        Problem::new(
            &shown,
            field,
            crate::config::without_value(&e.into_inner().to_string()),
        )
    })
}

/// Compiles a parsed rule file. Secrets are read here, through `env` and relative to the rule
/// file's directory.
pub(super) fn compile(
    file: RuleFile,
    path: &Path,
    jenkins: &BTreeSet<String>,
    env: &dyn Env,
) -> Result<Rule, Vec<Problem>> {
    let shown = path.display().to_string();
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let mut problem = |field: String, reason: String| {
        problems.push(Problem::new(&shown, field, reason));
    };

    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name = file.name.clone().unwrap_or_else(|| stem.to_owned());
    if let Err(reason) = validate_rule_name(&name) {
        problem("name".to_owned(), reason);
    }

    let token = SecretSource {
        inline: file.token.as_ref().map(InlineSecret::expose),
        env: file.token_env.as_deref(),
        file: file.token_file.as_deref(),
    }
    .read(base_dir, env)
    .unwrap_or_else(|reason| {
        problem("token".to_owned(), reason);
        None
    });

    let allow = match &file.allow {
        None => AllowList::default(),
        Some(section) if section.ips.is_empty() => {
            problem(
                "allow.ips".to_owned(),
                "is empty; omit [allow] to accept any address".to_owned(),
            );
            AllowList::default()
        }
        Some(section) => AllowList::parse(&section.ips).unwrap_or_else(|errors| {
            for (i, reason) in errors {
                problem(format!("allow.ips[{i}]"), reason);
            }
            AllowList::default()
        }),
    };

    let signature = compile_verify(&file, base_dir, env, &mut problem);

    let mut body_variables = Vec::new();
    for (i, entry) in file.variables.iter().enumerate() {
        match BodyVariable::compile(entry) {
            Ok(variable) => body_variables.push(variable),
            Err(errors) => report(&mut problem, &format!("variables[{i}]"), errors),
        }
    }
    let mut header_variables = Vec::new();
    for (i, entry) in file.headers.iter().enumerate() {
        if carries_credential(&entry.name, &file) {
            problem(
                format!("headers[{i}].name"),
                format!(
                    "`{}` carries a credential; it cannot become a variable (variables are echoed in answers and sent to Jenkins)",
                    entry.name
                ),
            );
            continue;
        }
        match RequestVariable::from_header(entry) {
            Ok(variable) => header_variables.push(variable),
            Err(errors) => report(&mut problem, &format!("headers[{i}]"), errors),
        }
    }
    let mut query_variables = Vec::new();
    for (i, entry) in file.query.iter().enumerate() {
        if entry.name == "token" {
            problem(
                format!("query[{i}].name"),
                "`token` is the sender's credential; it cannot become a variable".to_owned(),
            );
            continue;
        }
        match RequestVariable::from_query(entry) {
            Ok(variable) => query_variables.push(variable),
            Err(errors) => report(&mut problem, &format!("query[{i}]"), errors),
        }
    }
    let filter = Filter::compile(file.filter.as_ref())
        .map_err(|errors| report(&mut problem, "filter", errors))
        .ok();

    if !jenkins.contains(&file.dispatch.jenkins) {
        let known: Vec<&str> = jenkins.iter().map(String::as_str).collect();
        problem(
            "dispatch.jenkins".to_owned(),
            format!(
                "no [jenkins.{}] in the config (configured: {})",
                file.dispatch.jenkins,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    let dispatch_token = SecretSource {
        inline: file.dispatch.token.as_ref().map(InlineSecret::expose),
        env: file.dispatch.token_env.as_deref(),
        file: file.dispatch.token_file.as_deref(),
    }
    .read(base_dir, env)
    .unwrap_or_else(|reason| {
        problem("dispatch.token".to_owned(), reason);
        None
    });

    if let Some(header) = file.idempotency.as_ref().and_then(|i| i.header.as_deref())
        && carries_credential(header, &file)
    {
        problem(
            "idempotency.header".to_owned(),
            format!(
                "`{header}` carries a credential; it cannot be an idempotency key (the key is stored)"
            ),
        );
    }
    let idempotency = match &file.idempotency {
        None => None,
        Some(section) => IdempotencySpec::compile(section)
            .map_err(|errors| report(&mut problem, "idempotency", errors))
            .ok(),
    };

    let report = file.report.as_ref().and_then(|section| {
        match Template::parse(&section.run_id) {
            Ok(run_id) => {
                let known: Vec<&str> = body_variables
                    .iter()
                    .map(BodyVariable::name)
                    .chain(header_variables.iter().map(RequestVariable::name))
                    .chain(query_variables.iter().map(RequestVariable::name))
                    .collect();
                // GWT also resolves `<name>_<n>` for each element of an array value.
                let unknown: Vec<&str> = run_id
                    .variables()
                    .filter(|v| {
                        !known.iter().any(|k| {
                            v == k
                                || v.strip_prefix(k)
                                    .and_then(|rest| rest.strip_prefix('_'))
                                    .is_some()
                        })
                    })
                    .collect();
                if unknown.is_empty() {
                    Some(ReportSpec {
                        sink: section.sink.clone(),
                        run_id,
                    })
                } else {
                    problem(
                        "report.run_id".to_owned(),
                        format!(
                            "reads {} but the rule resolves only [{}]",
                            unknown.join(", "),
                            known.join(", ")
                        ),
                    );
                    None
                }
            }
            Err(reason) => {
                problem("report.run_id".to_owned(), reason);
                None
            }
        }
    });

    // Every `None` above was reported as a problem, so this only proceeds when all is well.
    let (Some(signature), Some(filter), true) = (signature, filter, problems.is_empty()) else {
        return Err(problems);
    };
    let body_shape = Shape::of(
        body_variables
            .iter()
            .map(BodyVariable::path)
            .chain(idempotency.as_ref().and_then(IdempotencySpec::path)),
    );
    Ok(Rule {
        name,
        description: file.description,
        file: path.to_owned(),
        token,
        allow,
        signature,
        body_variables,
        body_shape,
        header_variables,
        query_variables,
        filter,
        dispatch: DispatchSpec {
            jenkins: file.dispatch.jenkins,
            token: dispatch_token,
            body: file.dispatch.body,
        },
        idempotency,
        report,
        inline_secrets: [
            ("token", file.token.is_some()),
            ("verify.secret", file.verify.secret.is_some()),
            ("dispatch.token", file.dispatch.token.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, inline)| inline.then_some(field))
        .collect(),
        reject_replays: file.verify.reject_replays.unwrap_or(true),
        replays: Arc::default(),
        rate: file
            .rate
            .as_ref()
            .map(|r| (r.per_sec, r.burst.unwrap_or(r.per_sec.saturating_mul(2)))),
    })
}

fn report(problem: &mut impl FnMut(String, String), prefix: &str, errors: Vec<CompileError>) {
    for error in errors {
        problem(format!("{prefix}.{}", error.field), error.reason);
    }
}

/// Compiles `[verify]`: the scheme's own keys, then exactly one secret source unless the
/// scheme is `none`, which takes none.
fn compile_verify(
    file: &RuleFile,
    base_dir: &Path,
    env: &dyn Env,
    problem: &mut impl FnMut(String, String),
) -> Option<SignatureCheck> {
    let section = &file.verify;
    let scheme = Scheme::compile(section)
        .map_err(|errors| {
            for (field, reason) in errors {
                problem(format!("verify.{field}"), reason);
            }
        })
        .ok();
    if section.reject_replays == Some(true)
        && matches!(section.scheme, SchemeName::Gitlab | SchemeName::None)
    {
        problem(
            "verify.reject_replays".to_owned(),
            "this scheme carries no MAC (gitlab sends a shared token), so a replay cannot be told from a new call; use [idempotency] on a key inside the body instead".to_owned(),
        );
    }
    let sources = usize::from(section.secret.is_some())
        + usize::from(section.secret_env.is_some())
        + usize::from(section.secrets_env.is_some())
        + usize::from(section.secret_file.is_some());
    if section.scheme == SchemeName::None {
        if sources > 0 {
            problem(
                "verify".to_owned(),
                "scheme = \"none\" takes no secret; remove the secret keys".to_owned(),
            );
        }
        return scheme.map(|scheme| SignatureCheck::new(scheme, Vec::new()));
    }
    if sources != 1 {
        problem(
            "verify".to_owned(),
            "set exactly one of secret, secret_env, secrets_env, secret_file".to_owned(),
        );
        return None;
    }
    let mut secrets: Vec<Secret> = Vec::new();
    if let Some(names) = &section.secrets_env {
        if names.is_empty() {
            problem(
                "verify.secrets_env".to_owned(),
                "lists no variables".to_owned(),
            );
        }
        for (i, name) in names.iter().enumerate() {
            let source = SecretSource {
                env: Some(name),
                ..SecretSource::default()
            };
            match source.read(base_dir, env) {
                Ok(Some(secret)) => secrets.push(secret),
                Ok(None) => {}
                Err(reason) => problem(format!("verify.secrets_env[{i}]"), reason),
            }
        }
    } else {
        let source = SecretSource {
            inline: section.secret.as_ref().map(InlineSecret::expose),
            env: section.secret_env.as_deref(),
            file: section.secret_file.as_deref(),
        };
        let field = if section.secret_env.is_some() {
            "verify.secret_env"
        } else if section.secret_file.is_some() {
            "verify.secret_file"
        } else {
            "verify.secret"
        };
        match source.read(base_dir, env) {
            Ok(Some(secret)) => secrets.push(secret),
            Ok(None) => {}
            Err(reason) => problem(field.to_owned(), reason),
        }
    }
    scheme.map(|scheme| SignatureCheck::new(scheme, secrets))
}

/// Headers that authenticate a request. Capturing one as a variable would echo a secret.
const CREDENTIAL_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "token",
    "x-gitlab-token",
    "x-hub-signature",
    "x-hub-signature-256",
    "x-port-signature",
];

/// Whether `header` is one that authenticates requests (whatever the rule's scheme).
pub(crate) fn is_credential_header(header: &str) -> bool {
    let header = header.trim();
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(header))
}

fn carries_credential(header: &str, file: &RuleFile) -> bool {
    let header = header.trim();
    is_credential_header(header)
        || file
            .verify
            .header
            .as_deref()
            .is_some_and(|h| h.trim().eq_ignore_ascii_case(header))
}

/// Rule names appear in URLs (`/hooks/{rule}`), headers and metric labels.
pub(crate) fn validate_rule_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 128;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid rule name (letters, digits, `-`, `_`, `.`; starting with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests;
