//! `POST /jenkins/{target}/events`: the Notification plugin's endpoint. The checks run in the
//! contract's order (body cap 413, event source 404, token 401, controller allowlist 403, JSON
//! 415, event 400), then the event is stored with its sink deliveries and answered 202.
//!
//! The plugin ignores the answer's status and sends on the build's thread, so the answer comes
//! as soon as the event is durable; every retry is hookgate's own.

use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::State;
use super::body::{is_encoded, read_capped};
use super::client;
use super::context::RequestId;
use crate::error::{ApiError, cause_chain};
use crate::events::accept;
use crate::events::model::Event;

/// The token as the plugin can send it: `?token=`, the password of basic auth in the endpoint
/// URL (`https://hookgate:<token>@…`), or a Bearer token.
fn given_token(req: &HttpRequest) -> Option<Vec<u8>> {
    if let Some((_, token)) =
        form_urlencoded::parse(req.query_string().as_bytes()).find(|(key, _)| key == "token")
    {
        return Some(token.into_owned().into_bytes());
    }
    let value = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// JSON, as the plugin's JSON format sends it (`application/json;charset=UTF-8`); a missing
/// type is read as JSON. XML (the plugin's other format) and anything else are refused.
fn is_json(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(essence.chars().take(64).collect())
    }
}

pub async fn events(
    req: HttpRequest,
    target: web::Path<String>,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    let body = match read_capped(
        payload,
        req.headers(),
        state.max_body_bytes,
        state.limits.body_timeout,
    )
    .await
    {
        Ok(body) => body,
        Err(error) => {
            let outcome = match error {
                ApiError::PayloadTooLarge { .. } => "payload_too_large",
                _ => "bad_request",
            };
            metrics.event("", "", outcome);
            return Err(error);
        }
    };
    let Some((events, source)) = state
        .events
        .as_ref()
        .and_then(|events| Some((events, events.sources.get(&target)?)))
    else {
        metrics.event("", "", "not_found");
        return Err(ApiError::NoEventSource);
    };
    let jenkins = source.name.as_str();
    if !given_token(&req).is_some_and(|token| source.token_matches(&token)) {
        metrics.event(jenkins, "", "unauthorized");
        return Err(ApiError::EventsUnauthorized);
    }
    let client = client::recorded(&req);
    if !source.allows(client) {
        metrics.event(jenkins, "", "forbidden");
        return Err(ApiError::EventsForbidden(client));
    }
    if is_encoded(req.headers()) {
        metrics.event(jenkins, "", "unsupported_media_type");
        return Err(ApiError::Encoded);
    }
    if let Err(content_type) = is_json(req.headers()) {
        // The plugin ignores the 415: the log line is what tells the operator.
        tracing::warn!(jenkins, content_type = %content_type, "Jenkins sent an event that is not JSON: set the Notification endpoint's Format to JSON.");
        metrics.event(jenkins, "", "unsupported_media_type");
        return Err(ApiError::EventsMediaType(content_type));
    }
    let event = match Event::parse(&body) {
        Ok(event) => event,
        Err(reason) => {
            metrics.event(jenkins, "", "bad_request");
            return Err(ApiError::InvalidEvent(reason));
        }
    };
    let phase = event.build.phase.as_str();
    let build = event.build_key();
    let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
    let accepted = accept::accept(
        &events.store,
        &events.sinks,
        jenkins,
        event,
        body.to_vec(),
        request_id.as_deref(),
        events.retention_ms,
    )
    .await;
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(error) => {
            tracing::error!(jenkins, phase, %error, cause = %cause_chain(&error), "Cannot store the event.");
            metrics.event(jenkins, phase, "unavailable");
            return Err(ApiError::StoreUnavailable(error));
        }
    };
    if accepted.duplicate {
        tracing::info!(jenkins, phase, build = %build, first = %accepted.event, "Repeat of a stored event; nothing queued again.");
        metrics.event(jenkins, phase, "duplicate");
    } else {
        let queued = accepted
            .sinks
            .values()
            .filter(|fate| **fate == accept::SinkFate::Queued)
            .count();
        tracing::info!(jenkins, phase, build = %build, event = %accepted.event, queued, "Event accepted.");
        metrics.event(jenkins, phase, "accepted");
        if queued > 0 {
            events.wake.notify_one();
        }
    }
    let sinks: Map<String, Value> = accepted
        .sinks
        .iter()
        .map(|(name, fate)| (name.clone(), Value::from(fate.as_str())))
        .collect();
    Ok(HttpResponse::Accepted().json(json!({
        "message": "Accepted.",
        "event": accepted.event,
        "duplicate": accepted.duplicate,
        "sinks": sinks,
    })))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn the_token_comes_from_the_query_basic_auth_or_bearer() {
        let check = |uri: &str, authorization: Option<&str>| {
            let mut req = TestRequest::post().uri(uri);
            if let Some(value) = authorization {
                req = req.insert_header((AUTHORIZATION, value));
            }
            given_token(&req.to_http_request()).map(|t| String::from_utf8(t).unwrap())
        };
        assert_eq!(check("/e?token=abc", None).as_deref(), Some("abc"));
        assert_eq!(check("/e?x=1&token=a%2Bb", None).as_deref(), Some("a+b"));
        // hookgate:s3cret, as the plugin sends the userinfo of its URL.
        assert_eq!(
            check("/e", Some("Basic aG9va2dhdGU6czNjcmV0")).as_deref(),
            Some("s3cret")
        );
        assert_eq!(check("/e", Some("Bearer tok")).as_deref(), Some("tok"));
        assert_eq!(check("/e", Some("bearer  tok ")).as_deref(), Some("tok"));
        assert_eq!(check("/e", Some("Basic !!!")), None);
        assert_eq!(check("/e", Some("Basic dXNlcg==")), None, "no colon");
        assert_eq!(check("/e", Some("Digest x")), None);
        assert_eq!(check("/e", None), None);
    }

    #[test]
    fn json_is_the_plugins_json_format_and_nothing_else() {
        let check = |value: Option<&str>| {
            let mut req = TestRequest::post();
            if let Some(value) = value {
                req = req.insert_header((CONTENT_TYPE, value));
            }
            is_json(req.to_http_request().headers()).is_ok()
        };
        assert!(check(Some("application/json;charset=UTF-8")));
        assert!(check(Some("Application/JSON")));
        assert!(check(None));
        assert!(!check(Some("application/xml;charset=UTF-8")));
        assert!(!check(Some("text/xml")));
        assert!(!check(Some("application/x-www-form-urlencoded")));
        assert!(!check(Some("text/plain")));
    }
}
