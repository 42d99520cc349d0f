//! Prometheus metrics of one Orders instance, served at `GET /metrics`.
//!
//! A registry per application (prometheus-client) rather than a process-global
//! recorder, so the many instances a test process starts count separately.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use service_kit::http_metrics::HttpMetrics;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Counted by the `service_kit::http_metrics::record` middleware.
    pub http: HttpMetrics,
    transitions: Family<TransitionLabels, Counter>,
    link_connected: Gauge,
    link_connects: Counter,
    link_messages: Family<MessageLabels, Counter>,
    refusals: Counter,
    parked: Counter,
    incidents: Family<KindLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("orders");
        let http = HttpMetrics::register(&mut registry);
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
        let refusals = Counter::default();
        registry.register(
            "refusals",
            "Requests about an order that Payments refused, or whose answer Orders could not apply",
            refusals.clone(),
        );
        let parked = Counter::default();
        registry.register(
            "parked",
            "Orders parked after MAX_PAYMENT_ATTEMPTS refusals: no longer re-sent until retried",
            parked.clone(),
        );
        let incidents = Family::<KindLabels, Counter>::default();
        registry.register(
            "incidents",
            "Outcomes from Payments an order could not take (acked, order unchanged), by kind",
            incidents.clone(),
        );
        Arc::new(Metrics {
            registry,
            http,
            transitions,
            link_connected,
            link_connects,
            link_messages,
            refusals,
            parked,
            incidents,
        })
    }

    pub fn transition(&self, to: &str) {
        self.transitions
            .get_or_create(&TransitionLabels { to: to.to_owned() })
            .inc();
    }

    pub fn refused(&self, parked: bool) {
        self.refusals.inc();
        if parked {
            self.parked.inc();
        }
    }

    pub fn incident(&self, kind: &'static str) {
        self.incidents.get_or_create(&KindLabels { kind }).inc();
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
