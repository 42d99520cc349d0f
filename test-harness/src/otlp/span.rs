//! The received spans, flattened from OTLP's nesting (resource → scope → span) into
//! plain owned values that tests compare with `assert_eq!`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1 as proto;

/// One span as received, with its resource's `service.name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a root span (no parent, or the all-zero id).
    pub parent_span_id: Option<String>,
    pub name: String,
    /// The resource's `service.name`; empty when the resource has none.
    pub service: String,
    /// The instrumentation scope's name (the tracer's name).
    pub scope: String,
    pub kind: SpanKind,
    /// Unix time in nanoseconds.
    pub start: u64,
    /// Unix time in nanoseconds.
    pub end: u64,
    /// Every attribute, its value rendered as text: strings as they are, numbers and
    /// booleans as Rust prints them, bytes as hex, arrays as `[a, b]`, maps as `{k: v}`.
    pub attributes: BTreeMap<String, String>,
    /// Span events (what `tracing` events inside the span become), in order.
    pub events: Vec<SpanEvent>,
    /// The span's links, as `(trace_id, span_id)` of the spans linked to.
    pub links: Vec<(String, String)>,
    pub status: Status,
}

impl Span {
    /// `end - start`, zero if the span ends before it starts.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end.saturating_sub(self.start))
    }

    /// The attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether the span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }
}

/// A span's kind, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// A span's status, as in OTLP; an error carries its message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    Unset,
    Ok,
    Error(String),
}

/// An event recorded in a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    /// Unix time in nanoseconds.
    pub time: u64,
    pub attributes: BTreeMap<String, String>,
}

/// Every span of an export request, in the order they came.
pub(crate) fn flatten(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
            })
            .map(|kv| render_value(kv.value.as_ref()))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
            for span in scope_spans.spans {
                out.push(convert(span, &service, &scope));
            }
        }
    }
    out
}

fn convert(span: proto::Span, service: &str, scope: &str) -> Span {
    let parent = span.parent_span_id.iter().any(|b| *b != 0);
    Span {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: parent.then(|| hex(&span.parent_span_id)),
        kind: kind(span.kind),
        name: span.name,
        service: service.to_owned(),
        scope: scope.to_owned(),
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano,
        attributes: attributes(&span.attributes),
        events: span
            .events
            .into_iter()
            .map(|event| SpanEvent {
                attributes: attributes(&event.attributes),
                name: event.name,
                time: event.time_unix_nano,
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
            .collect(),
        status: status(span.status),
    }
}

fn kind(code: i32) -> SpanKind {
    use proto::span::SpanKind as K;
    match K::try_from(code) {
        Ok(K::Internal) => SpanKind::Internal,
        Ok(K::Server) => SpanKind::Server,
        Ok(K::Client) => SpanKind::Client,
        Ok(K::Producer) => SpanKind::Producer,
        Ok(K::Consumer) => SpanKind::Consumer,
        Ok(K::Unspecified) | Err(_) => SpanKind::Unspecified,
    }
}

fn status(status: Option<proto::Status>) -> Status {
    use proto::status::StatusCode;
    let Some(status) = status else {
        return Status::Unset;
    };
    match StatusCode::try_from(status.code) {
        Ok(StatusCode::Ok) => Status::Ok,
        Ok(StatusCode::Error) => Status::Error(status.message),
        Ok(StatusCode::Unset) | Err(_) => Status::Unset,
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), render_value(kv.value.as_ref())))
        .collect()
}

/// An attribute's value as text (see [`Span::attributes`]).
fn render_value(value: Option<&AnyValue>) -> String {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return String::new();
    };
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(bytes) => hex(bytes),
        Value::ArrayValue(array) => {
            let items: Vec<String> = array.values.iter().map(|v| render_value(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Value::KvlistValue(map) => {
            let items: Vec<String> = map
                .values
                .iter()
                .map(|kv| format!("{}: {}", kv.key, render_value(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::StringValueStrindex(index) => format!("<string table #{index}>"),
    }
}

/// Lowercase hex, two digits a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn any(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn values_are_rendered_as_text() {
        let kv = |key: &str, value| KeyValue {
            key: key.into(),
            value: Some(any(value)),
            key_strindex: 0,
        };
        let array = ArrayValue {
            values: vec![any(Value::IntValue(1)), any(Value::BoolValue(false))],
        };
        let map = KeyValueList {
            values: vec![kv("a", Value::DoubleValue(1.5))],
        };
        let rendered = attributes(&[
            kv("s", Value::StringValue("text".into())),
            kv("b", Value::BytesValue(vec![0, 0xab])),
            kv("list", Value::ArrayValue(array)),
            kv("map", Value::KvlistValue(map)),
        ]);
        assert_eq!(rendered["s"], "text");
        assert_eq!(rendered["b"], "00ab");
        assert_eq!(rendered["list"], "[1, false]");
        assert_eq!(rendered["map"], "{a: 1.5}");
    }

    #[test]
    fn an_all_zero_parent_is_no_parent() {
        let span = proto::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![0; 8],
            ..Default::default()
        };
        let span = convert(span, "svc", "scope");
        assert_eq!(span.trace_id, "01".repeat(16));
        assert_eq!(span.span_id, "0202020202020202");
        assert!(span.is_root());
        assert_eq!(span.kind, SpanKind::Unspecified);
        assert_eq!(span.status, Status::Unset);
    }
}
