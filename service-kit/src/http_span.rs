//! The span of each HTTP request, for [`tracing_actix_web::TracingLogger`]: its method,
//! its route and its outcome, and never its path. A path can hold a bearer capability
//! (a payment page's id on Payments), and logging the route (`/pay/{payment_id}`) says
//! which endpoint it was just as well.
//!
//! Few fields on purpose: with traces exported, every field of every request's span
//! becomes an OpenTelemetry attribute, sampled or not (see `bench/results/` on the cost
//! of tracing). [`ContinueTrace`] continues a caller's `traceparent` header;
//! [`OwnTrace`] starts a trace of its own, for requests from outside (a customer's
//! browser), whose trace context is not ours to continue.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// A request span that continues the request's `traceparent` (and `tracestate`).
pub struct ContinueTrace;

/// A request span that starts a trace of its own, whatever the request's headers say.
pub struct OwnTrace;

impl RootSpanBuilder for ContinueTrace {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let span = route_span(request);
        if let Some(traceparent) = header(request, "traceparent") {
            let tracestate = header(request, "tracestate");
            crate::trace_context::set_parent(&span, traceparent, tracestate);
        }
        span
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

impl RootSpanBuilder for OwnTrace {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        route_span(request)
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The span: method and route now, status when the response is known
/// (`DefaultRootSpanBuilder::on_request_end` records `http.status_code`,
/// `otel.status_code` and, on an error, `exception.message`).
fn route_span(request: &ServiceRequest) -> tracing::Span {
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "(no route)".to_owned());
    let method = request.method();
    tracing::info_span!(
        "HTTP request",
        http.method = %method,
        http.route = %route,
        http.status_code = tracing::field::Empty,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        exception.message = tracing::field::Empty,
    )
}

/// A header's value, when it is there and is text.
fn header<'r>(request: &'r ServiceRequest, name: &str) -> Option<&'r str> {
    request.headers().get(name)?.to_str().ok()
}
