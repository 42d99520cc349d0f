//! Test tooling for the workspace.
//!
//! - [`FakeServer`] and the rest of the generic fake WebSocket server come from the
//!   `fake-ws-server` crate, re-exported here; it knows nothing of Payments or SQL.
//! - [`payments::FakePayments`]: the fake Payments service built on it.
//! - [`postgres::TestDatabase`]: a fresh PostgreSQL database per test.
//! - [`process`]: for tests that run a service's binary.
//! - [`logs::CapturedLogs`]: log lines captured in memory.
//! - [`http`]: raw HTTP requests, for paths and methods a client library would not send.
//! - [`tls`]: a CA and the certificates it signs, as PEM files, for TLS tests.
//! - [`otlp::OtlpReceiver`]: an in-process OTLP/HTTP receiver of the services' traces.

pub mod http;
pub mod logs;
pub mod otlp;
pub mod payments;
pub mod postgres;
pub mod process;
pub mod tls;

pub use fake_ws_server::{
    Attempt, AttemptOutcome, Closed, Codec, Connection, DEFAULT_DEADLINE, Direction, FakeServer,
    FakeServerBuilder, FrameKind, HandshakeRequest, HandshakeRule, InvalidFrame, JsonCodec,
    Matcher, Payload, Response, Rule, SendError, Times, TranscriptEntry,
};
/// Record and replay (fake-ws-server's README, "Record and replay"): a proxy that
/// records Orders talking to the real Payments, and the recording played back as a fake.
pub use fake_ws_server::{RecordedKind, Recording, RecordingProxy, Replay, Sender};
