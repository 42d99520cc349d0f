//! The one error type of the HTTP API, and its mapping to HTTP-API.md's statuses and
//! codes. Internal causes go to the log with their chain, never into the response.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("a valid `Authorization: Bearer` token is required")]
    Unauthorized,
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(#[from] StoreError),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(cause) if cause.is_overload() => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(cause) if cause.is_overload() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut message = self.to_string();
        match self {
            ApiError::Internal(cause) if cause.is_overload() => {
                tracing::warn!(error = %error_chain(cause), "request refused: the service is overloaded");
                message = "the service is overloaded: retry shortly (a POST with the same \
                           Idempotency-Key is safe to retry)"
                    .into();
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause), "request failed")
            }
            _ => {}
        }
        let mut response = error_body(self.status_code(), self.code(), &message);
        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Internal(cause) if cause.is_overload() => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// malformed_json, payload_too_large, unsupported_media_type, validation_failed,
    /// not_found, method_not_allowed, unauthorized, conflict, unavailable or internal.
    #[schema(example = "validation_failed")]
    pub code: String,
    #[schema(example = "amount is required")]
    pub message: String,
}

pub use service_kit::routing::error_body;

pub use service_kit::error_chain;

/// A safety net under every route: an error response that is not already JSON (one
/// actix produced itself) is replaced by the JSON shape with the matching code.
pub fn json_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("malformed_json", "bad request"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "payload too large"),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request did not arrive in time"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported media type"),
        StatusCode::CONFLICT => ("conflict", "conflict"),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "validation failed"),
        _ => ("internal", "internal error"),
    };
    let (req, _) = res.into_parts();
    let mut response = error_body(status, code, message);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let res = ServiceResponse::new(req, response.map_into_boxed_body()).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::ResponseError;
    use actix_web::http::StatusCode;
    use service_kit::group_commit;

    use super::ApiError;
    use crate::store::StoreError;

    #[test]
    fn an_overloaded_writer_is_a_503_to_retry_and_a_failure_a_500() {
        for overload in [
            group_commit::Error::Busy {
                writer: "order insert",
                waited: Duration::from_secs(5),
            },
            group_commit::Error::Timeout {
                writer: "order insert",
                waited: Duration::from_secs(30),
            },
            group_commit::Error::Stopped("order insert"),
        ] {
            let error = ApiError::Internal(StoreError::Writer(overload));
            assert_eq!(error.status_code(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code(), "unavailable");
            let response = error.error_response();
            assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        }
        let busy = ApiError::Internal(StoreError::Sqlx(sqlx::Error::PoolTimedOut));
        assert_eq!(busy.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.error_response().headers().get("retry-after").unwrap(),
            "1"
        );
        let failure = ApiError::Internal(StoreError::Corrupt("x".into()));
        assert_eq!(failure.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(failure.code(), "internal");
    }
}
