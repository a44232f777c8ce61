//! Errors the request path answers with, and their one mapping to HTTP status and body.
//!
//! Clients get a fixed short message in GWT's shape (`{"message", "jobs": null}`); the log gets
//! the `Display` of the error and its cause chain. No message includes a token, signature,
//! secret or any part of the request.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::verify::ip::ClientAddr;

/// GWT's 404 text, kept identical whatever token (or rule name) was given.
pub const NO_RULE_MESSAGE: &str = "Did not find any rule for this token.";

/// The events endpoint's 404, the same for an unknown target and one without an events token.
pub const NO_EVENT_SOURCE_MESSAGE: &str = "Did not find an event source for this path.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("client address {0} is not in server.allow_ips")]
    ForbiddenGlobal(ClientAddr),
    #[error("client address {0} is not in the rule's allowlist")]
    Forbidden(ClientAddr),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body")]
    BodyRead(#[source] actix_web::error::PayloadError),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("no rule matches the given token or name")]
    NoRule,
    #[error("signature check failed")]
    Unauthorized,
    #[error("body is not valid JSON (line {line}, column {column})")]
    InvalidJson { line: usize, column: usize },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("no such endpoint")]
    NotFound,
    #[error("no delivery with this id")]
    DeliveryNotFound,
    #[error("request body has a content encoding")]
    Encoded,
    #[error("{count} header lines, {bytes} bytes: over the configured limits")]
    HeadersTooLarge { count: usize, bytes: usize },
    #[error("rate limit exceeded; retry in {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    #[error("the delivery store cannot be read")]
    StoreUnavailable(#[source] crate::store::StoreError),
    #[error("admin request without the admin bearer token, or with another one")]
    AdminUnauthorized,
    #[error("no Jenkins target with an events token at this path")]
    NoEventSource,
    #[error("events token missing or wrong")]
    EventsUnauthorized,
    #[error("client address {0} is not in the target's events_allow_ips")]
    EventsForbidden(ClientAddr),
    #[error("the event is not JSON (content type {0:?})")]
    EventsMediaType(String),
    #[error("invalid event: {0}")]
    InvalidEvent(#[source] crate::events::model::EventError),
    /// An answer the framework made on its own (a router default, an extractor's or a
    /// middleware's actix error). Only its status is kept: the framework's texts can quote the
    /// request (a path segment, a JSON value), so neither the client nor the log gets them.
    #[error("the HTTP framework answered {0} outside hookgate's handlers")]
    Framework(StatusCode),
}

impl ApiError {
    /// The fixed text clients see.
    pub fn client_message(&self) -> String {
        match self {
            ApiError::ForbiddenGlobal(_) | ApiError::Forbidden(_) => {
                "Client address is not allowed.".to_owned()
            }
            ApiError::PayloadTooLarge { limit } => {
                format!("Request body is larger than {limit} bytes.")
            }
            ApiError::BodyRead(_) => "Could not read the request body.".to_owned(),
            ApiError::BodyTimeout => "The request body did not arrive in time.".to_owned(),
            ApiError::NoRule => NO_RULE_MESSAGE.to_owned(),
            ApiError::Unauthorized => "Signature verification failed.".to_owned(),
            ApiError::InvalidJson { line, column } => {
                format!("Body is not valid JSON: error at line {line}, column {column}.")
            }
            ApiError::MethodNotAllowed => "Method not allowed.".to_owned(),
            ApiError::NotFound => "Not found.".to_owned(),
            ApiError::DeliveryNotFound => "No such delivery.".to_owned(),
            ApiError::Encoded => "Compressed request bodies are not accepted.".to_owned(),
            ApiError::HeadersTooLarge { .. } => "Request headers are too large.".to_owned(),
            ApiError::RateLimited { .. } => "Too many requests; retry later.".to_owned(),
            ApiError::StoreUnavailable(_) => "The delivery store is unavailable.".to_owned(),
            ApiError::AdminUnauthorized => "Admin token missing or wrong.".to_owned(),
            ApiError::NoEventSource => NO_EVENT_SOURCE_MESSAGE.to_owned(),
            ApiError::EventsUnauthorized => "Events token missing or wrong.".to_owned(),
            ApiError::EventsForbidden(_) => "Client address is not allowed.".to_owned(),
            ApiError::EventsMediaType(_) => {
                "hookgate reads the Notification plugin's JSON format.".to_owned()
            }
            // The parser's reasons name the field and never quote the body.
            ApiError::InvalidEvent(reason) => reason.to_string(),
            ApiError::Framework(status) => match status.as_u16() {
                400 => "Bad request.",
                404 => "Not found.",
                405 => "Method not allowed.",
                408 => "The request did not arrive in time.",
                413 => "Request body is too large.",
                415 => "Unsupported media type.",
                _ if status.is_client_error() => "Request refused.",
                _ => "Internal error.",
            }
            .to_owned(),
        }
    }

    /// The answer to any error that reaches the client: hookgate's own with their mapping,
    /// any other (an actix error) as [`ApiError::Framework`] with its status.
    pub fn answer_to(error: &actix_web::Error) -> HttpResponse {
        match error.as_error::<ApiError>() {
            Some(own) => own.error_response(),
            None => ApiError::Framework(error.as_response_error().status_code()).error_response(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    message: String,
    jobs: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::ForbiddenGlobal(_)
            | ApiError::Forbidden(_)
            | ApiError::EventsForbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NoEventSource => StatusCode::NOT_FOUND,
            ApiError::EventsUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::EventsMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyRead(_) | ApiError::InvalidJson { .. } => StatusCode::BAD_REQUEST,
            ApiError::NoRule | ApiError::NotFound | ApiError::DeliveryNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Encoded => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized | ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            // A framework's 4xx keeps its meaning; anything else is our failure, a plain 500.
            ApiError::Framework(status) if status.is_client_error() => *status,
            ApiError::Framework(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    // Overridden because the default writes `Display`, which is meant for the log.
    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(self.status_code(), self.client_message(), false);
        match self {
            ApiError::RateLimited { retry_after } => {
                insert_retry_after(&mut response, *retry_after);
            }
            // RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
            ApiError::AdminUnauthorized => {
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static(
                        "Bearer realm=\"hookgate-admin\"",
                    ),
                );
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up so a client that obeys it is not refused again.
pub fn insert_retry_after(response: &mut HttpResponse, wait: std::time::Duration) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from(secs.max(1)),
    );
}

/// An error's sources, joined with `: `, for the log: the one formatter every log line that
/// reports an error's cause uses. Never for answers, which get fixed messages.
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

/// A GWT-shaped error answer.
pub fn error_body(status: StatusCode, message: String, dry_run: bool) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        message,
        jobs: None,
        dry_run: dry_run.then_some(true),
    })
}
