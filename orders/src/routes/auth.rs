//! `ORDERS_API_TOKEN`: when it is set, every route but the open ones needs
//! `Authorization: Bearer <token>`, compared in constant time; anything else gets a
//! 401 JSON error (`unauthorized`) with `WWW-Authenticate: Bearer`, before the handler
//! runs, so nothing is read or written.
//!
//! The check is a middleware on the scope that holds every route but the open ones
//! (see [`super::configure`]), so it runs on what the router matched, after the path
//! was decoded, and never on the raw path: `/%6Frders` is `/orders` to the router, and
//! so to the check. It is deny by default: a path no route knows is refused too, and a
//! new route is protected unless it is added to the open list on purpose.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use crate::error::ApiError;
use crate::state::AppState;

/// The middleware: lets the request through, or answers 401.
pub async fn require_api_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let token = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.api_token.as_ref());
    if let Some(token) = token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !service_kit::token::bearer_matches(presented, token) {
            tracing::warn!(
                method = %service_kit::http_metrics::method_label(req.method()),
                route = service_kit::routing::matched_pattern(req.request())
                    .as_deref()
                    .unwrap_or("unmatched"),
                with_header = presented.is_some(),
                "refused a request without a valid API token"
            );
            let response = ApiError::Unauthorized.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}
