//! The HTTP API of HTTP-API.md: routes, and the JSON error answers for paths and
//! methods that do not exist.

pub mod auth;
pub mod body;
pub(crate) mod health;
pub(crate) mod orders;

use actix_web::web;
use service_kit::routing::{get_and_head, method_not_allowed};

use crate::error::ApiError;

pub use body::MAX_BODY_BYTES;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/orders")
            .route(web::post().to(orders::create))
            .route(get_and_head().to(orders::list))
            .default_service(method_not_allowed("GET, HEAD, POST")),
    )
    .service(
        web::resource("/orders/{id}")
            .route(get_and_head().to(orders::get))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/orders/{id}/cancel")
            .route(web::post().to(orders::cancel))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/orders/{id}/retry")
            .route(web::post().to(orders::retry))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/orders/{id}/incidents")
            .route(get_and_head().to(orders::incidents))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/orders/{id}/invoice")
            .route(get_and_head().to(orders::invoice))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/healthz")
            .route(get_and_head().to(health::healthz))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/readyz")
            .route(get_and_head().to(health::readyz))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/metrics")
            .route(get_and_head().to(health::metrics))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/openapi.json")
            .route(get_and_head().to(crate::openapi::openapi_json))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .default_service(web::to(not_found));
}

async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
