//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::openapi::Readiness;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers, the link to Payments is open and the order writer
/// runs.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "The database, the Payments link or the order writer is down", body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await;
    let payments = state.link.is_connected();
    let writer = state.store.writer_running();
    let ready = database && payments && writer;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": if database { "up" } else { "down" },
        "payments_link": if payments { "connected" } else { "disconnected" },
        "order_writer": if writer { "running" } else { "stopped" },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}
