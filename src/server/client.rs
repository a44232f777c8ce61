//! The public listener's first checks, before routing and so on every path: the client address
//! (the TCP peer, or behind a trusted proxy the right-most untrusted `X-Forwarded-For` entry),
//! `server.allow_ips` (403) and the per-client rate limit (429). Handlers read the address
//! from the request's extensions instead of working it out again.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};

use super::State;
use crate::error::ApiError;
use crate::metrics::Outcome;
use crate::verify::ip::ClientAddr;

pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The public app always registers its state; without it nothing could be checked, so
    // nothing is let through.
    let Some(state) = State::of(req.request()) else {
        return Err(ApiError::Framework(StatusCode::INTERNAL_SERVER_ERROR).into());
    };
    let client = match req.peer_addr() {
        Some(peer) => state.trusted_proxies.client_addr(
            peer.ip(),
            req.headers()
                .get_all("x-forwarded-for")
                .map(|v| v.as_bytes()),
        ),
        None => ClientAddr::Unknown,
    };
    tracing::Span::current().record("client", tracing::field::display(client));
    if !state.global_allow.allows(client) {
        state.metrics.request("", Outcome::Forbidden);
        return Err(ApiError::ForbiddenGlobal(client).into());
    }
    // Before the body is read or any MAC computed: a flood costs the gateway almost nothing.
    if let Err(error) = state.limits.check_client(client) {
        state.metrics.request("", Outcome::RateLimited);
        return Err(error.into());
    }
    req.extensions_mut().insert(client);
    next.call(req).await
}

/// The client address `admit` recorded; `Unknown`, which no allowlist admits, if absent.
pub fn recorded(req: &HttpRequest) -> ClientAddr {
    req.extensions()
        .get::<ClientAddr>()
        .copied()
        .unwrap_or(ClientAddr::Unknown)
}
