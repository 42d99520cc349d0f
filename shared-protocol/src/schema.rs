//! JSON Schema of every message, generated from the types (schemars), for peers
//! written in other languages. `docs/protocol.schema.json` is this output, and the
//! AsyncAPI document `docs/asyncapi.yaml` points into it; a test fails when either
//! drifts from the code.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::{Amount, ClientMessage, Currency, EventId, OrderId, PaymentId, ServerMessage};

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

/// The schema document: one definition per message (named by its `type`), the value
/// types they share, and `ClientMessage`/`ServerMessage` as the union of each direction.
pub fn protocol_schema() -> Value {
    let mut defs = Map::new();
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
        for variant in variants {
            let Some(name) = variant
                .pointer("/properties/type/const")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
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
