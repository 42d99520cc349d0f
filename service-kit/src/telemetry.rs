//! Logging and traces, installed once by `main`: `tracing` with a pretty or JSON
//! formatter, and, when an OTLP endpoint is set, OpenTelemetry traces of the same spans,
//! exported over OTLP/HTTP with protobuf (the collector's port 4318, `/v1/traces`).
//!
//! Traces read the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_SERVICE_NAME` (default: the service's
//! own name), `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default:
//! `parentbased_always_on`). Without an endpoint nothing is exported and no
//! OpenTelemetry layer is installed, so tracing costs what logging alone does. Spans
//! carry their fields, and the log events in them (those `filter` lets through) as span
//! events. In a trace that is not sampled, spans made only for traces are not made at
//! all ([`crate::trace_context`]).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// `LOG_FORMAT`: `pretty` for people, `json` for one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// How long the exporter may take at exit to send the spans still queued. It runs
/// beside the database pool's close ([`crate::database::CLOSE_WAIT`], as long), so
/// the stop's budget ([`crate::startup::STOP_BUDGET`]) does not grow.
pub const TRACES_FLUSH: Duration = Duration::from_secs(1);

/// What `init` installed that must be flushed at exit: the trace exporter, if any.
#[derive(Debug)]
#[must_use = "call Telemetry::flush at exit, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

/// Installs the global subscriber (logs, and traces when an OTLP endpoint is set) for
/// `service`; fails if one is installed already, or on an unusable OTLP setting.
pub fn init(filter: &str, format: LogFormat, service: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)?;
    let traces = tracer_provider(service)?;
    let otel = traces.as_ref().map(|provider| {
        // Each span records only its name, fields and links: no thread, target, source
        // location or time busy and idle, which cost an allocation or a clock read for
        // every span, sampled or not (at 1 % sampling they cost 8 % of the flows).
        // No per-layer filter: one would look the span up again on every enter and
        // exit of every span, which costs more than the layer's own work on the log
        // events it would keep out (callgrind at 1 %: 36 k to 69 k instructions a
        // flow more with a WARN filter here; bench/README.md). So every event the
        // log filter lets through is also a span event of its span.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service.to_owned()))
            .with_threads(false)
            .with_target(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            // Parents come from tracing's own span stack: no OpenTelemetry context is
            // attached and detached on every poll of every instrumented future (no
            // other OpenTelemetry instrumentation here reads it).
            .with_context_activation(false)
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match format {
        LogFormat::Pretty => registry.with(fmt::layer()).try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()?,
    }
    if traces.is_some() {
        crate::trace_context::enable(sampler_follows_parent());
        tracing::info!(service, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { traces })
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter, waiting at most
    /// [`TRACES_FLUSH`].
    pub async fn flush(self) {
        let Some(provider) = self.traces else {
            return;
        };
        let shutdown =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(TRACES_FLUSH));
        match shutdown.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not send the last spans"),
            Err(e) => tracing::warn!(error = %e, "the trace exporter's shutdown failed"),
        }
    }
}

/// Whether the sampler of `OTEL_TRACES_SAMPLER` follows a parent's decision: the
/// default (`parentbased_always_on`) and every `parentbased_*` one do.
fn sampler_follows_parent() -> bool {
    std::env::var("OTEL_TRACES_SAMPLER").map_or(true, |sampler| {
        let sampler = sampler.trim();
        sampler.is_empty() || sampler.starts_with("parentbased_")
    })
}

/// Whether an OTLP endpoint for traces is configured.
fn endpoint_set() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// The OTLP protocol asked for, if any: the traces' own variable first.
fn protocol() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// The trace pipeline when an endpoint is set: a batch exporter over OTLP/HTTP, the
/// sampler of `OTEL_TRACES_SAMPLER`, and W3C trace context for propagation.
fn tracer_provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if !endpoint_set() {
        return Ok(None);
    }
    if let Some(protocol) = protocol()
        && protocol.trim() != "http/protobuf"
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?} is not supported: traces are exported \
             over OTLP/HTTP with protobuf only (\"http/protobuf\", port 4318)"
        );
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    // OTEL_SERVICE_NAME (read by the default resource) wins over the service's name.
    let resource = match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.trim().is_empty() => Resource::builder().build(),
        _ => Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    // tracing-actix-web reads an incoming traceparent with the global propagator.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(provider))
}
