//! Prometheus metrics of one Payments instance, served at `GET /metrics`. A registry
//! per application, so instances in one test process count separately.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    unacked: Gauge,
    oldest_unacked: Gauge<f64, AtomicU64>,
    expired: Counter,
    connections: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("payments");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "http_request_duration_seconds",
            "Latency of HTTP requests by route",
            http_duration.clone(),
        );
        let unacked = Gauge::default();
        registry.register(
            "unacked_events",
            "Outcome events not acked by Orders yet",
            unacked.clone(),
        );
        let oldest_unacked = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_unacked_event_age_seconds",
            "Age of the oldest unacked event",
            oldest_unacked.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "sessions_expired",
            "Payment sessions cancelled by expiry",
            expired.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections on this instance",
            connections.clone(),
        );
        Arc::new(Metrics {
            registry,
            http_requests,
            http_duration,
            unacked,
            oldest_unacked,
            expired,
            connections,
        })
    }

    pub fn http_request(
        &self,
        method: &str,
        route: &str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_backlog(&self, unacked: i64, oldest_seconds: f64) {
        self.unacked.set(unacked);
        self.oldest_unacked.set(oldest_seconds);
    }

    pub fn expired(&self, n: usize) {
        self.expired.inc_by(n as u64);
    }

    pub fn set_connections(&self, n: usize) {
        self.connections.set(n as i64);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Middleware: counts and times requests by route pattern.
pub async fn record_http(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<actix_web::web::Data<crate::startup::AppState>>()
        .map(|state| state.metrics.clone());
    let method = req.method().as_str().to_owned();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics.http_request(
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    Ok(response)
}
