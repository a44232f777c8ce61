//! The public listener's handlers: the GWT-compatible endpoint, per-rule hooks, health and
//! readiness without detail (operator endpoints are in `admin.rs`, on their own listener).

use actix_web::http::Method;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::json;

use super::body::{is_encoded, read_capped};
use super::client;
use super::context::RequestId;
use super::trigger;
use super::{AppState, State};
use crate::error::ApiError;
use crate::metrics::Outcome;
use crate::verify::Inbound;
use crate::verify::token::given_token;

/// `ANY /generic-webhook-trigger/invoke`: every rule whose token matches is a candidate.
pub async fn invoke(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    // GWT answers OPTIONS before any check, for CORS preflights.
    if req.method() == Method::OPTIONS {
        return Ok(HttpResponse::Ok().finish());
    }
    let inbound = receive(&req, payload, &state).await?;
    let token = given_token(&inbound.params, inbound.headers);
    let candidates = state.rules.candidates(token);
    if candidates.is_empty() {
        state.metrics.request("", Outcome::NotFound);
        return Err(ApiError::NoRule);
    }
    let request_id = request_id(&req);
    let dry_run = is_dry_run(req.headers());
    Ok(trigger::run(&state, &inbound, candidates, dry_run, request_id.as_deref()).await)
}

/// `POST /hooks/{rule}`: one rule by name; its token is still required when it has one.
pub async fn hook(
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let inbound = receive(&req, payload, &state).await?;
    let token = given_token(&inbound.params, inbound.headers);
    let Some(candidate) = state.rules.named(&name, token) else {
        state.metrics.request("", Outcome::NotFound);
        return Err(ApiError::NoRule);
    };
    let request_id = request_id(&req);
    let dry_run = is_dry_run(req.headers());
    Ok(trigger::run(
        &state,
        &inbound,
        vec![candidate],
        dry_run,
        request_id.as_deref(),
    )
    .await)
}

fn request_id(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<RequestId>().map(|id| id.0.clone())
}

pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Rules are compiled before the listener opens; in queue mode the store must also be
/// writable, which a failed write turns off until a probe write succeeds. `None` in direct
/// mode, which has no store.
pub(super) async fn store_writable(state: &AppState) -> Option<bool> {
    match state.store() {
        None => None,
        Some(store) if store.is_healthy() => Some(true),
        Some(store) => Some(store.probe().await),
    }
}

/// Public `GET /readyz`: ready or not, for load balancers, without the rule count or the
/// store's state (the admin listener's `/readyz` has them).
pub async fn readyz(state: State) -> HttpResponse {
    match store_writable(&state).await {
        Some(false) => HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable" })),
        Some(true) | None => HttpResponse::Ok().json(json!({ "status": "ready" })),
    }
}

/// GWT's dry-run switch: header `gwt-dry-run` equal to `true`, any case.
fn is_dry_run(headers: &HeaderMap) -> bool {
    headers
        .get_all("gwt-dry-run")
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The checks every trigger shares before a rule is chosen, after `client::admit` has passed
/// the client (global allowlist, per-client rate): no content encoding (415), then the body
/// limit (413). Query and form parameters are collected for token lookup.
async fn receive<'r>(
    req: &'r HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Inbound<'r>, ApiError> {
    let client = client::recorded(req);
    if is_encoded(req.headers()) {
        state.metrics.request("", Outcome::BadRequest);
        return Err(ApiError::Encoded);
    }
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
                ApiError::PayloadTooLarge { .. } => Outcome::PayloadTooLarge,
                _ => Outcome::BadRequest,
            };
            state.metrics.request("", outcome);
            return Err(error);
        }
    };
    Ok(Inbound::new(
        req.headers(),
        req.query_string(),
        body,
        client,
    ))
}
