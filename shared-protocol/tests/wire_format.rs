//! Pins the exact JSON of every message of PROTOCOL.md, both ways, and the decoding rules.

use serde_json::{Value, json};
use shared_protocol::{
    Amount, CancelReason, ClientMessage, Currency, DecodeError, ErrorCode, EventId,
    MAX_MESSAGE_BYTES, Message, OrderId, PaymentId, PaymentOutcome, ServerMessage, decode, encode,
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
