//! Liveness, readiness and metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;
use crate::store::off_arbiter;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and the page's writer runs.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let writer = store.writer_running();
    let database = off_arbiter(async move { Ok(store.ping().await) })
        .await
        .unwrap_or(false);
    let body = json!({
        "status": if database && writer { "ready" } else { "not_ready" },
        "database": if database { "up" } else { "down" },
        "page_writer": if writer { "running" } else { "stopped" },
    });
    if database && writer {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    match off_arbiter(async move { store.backlog().await }).await {
        Ok(backlog) => state.metrics.set_backlog(backlog),
        Err(e) => tracing::warn!(error = %e, "could not read the event backlog for metrics"),
    }
    state.metrics.set_connections(state.delivery.registry.len());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}
