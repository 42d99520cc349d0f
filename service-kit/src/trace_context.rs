//! W3C trace context in and out of the services' spans, as the strings a message or a
//! stored row carries (`traceparent`, and `tracestate` when there is one).
//!
//! Without an OTLP endpoint ([`crate::telemetry`]) there is no OpenTelemetry layer, and
//! every function here returns at once: no span context is read or written.
//!
//! A span that exists only for traces ([`traced`], [`batch_trace`], [`traced_from`]) is
//! made only when it can be exported: under a parent-based sampler (the default), a
//! child of an unsampled span is never sampled, so in an unsampled trace no such span is
//! made and a message carries its parent's context instead, unsampled (flags `00`), so
//! the other side does not sample on its own either. Most traces are unsampled at a low
//! sampling ratio, and a span costs the same whether it is sampled or not (see
//! `bench/results/` on the cost of tracing).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use shared_protocol::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Set once traces are exported: until then there is nothing to carry.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Set when the sampler follows the parent's decision (`parentbased_*`): then a span
/// under an unsampled parent would not be sampled, and is not worth making.
static PARENT_DECIDES: AtomicBool = AtomicBool::new(false);

/// Turns the functions of this module on: [`crate::telemetry::init`] does, when it
/// installs the OpenTelemetry layer. `parent_decides`: the sampler is parent-based.
pub(crate) fn enable(parent_decides: bool) {
    PARENT_DECIDES.store(parent_decides, Ordering::Release);
    ENABLED.store(true, Ordering::Release);
}

/// Whether traces are exported: a span made only for a trace is not worth making
/// otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// Whether a child of `parent` may be sampled: always, unless the sampler follows the
/// parent and the parent is a trace's span that was not sampled. No parent (an invalid
/// context) means a new trace: the sampler decides.
fn may_sample_under(parent: &SpanContext) -> bool {
    !PARENT_DECIDES.load(Ordering::Acquire) || !parent.is_valid() || parent.is_sampled()
}

/// Whether a span made now, under the current span, may be sampled.
fn current_may_sample() -> bool {
    if !PARENT_DECIDES.load(Ordering::Acquire) {
        return true;
    }
    let cx = tracing::Span::current().context();
    may_sample_under(cx.span().span_context())
}

/// `make()`'s span when traces are exported and it may be sampled (see the module's
/// documentation), else a disabled span (nothing made).
pub fn traced(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() && current_may_sample() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// A span made only for traces, and the context a message about its work carries.
#[derive(Debug)]
pub struct Traced {
    /// The span, or a disabled one when none was made.
    pub span: tracing::Span,
    /// The span's context; without a span, the context it would have continued (so an
    /// unsampled trace stays unsampled on the other side); `None` when traces are off.
    pub context: Option<TraceContext>,
}

impl Traced {
    /// Traces are off: no span, no context.
    fn off() -> Traced {
        Traced {
            span: tracing::Span::none(),
            context: None,
        }
    }
}

/// `make()`'s span (traces on and it may be sampled) with its context; otherwise no
/// span, and the current span's context.
pub fn traced_with_context(make: impl FnOnce() -> tracing::Span) -> Traced {
    if !enabled() {
        return Traced::off();
    }
    // The current span's context is read once: it decides, and without a span it is
    // the one carried.
    let current = tracing::Span::current().context();
    let current = current.span();
    let parent = current.span_context();
    if may_sample_under(parent) {
        let span = make();
        let context = for_message(&span);
        Traced { span, context }
    } else {
        Traced {
            span: tracing::Span::none(),
            context: message_context(parent),
        }
    }
}

/// `make()`'s span (not yet entered; it should have no contextual parent), the child of
/// a stored `traceparent`, with its context; no span when that trace was not sampled,
/// and then the stored context itself. Without a `traceparent`, a trace of its own.
pub fn traced_from(traceparent: Option<&str>, make: impl FnOnce() -> tracing::Span) -> Traced {
    if !enabled() {
        return Traced::off();
    }
    let parent = traceparent.and_then(|t| TraceContext::parse(t, None));
    if let Some(parent) = parent.as_ref().filter(|p| !may_follow(p)) {
        return Traced {
            span: tracing::Span::none(),
            context: Some(parent.clone()),
        };
    }
    let span = make();
    if let Some(parent) = &parent {
        set_parent_from(&span, parent);
    }
    let context = for_message(&span);
    Traced { span, context }
}

/// Whether a child of a remote context may be sampled.
fn may_follow(remote: &TraceContext) -> bool {
    !PARENT_DECIDES.load(Ordering::Acquire) || remote.sampled()
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
    remote_of(span.context().span().span_context())
}

/// A span context as W3C strings; `None` when it is not valid.
fn remote_of(span_cx: &SpanContext) -> Option<Remote> {
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

/// The remote span context of a valid trace context (`version-traceid-parentid-flags`).
fn remote_span_context(trace: &TraceContext) -> Option<SpanContext> {
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
        .then(|| TraceContext::parse(traceparent, tracestate))
        .flatten()
    {
        set_parent_from(span, &trace);
    }
}

/// Links `span` to the remote context; nothing when traces are off or the context is
/// not valid (checked as in [`set_parent`]).
pub fn add_link(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if let Some(trace) = enabled()
        .then(|| TraceContext::parse(traceparent, tracestate))
        .flatten()
    {
        add_link_from(span, &trace);
    }
}

/// The context of `span` as a `payments.v1` message carries it.
pub fn for_message(span: &tracing::Span) -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    message_context(span.context().span().span_context())
}

/// A span context as a message carries it.
fn message_context(span_cx: &SpanContext) -> Option<TraceContext> {
    let remote = remote_of(span_cx)?;
    TraceContext::parse(&remote.traceparent, remote.tracestate.as_deref())
}

/// Makes `span` (not yet entered) a child of a message's trace context.
pub fn set_parent_from(span: &tracing::Span, trace: &TraceContext) {
    if !enabled() {
        return;
    }
    if let Some(remote) = remote_span_context(trace) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to a message's trace context.
pub fn add_link_from(span: &tracing::Span, trace: &TraceContext) {
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
///
/// Always a span, even in an unsampled trace: for a batch whose work makes spans of
/// its own (for logs), which need the batch's span as their parent, or a sampled
/// connection-wide parent would collect them. [`batch_trace`] makes none when it can.
pub fn batch_span<'c>(
    name: &'static str,
    contexts: impl ExactSizeIterator<Item = Option<&'c TraceContext>>,
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

/// [`batch_span`] and its context, for a batch whose work makes no spans of its own:
/// a batch of one message whose trace was not sampled gets no span, and its replies
/// carry the message's own context.
pub fn batch_trace<'c>(
    name: &'static str,
    contexts: impl ExactSizeIterator<Item = Option<&'c TraceContext>> + Clone,
    order_id: Option<shared_protocol::OrderId>,
) -> Traced {
    if !enabled() {
        return Traced::off();
    }
    if contexts.len() == 1
        && let Some(Some(only)) = contexts.clone().next()
        && !may_follow(only)
    {
        return Traced {
            span: tracing::Span::none(),
            context: Some(only.clone()),
        };
    }
    let span = batch_span(name, contexts, order_id);
    let context = for_message(&span);
    Traced { span, context }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::prelude::*;

    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    /// Runs `test` with traces on, under the default parent-based sampler (no
    /// exporter: the spans are only made and sampled).
    fn with_traces(test: impl FnOnce()) {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_context_activation(false);
        let subscriber = tracing_subscriber::registry().with(layer);
        enable(true);
        tracing::subscriber::with_default(subscriber, test);
    }

    fn context(traceparent: &str) -> TraceContext {
        TraceContext::parse(traceparent, None).unwrap()
    }

    /// A request span, the child of a caller's `traceparent`.
    fn request(traceparent: &str) -> tracing::Span {
        let span = tracing::info_span!("request");
        set_parent(&span, traceparent, None);
        span
    }

    #[test]
    fn under_an_unsampled_parent_no_trace_only_span_is_made() {
        with_traces(|| {
            let _request = request(UNSAMPLED).entered();
            assert!(traced(|| tracing::info_span!("insert")).is_disabled());
            let sent = traced_with_context(|| tracing::info_span!("send"));
            assert!(sent.span.is_disabled());
            // The message carries the request's context, still unsampled, so the other
            // side does not start a sampled trace of its own.
            let carried = sent.context.expect("a context to carry");
            assert_eq!(&carried.traceparent()[..36], &UNSAMPLED[..36], "same trace");
            assert!(!carried.sampled());
        });
    }

    #[test]
    fn under_a_sampled_parent_the_span_is_made_and_carried() {
        with_traces(|| {
            let _request = request(SAMPLED).entered();
            assert!(!traced(|| tracing::info_span!("insert")).is_disabled());
            let sent = traced_with_context(|| tracing::info_span!("send"));
            assert!(!sent.span.is_disabled());
            let carried = sent.context.expect("a context to carry");
            assert_eq!(&carried.traceparent()[..36], &SAMPLED[..36], "same trace");
            assert_ne!(carried.traceparent(), SAMPLED, "the send span's own id");
            assert!(carried.sampled());
        });
    }

    #[test]
    fn with_no_parent_the_sampler_decides() {
        with_traces(|| {
            let sent = traced_with_context(|| tracing::info_span!("send"));
            assert!(!sent.span.is_disabled());
            assert!(sent.context.expect("a new trace").sampled());
        });
    }

    #[test]
    fn a_batch_of_one_unsampled_message_has_no_span() {
        with_traces(|| {
            let unsampled = context(UNSAMPLED);
            let batch = batch_trace("batch", [Some(&unsampled)].into_iter(), None);
            assert!(batch.span.is_disabled());
            assert_eq!(batch.context, Some(unsampled.clone()), "the message's own");

            let sampled = context(SAMPLED);
            let batch = batch_trace("batch", [Some(&sampled)].into_iter(), None);
            assert!(!batch.span.is_disabled());
            assert!(batch.context.expect("the span's").sampled());

            // Many messages: one span linked to each, whatever their flags.
            let many = [Some(&unsampled), Some(&sampled)];
            assert!(
                !batch_trace("batch", many.into_iter(), None)
                    .span
                    .is_disabled()
            );
            // Always a span where spans are made inside it.
            let one = [Some(&unsampled)];
            assert!(!batch_span("batch", one.into_iter(), None).is_disabled());
        });
    }

    #[test]
    fn a_delivery_follows_its_stored_context() {
        with_traces(|| {
            let delivery = traced_from(
                Some(UNSAMPLED),
                || tracing::info_span!(parent: None, "deliver"),
            );
            assert!(delivery.span.is_disabled());
            assert_eq!(delivery.context, Some(context(UNSAMPLED)));

            let delivery = traced_from(
                Some(SAMPLED),
                || tracing::info_span!(parent: None, "deliver"),
            );
            assert!(!delivery.span.is_disabled());
            let carried = delivery.context.expect("the delivery's");
            assert_eq!(&carried.traceparent()[..36], &SAMPLED[..36]);

            // No stored context (an expiry): a trace of its own.
            let delivery = traced_from(None, || tracing::info_span!(parent: None, "deliver"));
            assert!(!delivery.span.is_disabled());
        });
    }
}
