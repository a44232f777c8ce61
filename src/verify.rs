//! Verification of an inbound request against one rule: client address, then signature, on the
//! raw bytes, before any JSON is parsed (only the token was looked for before, as GWT does).
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
use replay::{Claim, Sight};
use signature::SignatureError;
use token::Candidate;

/// A request as received, before any rule has accepted it.
#[derive(Debug)]
pub struct Inbound<'r> {
    pub headers: &'r HeaderMap,
    /// Query parameters, then form fields for `application/x-www-form-urlencoded` bodies: the
    /// request parameters GWT reads the token and `genericRequestVariables` from.
    pub params: Vec<(String, String)>,
    pub body: Bytes,
    pub client: ClientAddr,
    /// The body is form-encoded, so its fields are in `params` rather than JSON.
    pub form: bool,
    /// Where the form fields start in `params`.
    form_from: usize,
}

impl<'r> Inbound<'r> {
    /// Assembles a request from its parts. Form fields of an
    /// `application/x-www-form-urlencoded` body join the query parameters, as the servlet API
    /// that GWT uses presents them; the form's own fields stay apart too, because only they
    /// are signed.
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
        let form_from = params.len();
        if form {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
        Self {
            headers,
            params,
            body,
            client,
            form,
            form_from,
        }
    }

    /// The query string's parameters (unsigned).
    pub fn query_params(&self) -> &[(String, String)] {
        &self.params[..self.form_from]
    }

    /// The fields of a form body, which its signature covers (empty for other bodies). The
    /// query string is not signed, so it never adds to them.
    pub fn form_fields(&self) -> &[(String, String)] {
        if self.form {
            &self.params[self.form_from..]
        } else {
            &[]
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

/// Proof that a request passed one rule's checks. Only [`check`] makes one (and the named
/// offline bypass, which is not public), so this does not compile:
///
/// ```compile_fail
/// # use std::sync::Arc;
/// # use hookgate::{rules::Rule, verify::{Inbound, Verified}};
/// fn forge<'a>(rule: &'a Arc<Rule>, inbound: &'a Inbound<'a>) -> Verified<'a> {
///     Verified { rule, inbound }
/// }
/// ```
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

/// Where a verified request stands against the rule's replay memory.
#[derive(Debug)]
pub enum Replay {
    /// The rule remembers no signatures (`gitlab`, `none`, or `reject_replays = false`).
    Untracked,
    /// First sight: the signature is claimed for this call, and must be accepted once the call
    /// is (dropping the claim forgets it, so a refused call can be retried).
    Fresh(Claim),
    /// A repeat of a call that was stored as delivery `first`: answered as a duplicate, never
    /// dispatched again.
    Repeat { first: String },
}

/// Runs the rule's checks in the contract's order: per-rule allowlist (403), then signature
/// and replay window (401). Token selection already happened when `candidate` was made.
pub fn check<'a>(
    candidate: Candidate<'a>,
    inbound: &'a Inbound<'a>,
    now: SystemTime,
) -> Result<(Verified<'a>, Replay), Rejection> {
    let rule = candidate.rule;
    if !rule.allow.allows(inbound.client) {
        return Err(Rejection::Forbidden(inbound.client));
    }
    let signed = rule
        .signature
        .verify_signed(inbound.headers, &inbound.body, now)
        .map_err(Rejection::Unauthorized)?;
    let verified = Verified { rule, inbound };
    // Only a verified signature is remembered, so nobody can block a sender's future
    // signatures by sending forged ones first.
    let Some(signed) = signed.filter(|_| rule.reject_replays) else {
        return Ok((verified, Replay::Untracked));
    };
    let now_secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = signed.digest(rule.signature.scheme());
    let expires = rule.signature.remember_until(&signed, now);
    match rule.replays.sight(key, now_secs, expires) {
        Sight::Fresh(claim) => Ok((verified, Replay::Fresh(claim))),
        Sight::Stored { first } => Ok((verified, Replay::Repeat { first })),
        Sight::Replayed => Err(Rejection::Unauthorized(SignatureError::Replayed)),
    }
}

/// For `hookgate test` only: treats `inbound` as verified for `rule`, which that command states
/// in its output. Never used on a network path.
pub(crate) fn assume_verified_for_offline_test<'a>(
    rule: &'a Arc<Rule>,
    inbound: &'a Inbound<'a>,
) -> Verified<'a> {
    Verified { rule, inbound }
}
