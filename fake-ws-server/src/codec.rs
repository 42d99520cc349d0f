//! How messages cross the wire: a [`Codec`] turns the payload of a data frame (text or
//! binary) into an `In`, or says why it is not one (a contract violation), and turns an
//! `Out` into a frame's payload.
//!
//! [`JsonCodec`] (JSON in text frames) is the default. With the cargo features `msgpack`
//! and `cbor`, [`MsgPackCodec`] and [`CborCodec`] put MessagePack or CBOR in binary
//! frames. A frame of the other kind is a contract violation only because the codec says
//! so: write your own [`Codec`] to accept both.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Message;

/// The payload of one data frame (a whole message, whatever its fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text frame (UTF-8).
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl Payload {
    /// The frame that carries this payload.
    pub(crate) fn into_message(self) -> Message {
        match self {
            Payload::Text(text) => Message::Text(text.into()),
            Payload::Binary(bytes) => Message::Binary(bytes.into()),
        }
    }
}

/// Decodes what the client sends into `In` and encodes what the fake sends from `Out`.
///
/// Set one with [`FakeServerBuilder::codec`](crate::FakeServerBuilder::codec); the
/// typed layer (`expect`, `recv`, rules, `send`) goes through it, the raw layer
/// (`send_text`, `send_binary`, the transcript) does not.
///
/// # Examples
///
/// A codec that reads JSON from text and binary frames alike:
///
/// ```
/// use fake_ws_server::{Codec, Payload};
///
/// struct JsonAnyFrame;
///
/// impl Codec<serde_json::Value, serde_json::Value> for JsonAnyFrame {
///     fn decode(&self, payload: &Payload) -> Result<serde_json::Value, String> {
///         let bytes = match payload {
///             Payload::Text(text) => text.as_bytes(),
///             Payload::Binary(bytes) => bytes,
///         };
///         serde_json::from_slice(bytes).map_err(|e| e.to_string())
///     }
///
///     fn encode(&self, message: &serde_json::Value) -> Result<Payload, String> {
///         Ok(Payload::Text(message.to_string()))
///     }
/// }
/// ```
pub trait Codec<In, Out>: Send + Sync + 'static {
    /// The message in a data frame from the client, or why it is not one: the error
    /// becomes a contract violation in the transcript and fails the test unless taken
    /// with `expect_invalid`.
    fn decode(&self, payload: &Payload) -> Result<In, String>;

    /// The frame payload that carries `message` to the client.
    fn encode(&self, message: &Out) -> Result<Payload, String>;
}

/// JSON in text frames, with `serde_json` (the default). A binary frame is a contract
/// violation.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<In, Out> Codec<In, Out> for JsonCodec
where
    In: DeserializeOwned,
    Out: Serialize,
{
    fn decode(&self, payload: &Payload) -> Result<In, String> {
        match payload {
            Payload::Text(text) => serde_json::from_str(text).map_err(|e| e.to_string()),
            Payload::Binary(_) => Err("a binary frame; JSON comes in text frames".into()),
        }
    }

    fn encode(&self, message: &Out) -> Result<Payload, String> {
        serde_json::to_string(message)
            .map(Payload::Text)
            .map_err(|e| e.to_string())
    }
}

/// MessagePack in binary frames, with `rmp-serde` (cargo feature `msgpack`). Structs
/// are encoded as maps with field names (`rmp_serde::to_vec_named`), which is what
/// other MessagePack implementations and serde's tagged enums expect; decoding takes
/// maps and arrays. A text frame is a contract violation.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPackCodec;

#[cfg(feature = "msgpack")]
impl<In, Out> Codec<In, Out> for MsgPackCodec
where
    In: DeserializeOwned,
    Out: Serialize,
{
    fn decode(&self, payload: &Payload) -> Result<In, String> {
        match payload {
            Payload::Binary(bytes) => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
            Payload::Text(_) => Err("a text frame; MessagePack comes in binary frames".into()),
        }
    }

    fn encode(&self, message: &Out) -> Result<Payload, String> {
        rmp_serde::to_vec_named(message)
            .map(Payload::Binary)
            .map_err(|e| e.to_string())
    }
}

/// CBOR in binary frames, with `ciborium` (cargo feature `cbor`). A text frame is a
/// contract violation.
#[cfg(feature = "cbor")]
#[derive(Debug, Clone, Copy, Default)]
pub struct CborCodec;

#[cfg(feature = "cbor")]
impl<In, Out> Codec<In, Out> for CborCodec
where
    In: DeserializeOwned,
    Out: Serialize,
{
    fn decode(&self, payload: &Payload) -> Result<In, String> {
        match payload {
            Payload::Binary(bytes) => {
                ciborium::from_reader(bytes.as_slice()).map_err(|e| e.to_string())
            }
            Payload::Text(_) => Err("a text frame; CBOR comes in binary frames".into()),
        }
    }

    fn encode(&self, message: &Out) -> Result<Payload, String> {
        let mut bytes = Vec::new();
        ciborium::into_writer(message, &mut bytes)
            .map(|()| Payload::Binary(bytes))
            .map_err(|e| e.to_string())
    }
}
