//! `hookgate test`, `hookgate sign` and the per-rule summary of `hookgate check`: commands that
//! work on the compiled rules without serving.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::web::Bytes;
use serde::Serialize;

use super::{read_payload, shell_quote};
use crate::dispatch::Delivery;
use crate::extract::Variables;
use crate::gateway::Gateway;
use crate::pipeline::{self, Bodies, Evaluated, Evaluation, Stopped};
use crate::rules::Rule;
use crate::rules::model::BodyMode;
use crate::sinks::jenkins::{DELIVERY_HEADER, RULE_HEADER};
use crate::verify::ip::ClientAddr;
use crate::verify::{self, Inbound};

/// One line per rule for `check`; names what is configured, never a secret.
pub fn summary(rule: &Rule) -> String {
    format!(
        "  {name}  {file}  verify={scheme}{secrets} token={token} allow={allow} variables={vars} headers={headers} query={query} filter={filter} replays={replays}{idempotency} -> jenkins.{jenkins} (body={body}){report}",
        name = rule.name,
        file = rule.file.display(),
        scheme = rule.signature.scheme().name(),
        secrets = match rule.signature.secret_count() {
            0 | 1 => String::new(),
            n => format!(" ({n} secrets)"),
        },
        token = if rule.token.is_some() { "yes" } else { "none" },
        allow = if rule.allow.is_empty() {
            "any".to_owned()
        } else {
            format!("{} entries", rule.allow.len())
        },
        vars = rule.body_variables.len(),
        headers = rule.header_variables.len(),
        query = rule.query_variables.len(),
        filter = if rule.filter.expression().is_empty() {
            "none"
        } else {
            "yes"
        },
        replays = match rule.signature.replay_memory_secs() {
            Some(secs) if rule.reject_replays => format!("{secs}s"),
            _ => "off".to_owned(),
        },
        idempotency = match &rule.idempotency {
            Some(spec) => format!(" idempotency={}s", spec.ttl_secs),
            None => String::new(),
        },
        jenkins = rule.dispatch.jenkins,
        body = match rule.dispatch.body {
            BodyMode::Original => "original",
            BodyMode::Variables => "variables",
        },
        report = match &rule.report {
            Some(report) => format!(" report={} run={}", report.sink, report.run_id.source()),
            None => String::new(),
        },
    )
}

pub fn test(
    gateway: &Gateway,
    rule_name: &str,
    payload: &Path,
    headers: &[String],
    query: &[String],
    json: bool,
) -> Result<ExitCode, String> {
    let rule = gateway
        .rules
        .get(rule_name)
        .ok_or_else(|| format!("no rule named `{rule_name}`"))?;
    let body = Bytes::from(read_payload(payload)?);
    let mut header_map = HeaderMap::new();
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header `{header}` is not `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("--header `{header}`: invalid header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("--header `{header}`: invalid header value"))?;
        header_map.append(name, value);
    }
    let query_string = query
        .iter()
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish()
        })
        .collect::<Vec<_>>()
        .join("&");
    let inbound = Inbound::new(&header_map, &query_string, body, ClientAddr::Unknown);
    let verified = verify::assume_verified_for_offline_test(rule, &inbound);
    let evaluated = pipeline::evaluate(&verified, &mut Bodies::new(1));
    let report = match &evaluated {
        Ok(Evaluated::Matched { evaluation, key }) => {
            let delivery =
                Delivery::prepare(&verified, &evaluation.variables, key.as_deref(), None, None);
            let url = gateway
                .jenkins
                .describe(&rule.dispatch.jenkins)
                .ok_or_else(|| format!("no Jenkins target `{}`", rule.dispatch.jenkins))?;
            let url = if rule.dispatch.token.is_some() {
                url
            } else {
                url.replace("?token=[redacted]", "")
            };
            Report::evaluated(rule, evaluation, Some((key.as_deref(), url, delivery)))
        }
        Ok(Evaluated::Filtered(evaluation)) => Report::evaluated(rule, evaluation, None),
        Err(Stopped::InvalidBody(error)) => Report {
            rule: &rule.name,
            file: rule.file.display().to_string(),
            verification: "skipped",
            error: Some(format!(
                "body: {error}; a request like this is answered 400"
            )),
            ..Report::default()
        },
        Err(Stopped::FilterFailed { evaluation, error }) => Report {
            error: Some(format!("the filter could not be evaluated: {error}")),
            ..Report::evaluated(rule, evaluation, None)
        },
    };
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        report.print(rule);
    }
    Ok(match evaluated {
        Ok(Evaluated::Matched { .. }) => ExitCode::SUCCESS,
        Ok(Evaluated::Filtered(_)) => ExitCode::from(2),
        Err(_) => ExitCode::FAILURE,
    })
}

/// What `hookgate test` found, printed as text or (`--json`) in the shape of the job entry of
/// GWT's answer plus what would be sent.
#[derive(Default, Serialize)]
struct Report<'a> {
    rule: &'a str,
    file: String,
    /// Always `"skipped"`: `test` never checks allowlists, tokens or signatures.
    verification: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "resolvedVariables", skip_serializing_if = "Option::is_none")]
    variables: Option<&'a Variables>,
    #[serde(rename = "regexpFilterText", skip_serializing_if = "Option::is_none")]
    filter_text: Option<&'a str>,
    #[serde(
        rename = "regexpFilterExpression",
        skip_serializing_if = "Option::is_none"
    )]
    filter_expression: Option<&'a str>,
    /// Whether the filter matched, so that `serve` would dispatch the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    triggered: Option<bool>,
    #[serde(rename = "idempotencyKey", skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<Option<&'a str>>,
    #[serde(rename = "wouldSend", skip_serializing_if = "Option::is_none")]
    would_send: Option<WouldSend>,
}

/// The Jenkins call `serve` would make (the Jenkins token masked).
#[derive(Serialize)]
struct WouldSend {
    method: &'static str,
    url: String,
    headers: BTreeMap<&'static str, String>,
    body: String,
}

impl<'a> Report<'a> {
    fn evaluated(
        rule: &'a Rule,
        evaluation: &'a Evaluation,
        matched: Option<(Option<&'a str>, String, Delivery)>,
    ) -> Self {
        let triggered = matched.is_some();
        let (idempotency_key, would_send) = match matched {
            Some((key, url, delivery)) => {
                let call = delivery.call();
                let headers = BTreeMap::from([
                    ("Content-Type", call.content_type.as_str().to_owned()),
                    (DELIVERY_HEADER, call.id.to_string()),
                    (RULE_HEADER, rule.name.clone()),
                ]);
                let would_send = WouldSend {
                    method: "POST",
                    url,
                    headers,
                    body: String::from_utf8_lossy(&call.body).into_owned(),
                };
                (rule.idempotency.as_ref().map(|_| key), Some(would_send))
            }
            None => (None, None),
        };
        Self {
            rule: &rule.name,
            file: rule.file.display().to_string(),
            verification: "skipped",
            error: None,
            variables: Some(&evaluation.variables),
            filter_text: Some(&evaluation.rendered_text),
            filter_expression: Some(rule.filter.expression()),
            triggered: Some(triggered),
            idempotency_key,
            would_send,
        }
    }

    fn print(&self, rule: &Rule) {
        out!("rule: {} ({})", self.rule, self.file);
        out!(
            "verification: skipped (hookgate test never checks allowlists, tokens or signatures; this rule uses verify={})",
            rule.signature.scheme().name()
        );
        if let Some(variables) = self.variables {
            out!("resolved variables:");
            if variables.is_empty() {
                out!("  (none)");
            }
            for (name, value) in variables {
                out!("  {name} = {value}");
            }
        }
        if let Some(error) = &self.error {
            out!("{error}");
            return;
        }
        let (Some(rendered), Some(triggered)) = (self.filter_text, self.triggered) else {
            return;
        };
        out!("filter:");
        out!("  text:       {:?}", rule.filter.text());
        out!("  rendered:   {rendered:?}");
        out!("  expression: {:?}", rule.filter.expression());
        out!(
            "  result:     {}",
            if triggered { "matched" } else { "not matched" }
        );
        let Some(send) = &self.would_send else {
            out!("would send: nothing (filtered; answered 200 with triggered: false)");
            return;
        };
        if let Some(spec) = &rule.idempotency {
            match self.idempotency_key.flatten() {
                Some(key) => out!(
                    "idempotency key: {key} (repeats within {} s are duplicates)",
                    spec.ttl_secs
                ),
                None => out!("idempotency key: none found; this call would not be de-duplicated"),
            }
        }
        out!("would send:");
        out!("  {} {}", send.method, send.url);
        for (name, value) in &send.headers {
            out!("  {name}: {value}");
        }
        out!();
        out!("{}", send.body);
    }
}

pub fn sign(gateway: &Gateway, rule_name: &str, payload: &Path) -> Result<ExitCode, String> {
    let rule = gateway
        .rules
        .get(rule_name)
        .ok_or_else(|| format!("no rule named `{rule_name}`"))?;
    let body = read_payload(payload)?;
    let headers = rule.signature.sign(&body, SystemTime::now());
    if headers.is_empty() {
        out!(
            "# rule {} uses verify=none: no signature headers",
            rule.name
        );
    }
    for (name, value) in &headers {
        out!("{name}: {value}");
    }
    let listen = gateway.listen;
    let host = if listen.ip().is_unspecified() {
        match listen {
            std::net::SocketAddr::V4(_) => format!("127.0.0.1:{}", listen.port()),
            std::net::SocketAddr::V6(_) => format!("[::1]:{}", listen.port()),
        }
    } else {
        listen.to_string()
    };
    out!();
    let mut curl = format!(
        "curl -sS -X POST {} \\\n  -H 'Content-Type: application/json'",
        shell_quote(&format!("http://{host}/hooks/{}", rule.name))
    );
    for (name, value) in &headers {
        curl.push_str(&format!(
            " \\\n  -H {}",
            shell_quote(&format!("{name}: {value}"))
        ));
    }
    if let Some(token) = &rule.token {
        let token = String::from_utf8_lossy(token.expose());
        curl.push_str(&format!(
            " \\\n  -H {}",
            shell_quote(&format!("Authorization: Bearer {token}"))
        ));
    }
    curl.push_str(&format!(
        " \\\n  --data-binary {}",
        shell_quote(&format!("@{}", payload.display()))
    ));
    out!("{curl}");
    Ok(ExitCode::SUCCESS)
}
