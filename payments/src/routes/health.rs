//! Liveness, readiness and metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;
use crate::store::off_arbiter;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and the page's writer runs, and the instance is not
/// draining after a SIGTERM.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let writer = store.writer_running();
    let draining = state.draining.is_draining();
    let database = off_arbiter(async move { Ok(store.ping().await) })
        .await
        .unwrap_or(false);
    let ready = database && writer && !draining;
    let body = json!({
        "status": if draining { "draining" } else if ready { "ready" } else { "not_ready" },
        "database": if database { "up" } else { "down" },
        "page_writer": if writer { "running" } else { "stopped" },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    refresh_backlog(&state).await;
    state.metrics.set_connections(state.delivery.registry.len());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}

/// Reads the event backlog into its gauges unless they are younger than
/// `BACKLOG_GAUGE_MAX_AGE`; a failed read keeps the last values and is tried again at
/// the next scrape.
async fn refresh_backlog(state: &AppState) {
    let mut read_at = state.metrics.backlog_read_at.lock().await;
    let max_age = state.config.backlog_gauge_max_age;
    if read_at.is_some_and(|at| at.elapsed() < max_age) {
        return;
    }
    let store = state.store.clone();
    match off_arbiter(async move { store.backlog().await }).await {
        Ok(backlog) => {
            state.metrics.set_backlog(backlog);
            *read_at = Some(std::time::Instant::now());
        }
        Err(e) => tracing::warn!(error = %e, "could not read the event backlog for metrics"),
    }
}
