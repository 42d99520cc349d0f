//! Prometheus metrics of one Payments instance, served at `GET /metrics`. A registry
//! per application, so instances in one test process count separately.
//!
//! The backlog gauges are read from the database at most once per
//! `BACKLOG_GAUGE_MAX_AGE` whatever the number of scrapes (and scrapers): `/metrics`
//! needs no token, so it must not be a way to make the database count.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use service_kit::http_metrics::HttpMetrics;

use crate::store::Backlog;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// When the backlog gauges were last read; held while a scrape reads them, so
    /// concurrent scrapes wait for that one read instead of each running their own.
    pub backlog_read_at: tokio::sync::Mutex<Option<Instant>>,
    /// Counted by the `service_kit::http_metrics::record` middleware.
    pub http: HttpMetrics,
    unacked: Gauge,
    oldest_unacked: Gauge<f64, AtomicU64>,
    expired: Counter,
    connections: Gauge,
    dead_lettered: Counter,
    dead_letters: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("payments");
        let http = HttpMetrics::register(&mut registry);
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
        let dead_lettered = Counter::default();
        registry.register(
            "events_dead_lettered",
            "Outcome events this instance dead-lettered after MAX_DELIVERY_ATTEMPTS unacked sends",
            dead_lettered.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letter_events",
            "Dead-lettered outcome events not acked (waiting for an operator's retry)",
            dead_letters.clone(),
        );
        Arc::new(Metrics {
            registry,
            backlog_read_at: tokio::sync::Mutex::new(None),
            http,
            unacked,
            oldest_unacked,
            expired,
            connections,
            dead_lettered,
            dead_letters,
        })
    }

    /// The backlog gauges: unacked events still being delivered (dead letters are not
    /// in them), the age of the oldest, and the dead letters.
    pub fn set_backlog(&self, backlog: Backlog) {
        self.unacked.set(backlog.unacked);
        self.oldest_unacked.set(backlog.oldest_seconds);
        self.dead_letters.set(backlog.dead);
    }

    pub fn dead_lettered(&self, n: usize) {
        self.dead_lettered.inc_by(n as u64);
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
