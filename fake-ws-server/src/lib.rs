//! An in-process fake WebSocket server for testing WebSocket clients.
//!
//! - [`FakeServer`]: start it on a free port, hand its URL to the client, see every
//!   frame, push frames, close or break the connection, stop reading it
//!   (backpressure), script replies.
//! - [`Matcher`]: what a rule or an expectation looks for in a client's message.
//! - [`TranscriptEntry`]: what a connection carried, both ways, in order.

mod codec;
mod json;
mod matcher;
mod response;
mod server;
mod times;
mod transcript;

#[cfg(feature = "cbor")]
pub use codec::CborCodec;
#[cfg(feature = "msgpack")]
pub use codec::MsgPackCodec;
pub use codec::{Codec, JsonCodec, Payload};
pub use json::json_contains;
pub use matcher::Matcher;
pub use response::Response;
pub use server::{
    Attempt, AttemptOutcome, Closed, Connection, DEFAULT_DEADLINE, DEFAULT_PRIORITY, FakeServer,
    FakeServerBuilder, HandshakeRequest, HandshakeRule, InvalidFrame, Rule, SendError,
};
pub use times::Times;
pub use transcript::{Direction, FrameKind, TranscriptEntry};

/// What the crate's macros use; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}
