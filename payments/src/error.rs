//! The one error type of Payments' JSON answers (the WebSocket handshake, the operators'
//! endpoints, unknown routes), and its mapping to statuses and codes in the JSON error
//! shape ([`service_kit::routing::error_body`]). Internal causes go to the log with
//! their chain, never into the response. The payment page answers customers in HTML
//! and keeps its own error pages (`routes/page.rs`).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use service_kit::error_chain;
use service_kit::routing::error_body;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid `Authorization: Bearer` token; the message says which token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A WebSocket handshake that does not offer `payments.v1`.
    #[error("{0}")]
    UnsupportedSubprotocol(String),
    /// A query parameter out of range.
    #[error("{0}")]
    InvalidLimit(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// `PAYMENTS_MAX_WEBSOCKETS` are open already.
    #[error(
        "this instance has {0} WebSockets open, its most (PAYMENTS_MAX_WEBSOCKETS); try again shortly"
    )]
    TooManyWebSockets(u32),
    #[error("internal error; try again")]
    Internal(#[from] StoreError),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::UnsupportedSubprotocol(_) => "unsupported_subprotocol",
            ApiError::InvalidLimit(_) => "invalid_limit",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyWebSockets(_) => "unavailable",
            ApiError::Internal(cause) if cause.is_overload() => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedSubprotocol(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidLimit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyWebSockets(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(cause) if cause.is_overload() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut message = self.to_string();
        match self {
            ApiError::Internal(cause) if cause.is_overload() => {
                tracing::warn!(error = %error_chain(cause), "request refused: the service is overloaded");
                message = "the service is overloaded: retry shortly".into();
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause), "request failed")
            }
            _ => {}
        }
        let mut response = error_body(self.status_code(), self.code(), &message);
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Internal(cause) if cause.is_overload() => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyWebSockets(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use actix_web::http::StatusCode;

    use super::ApiError;
    use crate::store::StoreError;

    #[test]
    fn each_error_has_its_status_and_code_and_a_failure_hides_its_cause() {
        let cases = [
            (
                ApiError::Unauthorized("token"),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                ApiError::UnsupportedSubprotocol("x".into()),
                StatusCode::BAD_REQUEST,
                "unsupported_subprotocol",
            ),
            (
                ApiError::InvalidLimit("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_limit",
            ),
            (
                ApiError::NotFound("x".into()),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                ApiError::Conflict("x".into()),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                ApiError::Internal(StoreError::Corrupt("secret".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status_code(), status);
            assert_eq!(error.code(), code);
            assert_eq!(error.error_response().status(), status);
        }
        let failure = ApiError::Internal(StoreError::Corrupt("secret".into()));
        assert!(!failure.to_string().contains("secret"));
        let busy = ApiError::Internal(StoreError::Sqlx(sqlx::Error::PoolTimedOut));
        assert_eq!(busy.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.code(), "unavailable");
        assert_eq!(
            busy.error_response().headers().get("retry-after").unwrap(),
            "1"
        );
        let refused = ApiError::Unauthorized("token").error_response();
        assert_eq!(refused.headers().get("www-authenticate").unwrap(), "Bearer");
    }
}
