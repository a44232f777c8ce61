//! The operator listener (`[admin]`): `/metrics`, `/deliveries/{id}` and the detailed
//! `/readyz`, behind a bearer token when one is configured. None of it is mounted on the
//! public listener.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::State;
use super::routes::store_writable;
use crate::error::ApiError;
use crate::reload::{Reloader, Trigger};
use crate::secret::Secret;

/// Middleware, before routing: with a token configured, every request (unknown paths too)
/// must carry `Authorization: Bearer <token>`, compared in constant time; else 401. The
/// header's value is never logged.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(peer) = req.peer_addr() {
        tracing::Span::current().record("client", tracing::field::display(peer.ip()));
    }
    // Fails closed: an app without its state would be a wiring mistake, not an open door.
    let Some(state) = State::of(req.request()) else {
        return Err(ApiError::AdminUnauthorized.into());
    };
    if let Some(token) = &state.admin_token
        && !bearer_matches(req.headers(), token)
    {
        return Err(ApiError::AdminUnauthorized.into());
    }
    next.call(req).await
}

/// Exactly one `Authorization` header, scheme `Bearer` (any case, RFC 9110 §11.1), whose
/// credentials equal the token.
fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let mut values = headers.get_all(AUTHORIZATION);
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let value = value.as_bytes();
    match value.split_at_checked(7) {
        Some((scheme, credentials)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            token.matches(credentials.trim_ascii())
        }
        _ => false,
    }
}

/// `GET /readyz` with detail: the rule count and, in queue mode, whether the store is writable.
pub async fn readyz(state: State) -> HttpResponse {
    match store_writable(&state).await {
        Some(false) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "rules": state.rules.len(),
            "store": "unwritable",
        })),
        Some(true) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "rules": state.rules.len(),
            "store": "ok",
        })),
        None => HttpResponse::Ok().json(json!({ "status": "ready", "rules": state.rules.len() })),
    }
}

/// `GET /deliveries/{id}`: a stored delivery's state and attempts (queue mode). Never its body.
pub async fn delivery(id: web::Path<String>, state: State) -> Result<HttpResponse, ApiError> {
    let Some(store) = state.store() else {
        return Err(ApiError::DeliveryNotFound);
    };
    // The store reads on its own threads, never on the request threads.
    let view = store.get(&id).await.map_err(ApiError::StoreUnavailable)?;
    match view {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(ApiError::DeliveryNotFound),
    }
}

/// `POST /reload`: compiles the config, every rule and every sink again and puts them in use,
/// or changes nothing. 200 with what was applied; 422 with every problem, as `check` lists
/// them (file, field, reason: never a secret), while the set in use keeps serving.
pub async fn reload(reloader: web::Data<Reloader>) -> HttpResponse {
    match reloader.reload(Trigger::Admin).await {
        Ok(applied) => HttpResponse::Ok().json(json!({
            "status": "applied",
            "rules": applied.rules,
            "restart_required": applied.restart_required,
            "warnings": applied.warnings,
        })),
        Err(problems) => HttpResponse::UnprocessableEntity().json(json!({
            "status": "refused",
            "message": "The new configuration has problems; the set in use keeps serving.",
            "problems": problems.0,
        })),
    }
}

pub async fn metrics(state: State) -> HttpResponse {
    // The store's writer keeps the queue gauges current; a scrape reads memory only.
    if let Some(store) = state.store() {
        state
            .metrics
            .queue(&store.queue_stats(), crate::store::now_ms());
        state.metrics.set_ready(store.is_healthy());
    }
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
        .body(state.metrics.encode())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    #[test]
    fn only_one_bearer_header_with_the_exact_token_passes() {
        let token = Secret::new("s3cret-token");
        let check = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(AUTHORIZATION, HeaderValue::from_static(value));
            }
            bearer_matches(&headers, &token)
        };
        assert!(check(&["Bearer s3cret-token"]));
        assert!(check(&["bearer  s3cret-token"]));
        assert!(!check(&[]));
        assert!(!check(&["Bearer s3cret-tok"]));
        assert!(!check(&["Bearer s3cret-token2"]));
        assert!(!check(&["Basic s3cret-token"]));
        assert!(!check(&["s3cret-token"]));
        assert!(!check(&["Bearer"]));
        assert!(!check(&["Bearer s3cret-token", "Bearer s3cret-token"]));
        assert!(!check(&["Bearer wrong", "Bearer s3cret-token"]));
    }
}
