//! HTTP metrics by route pattern (never by raw path, which would make one series per
//! id): a request counter by method, route and status, and a latency histogram.
//! Register them in the service's own registry and mount [`record`] as middleware with
//! the [`HttpMetrics`] in the app data.
//!
//! Every label comes from a fixed set, whatever a client sends, so no request can add
//! series: the method is one of RFC 9110's and PATCH, or `_OTHER` (as OpenTelemetry's
//! HTTP conventions name it); the route is a pattern the service mounted, or
//! `unmatched`; the status is a number the service chose.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// The HTTP metrics of one application.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    /// Creates the metrics and registers them as `http_requests` and
    /// `http_request_duration_seconds` (under the registry's prefix).
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 1 ms … ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "http_request_duration_seconds",
            "Latency of HTTP requests by route",
            duration.clone(),
        );
        HttpMetrics { requests, duration }
    }

    /// Counts and times one request. `method` and `route` must come from a fixed set
    /// ([`method_label`], a mounted pattern): [`record`] makes sure of it.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The method as a label: one of the methods RFC 9110 defines, or PATCH, or `_OTHER`
/// for anything else (a method is any token of up to the whole request head).
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("_OTHER")
}

/// The route as a label: the pattern the router matched (a resource's, or a scope's
/// for its default service), or `unmatched`.
fn route_label(pattern: Option<String>) -> String {
    match pattern {
        Some(pattern) if !pattern.is_empty() => pattern,
        _ => "unmatched".to_owned(),
    }
}

/// Middleware: counts and times each request, using the `web::Data<HttpMetrics>` of
/// the app (requests pass untouched when there is none).
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let method = method_label(req.method());
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = route_label(crate::routing::matched_pattern(response.request()));
        metrics.observe(
            method,
            &route,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_label_is_a_known_method_or_other() {
        for known in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = Method::from_bytes(known.as_bytes()).unwrap();
            assert_eq!(method_label(&method), known);
        }
        for other in ["get", "AAAAAAAAAAAAAAAAAAAAAAAA", "PROPFIND", "X"] {
            let method = Method::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "_OTHER", "{other}");
        }
    }

    #[test]
    fn a_route_label_is_a_pattern_or_unmatched() {
        assert_eq!(route_label(Some("/orders/{id}".into())), "/orders/{id}");
        assert_eq!(route_label(Some(String::new())), "unmatched");
        assert_eq!(route_label(None), "unmatched");
    }
}
