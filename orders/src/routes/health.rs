//! Liveness, readiness, metrics and the OpenAPI document.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::state::AppState;

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `not_ready`, or `draining` (after a SIGTERM, before the instance stops
    /// accepting).
    pub status: String,
    /// `up` or `down`.
    pub database: String,
    /// `connected`, `disconnected`, or `died` (its thread ended: restart the process).
    /// Not part of readiness: orders wait in the database while Payments is away.
    pub payments_link: String,
    /// `running` or `stopped`: the task that writes `POST /orders`.
    pub order_writer: String,
}

/// The process is up, and says whether the Payments link is connected; 503 when the
/// link's thread died (it does not come back without a restart).
#[utoipa::path(get, path = "/healthz", tag = "meta", responses(
    (status = 200, description = "The process is up"),
    (status = 503, description = "The Payments link's thread died: restart the process")))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let link = link_state(&state);
    let body =
        json!({"status": if state.link.died() { "failing" } else { "ok" }, "payments_link": link});
    if state.link.died() {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// The link as health reports it: `connected`, `disconnected`, or `died`.
fn link_state(state: &AppState) -> &'static str {
    if state.link.died() {
        "died"
    } else if state.link.is_connected() {
        "connected"
    } else {
        "disconnected"
    }
}

/// Ready to take requests: the database answers, the order writer runs, and the
/// instance is not draining after a SIGTERM. The link to Payments is not part of it:
/// orders are taken and wait in the database while Payments is away (a load balancer
/// must not take every instance out during a Payments outage); `/healthz` and the
/// metrics say where the link stands.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "The database or the order writer is down, or the instance is draining", body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await;
    let writer = state.store.writer_running();
    let draining = state.draining.is_draining();
    let ready = database && writer && !draining;
    let body = json!({
        "status": if draining { "draining" } else if ready { "ready" } else { "not_ready" },
        "database": if database { "up" } else { "down" },
        "payments_link": link_state(&state),
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 of this API", content_type = "application/json")))]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body((state.openapi)())
}
