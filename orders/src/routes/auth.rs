//! `ORDERS_API_TOKEN`: when it is set, every `/orders` route needs
//! `Authorization: Bearer <token>`, compared in constant time; anything else gets a
//! 401 JSON error (`unauthorized`) with `WWW-Authenticate: Bearer`, before the handler
//! runs, so nothing is read or written. Health, readiness, metrics and the OpenAPI
//! document stay open: probes and scrapers carry no token.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether `path` is one of the API's `/orders` routes (or would be: an unknown path
/// under `/orders/` is refused before it is found missing).
pub fn is_protected(path: &str) -> bool {
    path == "/orders" || path.starts_with("/orders/")
}

/// The middleware: lets the request through, or answers 401.
pub async fn require_api_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let token = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.api_token.as_ref());
    if let Some(token) = token
        && is_protected(req.path())
    {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !service_kit::token::bearer_matches(presented, token) {
            tracing::warn!(
                method = %req.method(),
                route = req.match_pattern().as_deref().unwrap_or("(no route)"),
                with_header = presented.is_some(),
                "refused a request without a valid API token"
            );
            let response = ApiError::Unauthorized.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::is_protected;

    #[test]
    fn only_the_orders_routes_are_protected() {
        for path in ["/orders", "/orders/", "/orders/x", "/orders/x/cancel"] {
            assert!(is_protected(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/ordersx",
            "/",
        ] {
            assert!(!is_protected(path), "{path}");
        }
    }
}
