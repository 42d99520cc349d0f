//! Test tooling for the workspace.
//!
//! - [`FakeServer`]: an in-process WebSocket server for testing any client whose
//!   messages are serde types: start it on a free port, hand its URL to the client,
//!   see every frame, push frames, close or break the connection, stop reading it
//!   (backpressure), script replies.
//! - [`payments::FakePayments`]: the fake Payments service on it.
//! - [`postgres::TestDatabase`]: a fresh PostgreSQL database per test.

mod matcher;
pub mod payments;
pub mod postgres;
mod server;
mod transcript;

pub use matcher::Matcher;
pub use payments::FakePayments;
pub use server::{
    Attempt, AttemptOutcome, Connection, DEFAULT_DEADLINE, Decoder, FakeServer, FakeServerBuilder,
    HandshakeRequest, InvalidFrame, Rule,
};
pub use transcript::{Direction, FrameKind, TranscriptEntry};
