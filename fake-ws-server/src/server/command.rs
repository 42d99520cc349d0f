//! [`Command`]: what a handle asks a connection's task to do. The handles
//! ([`Connection`](super::Connection), and the [`FakeServer`](super::FakeServer)
//! stopping) send commands, a rule's [`Response`](crate::Response) is run as commands,
//! and the connection's task (`connection_task`) carries them out; the channel's sender
//! is kept in the shared state (`state`), so neither side needs the other.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::closed::SendError;
use super::faults::Fault;
use crate::codec::Payload;

/// What a [`Connection`](super::Connection) handle (or the server, stopping) asks a
/// connection's task to do; each carries a sender the task answers once it is done.
pub(super) enum Command {
    /// Write a frame; answers whether it was written.
    Send(Message, oneshot::Sender<Result<(), SendError>>),
    /// Write a close frame with this code and reason; answers whether it was written.
    Close(u16, String, oneshot::Sender<Result<(), SendError>>),
    Abort(oneshot::Sender<()>),
    /// Read from the socket (`true`, which also answers pings again) or not (`false`).
    Read(bool, oneshot::Sender<()>),
    /// Go on reading, but answer no ping (`true`), or answer pings again (`false`).
    Stall(bool, oneshot::Sender<()>),
    /// Ping the client every so often (`None`: stop).
    PingEvery(Option<Duration>, oneshot::Sender<()>),
    /// Ping the client once with this payload; answers with the ping's transcript entry.
    Ping(Vec<u8>, oneshot::Sender<usize>),
    /// Send a message in fragments of at most this many bytes.
    Fragmented(Payload, usize, oneshot::Sender<()>),
    /// Write a protocol fault as raw bytes (`faults`); answers whether it was written.
    Fault(Fault, oneshot::Sender<Result<(), SendError>>),
}
