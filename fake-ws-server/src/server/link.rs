//! [`Link`]: the network between the fake and one client, as a byte stream under the
//! pong filter (`pongs`), so under tungstenite: what [`Connection::impair`] and
//! [`Connection::blackhole`] change (`impairment`).
//!
//! A clean link passes every read and write straight through. An impaired one, or one
//! still holding bytes, runs each direction through a [`DelayLine`]: the bytes are
//! taken in at once (a write returns), cut into segments, and each segment is let go
//! once the simulated wire has carried it (the bandwidth, one segment after another)
//! and its latency (plus jitter) has passed; a segment never overtakes the one before,
//! as on TCP. Reads take what the socket has into the inbound line, and hand it on
//! when it is due. While blackholed nothing is let go either way and the socket is not
//! read; what is held waits for [`Connection::heal`].
//!
//! Nothing drives the link but the connection's task polling it: its read (always, but
//! while it does not read, when it waits on [`Link::poll_drain`] instead) lets due
//! bytes out, and [`LinkControl`] wakes it when the test changes the link.
//!
//! Bounded: each line holds at most [`HOLD_LIMIT`] bytes. Past it, a write waits (as
//! one to a full socket does), and the socket is not read (so the client's writes
//! block once the kernel's buffers fill).
//!
//! [`Connection::impair`]: super::Connection::impair
//! [`Connection::blackhole`]: super::Connection::blackhole
//! [`Connection::heal`]: super::Connection::heal

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::impairment::Impairment;

/// The most bytes a direction of an impaired link holds: 1 MiB.
pub(super) const HOLD_LIMIT: usize = 1 << 20;

/// The most bytes in one segment of a delay line: a large message trickles out in
/// segments this size at the bandwidth, instead of coming whole at the end.
const SEGMENT: usize = 16 * 1024;

/// What the test set on a link, shared by the connection's handle and its task.
#[derive(Default)]
pub(super) struct LinkControl {
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    impairment: Option<Impairment>,
    blackholed: bool,
    /// The connection's task, to wake when the link changes.
    waker: Option<Waker>,
}

impl LinkControl {
    /// Sets the impairment (`None`: a clean link).
    pub(super) fn impair(&self, impairment: Option<Impairment>) {
        self.change(|state| state.impairment = impairment);
    }

    /// Blackholes the link (`true`) or heals it.
    pub(super) fn blackhole(&self, blackholed: bool) {
        self.change(|state| state.blackholed = blackholed);
    }

    fn change(&self, f: impl FnOnce(&mut LinkState)) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut state);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The link as it is now, noting the task to wake when it changes.
    fn now(&self, cx: &Context<'_>) -> (Option<Impairment>, bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        (state.impairment, state.blackholed)
    }

    fn is_blackholed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blackholed
    }
}

/// Bytes held in a delay line, let go at `due`; empty bytes stand for the end of the
/// stream (inbound only).
struct Segment {
    due: Instant,
    bytes: Vec<u8>,
    /// How many of its bytes already went on.
    at: usize,
}

/// One direction of an impaired link (see the module's docs).
struct DelayLine {
    segments: VecDeque<Segment>,
    held: usize,
    /// When the simulated wire is done carrying what it was given.
    wire_free: Instant,
    /// When the last segment is due: none is due before it.
    last_due: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl DelayLine {
    fn new() -> Self {
        let now = Instant::now();
        DelayLine {
            segments: VecDeque::new(),
            held: 0,
            wire_free: now,
            last_due: now,
            timer: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn room(&self) -> usize {
        HOLD_LIMIT.saturating_sub(self.held)
    }

    /// Takes `bytes` in, in segments, each due once the wire carried it and its latency
    /// passed; no earlier than the one before.
    fn push(&mut self, bytes: &[u8], impairment: &Impairment) {
        for piece in bytes.chunks(SEGMENT) {
            self.push_segment(piece.to_vec(), impairment);
        }
    }

    /// The end of the stream, after what came before it.
    fn push_end(&mut self, impairment: &Impairment) {
        self.push_segment(Vec::new(), impairment);
    }

    fn push_segment(&mut self, bytes: Vec<u8>, impairment: &Impairment) {
        let carried = self.wire_free.max(Instant::now()) + impairment.transmit_time(bytes.len());
        self.wire_free = carried;
        let due = (carried + impairment.delay()).max(self.last_due);
        self.last_due = due;
        self.held += bytes.len();
        self.segments.push_back(Segment { due, bytes, at: 0 });
    }

    /// Ready once the first segment may go on: at once on a clean link (what it held
    /// goes first), else at its time; never while blackholed.
    fn poll_front(&mut self, cx: &mut Context<'_>, link: (Option<Impairment>, bool)) -> Poll<()> {
        let Some(front) = self.segments.front() else {
            return Poll::Pending;
        };
        if link.1 {
            return Poll::Pending;
        }
        if link.0.is_none() || front.due <= Instant::now() {
            return Poll::Ready(());
        }
        let due = front.due;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx)
    }

    /// The first segment's bytes not yet gone on.
    fn front_bytes(&self) -> &[u8] {
        self.segments
            .front()
            .map_or(&[], |front| &front.bytes[front.at..])
    }

    /// `n` more bytes of the first segment went on.
    fn advance(&mut self, n: usize) {
        if let Some(front) = self.segments.front_mut() {
            front.at += n;
            self.held -= n;
            if front.at == front.bytes.len() {
                self.segments.pop_front();
            }
        }
    }
}

/// A byte stream through an impairable link (see the module's docs).
pub(super) struct Link<S> {
    inner: S,
    control: Arc<LinkControl>,
    outbound: DelayLine,
    inbound: DelayLine,
    /// The socket's end was read (and is in the inbound line).
    ended: bool,
    /// A write of held bytes failed while reading: the next write says so.
    write_error: Option<io::Error>,
}

impl<S> Link<S> {
    pub(super) fn new(inner: S) -> Self {
        Link {
            inner,
            control: Arc::default(),
            outbound: DelayLine::new(),
            inbound: DelayLine::new(),
            ended: false,
            write_error: None,
        }
    }

    /// The stream underneath.
    pub(super) fn inner(&self) -> &S {
        &self.inner
    }

    /// What the connection's handle changes the link with.
    pub(super) fn control(&self) -> Arc<LinkControl> {
        self.control.clone()
    }
}

impl<S: AsyncWrite + Unpin> Link<S> {
    /// Writes out the held bytes that are due; ready once none is held (and the stream
    /// flushed), pending while some wait for their time or a heal.
    pub(super) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let link = self.control.now(cx);
        while !self.outbound.is_empty() {
            ready!(self.outbound.poll_front(cx, link));
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.outbound.front_bytes()))?;
            if n == 0 && !self.outbound.front_bytes().is_empty() {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outbound.advance(n);
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Lets the held bytes out as they fall due, for up to `within`: the last frames
    /// (the answer to the client's close) are not lost when the connection ends. Not
    /// while blackholed: an unplugged cable delivers nothing.
    pub(super) async fn finish(&mut self, within: Duration) {
        if self.outbound.is_empty() || self.control.is_blackholed() {
            return;
        }
        let drained = std::future::poll_fn(|cx| self.poll_drain(cx));
        let _ = tokio::time::timeout(within, drained).await;
    }

    /// Lets due held bytes out, if any, without waiting; a failure is kept for the
    /// next write.
    fn drain_some(&mut self, cx: &mut Context<'_>) {
        if !self.outbound.is_empty()
            && let Poll::Ready(Err(e)) = self.poll_drain(cx)
        {
            self.write_error = Some(e);
        }
    }
}

impl<S: AsyncRead + Unpin> Link<S> {
    /// Reads what the socket has into the inbound line, while it has room.
    fn fill(&mut self, cx: &mut Context<'_>, impairment: &Impairment) -> io::Result<()> {
        let mut chunk = [0u8; SEGMENT];
        while !self.ended && self.inbound.room() > 0 {
            let size = self.inbound.room().min(SEGMENT);
            let mut buf = ReadBuf::new(&mut chunk[..size]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.ended = true;
                    self.inbound.push_end(impairment);
                }
                Poll::Ready(Ok(())) => self.inbound.push(buf.filled(), impairment),
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Link<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Reading is what the task always polls: held writes go out from here too.
        this.drain_some(cx);
        let link = this.control.now(cx);
        let (impairment, blackholed) = link;
        if blackholed {
            return Poll::Pending;
        }
        if impairment.is_none() && this.inbound.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.fill(cx, &impairment.unwrap_or_default())?;
        ready!(this.inbound.poll_front(cx, link));
        let bytes = this.inbound.front_bytes();
        // The end of the stream: nothing more, ever (it stays at the front).
        if bytes.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let n = bytes.len().min(buf.remaining());
        buf.put_slice(&bytes[..n]);
        this.inbound.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Link<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.write_error.take() {
            return Poll::Ready(Err(e));
        }
        let (impairment, blackholed) = this.control.now(cx);
        if impairment.is_none() && !blackholed && this.outbound.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.outbound.room() == 0 {
            // Full: like a write to a full socket, it waits for room.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            if this.outbound.room() == 0 {
                return Poll::Pending;
            }
        }
        let n = buf.len().min(this.outbound.room());
        this.outbound
            .push(&buf[..n], &impairment.unwrap_or_default());
        this.drain_some(cx);
        Poll::Ready(Ok(n))
    }

    /// Flushed once in the link: what it holds goes on as it falls due (a send does
    /// not wait out the latency, as it does not on a real network).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.outbound.is_empty() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        this.drain_some(cx);
        match this.write_error.take() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
