//! Protocol faults mid-scenario: [`Fault`], frames RFC 6455 forbids a server to send,
//! which [`Connection::send_fault`] writes to the client as raw bytes.
//!
//! tungstenite writes only valid frames, so a fault goes past it: the connection's
//! task flushes what tungstenite holds, so the fault lands between whole frames, then
//! writes the fault's bytes to the stream under tungstenite (`pongs`), records them
//! in the transcript as [`FrameKind::Raw`] with what they are, and, for
//! [`Fault::TruncatedThenReset`], resets the connection.

use std::fmt;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error;

use super::closed::{Closed, SendError};
use super::command::Command;
use super::connection::Connection;
use super::connection_task::Filtered;
use super::state::Shared;
use crate::transcript::{Direction, FrameKind};

/// A frame that breaks RFC 6455, for [`Connection::send_fault`]: what a buggy or
/// hostile server sends, to test that the client fails the connection instead of
/// taking it in. A client should treat each as a protocol error (tungstenite, for
/// one, returns an error, or answers a forbidden close code with close 1002).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// A text frame whose payload is not UTF-8 (RFC 6455, 5.6, 8.1): the client should
    /// fail the connection (close 1007).
    InvalidUtf8,
    /// A text frame with the three reserved bits set, with no extension negotiated
    /// that would give them a meaning (RFC 6455, 5.2).
    ReservedBits,
    /// A masked text frame: a server must not mask its frames (RFC 6455, 5.1).
    MaskedFrame,
    /// A ping with a 126-byte payload: a control frame carries at most 125 (RFC 6455,
    /// 5.5).
    OversizedControl,
    /// A ping without the FIN bit: control frames must not be fragmented (RFC 6455,
    /// 5.5).
    FragmentedControl,
    /// A close frame with this code, whatever it is: 1005, 1006 and 1015 must never
    /// be sent, 1016 to 2999 are reserved, codes below 1000 and above 4999 are not
    /// defined (RFC 6455, 7.4). An empty close frame is legal, so it is no fault.
    /// tungstenite, as a client, answers a forbidden code with close 1002. The fake's
    /// own WebSocket did not write this close, so it answers the client's close frame
    /// as the first; a client may take that answer for a frame after the close.
    CloseCode(u16),
    /// The header of a 100-byte text frame and only 10 bytes of it, then a reset: a
    /// server that crashed mid-frame. The connection ends as
    /// [`Closed::Aborted`](super::Closed::Aborted).
    TruncatedThenReset,
    /// These bytes, as they are: any other fault.
    Raw(Vec<u8>),
}

impl Fault {
    /// The bytes on the wire (a server's frames are unmasked).
    fn bytes(&self) -> Vec<u8> {
        match self {
            Fault::InvalidUtf8 => vec![0x81, 2, 0xc3, 0x28],
            Fault::ReservedBits => vec![0xf1, 2, b'h', b'i'],
            Fault::MaskedFrame => {
                let mask = [0x37, 0xfa, 0x21, 0x3d];
                vec![
                    0x81,
                    0x82,
                    0x37,
                    0xfa,
                    0x21,
                    0x3d,
                    b'h' ^ mask[0],
                    b'i' ^ mask[1],
                ]
            }
            Fault::OversizedControl => [&[0x89, 126, 0, 126][..], &[0; 126]].concat(),
            Fault::FragmentedControl => vec![0x09, 0],
            Fault::CloseCode(code) => [&[0x88, 2][..], &code.to_be_bytes()].concat(),
            Fault::TruncatedThenReset => [&[0x81, 100][..], b"truncated!"].concat(),
            Fault::Raw(bytes) => bytes.clone(),
        }
    }

    /// Whether the connection is reset after the bytes.
    fn resets(&self) -> bool {
        matches!(self, Fault::TruncatedThenReset)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::InvalidUtf8 => f.write_str("a text frame that is not UTF-8"),
            Fault::ReservedBits => f.write_str("a text frame with the reserved bits set"),
            Fault::MaskedFrame => f.write_str("a masked frame from the server"),
            Fault::OversizedControl => f.write_str("a ping of 126 bytes, over 125"),
            Fault::FragmentedControl => f.write_str("a fragmented ping"),
            Fault::CloseCode(code) => write!(f, "a close frame with code {code}"),
            Fault::TruncatedThenReset => {
                f.write_str("10 bytes of a 100-byte text frame, then a reset")
            }
            Fault::Raw(bytes) => write!(f, "{} raw bytes", bytes.len()),
        }
    }
}

impl<In, Out> Connection<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// Sends the client a frame that breaks RFC 6455 (a [`Fault`]), as raw bytes past
    /// tungstenite, after every frame sent before it, and waits until it is written;
    /// it is in the transcript as [`FrameKind::Raw`], noted with what it is. Then
    /// watch the client fail the connection: [`Connection::wait_closed`] says how it
    /// ended (a close frame with 1002 or 1007, or a dropped connection). On a
    /// connection that has ended nothing is sent: a [`SendError`] says how it ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::{FakeServer, Fault};
    /// use futures_util::StreamExt;
    /// use serde_json::Value;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// let conn = fake.next_connection().await;
    ///
    /// conn.send_fault(Fault::InvalidUtf8).await.unwrap();
    /// // tungstenite, as a client, takes it for the protocol error it is.
    /// assert!(matches!(client.next().await, Some(Err(_))));
    /// # }
    /// ```
    pub async fn send_fault(&self, fault: Fault) -> Result<(), SendError> {
        let (done, wait) = oneshot::channel();
        if let Some(commands) = &self.inner.commands
            && commands.send(Command::Fault(fault, done)).is_ok()
            && let Ok(written) = wait.await
        {
            return written;
        }
        // The connection's task has ended: it recorded how before it did.
        let closed = self.inner.shared.lock().connections[self.index()]
            .closed
            .clone()
            .unwrap_or(Closed::Dropped);
        Err(SendError::Closed(closed))
    }
}

/// Writes `fault` on connection `id` ([`Command::Fault`]): flushes what tungstenite
/// holds, writes the fault's bytes and records them; resets the connection if the
/// fault says so. Returns whether it was written, and whether the connection ended
/// (reset, or found gone).
pub(super) async fn write_fault<In, Out>(
    shared: &Shared<In, Out>,
    id: usize,
    ws: &mut WebSocketStream<Filtered>,
    fault: Fault,
) -> (Result<(), SendError>, bool) {
    // Whole frames first: the fault must not land inside one tungstenite holds.
    match ws.flush().await {
        Ok(()) => {}
        Err(Error::Io(_)) => return (Err(SendError::Closed(Closed::Dropped)), true),
        Err(_) => {
            let closed = shared.lock().connections[id].closed.clone();
            return (
                Err(closed.map_or(SendError::Closing, SendError::Closed)),
                false,
            );
        }
    }
    let bytes = fault.bytes();
    let stream = ws.get_mut();
    if fault.resets() {
        // Out at once, not held back by Nagle past the reset that discards it.
        let _ = stream.inner().inner().tcp().set_nodelay(true);
    }
    if stream.write_raw(&bytes).await.is_err() {
        return (Err(SendError::Closed(Closed::Dropped)), true);
    }
    let mut state = shared.lock();
    let conn = &mut state.connections[id];
    let note = format!("fault: {fault}");
    conn.record(Direction::ToClient, FrameKind::Raw(bytes), Some(note));
    if fault.resets() {
        // The socket is closed when the task drops it, as a reset.
        let tcp = socket2::SockRef::from(stream.inner().inner().tcp());
        let _ = tcp.set_linger(Some(Duration::ZERO));
        conn.closed.get_or_insert(Closed::Aborted);
    }
    drop(state);
    shared.notify.notify_waiters();
    (Ok(()), fault.resets())
}
