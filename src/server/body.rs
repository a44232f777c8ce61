//! Reading the request body under `server.max_body_bytes`: a declared length over the limit is
//! refused before a byte is read, a chunked body is cut off as soon as it passes the limit, and
//! a body that does not arrive within the deadline is refused (a stalled sender cannot hold a
//! buffer forever).

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HeaderMap};
use actix_web::web::{self, Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::ApiError;

/// Memory reserved up front from a declared length; the rest grows as bytes really arrive.
const MAX_RESERVE: usize = 64 * 1024;

/// Whether the body has a content encoding other than `identity`. Bodies are never
/// decompressed (no zip bombs), and a compressed body could not be verified or parsed as
/// sent, so the public endpoints refuse it outright.
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONTENT_ENCODING)
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

pub async fn read_capped(
    mut payload: web::Payload,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let capacity = declared.map_or(0, |len| {
        usize::try_from(len)
            .unwrap_or(limit)
            .min(limit)
            .min(MAX_RESERVE)
    });
    let read = async {
        let mut body = BytesMut::with_capacity(capacity);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(ApiError::BodyRead)?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)?
}
