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

mod ids;
mod messages;
pub mod schema;

pub use ids::{Amount, Currency, EventId, IdError, OrderId, PaymentId};
pub use messages::{
    CancelReason, ClientMessage, ErrorCode, Message, PaymentOutcome, ServerMessage,
};

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
    serde_json::from_value(value).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
        order_id,
    })
}

/// Encodes a message as the text of one frame.
pub fn encode<M: Message>(message: &M) -> String {
    // The message types are plain data (strings, integers, uuids): serialising them cannot fail.
    serde_json::to_string(message).expect("protocol messages always serialise")
}
