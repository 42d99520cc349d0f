//! Pins the exact JSON of every message of PROTOCOL.md, both ways, and the decoding rules.

use serde_json::{Value, json};
use shared_protocol::{
    Amount, CancelReason, ClientMessage, Currency, DecodeError, ErrorCode, EventId,
    MAX_MESSAGE_BYTES, MAX_TRACESTATE_LEN, Message, OrderId, PaymentId, PaymentOutcome,
    ServerMessage, TraceContext, decode, decode_traced, encode, encode_traced,
};

const ORDER: &str = "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f";
const PAYMENT: &str = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";

fn order() -> OrderId {
    OrderId::parse(ORDER).unwrap()
}

fn payment() -> PaymentId {
    PaymentId::parse(PAYMENT).unwrap()
}

/// Encodes `message`, checks it is exactly `expected`, and decodes `expected` back to `message`.
#[track_caller]
fn pin<M: Message + PartialEq + std::fmt::Debug>(message: M, expected: Value) {
    let encoded: Value = serde_json::from_str(&encode(&message)).unwrap();
    assert_eq!(encoded, expected, "encoding of {message:?}");
    let decoded: M = decode(&expected.to_string()).unwrap();
    assert_eq!(decoded, message, "decoding of {expected}");
}

#[test]
fn initiate_payment() {
    pin(
        ClientMessage::InitiatePayment {
            order_id: order(),
            amount: Amount::new(1999).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
        },
        json!({"type": "initiate_payment", "order_id": ORDER, "amount": 1999, "currency": "EUR"}),
    );
}

#[test]
fn select_payment_method() {
    pin(
        ClientMessage::SelectPaymentMethod {
            order_id: order(),
            method: "credit_card".into(),
        },
        json!({"type": "select_payment_method", "order_id": ORDER, "method": "credit_card"}),
    );
}

#[test]
fn cancel_payment() {
    pin(
        ClientMessage::CancelPayment { order_id: order() },
        json!({"type": "cancel_payment", "order_id": ORDER}),
    );
}

#[test]
fn ack() {
    pin(
        ClientMessage::Ack {
            event_id: EventId(42),
        },
        json!({"type": "ack", "event_id": 42}),
    );
}

#[test]
fn payment_methods() {
    pin(
        ServerMessage::PaymentMethods {
            order_id: order(),
            methods: vec![
                "credit_card".into(),
                "paypal".into(),
                "bank_transfer".into(),
            ],
        },
        json!({"type": "payment_methods", "order_id": ORDER,
               "methods": ["credit_card", "paypal", "bank_transfer"]}),
    );
}

#[test]
fn payment_page() {
    pin(
        ServerMessage::PaymentPage {
            order_id: order(),
            payment_id: payment(),
            url: format!("http://127.0.0.1:8081/pay/{PAYMENT}"),
            expires_at: "2026-11-25T10:15:00Z".parse().unwrap(),
        },
        json!({"type": "payment_page", "order_id": ORDER, "payment_id": PAYMENT,
               "url": format!("http://127.0.0.1:8081/pay/{PAYMENT}"),
               "expires_at": "2026-11-25T10:15:00Z"}),
    );
}

#[test]
fn payment_state_fulfill_has_no_reason() {
    pin(
        ServerMessage::PaymentState {
            event_id: EventId(7),
            order_id: order(),
            payment_id: payment(),
            state: PaymentOutcome::Fulfill,
            reason: None,
        },
        json!({"type": "payment_state", "event_id": 7, "order_id": ORDER,
               "payment_id": PAYMENT, "state": "FULFILL"}),
    );
}

#[test]
fn payment_state_cancel_with_each_reason() {
    for (reason, text) in [
        (CancelReason::Customer, "customer"),
        (CancelReason::Expired, "expired"),
        (CancelReason::OrdersCancelled, "orders_cancelled"),
    ] {
        pin(
            ServerMessage::PaymentState {
                event_id: EventId(8),
                order_id: order(),
                payment_id: payment(),
                state: PaymentOutcome::Cancel,
                reason: Some(reason),
            },
            json!({"type": "payment_state", "event_id": 8, "order_id": ORDER,
                   "payment_id": PAYMENT, "state": "CANCEL", "reason": text}),
        );
        assert_eq!(CancelReason::parse(text), Some(reason));
        assert_eq!(reason.as_str(), text);
    }
}

#[test]
fn a_null_reason_is_no_reason() {
    let msg: ServerMessage = decode(
        &json!({"type": "payment_state", "event_id": 8, "order_id": ORDER,
                "payment_id": PAYMENT, "state": "FULFILL", "reason": null})
        .to_string(),
    )
    .unwrap();
    assert!(matches!(
        msg,
        ServerMessage::PaymentState { reason: None, .. }
    ));
}

#[test]
fn error_with_and_without_order() {
    for (code, text) in [
        (ErrorCode::MalformedMessage, "malformed_message"),
        (ErrorCode::UnknownType, "unknown_type"),
        (ErrorCode::UnknownOrder, "unknown_order"),
        (ErrorCode::UnknownMethod, "unknown_method"),
        (ErrorCode::Conflict, "conflict"),
        (ErrorCode::Internal, "internal"),
    ] {
        pin(
            ServerMessage::error(Some(order()), code, "why"),
            json!({"type": "error", "order_id": ORDER, "code": text, "message": "why"}),
        );
        assert_eq!(code.as_str(), text);
    }
    pin(
        ServerMessage::error(None, ErrorCode::MalformedMessage, "not JSON"),
        json!({"type": "error", "order_id": null, "code": "malformed_message", "message": "not JSON"}),
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let msg: ClientMessage = decode(
        &json!({"type": "cancel_payment", "order_id": ORDER, "trace": {"x": 1}, "v": 2})
            .to_string(),
    )
    .unwrap();
    assert_eq!(msg, ClientMessage::CancelPayment { order_id: order() });
    let msg: ServerMessage = decode(
        &json!({"type": "payment_methods", "order_id": ORDER, "methods": ["paypal"], "extra": true})
            .to_string(),
    )
    .unwrap();
    assert_eq!(msg.order_id(), Some(order()));
}

#[test]
fn an_unknown_type_is_not_a_malformed_message() {
    let err = decode::<ClientMessage>(&json!({"type": "refund", "order_id": ORDER}).to_string())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
    assert_eq!(err.order_id(), Some(order()));
    assert!(matches!(err, DecodeError::UnknownType { ref type_name, .. } if type_name == "refund"));
    // A server message type is unknown in the client direction, and the other way round.
    let err =
        decode::<ServerMessage>(&json!({"type": "ack", "event_id": 1}).to_string()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
}

#[test]
fn bad_shapes_are_malformed() {
    let cases = [
        "not json",
        "[1,2]",
        "\"initiate_payment\"",
        r#"{"order_id": "x"}"#,
        r#"{"type": 5}"#,
        r#"{"type": "initiate_payment", "order_id": "not-a-uuid", "amount": 1, "currency": "EUR"}"#,
        r#"{"type": "initiate_payment", "amount": 1, "currency": "EUR"}"#,
        r#"{"type": "ack", "event_id": "7"}"#,
    ];
    for text in cases {
        let err = decode::<ClientMessage>(text).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedMessage, "{text}: {err}");
    }
    for (amount, currency) in [
        (json!(0), json!("EUR")),
        (json!(-1), json!("EUR")),
        (json!(1.5), json!("EUR")),
        (json!(1), json!("eur")),
        (json!(1), json!("EURO")),
    ] {
        let text = json!({"type": "initiate_payment", "order_id": ORDER,
                          "amount": amount, "currency": currency})
        .to_string();
        let err = decode::<ClientMessage>(&text).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedMessage, "{text}");
        assert_eq!(
            err.order_id(),
            Some(order()),
            "a malformed frame still names its order"
        );
    }
    let empty = json!({"type": "payment_methods", "order_id": ORDER, "methods": []}).to_string();
    assert_eq!(
        decode::<ServerMessage>(&empty).unwrap_err().code(),
        ErrorCode::MalformedMessage
    );
}

#[test]
fn text_over_64_kib_is_refused_unparsed() {
    let padding = "x".repeat(MAX_MESSAGE_BYTES);
    let text = json!({"type": "cancel_payment", "order_id": ORDER, "pad": padding}).to_string();
    assert!(text.len() > MAX_MESSAGE_BYTES);
    let err = decode::<ClientMessage>(&text).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { len } if len == text.len()));
    assert_eq!(err.code(), ErrorCode::MalformedMessage);

    // Exactly at the limit is still fine.
    let base = json!({"type": "cancel_payment", "order_id": ORDER, "pad": ""}).to_string();
    let text = json!({"type": "cancel_payment", "order_id": ORDER,
                      "pad": "x".repeat(MAX_MESSAGE_BYTES - base.len())})
    .to_string();
    assert_eq!(text.len(), MAX_MESSAGE_BYTES);
    assert!(decode::<ClientMessage>(&text).is_ok());
}

#[test]
fn type_names_match_the_wire() {
    let msg = ClientMessage::Ack {
        event_id: EventId(1),
    };
    let value: Value = serde_json::from_str(&encode(&msg)).unwrap();
    assert_eq!(value["type"], msg.type_name());
    assert!(ClientMessage::TYPES.contains(&msg.type_name()));
}

#[test]
fn an_outcome_names_itself_as_the_wire_does() {
    for outcome in [PaymentOutcome::Fulfill, PaymentOutcome::Cancel] {
        assert_eq!(
            serde_json::to_value(outcome).unwrap(),
            serde_json::json!(outcome.as_str())
        );
    }
}

// Trace context (W3C `traceparent` and `tracestate`, optional on every message).

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// Orders' messages exactly as PROTOCOL.md gives them, as a peer on the previous
/// release sends them: no trace fields.
fn old_client_messages() -> Vec<(&'static str, ClientMessage)> {
    vec![
        (
            r#"{"type":"initiate_payment","order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f","amount":1999,"currency":"EUR"}"#,
            ClientMessage::InitiatePayment {
                order_id: order(),
                amount: Amount::new(1999).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
            },
        ),
        (
            r#"{"type":"select_payment_method","order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f","method":"credit_card"}"#,
            ClientMessage::SelectPaymentMethod {
                order_id: order(),
                method: "credit_card".into(),
            },
        ),
        (
            r#"{"type":"cancel_payment","order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f"}"#,
            ClientMessage::CancelPayment { order_id: order() },
        ),
        (
            r#"{"type":"ack","event_id":42}"#,
            ClientMessage::Ack {
                event_id: EventId(42),
            },
        ),
    ]
}

/// Payments' messages exactly as PROTOCOL.md gives them, without trace fields.
fn old_server_messages() -> Vec<(&'static str, ServerMessage)> {
    vec![
        (
            r#"{"type":"payment_methods","order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f","methods":["credit_card","paypal","bank_transfer"]}"#,
            ServerMessage::PaymentMethods {
                order_id: order(),
                methods: vec![
                    "credit_card".into(),
                    "paypal".into(),
                    "bank_transfer".into(),
                ],
            },
        ),
        (
            r#"{"type":"payment_page","order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f","payment_id":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","url":"http://127.0.0.1:8081/pay/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","expires_at":"2026-11-25T10:15:00Z"}"#,
            ServerMessage::PaymentPage {
                order_id: order(),
                payment_id: payment(),
                url: format!("http://127.0.0.1:8081/pay/{PAYMENT}"),
                expires_at: "2026-11-25T10:15:00Z".parse().unwrap(),
            },
        ),
        (
            r#"{"type":"payment_state","event_id":7,"order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f","payment_id":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","state":"FULFILL"}"#,
            ServerMessage::PaymentState {
                event_id: EventId(7),
                order_id: order(),
                payment_id: payment(),
                state: PaymentOutcome::Fulfill,
                reason: None,
            },
        ),
        (
            r#"{"type":"payment_state","event_id":8,"order_id":"7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f","payment_id":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","state":"CANCEL","reason":"expired"}"#,
            ServerMessage::PaymentState {
                event_id: EventId(8),
                order_id: order(),
                payment_id: payment(),
                state: PaymentOutcome::Cancel,
                reason: Some(CancelReason::Expired),
            },
        ),
        (
            r#"{"type":"error","order_id":null,"code":"malformed_message","message":"not JSON"}"#,
            ServerMessage::error(None, ErrorCode::MalformedMessage, "not JSON"),
        ),
    ]
}

/// `text` (a JSON object) with `fields` added at its top level.
fn with_fields(text: &str, fields: Value) -> String {
    let mut value: Value = serde_json::from_str(text).unwrap();
    let (Value::Object(object), Value::Object(fields)) = (&mut value, fields) else {
        panic!("objects expected");
    };
    object.extend(fields);
    value.to_string()
}

/// Runs `check` on every old message of both directions, each decoded with its direction.
fn for_each_old_message(
    mut check_client: impl FnMut(&str, &ClientMessage),
    mut check_server: impl FnMut(&str, &ServerMessage),
) {
    for (text, message) in old_client_messages() {
        check_client(text, &message);
    }
    for (text, message) in old_server_messages() {
        check_server(text, &message);
    }
}

#[track_caller]
fn assert_traced<M: Message + PartialEq + std::fmt::Debug>(
    text: &str,
    message: &M,
    trace: Option<TraceContext>,
) {
    let (decoded, decoded_trace) = decode_traced::<M>(text).expect(text);
    assert_eq!(&decoded, message, "{text}");
    assert_eq!(decoded_trace, trace, "{text}");
    // And the previous release's decoder reads the same message from it.
    assert_eq!(&decode::<M>(text).expect(text), message, "{text}");
}

#[test]
fn old_messages_decode_traced_to_the_same_message_and_no_context() {
    for_each_old_message(
        |text, message| assert_traced(text, message, None),
        |text, message| assert_traced(text, message, None),
    );
}

#[test]
fn old_messages_encode_as_before() {
    for (text, message) in old_client_messages() {
        assert_eq!(encode(&message), text);
        assert_eq!(encode_traced(&message, None), text);
    }
    for (text, message) in old_server_messages() {
        assert_eq!(encode(&message), text);
        assert_eq!(encode_traced(&message, None), text);
    }
}

#[test]
fn a_valid_trace_context_is_read_from_every_message() {
    let both = TraceContext::parse(TRACEPARENT, Some(TRACESTATE));
    let parent_only = TraceContext::parse(TRACEPARENT, None);
    assert!(both.is_some() && parent_only.is_some());
    let fields = json!({"traceparent": TRACEPARENT, "tracestate": TRACESTATE});
    let parent = json!({"traceparent": TRACEPARENT});
    for_each_old_message(
        |text, message| {
            assert_traced(&with_fields(text, fields.clone()), message, both.clone());
            assert_traced(
                &with_fields(text, parent.clone()),
                message,
                parent_only.clone(),
            );
        },
        |text, message| {
            assert_traced(&with_fields(text, fields.clone()), message, both.clone());
            assert_traced(
                &with_fields(text, parent.clone()),
                message,
                parent_only.clone(),
            );
        },
    );
}

#[test]
fn a_malformed_or_missing_traceparent_is_ignored_and_the_message_still_works() {
    let bad_traceparents = [
        // Wrong length: short, long, and a version 00 that goes on.
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011"),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"),
        json!(""),
        // Upper-case hex.
        json!("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
        // All zeros: trace id, parent id, everything.
        json!("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        json!("00-00000000000000000000000000000000-0000000000000000-00"),
        // Version ff.
        json!("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        // Not a string at all.
        json!(42),
        json!(null),
        json!(true),
        json!(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]),
        json!({"version": "00"}),
    ];
    for traceparent in bad_traceparents {
        let fields = json!({"traceparent": traceparent, "tracestate": TRACESTATE});
        for_each_old_message(
            |text, message| assert_traced(&with_fields(text, fields.clone()), message, None),
            |text, message| assert_traced(&with_fields(text, fields.clone()), message, None),
        );
    }
    // A tracestate without any traceparent is no context either.
    let fields = json!({"tracestate": TRACESTATE});
    for_each_old_message(
        |text, message| assert_traced(&with_fields(text, fields.clone()), message, None),
        |text, message| assert_traced(&with_fields(text, fields.clone()), message, None),
    );
}

#[test]
fn a_bad_tracestate_is_dropped_and_the_traceparent_kept() {
    let parent_only = TraceContext::parse(TRACEPARENT, None);
    for tracestate in [
        json!(7),
        json!(null),
        json!(["rojo=1"]),
        json!("x".repeat(MAX_TRACESTATE_LEN + 1)),
        json!("rojo=\u{1}"),
        json!("rojo=\n"),
        json!(""),
    ] {
        let fields = json!({"traceparent": TRACEPARENT, "tracestate": tracestate});
        for_each_old_message(
            |text, message| {
                assert_traced(
                    &with_fields(text, fields.clone()),
                    message,
                    parent_only.clone(),
                )
            },
            |text, message| {
                assert_traced(
                    &with_fields(text, fields.clone()),
                    message,
                    parent_only.clone(),
                )
            },
        );
    }
}

#[test]
fn an_old_decoder_accepts_a_message_carrying_trace_context() {
    // What a peer on the previous release runs: `decode`, which ignores unknown fields.
    let trace = TraceContext::parse(TRACEPARENT, Some(TRACESTATE)).unwrap();
    for (_, message) in old_client_messages() {
        let text = encode_traced(&message, Some(&trace));
        assert_eq!(decode::<ClientMessage>(&text).expect(&text), message);
    }
    for (_, message) in old_server_messages() {
        let text = encode_traced(&message, Some(&trace));
        assert_eq!(decode::<ServerMessage>(&text).expect(&text), message);
    }
}

#[test]
fn encode_traced_adds_the_fields_at_the_top_level() {
    let message = ClientMessage::CancelPayment { order_id: order() };
    let both = TraceContext::parse(TRACEPARENT, Some(TRACESTATE)).unwrap();
    let text = encode_traced(&message, Some(&both));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"type": "cancel_payment", "order_id": ORDER,
               "traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    );
    assert_eq!(
        decode_traced::<ClientMessage>(&text).unwrap(),
        (message.clone(), Some(both.clone()))
    );

    let parent_only = TraceContext::parse(TRACEPARENT, None).unwrap();
    let text = encode_traced(&message, Some(&parent_only));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"type": "cancel_payment", "order_id": ORDER, "traceparent": TRACEPARENT})
    );
    assert_eq!(
        decode_traced::<ClientMessage>(&text).unwrap(),
        (message, Some(parent_only))
    );

    // Optional fields of the message itself keep their rules when flattened.
    let (_, fulfill) = old_server_messages().remove(2);
    let value: Value = serde_json::from_str(&encode_traced(&fulfill, Some(&both))).unwrap();
    assert!(value.get("reason").is_none(), "{value}");
}

#[test]
fn decode_traced_fails_exactly_as_decode_does() {
    let traced = |text: &str| {
        serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .map(|_| with_fields(text, json!({"traceparent": TRACEPARENT})))
            .unwrap_or_else(|| text.to_owned())
    };
    let cases = [
        "not json",
        "[1,2]",
        r#"{"order_id": "x"}"#,
        r#"{"type": 5}"#,
        r#"{"type": "refund", "order_id": "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f"}"#,
        r#"{"type": "payment_state", "event_id": 1}"#,
        r#"{"type": "initiate_payment", "order_id": "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f", "amount": 0, "currency": "EUR"}"#,
        r#"{"type": "ack", "event_id": "7"}"#,
    ];
    for text in cases {
        for text in [text.to_owned(), traced(text)] {
            assert_eq!(
                decode_traced::<ClientMessage>(&text).unwrap_err(),
                decode::<ClientMessage>(&text).unwrap_err(),
                "{text}"
            );
        }
    }
    let padding = "x".repeat(MAX_MESSAGE_BYTES);
    let text = json!({"type": "cancel_payment", "order_id": ORDER,
                      "traceparent": TRACEPARENT, "pad": padding})
    .to_string();
    assert!(matches!(
        decode_traced::<ClientMessage>(&text),
        Err(DecodeError::TooLarge { .. })
    ));
}
