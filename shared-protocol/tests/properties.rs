//! Properties of the wire format, over generated messages and generated garbage
//! (proptest): encoding then decoding is the identity for every message of both
//! directions, with or without a trace context, and decoding never panics, whatever
//! the text.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use shared_protocol::{
    Amount, CancelReason, ClientMessage, Currency, DecodeError, ErrorCode, EventId,
    MAX_MESSAGE_BYTES, MAX_TRACESTATE_LEN, OrderId, PaymentId, PaymentOutcome, ServerMessage,
    TraceContext, decode, decode_traced, encode, encode_traced,
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

/// A valid `traceparent`: mostly version 00, sometimes a later version with more after it.
fn traceparent() -> impl Strategy<Value = String> {
    let ids = (1..=u128::MAX, 1..=u64::MAX, any::<u8>());
    prop_oneof![
        3 => ids.clone().prop_map(|(trace, parent, flags)| format!("00-{trace:032x}-{parent:016x}-{flags:02x}")),
        1 => (1u8..=0xfe, ids, proptest::option::of("-[ -~]{0,20}")).prop_map(
            |(version, (trace, parent, flags), rest)| {
                format!("{version:02x}-{trace:032x}-{parent:016x}-{flags:02x}{}", rest.unwrap_or_default())
            }
        ),
    ]
}

/// A valid `tracestate`: printable ASCII, up to the limit.
fn tracestate() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{1,64}", "[a-z0-9=,]{1,512}",]
}

fn trace_context() -> impl Strategy<Value = TraceContext> {
    (traceparent(), proptest::option::of(tracestate())).prop_map(|(parent, state)| {
        TraceContext::parse(&parent, state.as_deref()).expect("generated valid")
    })
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
                    Just("traceparent".to_owned()),
                    Just("tracestate".to_owned()),
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

    #[test]
    fn every_client_message_survives_encode_traced_then_decode_traced(
        message in client_message(),
        trace in proptest::option::of(trace_context()),
    ) {
        let text = encode_traced(&message, trace.as_ref());
        prop_assert_eq!(decode_traced::<ClientMessage>(&text).expect("decodes"), (message.clone(), trace));
        // A peer on the previous release reads the same message.
        prop_assert_eq!(decode::<ClientMessage>(&text).expect("decodes"), message);
    }

    #[test]
    fn every_server_message_survives_encode_traced_then_decode_traced(
        message in server_message(),
        trace in proptest::option::of(trace_context()),
    ) {
        let text = encode_traced(&message, trace.as_ref());
        prop_assert_eq!(decode_traced::<ServerMessage>(&text).expect("decodes"), (message.clone(), trace));
        prop_assert_eq!(decode::<ServerMessage>(&text).expect("decodes"), message);
    }

    #[test]
    fn encode_traced_without_a_context_is_encode(client in client_message(), server in server_message()) {
        prop_assert_eq!(encode_traced(&client, None), encode(&client));
        prop_assert_eq!(encode_traced(&server, None), encode(&server));
    }

    #[test]
    fn decode_traced_decodes_any_text_as_decode_does(text in any::<String>()) {
        prop_assert_eq!(decode_traced::<ClientMessage>(&text).map(|(m, _)| m), decode::<ClientMessage>(&text));
        prop_assert_eq!(decode_traced::<ServerMessage>(&text).map(|(m, _)| m), decode::<ServerMessage>(&text));
    }

    #[test]
    fn decode_traced_decodes_near_messages_as_decode_does(
        text in almost_a_message(),
        traceparent in json(),
        tracestate in json(),
    ) {
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
        value["traceparent"] = traceparent;
        value["tracestate"] = tracestate;
        let text = value.to_string();
        prop_assert_eq!(decode_traced::<ClientMessage>(&text).map(|(m, _)| m), decode::<ClientMessage>(&text));
        prop_assert_eq!(decode_traced::<ServerMessage>(&text).map(|(m, _)| m), decode::<ServerMessage>(&text));
    }

    #[test]
    fn a_valid_traceparent_parses_to_its_first_55_characters(parent in traceparent(), state in proptest::option::of(tracestate())) {
        let trace = TraceContext::parse(&parent, state.as_deref()).expect("valid");
        prop_assert_eq!(trace.traceparent(), &parent[..55]);
        prop_assert_eq!(trace.tracestate(), state.as_deref());
    }

    #[test]
    fn an_upper_cased_traceparent_is_rejected(parent in traceparent()) {
        let upper = parent[..55].to_ascii_uppercase();
        prop_assume!(upper != parent[..55]);
        prop_assert_eq!(TraceContext::parse(&upper, None), None);
    }

    #[test]
    fn a_version_00_traceparent_of_another_length_is_rejected(parent in traceparent(), cut in 0usize..55, extra in "[0-9a-f-]{1,8}") {
        prop_assume!(parent.starts_with("00-"));
        prop_assert_eq!(TraceContext::parse(&parent[..cut], None), None);
        prop_assert_eq!(TraceContext::parse(&format!("{parent}{extra}"), None), None);
    }

    #[test]
    fn parsing_any_trace_context_never_panics_and_keeps_only_valid_text(parent in any::<String>(), state in proptest::option::of(any::<String>())) {
        if let Some(trace) = TraceContext::parse(&parent, state.as_deref()) {
            prop_assert_eq!(trace.traceparent().len(), 55);
            prop_assert!(parent.starts_with(trace.traceparent()));
            if let Some(kept) = trace.tracestate() {
                prop_assert!(kept.len() <= MAX_TRACESTATE_LEN);
                prop_assert!(kept.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            }
        }
    }

    #[test]
    fn a_tracestate_over_the_limit_is_dropped(parent in traceparent(), len in (MAX_TRACESTATE_LEN + 1)..2048) {
        let trace = TraceContext::parse(&parent, Some(&"a".repeat(len))).expect("traceparent kept");
        prop_assert_eq!(trace.tracestate(), None);
    }
}
