//! JSON Schema of every message, generated from the types (schemars), for peers
//! written in other languages. `docs/protocol.schema.json` is this output, and the
//! AsyncAPI document `docs/asyncapi.yaml` points into it; a test fails when either
//! drifts from the code.
//!
//! Every message also gets the two optional trace-context fields, `traceparent` and
//! `tracestate`, as references to the shared definitions `TraceParent` and `TraceState`:
//! they live outside the message enums (see [`crate::encode_traced`]), so they are added
//! to each generated message here.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::{
    Amount, ClientMessage, Currency, EventId, MAX_TRACESTATE_LEN, OrderId, PaymentId, ServerMessage,
};

impl JsonSchema for Amount {
    fn schema_name() -> Cow<'static, str> {
        "Amount".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An amount in the currency's minor unit (cents), always positive.",
            "type": "integer",
            "minimum": 1,
            "format": "int64",
        })
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let codes: Vec<&str> = Currency::all().iter().map(Currency::as_str).collect();
        json_schema!({
            "description": "The upper-case ISO 4217 code of a current currency with minor units (no funds, precious metals or special codes).",
            "type": "string",
            "pattern": "^[A-Z]{3}$",
            "enum": codes,
        })
    }
}

macro_rules! uuid_schema {
    ($name:ident, $doc:literal) => {
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "description": $doc,
                    "type": "string",
                    "format": "uuid",
                })
            }
        }
    };
}

uuid_schema!(OrderId, "An order's id (UUID, hyphenated lower case).");
uuid_schema!(
    PaymentId,
    "A payment session's id (UUID, hyphenated lower case)."
);

impl JsonSchema for EventId {
    fn schema_name() -> Cow<'static, str> {
        "EventId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The id of a payment_state event; increases with each event.",
            "type": "integer",
            "format": "int64",
        })
    }
}

/// The definitions of the two trace-context fields every message may carry.
fn trace_context_defs() -> [(&'static str, Value); 2] {
    [
        (
            "TraceParent",
            serde_json::json!({
                "description": "W3C Trace Context `traceparent` (version-traceid-parentid-flags, lower-case hex; version 00 is exactly 55 characters, a later version may continue after a `-`). Optional; a receiver ignores a missing or malformed one and never answers an error for it.",
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$",
            }),
        ),
        (
            "TraceState",
            serde_json::json!({
                "description": "W3C Trace Context `tracestate`, vendor entries that go with `traceparent`. Optional; a receiver ignores it without a valid `traceparent`, and drops one that is too long or not printable ASCII.",
                "type": "string",
                "maxLength": MAX_TRACESTATE_LEN,
            }),
        ),
    ]
}

/// Adds the optional `traceparent` and `tracestate` properties to a message's schema.
fn add_trace_context(message: &mut Value) {
    if let Some(Value::Object(properties)) = message.get_mut("properties") {
        properties.insert(
            "traceparent".into(),
            serde_json::json!({"$ref": "#/$defs/TraceParent"}),
        );
        properties.insert(
            "tracestate".into(),
            serde_json::json!({"$ref": "#/$defs/TraceState"}),
        );
    }
}

/// The schema document: one definition per message (named by its `type`), the value
/// types they share, and `ClientMessage`/`ServerMessage` as the union of each direction.
pub fn protocol_schema() -> Value {
    let mut defs = Map::new();
    for (name, def) in trace_context_defs() {
        defs.insert(name.to_owned(), def);
    }
    let mut directions = Map::new();
    for (direction, schema) in [
        ("ClientMessage", schemars::schema_for!(ClientMessage)),
        ("ServerMessage", schemars::schema_for!(ServerMessage)),
    ] {
        let mut schema = schema.to_value();
        if let Some(Value::Object(shared)) = schema.get_mut("$defs").map(Value::take) {
            defs.extend(shared);
        }
        let description = schema.get("description").cloned().unwrap_or(Value::Null);
        let variants = schema
            .get("oneOf")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut refs = Vec::new();
        for mut variant in variants {
            let Some(name) = variant
                .pointer("/properties/type/const")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            add_trace_context(&mut variant);
            refs.push(serde_json::json!({"$ref": format!("#/$defs/{name}")}));
            defs.insert(name, variant);
        }
        directions.insert(
            direction.to_owned(),
            serde_json::json!({"description": description, "oneOf": refs}),
        );
    }
    defs.extend(directions);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.invalid/payments.v1/protocol.schema.json",
        "title": "payments.v1",
        "description": "The messages of the Orders <-> Payments WebSocket protocol, one JSON object per text frame. Unknown fields are ignored.",
        "$defs": defs,
    })
}
