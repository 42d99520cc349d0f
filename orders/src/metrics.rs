//! Prometheus metrics of one Orders instance, served at `GET /metrics`.
//!
//! A registry per application (prometheus-client) rather than a process-global
//! recorder, so the many instances a test process starts count separately.

use std::sync::Arc;
use std::time::Duration;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The status the order moved to (`pending_payment` when created).
    pub to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `in` (from Payments) or `out` (to Payments).
    pub direction: &'static str,
    pub r#type: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    transitions: Family<TransitionLabels, Counter>,
    link_connected: Gauge,
    link_connects: Counter,
    link_messages: Family<MessageLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("orders");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 1 ms … ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "http_request_duration_seconds",
            "Latency of HTTP requests by route",
            http_duration.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "order_transitions",
            "Orders moved to a status (pending_payment counts creations)",
            transitions.clone(),
        );
        let link_connected = Gauge::default();
        registry.register(
            "payments_link_connected",
            "1 while the WebSocket to Payments is open",
            link_connected.clone(),
        );
        let link_connects = Counter::default();
        registry.register(
            "payments_link_connects",
            "Successful connections to Payments (the first one and every reconnect)",
            link_connects.clone(),
        );
        let link_messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "payments_link_messages",
            "Protocol messages on the link by direction and type",
            link_messages.clone(),
        );
        Arc::new(Metrics {
            registry,
            http_requests,
            http_duration,
            transitions,
            link_connected,
            link_connects,
            link_messages,
        })
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
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

    pub fn transition(&self, to: &str) {
        self.transitions
            .get_or_create(&TransitionLabels { to: to.to_owned() })
            .inc();
    }

    pub fn link_up(&self) {
        self.link_connected.set(1);
        self.link_connects.inc();
    }

    pub fn link_down(&self) {
        self.link_connected.set(0);
    }

    pub fn message(&self, direction: &'static str, r#type: &str) {
        self.link_messages
            .get_or_create(&MessageLabels {
                direction,
                r#type: r#type.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Middleware: counts and times every request by its route pattern (never by the raw
/// path, which would make one series per order id).
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
