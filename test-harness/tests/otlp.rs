//! The OTLP receiver, fed by the exporter the services use (opentelemetry-otlp over
//! HTTP with protobuf, reqwest's blocking client), and by raw requests for refusals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use test_harness::http::request;
use test_harness::otlp::{self, OtlpReceiver};

const DEADLINE: Duration = Duration::from_secs(10);

/// A provider for `service` that exports each span as it ends, to `url`. Like the
/// services' exporter it sends with reqwest's blocking client, which must not be
/// dropped on an async thread: make and drop it in [`exporting`].
fn provider(url: &str, service: &'static str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .expect("OTLP exporter");
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build()
}

/// Runs `work` on a blocking thread with providers for `orders` and `payments` that
/// export to `receiver`, and shuts them down.
async fn exporting<T: Send + 'static>(
    receiver: &OtlpReceiver,
    work: impl FnOnce(&SdkTracerProvider, &SdkTracerProvider) -> T + Send + 'static,
) -> T {
    let url = receiver.traces_url();
    tokio::task::spawn_blocking(move || {
        let (orders, payments) = (provider(&url, "orders"), provider(&url, "payments"));
        let out = work(&orders, &payments);
        orders.shutdown().unwrap();
        payments.shutdown().unwrap();
        out
    })
    .await
    .unwrap()
}

/// `ms` milliseconds after a fixed instant, so durations (and renders) are exact.
fn at(ms: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(ms / 1e3)
}

/// Orders' `POST /orders` with a client child `initiate_payment`; returns their contexts.
fn orders_trace(provider: &SdkTracerProvider) -> (SpanContext, SpanContext) {
    let tracer = provider.tracer("orders");
    let mut root = tracer
        .span_builder("POST /orders")
        .with_kind(SpanKind::Server)
        .with_start_time(at(0.0))
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 201),
        ])
        .start(&tracer);
    let root_context = root.span_context().clone();
    let cx = Context::current().with_remote_span_context(root_context.clone());
    let mut child = tracer
        .span_builder("initiate_payment")
        .with_kind(SpanKind::Client)
        .with_start_time(at(1.0))
        .start_with_context(&tracer, &cx);
    child.add_event("sent", vec![KeyValue::new("bytes", 120)]);
    let child_context = child.span_context().clone();
    child.end_with_timestamp(at(4.2));
    root.end_with_timestamp(at(12.3));
    (root_context, child_context)
}

/// Payments' `ws.message`, a new trace linked to `from`, with a failing child.
fn payments_trace(provider: &SdkTracerProvider, from: SpanContext) -> SpanContext {
    let tracer = provider.tracer("payments");
    let mut message = tracer
        .span_builder("ws.message")
        .with_kind(SpanKind::Consumer)
        .with_start_time(at(2.0))
        .with_links(vec![Link::with_context(from)])
        .start(&tracer);
    let context = message.span_context().clone();
    let cx = Context::current().with_remote_span_context(context.clone());
    let mut store = tracer
        .span_builder("payments.store")
        .with_start_time(at(2.1))
        .start_with_context(&tracer, &cx);
    store.set_status(Status::error("card declined"));
    store.end_with_timestamp(at(2.9));
    message.end_with_timestamp(at(3.5));
    context
}

/// Both services' traces, sent to `receiver`: Orders' root and child, Payments' message.
async fn both_traces(receiver: &OtlpReceiver) -> (SpanContext, SpanContext, SpanContext) {
    exporting(receiver, |orders, payments| {
        let (root, child) = orders_trace(orders);
        let message = payments_trace(payments, child.clone());
        (root, child, message)
    })
    .await
}

/// The span named `name` among `spans`.
fn named(spans: &[otlp::Span], name: &str) -> otlp::Span {
    let span = spans.iter().find(|s| s.name == name);
    span.unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
        .clone()
}

#[tokio::test]
async fn a_parent_child_pair_and_a_link_arrive_as_sent() {
    let receiver = OtlpReceiver::start().await;
    let (root, child, message) = both_traces(&receiver).await;

    let spans = receiver
        .wait_for(|spans| spans.len() == 4, DEADLINE)
        .await
        .unwrap();
    let find = |name| named(&spans, name);
    let (post, initiate, ws, store) = (
        find("POST /orders"),
        find("initiate_payment"),
        find("ws.message"),
        find("payments.store"),
    );
    assert_eq!(post.trace_id, root.trace_id().to_string());
    assert_eq!(post.span_id, root.span_id().to_string());
    assert_eq!((post.trace_id.len(), post.span_id.len()), (32, 16));
    assert_eq!(post.parent_span_id, None);
    assert_eq!(post.service, "orders");
    assert_eq!(post.scope, "orders");
    assert_eq!(post.kind, otlp::SpanKind::Server);
    assert_eq!(post.duration(), Duration::from_micros(12_300));
    assert_eq!(post.attribute("http.request.method"), Some("POST"));
    assert_eq!(post.attribute("http.response.status_code"), Some("201"));

    assert_eq!(initiate.trace_id, post.trace_id);
    assert_eq!(initiate.span_id, child.span_id().to_string());
    assert_eq!(
        initiate.parent_span_id.as_deref(),
        Some(post.span_id.as_str())
    );
    assert_eq!(initiate.kind, otlp::SpanKind::Client);
    assert_eq!(initiate.events.len(), 1);
    assert_eq!(initiate.events[0].name, "sent");
    assert_eq!(initiate.events[0].attributes["bytes"], "120");

    assert_eq!(ws.service, "payments");
    assert_eq!(ws.trace_id, message.trace_id().to_string());
    assert_ne!(ws.trace_id, post.trace_id);
    assert!(ws.is_root());
    assert_eq!(
        ws.links,
        vec![(initiate.trace_id.clone(), initiate.span_id.clone())]
    );
    assert_eq!(store.parent_span_id.as_deref(), Some(ws.span_id.as_str()));
    assert_eq!(store.status, otlp::Status::Error("card declined".into()));
    assert_eq!(receiver.trace(&post.trace_id).len(), 2);
    assert_eq!(receiver.dropped(), 0);
}

#[tokio::test]
async fn render_tree_shows_children_under_parents_and_links() {
    let receiver = OtlpReceiver::start().await;
    both_traces(&receiver).await;
    let spans = receiver.spans();
    let (post, initiate, ws) = (
        named(&spans, "POST /orders"),
        named(&spans, "initiate_payment"),
        named(&spans, "ws.message"),
    );
    assert_eq!(
        receiver.render_tree(&post.trace_id),
        format!(
            "trace {}  (2 spans)\n  POST /orders  [orders]  12.3 ms\n    initiate_payment  [orders]  3.2 ms\n",
            post.trace_id
        )
    );
    assert_eq!(
        receiver.render_tree(&ws.trace_id),
        format!(
            "trace {}  (2 spans)\n  ws.message  [payments]  1.5 ms\n    \
             ↪ linked from span {} (initiate_payment [orders]) of trace {}\n    \
             payments.store  [payments]  800 µs  ERROR: card declined\n",
            ws.trace_id, initiate.span_id, initiate.trace_id
        )
    );
    println!("{}", receiver.render());
}

#[tokio::test]
async fn wait_for_wakes_when_the_spans_arrive() {
    let receiver = OtlpReceiver::start().await;
    // The wait starts first, with nothing received; the spans come from another thread.
    let (waited, _) = tokio::join!(
        receiver.wait_for(
            |spans| spans.iter().any(|s| s.name == "initiate_payment"),
            DEADLINE
        ),
        exporting(&receiver, |orders, _| orders_trace(orders)),
    );
    let spans = waited.unwrap();
    assert!(spans.iter().any(|s| s.name == "initiate_payment"));
}

#[tokio::test]
async fn a_timed_out_wait_lists_what_came() {
    let receiver = OtlpReceiver::start().await;
    let none = receiver
        .wait_for(|spans| !spans.is_empty(), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        none.to_string().contains("kept 0 spans from 0 exports")
            && none.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{none}"
    );

    exporting(&receiver, |orders, _| orders_trace(orders)).await;
    let error = receiver
        .wait_for(|spans| spans.len() > 2, Duration::from_millis(50))
        .await
        .unwrap_err();
    let message = format!("{error:?}");
    assert!(
        message.contains("within 50ms") && message.contains("kept 2 spans from 2 exports"),
        "{message}"
    );
    assert!(
        message.contains("  POST /orders  [orders]  12.3 ms\n    initiate_payment  [orders]"),
        "{message}"
    );
    assert_eq!(error.spans.len(), 2);
}

/// The receiver runs on its own thread: a batch exporter flushed from the test's only
/// thread (a current-thread runtime, blocked in `force_flush`) is still answered.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_exporter_flushed_from_the_test_thread_is_answered() {
    let receiver = OtlpReceiver::start().await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(receiver.traces_url())
        .build()
        .unwrap();
    let batch = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("orders").build())
        .build();
    orders_trace(&batch);
    batch.force_flush().unwrap();
    assert_eq!(receiver.spans().len(), 2);
    batch.shutdown().unwrap();
}

#[tokio::test]
async fn spans_beyond_the_bound_are_dropped_and_counted() {
    let receiver = OtlpReceiver::with_max_spans(3).await;
    let (root, _) = exporting(&receiver, |orders, _| {
        orders_trace(orders);
        orders_trace(orders)
    })
    .await;
    assert_eq!(receiver.spans().len(), 3);
    assert_eq!(receiver.dropped(), 1);
    let tree = receiver.render_tree(&root.trace_id().to_string());
    assert!(
        tree.ends_with("(1 spans dropped: the receiver keeps at most 3)\n"),
        "{tree}"
    );
    let error = receiver
        .wait_for(|_| false, Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("dropped 1 beyond its bound of 3"),
        "{error}"
    );
}

#[tokio::test]
async fn a_malformed_body_is_refused_with_400() {
    let receiver = OtlpReceiver::start().await;
    let protobuf = ["Content-Type: application/x-protobuf"];
    let answer = request(
        &receiver.endpoint(),
        "POST",
        "/v1/traces",
        &protobuf,
        "garbage",
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body.contains("not an ExportTraceServiceRequest"),
        "{answer:?}"
    );
    assert!(receiver.spans().is_empty());

    let error = receiver
        .wait_for(|spans| !spans.is_empty(), Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("refused 1 requests (the last: 400: not an ExportTraceServiceRequest"),
        "{error}"
    );

    // An empty body is an empty request: accepted, with an empty response.
    let answer = request(&receiver.endpoint(), "POST", "/v1/traces", &protobuf, "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(answer.body, "");
}

#[tokio::test]
async fn other_content_types_encodings_paths_and_methods_are_refused() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let json = ["Content-Type: application/json"];
    let answer = request(&endpoint, "POST", "/v1/traces", &json, "{}").await;
    assert_eq!(answer.status, 415, "{answer:?}");
    assert!(answer.body.contains("application/x-protobuf"), "{answer:?}");

    let gzip = [
        "Content-Type: application/x-protobuf",
        "Content-Encoding: gzip",
    ];
    let answer = request(&endpoint, "POST", "/v1/traces", &gzip, "").await;
    assert_eq!(answer.status, 415, "{answer:?}");
    assert!(answer.body.contains("uncompressed"), "{answer:?}");

    let protobuf = ["Content-Type: application/x-protobuf; charset=binary"];
    let answer = request(&endpoint, "POST", "/v1/metrics", &protobuf, "").await;
    assert_eq!(answer.status, 404, "{answer:?}");
    let answer = request(&endpoint, "GET", "/v1/traces", &[], "").await;
    assert_eq!(answer.status, 405, "{answer:?}");
    // parameters of the media type are allowed
    let answer = request(&endpoint, "POST", "/v1/traces", &protobuf, "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let receiver = OtlpReceiver::start().await;
    let body = "x".repeat(otlp::MAX_BODY_BYTES + 1);
    let protobuf = ["Content-Type: application/x-protobuf"];
    let answer = request(&receiver.endpoint(), "POST", "/v1/traces", &protobuf, &body).await;
    assert_eq!(answer.status, 413, "{answer:?}");
}
