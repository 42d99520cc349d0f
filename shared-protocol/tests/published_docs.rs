//! The published contract under `docs/`: the JSON Schema must be exactly what the types
//! generate, and the AsyncAPI document must name every message and point at it.

use std::path::PathBuf;

use serde_json::Value;
use shared_protocol::{ClientMessage, Message, ServerMessage, schema::protocol_schema};

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

#[test]
fn the_committed_json_schema_is_current() {
    let generated = serde_json::to_string_pretty(&protocol_schema()).unwrap() + "\n";
    let path = docs().join("protocol.schema.json");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `UPDATE_DOCS=1 cargo test -p shared-protocol --test published_docs` and commit it",
        path.display()
    );
}

#[test]
fn the_schema_defines_every_message_with_its_fields() {
    let schema = protocol_schema();
    for name in ClientMessage::TYPES.iter().chain(ServerMessage::TYPES) {
        let def = &schema["$defs"][name];
        assert_eq!(def["properties"]["type"]["const"], *name, "{name}");
        assert!(
            def["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from("type"))
        );
    }
    let initiate = &schema["$defs"]["initiate_payment"];
    let required: Vec<_> = initiate["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in ["order_id", "amount", "currency"] {
        assert!(
            required.contains(&field),
            "{field} not required in {initiate}"
        );
    }
    assert_eq!(schema["$defs"]["Currency"]["pattern"], "^[A-Z]{3}$");
    let codes = schema["$defs"]["Currency"]["enum"].as_array().unwrap();
    assert!(codes.contains(&Value::from("EUR")) && codes.contains(&Value::from("JPY")));
    assert!(!codes.contains(&Value::from("XAU")) && !codes.contains(&Value::from("ABC")));
    assert_eq!(
        schema["$defs"]["payment_methods"]["properties"]["methods"]["minItems"],
        1
    );
    assert_eq!(
        schema["$defs"]["ClientMessage"]["oneOf"]
            .as_array()
            .unwrap()
            .len(),
        ClientMessage::TYPES.len()
    );
    assert_eq!(
        schema["$defs"]["ServerMessage"]["oneOf"]
            .as_array()
            .unwrap()
            .len(),
        ServerMessage::TYPES.len()
    );
}

#[test]
fn every_message_may_carry_an_optional_trace_context() {
    let schema = protocol_schema();
    for name in ClientMessage::TYPES.iter().chain(ServerMessage::TYPES) {
        let def = &schema["$defs"][name];
        assert_eq!(
            def["properties"]["traceparent"]["$ref"], "#/$defs/TraceParent",
            "{name}"
        );
        assert_eq!(
            def["properties"]["tracestate"]["$ref"], "#/$defs/TraceState",
            "{name}"
        );
        let required = def["required"].as_array().unwrap();
        assert!(
            !required.contains(&Value::from("traceparent"))
                && !required.contains(&Value::from("tracestate")),
            "{name}: the trace context must stay optional"
        );
    }
    let traceparent = &schema["$defs"]["TraceParent"];
    assert_eq!(traceparent["type"], "string");
    assert_eq!(
        traceparent["pattern"],
        "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"
    );
    let tracestate = &schema["$defs"]["TraceState"];
    assert_eq!(tracestate["type"], "string");
    assert_eq!(tracestate["maxLength"], shared_protocol::MAX_TRACESTATE_LEN);
}

#[test]
fn the_asyncapi_document_names_every_message_and_its_refs_resolve() {
    let text = std::fs::read_to_string(docs().join("asyncapi.yaml")).unwrap();
    assert!(
        text.starts_with("asyncapi: 3.0.0"),
        "not an AsyncAPI 3 document"
    );
    let schema = protocol_schema();
    for name in ClientMessage::TYPES.iter().chain(ServerMessage::TYPES) {
        let reference = format!("./protocol.schema.json#/$defs/{name}");
        assert!(
            text.contains(&reference),
            "asyncapi.yaml does not reference {reference}"
        );
    }
    // Every reference into the schema file points at a definition that exists.
    for (i, _) in text.match_indices("./protocol.schema.json#/$defs/") {
        let rest = &text[i + "./protocol.schema.json#/$defs/".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            schema["$defs"][&name].is_object(),
            "asyncapi.yaml points at a missing $defs/{name}"
        );
    }
    // The trace context is documented, and shown in an example.
    assert!(text.contains("traceparent: 00-"), "no traceparent example");
    assert!(
        text.contains("`tracestate`"),
        "the trace fields are not described"
    );
}
