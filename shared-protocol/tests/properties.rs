//! Properties of the wire format, over generated messages and generated garbage
//! (proptest): encoding then decoding is the identity for every message of both
//! directions, and decoding never panics, whatever the text.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use shared_protocol::{
    Amount, CancelReason, ClientMessage, Currency, DecodeError, ErrorCode, EventId,
    MAX_MESSAGE_BYTES, OrderId, PaymentId, PaymentOutcome, ServerMessage, decode, encode,
};

fn order_id() -> impl Strategy<Value = OrderId> {
    any::<u128>().prop_map(|n| OrderId(uuid::Uuid::from_u128(n)))
}

fn payment_id() -> impl Strategy<Value = PaymentId> {
    any::<u128>().prop_map(|n| PaymentId(uuid::Uuid::from_u128(n)))
}

fn amount() -> impl Strategy<Value = Amount> {
    (1..=i64::MAX).prop_map(|n| Amount::new(n).expect("positive"))
}

fn currency() -> impl Strategy<Value = Currency> {
    proptest::sample::select(Currency::all())
}

/// Any text: ASCII, escapes, quotes, emoji, control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[\\\\\"\\u{0}-\\u{1f}]{0,10}",
        any::<String>().prop_map(|s| s.chars().take(60).collect()),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970 to 2100, to the nanosecond.
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).expect("in range"))
}

fn reason() -> impl Strategy<Value = CancelReason> {
    prop_oneof![
        Just(CancelReason::Customer),
        Just(CancelReason::Expired),
        Just(CancelReason::OrdersCancelled),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::MalformedMessage),
        Just(ErrorCode::UnknownType),
        Just(ErrorCode::UnknownOrder),
        Just(ErrorCode::UnknownMethod),
        Just(ErrorCode::Conflict),
        Just(ErrorCode::Internal),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (order_id(), amount(), currency()).prop_map(|(order_id, amount, currency)| {
            ClientMessage::InitiatePayment {
                order_id,
                amount,
                currency,
            }
        }),
        (order_id(), text())
            .prop_map(|(order_id, method)| ClientMessage::SelectPaymentMethod { order_id, method }),
        order_id().prop_map(|order_id| ClientMessage::CancelPayment { order_id }),
        any::<i64>().prop_map(|n| ClientMessage::Ack {
            event_id: EventId(n)
        }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (order_id(), proptest::collection::vec(text(), 1..5))
            .prop_map(|(order_id, methods)| ServerMessage::PaymentMethods { order_id, methods }),
        (order_id(), payment_id(), text(), instant()).prop_map(
            |(order_id, payment_id, url, expires_at)| ServerMessage::PaymentPage {
                order_id,
                payment_id,
                url,
                expires_at,
            }
        ),
        (
            any::<i64>(),
            order_id(),
            payment_id(),
            prop_oneof![Just(PaymentOutcome::Fulfill), Just(PaymentOutcome::Cancel)],
            proptest::option::of(reason()),
        )
            .prop_map(|(event, order_id, payment_id, state, reason)| {
                ServerMessage::PaymentState {
                    event_id: EventId(event),
                    order_id,
                    payment_id,
                    state,
                    reason,
                }
            }),
        (proptest::option::of(order_id()), error_code(), text()).prop_map(
            |(order_id, code, message)| ServerMessage::Error {
                order_id,
                code,
                message,
            }
        ),
    ]
}

/// Arbitrary JSON, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("order_id".to_owned()),
                    Just("event_id".to_owned()),
                    Just("methods".to_owned()),
                    Just("state".to_owned()),
                    text(),
                ],
                inner,
                0..8
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object with one of the protocol's `type`s and arbitrary other fields: the
/// inputs closest to valid messages, where a decoder is likeliest to trip.
fn almost_a_message() -> impl Strategy<Value = String> {
    let types = prop_oneof![
        Just("initiate_payment"),
        Just("select_payment_method"),
        Just("cancel_payment"),
        Just("ack"),
        Just("payment_methods"),
        Just("payment_page"),
        Just("payment_state"),
        Just("error"),
    ];
    (types, json(), json(), json(), json()).prop_map(|(t, a, b, c, d)| {
        serde_json::json!({
            "type": t, "order_id": a, "event_id": b, "methods": c, "amount": d,
            "payment_id": "not-a-uuid", "currency": "eur",
        })
        .to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_client_message_survives_encode_then_decode(message in client_message()) {
        let text = encode(&message);
        prop_assert_eq!(decode::<ClientMessage>(&text).expect("decodes"), message);
    }

    #[test]
    fn every_server_message_survives_encode_then_decode(message in server_message()) {
        let text = encode(&message);
        prop_assert_eq!(decode::<ServerMessage>(&text).expect("decodes"), message);
    }

    #[test]
    fn decoding_any_text_never_panics(text in any::<String>()) {
        let _ = decode::<ClientMessage>(&text);
        let _ = decode::<ServerMessage>(&text);
    }

    #[test]
    fn decoding_any_json_never_panics(value in json()) {
        let text = value.to_string();
        let _ = decode::<ClientMessage>(&text);
        let _ = decode::<ServerMessage>(&text);
    }

    #[test]
    fn decoding_near_messages_never_panics_and_names_valid_order_ids_only(text in almost_a_message()) {
        for error in [
            decode::<ClientMessage>(&text).err(),
            decode::<ServerMessage>(&text).err(),
        ]
        .into_iter()
        .flatten()
        {
            // An error only names an order id that was really one.
            if let Some(order) = error.order_id() {
                prop_assert!(text.contains(&order.to_string()));
            }
        }
    }

    #[test]
    fn anything_over_the_limit_is_refused_unparsed(extra in 1usize..64) {
        let text = " ".repeat(MAX_MESSAGE_BYTES + extra);
        let refused = matches!(decode::<ClientMessage>(&text), Err(DecodeError::TooLarge { .. }));
        prop_assert!(refused);
    }
}
