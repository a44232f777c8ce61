//! Port's REST API as a port sink calls it (reference/port.md §3): an access token from
//! `POST /v1/auth/access_token`, cached until shortly before its `expiresIn` and fetched again
//! once after a 401, and authenticated JSON calls under the sink's deadline. Neither the client
//! secret nor an access token ever reaches an error text, which becomes a delivery's reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Uri};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::cause_chain;
use crate::secret::Secret;
use crate::sinks::http::{self, AGENT, Http};

/// A token is fetched again this long before Port says it expires (or at half its life, when
/// that is sooner), so a call never carries one that expires on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Longest part of Port's answer kept (its `message` says what was wrong).
const MAX_ANSWER_BYTES: usize = 512;
/// Longest token answer read: an access token is a JWT of a few KiB.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

/// Port's answer to a call.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

impl Answer {
    /// Port's `message` (else `error`, else the first bytes of the body), for a reason.
    pub fn message(&self) -> String {
        let parsed: Option<Value> = serde_json::from_slice(&self.body).ok();
        let field = |key: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        field("message")
            .or_else(|| field("error"))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

/// Why a call brought no answer to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Port could not be reached, or did not answer in time: worth retrying.
    Unreachable(String),
    /// Port refused the client id and secret, or a fresh token (401/403).
    Refused(String),
    /// The token endpoint answered something else (429, 5xx: retry; other: permanent).
    Token { status: u16, reason: String },
}

struct Cached {
    header: HeaderValue,
    until: Instant,
}

/// A port sink's access token, kept until shortly before it expires. One fetch at a time:
/// concurrent updates wait for the same token. A reload hands the cache of unchanged
/// credentials to the rebuilt sink ([`TokenCache::key`]).
#[derive(Default)]
pub struct TokenCache(Mutex<Option<Cached>>);

impl TokenCache {
    /// What identifies the credentials a cached token was fetched with: a digest of Port's URL,
    /// the client id and the client secret (never kept in clear here).
    pub fn key(base: &str, client_id: &Secret, client_secret: &Secret) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for part in [base.as_bytes(), client_id.expose(), client_secret.expose()] {
            digest.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            digest.update(part);
        }
        digest.finalize().into()
    }
}

/// One port sink's connection to Port.
pub struct PortApi {
    base: String,
    client_id: Secret,
    client_secret: Secret,
    http: Http,
    timeout: Duration,
    token: Arc<TokenCache>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

impl PortApi {
    pub fn new(
        base: &str,
        client_id: Secret,
        client_secret: Secret,
        http: Http,
        timeout: Duration,
        token: Arc<TokenCache>,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client_id,
            client_secret,
            http,
            timeout,
            token,
        }
    }

    /// Makes `method path` with `body` and a Bearer token; after a 401 the token is fetched
    /// once more and the call made again (a second 401 is the answer).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Answer, CallError> {
        let header = self.bearer(false).await?;
        let answer = self
            .send(method.clone(), path, body, Some(header), MAX_ANSWER_BYTES)
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        let header = self.bearer(true).await?;
        self.send(method, path, body, Some(header), MAX_ANSWER_BYTES)
            .await
    }

    /// The cached token, or a new one when there is none, it is about to expire, or `fresh`.
    async fn bearer(&self, fresh: bool) -> Result<HeaderValue, CallError> {
        let mut cached = self.token.0.lock().await;
        if !fresh
            && let Some(token) = cached.as_ref()
            && Instant::now() < token.until
        {
            return Ok(token.header.clone());
        }
        *cached = None;
        let credentials = json!({
            "clientId": String::from_utf8_lossy(self.client_id.expose()),
            "clientSecret": String::from_utf8_lossy(self.client_secret.expose()),
        });
        let fetched_at = Instant::now();
        let answer = self
            .send(
                Method::POST,
                "/v1/auth/access_token",
                &credentials,
                None,
                MAX_TOKEN_ANSWER_BYTES,
            )
            .await?;
        drop(credentials);
        match answer.status {
            200..=299 => {}
            401 | 403 => {
                return Err(CallError::Refused(format!(
                    "Port refused the client id and secret ({}): {}",
                    answer.status,
                    self.redacted(&answer.message())
                )));
            }
            status => {
                return Err(CallError::Token {
                    status,
                    reason: format!(
                        "Port's token endpoint answered {status}: {}",
                        self.redacted(&answer.message())
                    ),
                });
            }
        }
        let parsed: TokenAnswer =
            serde_json::from_slice(&answer.body).map_err(|_| CallError::Token {
                status: answer.status,
                reason: "Port's token endpoint answered without an accessToken".to_owned(),
            })?;
        let mut value = format!("Bearer {}", parsed.access_token).into_bytes();
        let header = HeaderValue::from_bytes(&value).map_err(|_| CallError::Token {
            status: answer.status,
            reason: "Port's access token cannot be sent in a header".to_owned(),
        });
        zeroize::Zeroize::zeroize(&mut value);
        let mut header = header?;
        header.set_sensitive(true);
        // Without `expiresIn` the token is used for this call only.
        let life = Duration::from_secs(parsed.expires_in.unwrap_or(0));
        let margin = EXPIRY_MARGIN.min(life / 2);
        *cached = Some(Cached {
            header: header.clone(),
            until: fetched_at + life.saturating_sub(margin),
        });
        Ok(header)
    }

    /// `text` (an answer of Port's, kept as a reason) with the client secret and id replaced,
    /// should an error page quote the request.
    pub fn redacted(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in [&self.client_secret, &self.client_id] {
            let spelling = String::from_utf8_lossy(secret.expose()).into_owned();
            if !spelling.is_empty() {
                text = text.replace(&spelling, "[redacted]");
            }
        }
        text
    }

    /// One JSON call under the sink's deadline, reading at most `cap` bytes of the answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        authorization: Option<HeaderValue>,
        cap: usize,
    ) -> Result<Answer, CallError> {
        let url = format!("{}{path}", self.base);
        let uri = Uri::try_from(url.as_str())
            .map_err(|_| CallError::Unreachable(format!("Port's URL {url} cannot be sent")))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, AGENT);
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| {
                CallError::Unreachable("the request to Port cannot be built".to_owned())
            })?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                CallError::Unreachable(format!("Port is unreachable: {e}: {}", cause_chain(&e)))
            })?;
            let status = response.status().as_u16();
            let retry_after = http::retry_after(response.headers());
            let body = http::read_capped(response.into_body(), cap)
                .await
                .unwrap_or_default();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                CallError::Unreachable(format!("Port did not answer within {:?}", self.timeout))
            })?
    }
}
