//! The HTTP API of HTTP-API.md: routes, and the JSON error answers for paths and
//! methods that do not exist.

pub mod auth;
pub mod body;
pub(crate) mod health;
pub(crate) mod orders;

use actix_web::web;
use service_kit::routing::resource;

use crate::error::ApiError;

pub use body::MAX_BODY_BYTES;

/// The paths that need no API token: probes and scrapers carry none, and the document
/// describes the API to whoever asks. Every other path needs it (see [`auth`]).
pub const OPEN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Mounts every route: the open ones, then everything else behind the API token.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // OPEN_PATHS, one by one. Nothing else may be added here without a reason in
    // HTTP-API.md.
    cfg.service(resource("/healthz").get(health::healthz))
        .service(resource("/readyz").get(health::readyz))
        .service(resource("/metrics").get(health::metrics))
        .service(resource("/openapi.json").get(health::openapi_json))
        // Every other path, unknown ones included, is matched here and needs the token
        // when one is set (deny by default, see `auth`).
        .service(
            web::scope("")
                .wrap(actix_web::middleware::from_fn(auth::require_api_token))
                .service(resource("/orders").get(orders::list).post(orders::create))
                .service(resource("/orders/{id}").get(orders::get))
                .service(resource("/orders/{id}/cancel").post(orders::cancel))
                .service(resource("/orders/{id}/retry").post(orders::retry))
                .service(resource("/orders/{id}/incidents").get(orders::incidents))
                .service(resource("/orders/{id}/invoice").get(orders::invoice))
                .default_service(web::to(not_found)),
        );
}

async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
