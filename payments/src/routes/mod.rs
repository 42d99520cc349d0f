//! Routes: the WebSocket, the payment page, the operators' dead letters, health and
//! metrics. Unknown paths and methods get JSON errors like the rest of the API.

pub mod admin;
pub mod health;
pub mod page;

use actix_web::{HttpRequest, HttpResponse, web};
use service_kit::routing::{get_and_head, method_not_allowed};

use crate::error::ApiError;
use crate::ws;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ws")
            .route(get_and_head().to(ws::endpoint))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/pay/{payment_id}")
            .route(get_and_head().to(page::show))
            .default_service(method_not_allowed("GET, HEAD")),
    )
    .service(
        web::resource("/pay/{payment_id}/complete")
            .route(web::post().to(page::complete))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/pay/{payment_id}/cancel")
            .route(web::post().to(page::cancel))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/admin/events/{event_id}/retry")
            .route(web::post().to(admin::retry))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/admin/dead-letters")
            .route(get_and_head().to(admin::dead_letters))
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
    .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
