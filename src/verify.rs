//! Verification of an inbound request against one rule: client address, then signature, on the
//! raw bytes, before anything is parsed.
//!
//! [`Verified`] can only be obtained from [`check`] (or, for `hookgate test`, from the one
//! explicitly named bypass), so `extract` and `dispatch`, which only accept a `Verified`, cannot
//! see a request that did not pass.

pub mod ip;
pub mod replay;
pub mod signature;
pub mod token;

use std::sync::Arc;
use std::time::SystemTime;

use actix_web::http::header::{CONTENT_TYPE, HeaderMap};
use actix_web::web::Bytes;

use crate::rules::Rule;
use ip::ClientAddr;
use signature::SignatureError;
use token::Candidate;

/// A request as received, before any rule has accepted it.
#[derive(Debug)]
pub struct Inbound<'r> {
    pub headers: &'r HeaderMap,
    /// Query parameters, then form fields for `application/x-www-form-urlencoded` bodies.
    pub params: Vec<(String, String)>,
    pub body: Bytes,
    pub client: ClientAddr,
    /// The body is form-encoded, so its fields are in `params` rather than JSON.
    pub form: bool,
}

impl<'r> Inbound<'r> {
    /// Assembles a request from its parts. Form fields of an
    /// `application/x-www-form-urlencoded` body join the query parameters, as the servlet API
    /// that GWT uses presents them.
    pub fn new(
        headers: &'r HeaderMap,
        query_string: &str,
        body: Bytes,
        client: ClientAddr,
    ) -> Self {
        let mut params: Vec<(String, String)> = form_urlencoded::parse(query_string.as_bytes())
            .into_owned()
            .collect();
        let form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        if form {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
        Self {
            headers,
            params,
            body,
            client,
            form,
        }
    }
}

/// Why a rule refused a request. The client sees only the status; the log sees the reason.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("client address {0} is not in the rule's allowlist")]
    Forbidden(ClientAddr),
    #[error("signature check failed: {0}")]
    Unauthorized(#[source] SignatureError),
}

/// Proof that a request passed one rule's checks.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    rule: &'a Arc<Rule>,
    inbound: &'a Inbound<'a>,
}

impl<'a> Verified<'a> {
    pub fn rule(&self) -> &'a Arc<Rule> {
        self.rule
    }

    pub fn inbound(&self) -> &'a Inbound<'a> {
        self.inbound
    }
}

/// Runs the rule's checks in the contract's order: per-rule allowlist (403), then signature
/// and replay window (401). Token selection already happened when `candidate` was made.
pub fn check<'a>(
    candidate: Candidate<'a>,
    inbound: &'a Inbound<'a>,
    now: SystemTime,
) -> Result<Verified<'a>, Rejection> {
    let rule = candidate.rule;
    if !rule.allow.allows(inbound.client) {
        return Err(Rejection::Forbidden(inbound.client));
    }
    rule.signature
        .verify(inbound.headers, &inbound.body, now)
        .map_err(Rejection::Unauthorized)?;
    // Only a verified signature is remembered, so nobody can block a sender's future
    // signatures by sending forged ones first.
    if rule.reject_replays
        && let Some((signature, window)) = rule.signature.replay_key(inbound.headers)
    {
        let now_secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if !rule.replays.first_sight(signature, now_secs, window) {
            return Err(Rejection::Unauthorized(SignatureError::Replayed));
        }
    }
    Ok(Verified { rule, inbound })
}

/// For `hookgate test` only: treats `inbound` as verified for `rule`, which that command states
/// in its output. Never used on a network path.
pub(crate) fn assume_verified_for_offline_test<'a>(
    rule: &'a Arc<Rule>,
    inbound: &'a Inbound<'a>,
) -> Verified<'a> {
    Verified { rule, inbound }
}
