//! The Orders ⇄ Payments protocol, version 1 (`payments.v1`), as Rust types.
//!
//! This crate is the one implementation of `PROTOCOL.md`: one enum per direction
//! ([`ClientMessage`] for Orders → Payments, [`ServerMessage`] for Payments → Orders),
//! newtypes for ids and money, and [`decode`]/[`encode`] with the 64 KiB limit.
//! It does no I/O and needs no runtime, so both services, the test harness and any
//! other Rust peer can share it.
//!
//! Decoding tells apart the three ways a frame can be bad, because the protocol
//! answers them differently: a frame that is too large ([`DecodeError::TooLarge`]),
//! one that is not JSON or has the wrong shape (`malformed_message`), and one whose
//! `type` nobody knows (`unknown_type`).
//!
//! Every message may also carry a W3C Trace Context in two optional top-level fields,
//! `traceparent` and `tracestate` ([`TraceContext`], written by [`encode_traced`] and read
//! by [`decode_traced`]), so that one trace follows an order across the link. A peer that
//! omits them or sends a malformed one is served just the same, and [`decode`] and
//! [`encode`] ignore them.

mod ids;
mod messages;
pub mod schema;
mod trace;

pub use ids::{Amount, Currency, EventId, IdError, OrderId, PaymentId};
pub use messages::{
    CancelReason, ClientMessage, ErrorCode, Message, PaymentOutcome, ServerMessage,
};
pub use trace::{MAX_TRACESTATE_LEN, TraceContext};

/// The WebSocket subprotocol both sides must agree on (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "payments.v1";

/// The largest message (a text frame, or a reassembled fragmented one) either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a text frame could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is over [`MAX_MESSAGE_BYTES`]; it was not parsed at all.
    #[error("message of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge { len: usize },
    /// Not JSON, not an object, no string `type`, or a known `type` with fields of the wrong shape.
    #[error("malformed message: {reason}")]
    Malformed {
        reason: String,
        /// The `order_id` of the frame when it had a valid one, so an error reply can name it.
        order_id: Option<OrderId>,
    },
    /// A well-formed object whose `type` this side does not know.
    #[error("unknown message type {type_name:?}")]
    UnknownType {
        type_name: String,
        order_id: Option<OrderId>,
    },
}

impl DecodeError {
    /// The protocol error code that answers this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::Malformed { .. } => {
                ErrorCode::MalformedMessage
            }
            DecodeError::UnknownType { .. } => ErrorCode::UnknownType,
        }
    }

    /// The order the bad frame was about, if it named one validly.
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            DecodeError::TooLarge { .. } => None,
            DecodeError::Malformed { order_id, .. } | DecodeError::UnknownType { order_id, .. } => {
                *order_id
            }
        }
    }
}

/// Decodes one text frame into a message of direction `M`.
///
/// Unknown fields are ignored; an unknown `type` is [`DecodeError::UnknownType`];
/// anything else that does not fit is [`DecodeError::Malformed`].
pub fn decode<M: Message>(text: &str) -> Result<M, DecodeError> {
    decode_with(text, |_| ()).map(|(message, ())| message)
}

/// Decodes one text frame like [`decode`], and also reads the trace context it carries.
///
/// The message and the errors are exactly [`decode`]'s. The context is `None` when the
/// frame has no `traceparent`, or one that is not a string or not a valid W3C
/// `traceparent`: that never makes the message fail. A `tracestate` that is not a
/// valid string is dropped on its own (see [`TraceContext::parse`]).
pub fn decode_traced<M: Message>(text: &str) -> Result<(M, Option<TraceContext>), DecodeError> {
    decode_with(text, |object| {
        let traceparent = object.get("traceparent")?.as_str()?;
        let tracestate = object.get("tracestate").and_then(serde_json::Value::as_str);
        TraceContext::parse(traceparent, tracestate)
    })
}

/// The one decoder: parses `text` once, checks it as [`decode`] documents, and lets
/// `extra` read what else it needs from the same JSON object before the message takes it.
fn decode_with<M: Message, T>(
    text: &str,
    extra: impl FnOnce(&serde_json::Map<String, serde_json::Value>) -> T,
) -> Result<(M, T), DecodeError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { len: text.len() });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed {
            reason: format!("not JSON: {e}"),
            order_id: None,
        })?;
    let serde_json::Value::Object(object) = &value else {
        return Err(DecodeError::Malformed {
            reason: "not a JSON object".into(),
            order_id: None,
        });
    };
    let order_id = object
        .get("order_id")
        .and_then(|v| v.as_str())
        .and_then(|s| OrderId::parse(s).ok());
    let type_name = match object.get("type") {
        Some(serde_json::Value::String(t)) => t.as_str(),
        Some(_) => {
            return Err(DecodeError::Malformed {
                reason: "field `type` is not a string".into(),
                order_id,
            });
        }
        None => {
            return Err(DecodeError::Malformed {
                reason: "missing field `type`".into(),
                order_id,
            });
        }
    };
    if !M::TYPES.contains(&type_name) {
        return Err(DecodeError::UnknownType {
            type_name: type_name.to_owned(),
            order_id,
        });
    }
    let extra = extra(object);
    let message = serde_json::from_value(value).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
        order_id,
    })?;
    Ok((message, extra))
}

/// Encodes a message as the text of one frame.
pub fn encode<M: Message>(message: &M) -> String {
    // The message types are plain data (strings, integers, uuids): serialising them cannot fail.
    serde_json::to_string(message).expect("protocol messages always serialise")
}

/// Encodes a message like [`encode`], with the trace context as its top-level
/// `traceparent` (and `tracestate`) fields.
///
/// With `trace` `None` the text is exactly [`encode`]'s.
pub fn encode_traced<M: Message>(message: &M, trace: Option<&TraceContext>) -> String {
    /// The message's own fields, then the context's, in one flat object.
    #[derive(serde::Serialize)]
    struct Traced<'a, M> {
        #[serde(flatten)]
        message: &'a M,
        traceparent: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tracestate: Option<&'a str>,
    }
    // Without a context, `encode` itself: no flattening on the path traces are off.
    let Some(trace) = trace else {
        return encode(message);
    };
    let traced = Traced {
        message,
        traceparent: trace.traceparent(),
        tracestate: trace.tracestate(),
    };
    // As for `encode`: plain data, and flattening a struct-like message cannot fail.
    serde_json::to_string(&traced).expect("protocol messages always serialise")
}
