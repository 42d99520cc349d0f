//! What a connection carried, both ways, in order: the material of every failure message.

use std::fmt;
use std::time::Duration;

/// Who sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client under test to the fake.
    FromClient,
    /// From the fake to the client.
    ToClient,
}

/// A frame as it crossed the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameKind {
    /// A text message (fragments already joined).
    Text(String),
    /// A binary message (fragments already joined).
    Binary(Vec<u8>),
    /// A ping, with its payload.
    Ping(Vec<u8>),
    /// A pong, with its payload.
    Pong(Vec<u8>),
    /// A close frame. The client's is recorded as it was on the wire: a code RFC 6455
    /// forbids (1006, say) is kept as sent, and noted as a protocol violation.
    Close {
        /// The close code, `None` for a close frame without one (an empty payload,
        /// which RFC 6455 reports as 1005, "no status"; or a 1-byte one, which is
        /// invalid).
        code: Option<u16>,
        /// The close reason, empty when there is none (lossy if it was not UTF-8).
        reason: String,
    },
    /// A frame or message from the client over the fake's maximum frame or message
    /// size ([`FakeServerBuilder::max_message_size`](crate::FakeServerBuilder::max_message_size)):
    /// refused unread, and answered with close 1009.
    Oversize {
        /// The size tungstenite refused, in bytes: the frame's length, or the message's
        /// so far.
        size: usize,
        /// The limit it went over.
        max: usize,
    },
    /// Bytes the fake wrote as they are, past its WebSocket library: a protocol fault
    /// ([`Connection::send_fault`](crate::Connection::send_fault)), noted with what it
    /// is.
    Raw(Vec<u8>),
}

/// One line of a transcript.
#[derive(Debug, Clone)]
pub struct TranscriptEntry {
    /// Time since the connection was accepted, on the test's clock (virtual when the
    /// test paused it).
    pub at: Duration,
    /// Who sent it.
    pub direction: Direction,
    /// The frame.
    pub frame: FrameKind,
    /// What the fake made of it: a decode error (contract violation), what RFC 6455
    /// forbids in a close frame (protocol violation), the rule that answered, the
    /// fault the fake sent.
    pub note: Option<String>,
}

impl fmt::Display for TranscriptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::FromClient => "client → fake",
            Direction::ToClient => "fake → client",
        };
        write!(f, "{:>8.3}s  {arrow}  ", self.at.as_secs_f64())?;
        match &self.frame {
            FrameKind::Text(text) => write!(f, "text {}", shorten(text, 400))?,
            FrameKind::Binary(bytes) => write!(f, "binary ({} bytes)", bytes.len())?,
            FrameKind::Ping(_) => f.write_str("ping")?,
            FrameKind::Pong(_) => f.write_str("pong")?,
            FrameKind::Close {
                code: Some(code),
                reason,
            } => write!(f, "close {code} {reason:?}")?,
            FrameKind::Close { code: None, .. } => f.write_str("close without a code (1005)")?,
            FrameKind::Raw(bytes) => write!(f, "raw ({} bytes)", bytes.len())?,
            FrameKind::Oversize { size, max } => {
                write!(f, "over the size limit ({size} bytes, at most {max})")?
            }
        }
        if let Some(note) = &self.note {
            write!(f, "   [{note}]")?;
        }
        Ok(())
    }
}

/// Renders a transcript, one frame a line.
pub fn render(entries: &[TranscriptEntry]) -> String {
    if entries.is_empty() {
        return "    (no frames)".to_owned();
    }
    entries
        .iter()
        .map(|e| format!("    {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}… ({} bytes)", &text[..i], text.len()),
        None => text.to_owned(),
    }
}
