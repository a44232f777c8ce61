//! Per-request context: a request id on every response and in every log line, and one log line
//! per request with its status, latency and (for errors) the internal reason.

use std::time::Instant;

use actix_web::{HttpMessage, ResponseError, web};

use super::AppState;
use crate::metrics::Outcome;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use ulid::Ulid;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, for handlers that keep it (a stored delivery records it).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A caller's `X-Request-Id` is kept when it is short and plain, so ids can be followed across a
/// proxy; anything else is replaced, so the header cannot carry log injection.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(|| Ulid::generate().to_string(), str::to_owned)
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
        client = tracing::field::Empty,
    );
    let started = Instant::now();
    req.extensions_mut().insert(RequestId(id.clone()));
    // Header limits apply to every path, before any handler runs.
    let too_large = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.limits.check_headers(req.headers()).err());
    if let Some(error) = too_large {
        span.in_scope(|| tracing::warn!(status = 431, error = %error, "Request refused."));
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            state.metrics.request("", Outcome::HeadersTooLarge);
        }
        let mut res = req
            .into_response(error.error_response())
            .map_into_boxed_body();
        if let Ok(value) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(REQUEST_ID, value);
        }
        return Ok(res);
    }
    // The request must not be cloned before routing (the router needs it unshared), so an
    // error that escapes every handler is logged here and left to actix to answer.
    let mut res = match next.call(req).instrument(span.clone()).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(error) => {
            span.in_scope(
                || tracing::error!(error = %error, "Request failed outside any handler."),
            );
            return Err(error);
        }
    };
    let status = res.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match res.response().error() {
        Some(error) => tracing::warn!(status, latency_ms, error = %error, "Request refused."),
        None => tracing::info!(status, latency_ms, "Request handled."),
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(res)
}
