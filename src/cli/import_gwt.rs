//! `hookgate import-gwt CONFIG_XML [--name NAME]`: a rule from a Jenkins job's `config.xml`
//! (what `GET /job/<name>/config.xml` returns), from the job's Generic Webhook Trigger
//! (`org.jenkinsci.plugins.gwt.GenericTrigger`, under `triggers` in a freestyle job and under
//! `PipelineTriggersJobProperty` in a Pipeline). The token is never printed: it becomes a
//! `token_env` placeholder. What a rule cannot express is a comment in the rule and a warning.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use roxmltree::{Document, Node};

/// GWT's trigger element, in either kind of job.
const TRIGGER: &str = "org.jenkinsci.plugins.gwt.GenericTrigger";

/// One imported trigger: the rule's text and what it could not carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub rule: String,
    pub warnings: Vec<String>,
    /// The environment variables the rule reads, for the user to set.
    pub placeholders: Vec<String>,
}

/// A variable of GWT's lists, as config.xml holds it.
#[derive(Debug, Default)]
struct Variable {
    key: String,
    value: String,
    expression_type: String,
    regexp_filter: String,
    /// `None` when the element is absent: GWT applies a default, even an empty one, only when
    /// it is there (the UI always writes it).
    default_value: Option<String>,
}

fn child<'a>(node: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The text of a child element (`""` when absent or empty).
fn text(node: Node<'_, '_>, name: &str) -> String {
    child(node, name)
        .and_then(|c| c.text())
        .unwrap_or("")
        .to_owned()
}

fn flag(node: Node<'_, '_>, names: &[&str]) -> bool {
    names
        .iter()
        .any(|name| text(node, name).trim().eq_ignore_ascii_case("true"))
}

fn variables(trigger: Node<'_, '_>, list: &str) -> Vec<Variable> {
    let Some(list) = child(trigger, list) else {
        return Vec::new();
    };
    list.children()
        .filter(Node::is_element)
        .map(|item| Variable {
            key: text(item, "key"),
            value: text(item, "value"),
            expression_type: text(item, "expressionType"),
            regexp_filter: text(item, "regexpFilter"),
            default_value: child(item, "defaultValue")
                .map(|node| node.text().unwrap_or("").to_owned()),
        })
        .collect()
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Text from config.xml as part of a comment: a control character (a newline ending the
/// comment, or one TOML refuses in comments) becomes a space.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `name` as an environment variable's name: upper case, `_` for anything else.
fn env_name(name: &str, suffix: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "JOB_");
    }
    format!("{out}_{suffix}")
}

/// Whether `name` can be a hookgate variable name (`[A-Za-z_][A-Za-z0-9_]*`).
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The rule for the job whose `config.xml` is `xml`, named `name`.
pub fn import(xml: &str, name: &str) -> Result<Imported, String> {
    let document = Document::parse(xml).map_err(|e| format!("not a config.xml: {e}"))?;
    let mut triggers = document
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == TRIGGER);
    let trigger = triggers.next().ok_or_else(|| {
        format!("no Generic Webhook Trigger ({TRIGGER}) in this job's config.xml")
    })?;
    let mut warnings = Vec::new();
    if triggers.next().is_some() {
        warnings.push(
            "the job has more than one Generic Webhook Trigger; GWT uses the first, and so does this rule"
                .to_owned(),
        );
    }
    let root = document.root_element();
    let kind = match root.tag_name().name() {
        "flow-definition" => "Pipeline job",
        "project" => "freestyle job",
        other => other,
    };
    let sender_env = env_name(name, "TOKEN");
    let jenkins_env = env_name(name, "JENKINS_TOKEN");
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Imported by `hookgate import-gwt` from the Generic Webhook Trigger of a {kind}."
    );
    let description = text(root, "description");
    let _ = writeln!(w, "name = {}", quoted(name));
    if description.trim().is_empty() {
        let _ = writeln!(
            w,
            "description = {}",
            quoted(&format!("Jenkins job {name}"))
        );
    } else {
        let _ = writeln!(w, "description = {}", quoted(description.trim()));
    }
    let has_token = !text(trigger, "token").trim().is_empty();
    let credential = text(trigger, "tokenCredentialId");
    if has_token || !credential.trim().is_empty() {
        let _ = writeln!(
            w,
            "# The token senders called GWT with (config.xml's <token>{}), now checked by hookgate.",
            if credential.trim().is_empty() {
                String::new()
            } else {
                format!(
                    ", or the secret-text credential `{}`",
                    comment(credential.trim())
                )
            }
        );
        let _ = writeln!(w, "token_env = {}", quoted(&sender_env));
    } else {
        let _ = writeln!(
            w,
            "# GWT's trigger had no token, so neither has this rule: any caller that passes [verify] matches."
        );
    }
    if !credential.trim().is_empty() {
        warnings.push(format!(
            "the token is the Jenkins credential `{}` (tokenCredentialId): set {sender_env} and {jenkins_env} from it",
            comment(credential.trim())
        ));
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "[verify]");
    let _ = writeln!(
        w,
        "# GWT checked no signature per job. Prefer the sender's: port, github, gitlab or hmac."
    );
    let _ = writeln!(w, "scheme = \"none\"");

    let flatten = !flag(trigger, &["shouldNotFlatten", "shouldNotFlattern"]);
    for variable in variables(trigger, "genericVariables") {
        let _ = writeln!(w);
        let is_xpath = variable
            .expression_type
            .trim()
            .eq_ignore_ascii_case("XPath");
        let reason = if is_xpath {
            Some("an XPath expression: hookgate reads JSON bodies only")
        } else if !is_variable_name(&variable.key) {
            Some("its name is not a variable name hookgate takes ([A-Za-z_][A-Za-z0-9_]*)")
        } else if variable.value.trim().is_empty() {
            Some("it has no expression (GWT leaves it unresolved)")
        } else {
            None
        };
        if let Some(reason) = reason {
            warnings.push(format!(
                "variable `{}` is left out: {reason}",
                comment(&variable.key)
            ));
            let _ = writeln!(w, "# Left out, {reason}:");
            let _ = writeln!(
                w,
                "#   {} = {} ({})",
                comment(&variable.key),
                comment(&variable.value),
                comment(variable.expression_type.trim())
            );
            continue;
        }
        let _ = writeln!(w, "[[variables]]");
        let _ = writeln!(w, "name = {}", quoted(&variable.key));
        let _ = writeln!(w, "jsonpath = {}", quoted(&variable.value));
        if !variable.regexp_filter.is_empty() {
            let _ = writeln!(w, "regex_filter = {}", quoted(&variable.regexp_filter));
        }
        if let Some(default) = &variable.default_value {
            let _ = writeln!(w, "default = {}", quoted(default));
        }
        if !flatten {
            let _ = writeln!(w, "flatten = false");
        }
    }
    for (list, table) in [
        ("genericHeaderVariables", "headers"),
        ("genericRequestVariables", "query"),
    ] {
        for variable in variables(trigger, list) {
            let _ = writeln!(w);
            let credential = if table == "headers" {
                crate::rules::carries_credential_header(&variable.key)
            } else {
                variable.key == "token"
            };
            if credential {
                let reason = "it carries a credential, which a variable would echo in answers and send to Jenkins";
                warnings.push(format!(
                    "{table} variable `{}` is left out: {reason}",
                    comment(&variable.key)
                ));
                let _ = writeln!(
                    w,
                    "# Left out, {reason}: [[{table}]] {}",
                    comment(&variable.key)
                );
                continue;
            }
            let _ = writeln!(w, "[[{table}]]");
            let _ = writeln!(w, "name = {}", quoted(&variable.key));
            if !variable.regexp_filter.is_empty() {
                let _ = writeln!(w, "regex_filter = {}", quoted(&variable.regexp_filter));
            }
        }
    }
    let filter_text = text(trigger, "regexpFilterText");
    let filter_expression = text(trigger, "regexpFilterExpression");
    if !filter_text.is_empty() || !filter_expression.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "[filter]");
        let _ = writeln!(w, "text = {}", quoted(&filter_text));
        let _ = writeln!(w, "expression = {}", quoted(&filter_expression));
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "[dispatch]");
    let _ = writeln!(w, "jenkins = \"main\"");
    if has_token || !credential.trim().is_empty() {
        let _ = writeln!(
            w,
            "# The job's GWT token, which hookgate passes to Jenkins (the value of <token> above)."
        );
        let _ = writeln!(w, "token_env = {}", quoted(&jenkins_env));
    } else {
        // GWT triggers a tokenless job only for calls that carry no token.
        let _ = writeln!(w, "# The job has no GWT token, so hookgate sends none.");
        warnings.push(
            "the job has no token: the rule takes any caller. Give it a token (token_env), an [allow] list or a verify scheme before it faces the network"
                .to_owned(),
        );
    }

    // What a rule cannot say: each a comment and a warning. hookgate hands every call to the
    // job's GWT trigger, so what is the job's own stays in effect there.
    let mut unsupported = Vec::new();
    let cause = text(trigger, "causeString");
    if !cause.trim().is_empty() && cause.trim() != "Generic Cause" {
        unsupported.push(format!(
            "causeString `{}`: a rule has no cause; the job's GWT trigger still writes it",
            comment(cause.trim())
        ));
    }
    for (setting, what) in [
        ("printPostContent", "the body in the build log"),
        (
            "printContributedVariables",
            "the variables in the build log",
        ),
    ] {
        if flag(trigger, &[setting]) {
            unsupported.push(format!(
                "{setting} ({what}): a rule does not print; the job's GWT trigger still does, and `hookgate test` shows what a call resolves"
            ));
        }
    }
    if flag(trigger, &["silentResponse"]) {
        unsupported.push(
            "silentResponse: GWT then answers hookgate with an empty 200, so hookgate cannot name the queue item (a [report] then needs run_id_parameters); turn it off on the job"
                .to_owned(),
        );
    }
    if flag(trigger, &["overrideQuietPeriod"]) {
        unsupported.push(
            "overrideQuietPeriod (a quiet period from the call's jobQuietPeriod): a rule has no quiet period; the job's GWT trigger still reads it from the call hookgate passes on".to_owned(),
        );
    }
    if flag(trigger, &["allowSeveralTriggersPerBuild"]) {
        unsupported.push(
            "allowSeveralTriggersPerBuild: a setting of the job's GWT trigger, which keeps it"
                .to_owned(),
        );
    }
    if !unsupported.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "# GWT settings a rule cannot express:");
        for item in &unsupported {
            let _ = writeln!(w, "#   {item}");
        }
    }
    warnings.extend(unsupported);
    let mut placeholders = Vec::new();
    if has_token || !credential.trim().is_empty() {
        placeholders.push(sender_env);
        placeholders.push(jenkins_env);
    }
    Ok(Imported {
        rule: out,
        warnings,
        placeholders,
    })
}

/// The rule's name: `--name`, else the file's directory (Jenkins keeps `jobs/<name>/config.xml`),
/// else its stem.
fn default_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if stem == "config" {
        path.parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(stem)
    } else {
        stem
    };
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(128)
        .collect();
    if cleaned.chars().any(|c| c.is_ascii_alphanumeric()) {
        cleaned
    } else {
        "imported".to_owned()
    }
}

pub fn run(path: &Path, name: Option<&str>) -> ExitCode {
    let xml = match std::fs::read_to_string(path) {
        Ok(xml) => xml,
        Err(error) => {
            eprintln!("hookgate: cannot read {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let name = name.map_or_else(|| default_name(path), str::to_owned);
    if let Err(reason) = crate::rules::validate_rule_name(&name) {
        eprintln!("hookgate: --name: {reason}");
        return ExitCode::FAILURE;
    }
    let imported = match import(&xml, &name) {
        Ok(imported) => imported,
        Err(reason) => {
            eprintln!("hookgate: {}: {reason}", path.display());
            return ExitCode::FAILURE;
        }
    };
    // The printed rule must compile once its placeholders are set: check it as `check` will.
    let env: HashMap<String, String> = imported
        .placeholders
        .iter()
        .map(|name| (name.clone(), "placeholder".to_owned()))
        .collect();
    let jenkins: BTreeSet<String> = ["main".to_owned()].into();
    let file = Path::new("rules").join(format!("{name}.toml"));
    let compiled = crate::rules::compile_text(&imported.rule, &file, &jenkins, &env);
    print!("{}", imported.rule);
    for warning in &imported.warnings {
        eprintln!("warning: {warning}");
    }
    if let Err(problems) = compiled {
        for problem in problems {
            eprintln!("error: the rule does not compile as printed: {problem}");
        }
        return ExitCode::FAILURE;
    }
    if imported.placeholders.is_empty() {
        eprintln!("Save the rule as rules/{name}.toml.");
    } else {
        eprintln!(
            "Set {} before `hookgate check`; save the rule as rules/{name}.toml.",
            imported.placeholders.join(" and ")
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_rule_names_are_made_safe() {
        assert_eq!(env_name("deploy-service", "TOKEN"), "DEPLOY_SERVICE_TOKEN");
        assert_eq!(env_name("9lives", "TOKEN"), "JOB_9LIVES_TOKEN");
        assert_eq!(
            default_name(Path::new("/var/jenkins/jobs/deploy api/config.xml")),
            "deploy-api"
        );
        assert_eq!(default_name(Path::new("nightly.xml")), "nightly");
        assert_eq!(
            default_name(Path::new("jobs/.hidden job/config.xml")),
            "hidden-job"
        );
        assert_eq!(
            default_name(Path::new("jobs/déploiement/config.xml")),
            "d-ploiement"
        );
        assert_eq!(default_name(Path::new("jobs/---/config.xml")), "imported");
        assert_eq!(comment("a\nb\u{7f}c"), "a b c");
        assert!(is_variable_name("GIT_BRANCH") && is_variable_name("_x1"));
        assert!(
            !is_variable_name("git-branch") && !is_variable_name("1x") && !is_variable_name("")
        );
    }

    #[test]
    fn a_job_without_a_trigger_or_not_xml_is_an_error() {
        assert!(
            import("<project><triggers/></project>", "x")
                .unwrap_err()
                .contains("no Generic Webhook Trigger")
        );
        assert!(
            import("not xml", "x")
                .unwrap_err()
                .starts_with("not a config.xml")
        );
    }
}
