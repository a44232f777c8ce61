//! `hookgate test`, `hookgate sign` and the per-rule summary of `hookgate check`: commands that
//! work on the compiled rules without serving.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::web::Bytes;

use super::{read_payload, shell_quote};
use crate::dispatch::Delivery;
use crate::dispatch::jenkins::{DELIVERY_HEADER, RULE_HEADER};
use crate::extract::{self, Body};
use crate::gateway::Gateway;
use crate::rules::Rule;
use crate::rules::model::BodyMode;
use crate::verify::ip::ClientAddr;
use crate::verify::{self, Inbound};

/// One line per rule for `check`; names what is configured, never a secret.
pub fn summary(rule: &Rule) -> String {
    format!(
        "  {name}  {file}  verify={scheme}{secrets} token={token} allow={allow} variables={vars} headers={headers} query={query} filter={filter} replays={replays}{idempotency} -> jenkins.{jenkins} (body={body})",
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
    )
}

pub fn test(
    gateway: &Gateway,
    rule_name: &str,
    payload: &Path,
    headers: &[String],
    query: &[String],
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

    out!("rule: {} ({})", rule.name, rule.file.display());
    out!(
        "verification: skipped (hookgate test never checks allowlists, tokens or signatures; this rule uses verify={})",
        rule.signature.scheme().name()
    );
    let parsed = if rule.needs_json() {
        match Body::parse(&verified, &rule.body_shape) {
            Ok(body) => Some(body),
            Err(error) => {
                out!("body: {error}; a request like this is answered 400");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };
    let variables = extract::resolve(&verified, parsed.as_ref());
    out!("resolved variables:");
    if variables.is_empty() {
        out!("  (none)");
    }
    for (name, value) in &variables {
        out!("  {name} = {value}");
    }
    let outcome = rule
        .filter
        .evaluate(&variables)
        .map_err(|e| format!("the filter could not be evaluated: {e}"))?;
    out!("filter:");
    out!("  text:       {:?}", rule.filter.text());
    out!("  rendered:   {:?}", outcome.rendered_text);
    out!("  expression: {:?}", rule.filter.expression());
    out!(
        "  result:     {}",
        if outcome.matched {
            "matched"
        } else {
            "not matched"
        }
    );
    if !outcome.matched {
        out!("would send: nothing (filtered; answered 200 with triggered: false)");
        return Ok(ExitCode::from(2));
    }
    let key = rule
        .idempotency
        .as_ref()
        .and_then(|spec| spec.key(&verified, parsed.as_ref()));
    if let Some(spec) = &rule.idempotency {
        match &key {
            Some(key) => out!(
                "idempotency key: {key} (repeats within {} s are duplicates)",
                spec.ttl_secs
            ),
            None => out!("idempotency key: none found; this call would not be de-duplicated"),
        }
    }
    let delivery = Delivery::prepare(&verified, &variables, key.as_deref(), None, None);
    let call = delivery.call();
    let url = gateway
        .jenkins
        .describe(&rule.dispatch.jenkins)
        .ok_or_else(|| format!("no Jenkins target `{}`", rule.dispatch.jenkins))?;
    let url = if rule.dispatch.token.is_some() {
        url
    } else {
        url.replace("?token=[redacted]", "")
    };
    out!("would send:");
    out!("  POST {url}");
    out!("  Content-Type: {}", call.content_type.as_str());
    out!("  {DELIVERY_HEADER}: {}", call.id);
    out!("  {RULE_HEADER}: {}", rule.name);
    out!();
    out!("{}", String::from_utf8_lossy(&call.body));
    Ok(ExitCode::SUCCESS)
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
