//! W3C trace context in and out of the services' spans, as the strings a message or a
//! stored row carries (`traceparent`, and `tracestate` when there is one).
//!
//! Without an OTLP endpoint ([`crate::telemetry`]) there is no OpenTelemetry layer, and
//! every function here returns at once: no span context is read or written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Set once traces are exported: until then there is nothing to carry.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the functions of this module on: [`crate::telemetry::init`] does, when it
/// installs the OpenTelemetry layer.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Whether traces are exported: a span made only for a trace is not worth making
/// otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// `make()`'s span when traces are exported, else a disabled span (nothing made).
pub fn traced(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// A span's context as W3C strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The context of `span`, to send on: `None` when traces are off or the span has none.
pub fn of(span: &tracing::Span) -> Option<Remote> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(Remote {
        traceparent: carrier.remove("traceparent")?,
        tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
    })
}

/// The context of the current span.
pub fn current() -> Option<Remote> {
    of(&tracing::Span::current())
}

/// The OpenTelemetry context a remote `traceparent` (and `tracestate`) stand for, if
/// they are valid.
fn extract(traceparent: &str, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` (not yet entered) a child of the remote context; nothing when traces
/// are off or the context is not valid.
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(cx) = extract(traceparent, tracestate) {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the remote context; nothing when traces are off or the context is
/// not valid.
pub fn add_link(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(cx) = extract(traceparent, tracestate) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// The context of `span` as a `payments.v1` message carries it.
pub fn for_message(span: &tracing::Span) -> Option<shared_protocol::TraceContext> {
    let remote = of(span)?;
    shared_protocol::TraceContext::parse(&remote.traceparent, remote.tracestate.as_deref())
}

/// Makes `span` (not yet entered) a child of a message's trace context.
pub fn set_parent_from(span: &tracing::Span, trace: &shared_protocol::TraceContext) {
    set_parent(span, trace.traceparent(), trace.tracestate());
}

/// Links `span` to a message's trace context.
pub fn add_link_from(span: &tracing::Span, trace: &shared_protocol::TraceContext) {
    add_link(span, trace.traceparent(), trace.tracestate());
}

/// The span of a batch of messages from the other side (disabled when traces are
/// off): the child of its message's context when it holds one message, else linked
/// to each message's context. A batch has one span, not one parent per message.
pub fn batch_span<'c>(
    name: &'static str,
    contexts: impl ExactSizeIterator<Item = Option<&'c shared_protocol::TraceContext>>,
    order_id: Option<shared_protocol::OrderId>,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let messages = contexts.len();
    let span = tracing::info_span!(
        "batch",
        otel.name = name,
        messages,
        order_id = tracing::field::Empty,
    );
    if let Some(order) = order_id.filter(|_| messages == 1) {
        span.record("order_id", order.to_string());
    }
    for cx in contexts.flatten() {
        if messages == 1 {
            set_parent_from(&span, cx);
        } else {
            add_link_from(&span, cx);
        }
    }
    span
}
