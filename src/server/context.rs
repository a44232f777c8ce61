//! Per-request context: a request id on every response and in every log line, and one log line
//! per request with its status, latency and (for errors) the internal reason.
//!
//! This is the outermost middleware of both listeners, so it is also where every answer gets
//! its final shape: an error that escapes the services below it, or an error answer the
//! framework made on its own (a router default, an extractor error), becomes the fixed short
//! JSON answer of [`ApiError`], with the request id like any other.

use std::fmt;
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use tracing::Instrument;
use ulid::Ulid;

use super::{Live, State};
use crate::error::ApiError;
use crate::metrics::Outcome;

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
    // The request takes the set in use now and keeps it to its answer, whatever a reload
    // swaps in meanwhile.
    let state = req
        .app_data::<web::Data<Live>>()
        .map(|live| State(live.load_full()));
    // Header limits apply to every path, before any handler runs.
    let too_large = state
        .as_ref()
        .and_then(|state| state.limits.check_headers(req.headers()).err());
    if let Some(state) = state {
        if too_large.is_some() {
            state.metrics.request("", Outcome::HeadersTooLarge);
        }
        req.extensions_mut().insert(state);
    }
    if let Some(error) = too_large {
        span.in_scope(|| tracing::warn!(status = 431, error = %error, "Request refused."));
        let mut res = req
            .into_response(error.error_response())
            .map_into_boxed_body();
        insert_request_id(res.headers_mut(), &id);
        return Ok(res);
    }
    let outcome = next.call(req).instrument(span.clone()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(res) => {
            let mut res = own_answer(res.map_into_boxed_body());
            let status = res.status().as_u16();
            span.in_scope(|| match res.response().error() {
                Some(error) => {
                    tracing::warn!(status, latency_ms, error = %error, "Request refused.")
                }
                None => tracing::info!(status, latency_ms, "Request handled."),
            });
            insert_request_id(res.headers_mut(), &id);
            Ok(res)
        }
        // The request went down with the service that failed (it cannot be cloned before
        // routing, which needs it unshared), so the answer is built from the error alone and
        // handed to actix as an error whose response carries the id.
        Err(error) => {
            let escaped = Escaped {
                request_id: id,
                error,
            };
            let status = escaped.status_code().as_u16();
            span.in_scope(
                || tracing::warn!(status, latency_ms, error = %escaped, "Request refused."),
            );
            Err(escaped.into())
        }
    }
}

fn insert_request_id(headers: &mut actix_web::http::header::HeaderMap, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID, value);
    }
}

/// Keeps hookgate's own answers and replaces the framework's error answers (an actix error
/// attached, or an error status with no body, such as a resource's default 405) with the
/// fixed JSON answer for their status. hookgate's own error answers always have a body.
fn own_answer(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let foreign = match res.response().error() {
        Some(error) => error.as_error::<ApiError>().is_none(),
        None => matches!(
            res.response().body().size(),
            BodySize::None | BodySize::Sized(0)
        ),
    };
    if !foreign {
        return res;
    }
    let (req, old) = res.into_parts();
    let mut answer = HttpResponse::from_error(ApiError::Framework(status));
    // A 405 says which methods the resource has (RFC 9110 §15.5.6).
    if let Some(allow) = old.headers().get(ALLOW) {
        answer.headers_mut().insert(ALLOW, allow.clone());
    }
    ServiceResponse::new(req, answer)
}

/// An error that escaped every service below [`request_context`], answered with the request id.
#[derive(Debug)]
struct Escaped {
    request_id: String,
    error: actix_web::Error,
}

/// What the log says: hookgate's own errors in full (they never hold a secret), a framework
/// error by its status only.
impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error.as_error::<ApiError>() {
            Some(own) => write!(f, "{own}"),
            None => write!(f, "{}", ApiError::Framework(self.status_code())),
        }
    }
}

impl ResponseError for Escaped {
    fn status_code(&self) -> StatusCode {
        ApiError::answer_to(&self.error).status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = ApiError::answer_to(&self.error);
        insert_request_id(response.headers_mut(), &self.request_id);
        response
    }
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{App, test};

    use super::*;

    /// Refuses `/refused/*` in a middleware by returning an error, as the listeners' guards do.
    async fn refusing(
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        match req.path() {
            "/refused/own" => Err(ApiError::AdminUnauthorized.into()),
            "/refused/foreign" => Err(actix_web::error::ErrorBadRequest(
                "a framework text quoting the request",
            )),
            _ => next.call(req).await,
        }
    }

    async fn body<B: MessageBody>(response: HttpResponse<B>) -> serde_json::Value {
        let Ok(bytes) = actix_web::body::to_bytes(response.into_body()).await else {
            panic!("the body could not be read");
        };
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[actix_web::test]
    async fn escaped_errors_and_framework_answers_get_the_id_and_a_fixed_message() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(refusing))
                .wrap(from_fn(request_context))
                .route(
                    "/n/{n}",
                    web::get().to(|n: web::Path<u32>| async move { n.to_string() }),
                )
                .service(web::resource("/only-get").route(web::get().to(HttpResponse::Ok))),
        )
        .await;
        // Errors escaping the services below: actix would answer them without the id.
        for (path, status, message) in [
            ("/refused/own", 401, "Admin token missing or wrong."),
            ("/refused/foreign", 400, "Bad request."),
        ] {
            let request = test::TestRequest::get().uri(path).to_request();
            let error = test::try_call_service(&app, request)
                .await
                .err()
                .expect("an escaped error");
            // What actix's dispatcher sends for an error.
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status, "{path}");
            assert!(response.headers().contains_key(REQUEST_ID), "{path}");
            assert_eq!(
                body(response).await,
                serde_json::json!({"message": message, "jobs": null}),
                "{path}"
            );
        }
        // An extractor error (actix's text) and a resource's empty default 405.
        for (method, path, status, message) in [
            ("GET", "/n/not-a-number", 404, "Not found."),
            ("POST", "/only-get", 405, "Method not allowed."),
        ] {
            let request = test::TestRequest::default()
                .method(method.parse().expect("method"))
                .uri(path)
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status().as_u16(), status, "{path}");
            assert!(response.headers().contains_key(REQUEST_ID), "{path}");
            if status == 405 {
                assert_eq!(response.headers().get(ALLOW).expect("Allow"), "GET");
            }
            let response = response.into_parts().1;
            assert_eq!(
                body(response).await,
                serde_json::json!({"message": message, "jobs": null}),
                "{path}"
            );
        }
    }
}
