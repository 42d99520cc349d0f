//! Reading a JSON request body with the API's own errors: 415 for another media type,
//! 413 over 16 KiB, 408 when it does not arrive in time (a body trickled a byte at a
//! time would otherwise hold its connection for ever), 400 for text that is not a JSON
//! object. Done by hand rather than
//! with `web::Json`, so each failure gets exactly the status and message of HTTP-API.md
//! and field validation can name the field (see `domain::NewOrder::parse`).

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Reads the body as a JSON object, all of it within `deadline`.
pub async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
    deadline: std::time::Duration,
) -> Result<Map<String, Value>, ApiError> {
    check_content_type(req)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let body = tokio::time::timeout(deadline, read_bounded(payload))
        .await
        .map_err(|_| ApiError::RequestTimeout(deadline))??;
    parse_object(&body)
}

/// The whole body, or 413 past [`MAX_BODY_BYTES`].
async fn read_bounded(mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::MalformedJson(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The bytes of a body as a JSON object, or the API's 400. Pure, so it is fuzzed
/// (`fuzz/`) with [`crate::domain::NewOrder::parse`] behind it.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::MalformedJson(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::MalformedJson(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON, sent with Content-Type: application/json".into(),
        ));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON (Content-Type: application/json), not {essence:?}"
        )))
    }
}
