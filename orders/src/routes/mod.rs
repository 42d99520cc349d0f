//! The HTTP API of HTTP-API.md: routes, and the JSON error answers for paths and
//! methods that do not exist.

pub mod auth;
pub mod body;
pub(crate) mod health;
pub(crate) mod orders;

use actix_web::web;
use service_kit::routing::get_and_head;

use crate::error::ApiError;

pub use body::MAX_BODY_BYTES;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/orders")
            .route(web::post().to(orders::create))
            .route(get_and_head().to(orders::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/orders/{id}")
            .route(get_and_head().to(orders::get))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/orders/{id}/cancel")
            .route(web::post().to(orders::cancel))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/orders/{id}/retry")
            .route(web::post().to(orders::retry))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/orders/{id}/incidents")
            .route(get_and_head().to(orders::incidents))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/orders/{id}/invoice")
            .route(get_and_head().to(orders::invoice))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(get_and_head().to(health::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(get_and_head().to(health::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(get_and_head().to(health::metrics))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/openapi.json")
            .route(get_and_head().to(crate::openapi::openapi_json))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
