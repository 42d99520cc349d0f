//! W3C trace context in and out of the services' spans, as the strings a message or a
//! stored row carries (`traceparent`, and `tracestate` when there is one).
//!
//! Without an OTLP endpoint ([`crate::telemetry`]) there is no OpenTelemetry layer, and
//! every function here returns at once: no span context is read or written.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
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
    let span_cx = cx.span().span_context().clone();
    if !span_cx.is_valid() {
        return None;
    }
    // W3C Trace Context level 1, written directly: what TraceContextPropagator's
    // inject writes, without its map of owned strings.
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        span_cx.trace_id(),
        span_cx.span_id(),
        span_cx.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()
    );
    let tracestate = Some(span_cx.trace_state().header()).filter(|s| !s.is_empty());
    Some(Remote {
        traceparent,
        tracestate,
    })
}

/// The context of the current span.
pub fn current() -> Option<Remote> {
    of(&tracing::Span::current())
}

/// The remote span context of a valid trace context (`version-traceid-parentid-flags`).
fn remote_span_context(trace: &shared_protocol::TraceContext) -> Option<SpanContext> {
    let traceparent = trace.traceparent();
    let trace_id = TraceId::from_hex(traceparent.get(3..35)?).ok()?;
    let span_id = SpanId::from_hex(traceparent.get(36..52)?).ok()?;
    let flags = u8::from_str_radix(traceparent.get(53..55)?, 16).ok()?;
    let state = trace
        .tracestate()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let span_cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    span_cx.is_valid().then_some(span_cx)
}

/// Makes `span` (not yet entered) a child of the remote context; nothing when traces
/// are off or the context is not valid (checked as
/// [`shared_protocol::TraceContext::parse`] checks a message's, so a header and a
/// message are held to the same rules).
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if let Some(trace) = enabled()
        .then(|| shared_protocol::TraceContext::parse(traceparent, tracestate))
        .flatten()
    {
        set_parent_from(span, &trace);
    }
}

/// Links `span` to the remote context; nothing when traces are off or the context is
/// not valid (checked as in [`set_parent`]).
pub fn add_link(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if let Some(trace) = enabled()
        .then(|| shared_protocol::TraceContext::parse(traceparent, tracestate))
        .flatten()
    {
        add_link_from(span, &trace);
    }
}

/// The context of `span` as a `payments.v1` message carries it.
pub fn for_message(span: &tracing::Span) -> Option<shared_protocol::TraceContext> {
    let remote = of(span)?;
    shared_protocol::TraceContext::parse(&remote.traceparent, remote.tracestate.as_deref())
}

/// Makes `span` (not yet entered) a child of a message's trace context.
pub fn set_parent_from(span: &tracing::Span, trace: &shared_protocol::TraceContext) {
    if !enabled() {
        return;
    }
    if let Some(remote) = remote_span_context(trace) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to a message's trace context.
pub fn add_link_from(span: &tracing::Span, trace: &shared_protocol::TraceContext) {
    if !enabled() {
        return;
    }
    if let Some(remote) = remote_span_context(trace) {
        span.add_link(remote);
    }
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
