//! How a connection ended ([`Closed`], what `wait_closed` returns) and why a frame the
//! test asked for was not sent ([`SendError`]).

use std::fmt;

/// How a connection ended, as [`Connection::wait_closed`](super::Connection::wait_closed)
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closed {
    /// The client sent a close frame with this code and reason (the reason may be empty).
    Frame {
        /// The close code, e.g. 1000 (normal) or 1001 (going away).
        code: u16,
        /// The reason the client gave, possibly empty.
        reason: String,
    },
    /// The client sent a close frame without a code (an empty close frame).
    FrameWithoutCode,
    /// The client's TCP connection ended without a close frame: it dropped the socket,
    /// crashed, or a write of the fake found it gone.
    Dropped,
    /// The fake ended it itself: [`Connection::abort`](super::Connection::abort) or
    /// [`FakeServer::stop`](super::FakeServer::stop).
    Aborted,
}

impl Closed {
    /// The client's close code, if it sent a close frame with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Closed::Frame { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Frame { code, reason } => {
                write!(f, "the client closed it with code {code} ({reason:?})")
            }
            Closed::FrameWithoutCode => f.write_str("the client closed it without a code"),
            Closed::Dropped => f.write_str("the client dropped it without a close frame"),
            Closed::Aborted => f.write_str("the fake aborted it"),
        }
    }
}

/// Why a frame the test asked the fake to send (`send`, `send_text`, `send_binary`,
/// `close`) was not written to the client. Nothing unwritten is in the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection had ended, and how.
    Closed(Closed),
    /// The fake had already sent a close frame: nothing may follow it.
    Closing,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(closed) => write!(f, "the connection is closed: {closed}"),
            SendError::Closing => f.write_str("the fake already sent a close frame"),
        }
    }
}

impl std::error::Error for SendError {}
