//! Routes: the WebSocket, the payment page, the operators' dead letters, health and
//! metrics. Unknown paths and methods get JSON errors like the rest of the API.

pub mod admin;
pub mod health;
pub mod page;

use actix_web::{HttpRequest, HttpResponse, web};
use service_kit::routing::resource;

use crate::error::ApiError;
use crate::ws;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws").get(ws::endpoint))
        .service(resource("/pay/{payment_id}").get(page::show))
        .service(resource("/pay/{payment_id}/complete").post(page::complete))
        .service(resource("/pay/{payment_id}/cancel").post(page::cancel))
        // The operators' door: its own token, checked on whatever the router matched
        // under /admin, unknown paths included.
        .service(
            web::scope("/admin")
                .wrap(actix_web::middleware::from_fn(admin::require_admin_token))
                .service(resource("/events/{event_id}/retry").post(admin::retry))
                .service(resource("/dead-letters").get(admin::dead_letters))
                .default_service(web::to(not_found)),
        )
        .service(resource("/healthz").get(health::healthz))
        .service(resource("/readyz").get(health::readyz))
        .service(resource("/metrics").get(health::metrics))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
