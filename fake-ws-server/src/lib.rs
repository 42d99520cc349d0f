#![warn(missing_docs)]
#![doc = include_str!("../README.md")]

#[cfg(feature = "asyncapi")]
mod asyncapi;
mod codec;
mod json;
mod matcher;
mod record;
mod response;
mod server;
mod times;
mod timing;
mod transcript;

#[cfg(feature = "asyncapi")]
pub use asyncapi::{AsyncApi, AsyncApiError};
#[cfg(feature = "cbor")]
pub use codec::CborCodec;
#[cfg(feature = "msgpack")]
pub use codec::MsgPackCodec;
pub use codec::{Codec, JsonCodec, Payload};
#[allow(deprecated)]
pub use json::json_contains;
pub use json::json_includes;
pub use matcher::Matcher;
pub use record::{
    RecordedFrame, RecordedKind, Recording, RecordingError, RecordingProxy, RecordingProxyBuilder,
    Sender,
};
pub use response::Response;
pub use server::Impairment;
pub use server::Replay;
pub use server::{
    Attempt, AttemptOutcome, Closed, Connection, DEFAULT_DEADLINE, DEFAULT_PRIORITY, FakeServer,
    FakeServerBuilder, Fault, HandshakeRequest, HandshakeRule, InvalidFrame, Rule, SendError,
};
pub use times::Times;
pub use timing::{Backoff, Tolerance};
/// Renders a transcript ([`Connection::transcript`]) one frame a line, as failure
/// messages show it.
pub use transcript::render as render_transcript;
pub use transcript::{Direction, FrameKind, TranscriptEntry};

/// The plain WebSocket client that the crate's own tests and test-harness's tests share;
/// not part of the API.
#[doc(hidden)]
pub mod testing;

/// What the crate's macros use; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}
