//! [`PongFilter`]: what lets a stalled connection ([`Connection::stop_answering_pings`])
//! go on reading and recording what the client sends while it answers no ping; and
//! what sees the client's close frame as it was on the wire (`wire`).
//!
//! tungstenite answers every ping it reads with a pong, and has no switch for it. So
//! the fake's byte stream sits under tungstenite's and follows the frames the fake
//! writes (from the end of the handshake on): while the connection is stalled, it
//! swallows every pong frame whole and lets every other frame through. It follows the
//! bytes it reads too ([`ClientFrames`]), and keeps the client's first close frame
//! before tungstenite reads it ([`PongFilter::take_close`]).
//!
//! [`Connection::stop_answering_pings`]: super::Connection::stop_answering_pings

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::wire::{ClientFrames, WireClose, header_len, payload_len};

/// The opcode of a pong frame (RFC 6455, 5.5.3).
const PONG: u8 = 0xA;

/// A byte stream that can drop the pong frames written to it (see the module's docs).
pub(super) struct PongFilter<S> {
    inner: S,
    /// Following the frames written: from the end of the handshake on.
    tracking: bool,
    /// Pong frames that begin from now on are dropped.
    stalled: bool,
    /// The header of the frame being written, while it is incomplete.
    header: Vec<u8>,
    /// A complete header to pass on, with the first part of its payload: written out
    /// before the next frame's header, or by a flush (at most a frame).
    pending: Vec<u8>,
    /// Payload bytes of the current frame not yet written.
    remaining: u64,
    /// The current frame is a pong being dropped.
    dropping: bool,
    /// The frames read from the client.
    reads: ClientFrames,
}

impl<S> PongFilter<S> {
    pub(super) fn new(inner: S) -> Self {
        PongFilter {
            inner,
            tracking: false,
            stalled: false,
            header: Vec::new(),
            pending: Vec::new(),
            remaining: 0,
            dropping: false,
            reads: ClientFrames::default(),
        }
    }

    /// The stream underneath.
    pub(super) fn inner(&self) -> &S {
        &self.inner
    }

    /// The stream underneath, to change.
    pub(super) fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Starts following frames: call once the handshake is done (nothing of it is
    /// buffered then), before the first frame is written.
    pub(super) fn track(&mut self) {
        self.tracking = true;
    }

    /// Drops pongs (`true`) or lets them through again.
    pub(super) fn stall(&mut self, stalled: bool) {
        self.stalled = stalled;
    }

    /// The client's first close frame as it was on the wire, once it was read whole;
    /// only once. Read before tungstenite reads it: when tungstenite yields a close
    /// frame, or fails on one, this has it.
    pub(super) fn take_close(&mut self) -> Option<WireClose> {
        self.reads.take_close()
    }
}

impl<S: AsyncWrite + Unpin> PongFilter<S> {
    /// Writes out a complete header held back.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `bytes` to the stream as they are, past the frame tracking, and flushes
    /// them: for a protocol fault (`faults`). Only between whole frames (after
    /// tungstenite flushed), so the tracking is not thrown off.
    pub(super) async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(self.header.is_empty() && self.pending.is_empty() && self.remaining == 0);
        self.inner.write_all(bytes).await?;
        self.inner.flush().await
    }

    /// The frame held back is whole: writes it out now if the socket takes it, not
    /// only at the next frame or flush. tungstenite does not always flush after a
    /// frame: its answer to the client's close frame is its last write, with no flush.
    fn send_whole(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Err(e),
            // Not taken yet: the next frame or flush writes it.
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PongFilter<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.reads.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PongFilter<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.tracking {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.remaining > 0 {
            let n = buf
                .len()
                .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
            let written = if this.dropping {
                n
            } else if !this.pending.is_empty() {
                // The header held back goes out with its payload in one write: two
                // writes would be two segments, and Nagle would hold the second back
                // (past an abort that follows, say).
                this.pending.extend_from_slice(&buf[..n]);
                n
            } else {
                ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?
            };
            this.remaining -= written as u64;
            if this.remaining == 0 {
                this.send_whole(cx)?;
            }
            return Poll::Ready(Ok(written));
        }
        ready!(this.poll_pending(cx))?;
        // A frame begins: take its header in, and decide once it is whole.
        let mut used = 0;
        while used < buf.len() && this.header.len() < header_len(&this.header) {
            this.header.push(buf[used]);
            used += 1;
        }
        if this.header.len() == header_len(&this.header) {
            let header = std::mem::take(&mut this.header);
            this.remaining = payload_len(&header);
            this.dropping = this.stalled && header[0] & 0x0f == PONG;
            if !this.dropping {
                this.pending = header;
            }
            if this.remaining == 0 {
                this.send_whole(cx)?;
            }
        }
        Poll::Ready(Ok(used))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
