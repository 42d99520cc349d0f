//! One connection's loop: frames from Payments, requests to send, pings, the peer's
//! silence deadline, and how the connection ends.

use std::ops::ControlFlow;
use std::time::Duration;

use actix_http::ws::{Item, ProtocolError};
use actix_web::web::Bytes;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use futures_util::stream::SplitStream;
use futures_util::{FutureExt, StreamExt};
use shared_protocol::{
    DecodeError, MAX_MESSAGE_BYTES, Message as _, OrderId, ServerMessage, TraceContext,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until};

use super::connect::Framed;
use super::pipeline::{Applied, Pipeline, Received, Window};
use super::walk::{Overflow, Walk, next_page};
use super::writer::{text, write, writer_end};
use super::{CLOSE_WAIT, End, LinkConfig, Lost, Outgoing, PAGE, REPLY_ROOM, SPARE, WRITE_QUEUE};
use crate::metrics::Metrics;
use crate::store::{OpenKey, Store};

/// One open connection.
pub(super) struct Connection<'a> {
    config: &'a LinkConfig,
    store: &'a Store,
    metrics: &'a Metrics,
    /// A fragmented message being reassembled.
    fragments: Option<Vec<u8>>,
}

/// Why a connection's loop ended, and the close frame to send, if any.
pub(super) struct Ending {
    end: End,
    close: Option<CloseReason>,
}

impl Ending {
    pub(super) fn lost(why: Lost) -> Self {
        Ending {
            end: End::Lost(why),
            close: None,
        }
    }

    /// Orders stops: 1001 Going Away.
    fn shutdown() -> Self {
        Ending {
            end: End::Shutdown,
            close: Some(CloseReason {
                code: CloseCode::Away,
                description: Some("Orders is shutting down".into()),
            }),
        }
    }

    pub(super) fn closing(why: Lost, code: CloseCode, description: &str) -> Self {
        Ending {
            end: End::Lost(why),
            close: Some(CloseReason {
                code,
                description: Some(description.into()),
            }),
        }
    }
}

impl<'a> Connection<'a> {
    pub(super) fn new(config: &'a LinkConfig, store: &'a Store, metrics: &'a Metrics) -> Self {
        Connection {
            config,
            store,
            metrics,
            fragments: None,
        }
    }

    /// Serves one connection until it ends, then lets the writer send what is queued
    /// and the close frame, for a bounded time.
    pub(super) async fn run(
        mut self,
        framed: Framed,
        outbox: &mut mpsc::Receiver<Outgoing>,
        overflow: &Overflow,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let (sink, stream) = framed.split();
        // The writer owns the socket's sending half, so reading never waits on a write;
        // it gives up on a peer that reads nothing for `peer_timeout`.
        let (out, queue) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::task::spawn_local(write(sink, queue, self.config.peer_timeout));

        // Requests queued while the link was down are all in the database too: drop
        // them, and any record of dropped ones, and resume from the database alone.
        while outbox.try_recv().is_ok() {}
        overflow.take();

        let mut parts = Parts {
            stream,
            out,
            writer,
            outbox,
            overflow,
            shutdown,
        };
        let ending = self.serve(&mut parts).await;
        close(parts.out, parts.writer, &mut parts.stream, ending.close).await;
        ending.end
    }

    /// The connection's loop: one `select!` over everything that can happen to it,
    /// each handled by a step of its own, until one ends the connection.
    async fn serve(&mut self, parts: &mut Parts<'_>) -> Ending {
        let now = Instant::now();
        let mut timers = Timers::start(self.config, now);
        let mut progress = Progress::new(now);
        loop {
            // A page of requests goes out only when the writer has room for it and for
            // the replies to what is being read, and the window has room for its orders,
            // so requests never crowd out reading.
            let free = progress.pipeline.free(&parts.out);
            let room_for_page =
                free >= PAGE as usize + REPLY_ROOM && progress.window.has_room(PAGE as usize);
            let step = tokio::select! {
                frame = parts.stream.next(), if progress.pipeline.has_room() => {
                    self.on_read(frame, &parts.out, &mut progress)
                }
                Some(batch) = progress.pipeline.in_flight.next(), if !progress.pipeline.in_flight.is_empty() => {
                    self.on_applied(batch, parts, &mut progress).await
                }
                _ = parts.out.reserve_many(SPARE + 1).map(drop), if progress.pipeline.blocked_on_writer(&parts.out) => {
                    // The writer made room: start what waited for it.
                    progress.pipeline.start(self.store, self.metrics, &parts.out);
                    Step::Continue(())
                }
                Some(outgoing) = parts.outbox.recv(), if free > REPLY_ROOM && progress.window.has_room(1) => {
                    progress.window.sent(&outgoing.message);
                    let frame = text(self.metrics, &outgoing.message, outgoing.trace.as_ref());
                    let _ = parts.out.try_send(frame);
                    Step::Continue(())
                }
                () = parts.overflow.notified() => {
                    progress.catch_up_after_overflow(parts.overflow);
                    Step::Continue(())
                }
                () = std::future::ready(()), if room_for_page && progress.walking() => {
                    // Awaited here, not raced in select!, so a busy socket cannot cancel it.
                    self.send_next_page(&parts.out, &mut progress).await;
                    Step::Continue(())
                }
                _ = timers.heartbeat.tick() => {
                    let _ = parts.out.try_send(Message::Ping(Bytes::new()));
                    Step::Continue(())
                }
                _ = sleep_until(progress.last_heard + self.config.peer_timeout) => {
                    // A dead peer cannot read a close frame; just drop the socket.
                    Step::Break(Ending::lost(Lost::Silent(self.config.peer_timeout)))
                }
                _ = timers.sweeper.tick() => {
                    progress.start_sweep(self.config.resend_after);
                    Step::Continue(())
                }
                why = &mut parts.writer => {
                    Step::Break(Ending::lost(why.unwrap_or_else(|e| Lost::WriterFailed(e.to_string()))))
                }
                _ = parts.shutdown.changed() => Step::Break(Ending::shutdown()),
            };
            if let Step::Break(ending) = step {
                return ending;
            }
        }
    }

    /// A frame (or the end of the stream) from Payments: what it asks of the loop.
    fn on_read(
        &mut self,
        frame: Option<Result<Frame, ProtocolError>>,
        out: &mpsc::Sender<Message>,
        progress: &mut Progress<'a>,
    ) -> Step {
        let frame = match frame {
            None => return Step::Break(Ending::lost(Lost::TcpClosed)),
            Some(Err(e)) => {
                // Oversized frames and protocol violations end up here.
                let description = e.to_string();
                let why = Lost::Protocol(description.clone());
                return Step::Break(Ending::closing(why, close_code_for(&e), &description));
            }
            Some(Ok(frame)) => frame,
        };
        progress.last_heard = Instant::now();
        match self.on_frame(frame) {
            Incoming::Nothing => {}
            Incoming::Pong(payload) => {
                let _ = out.try_send(Message::Pong(payload));
            }
            Incoming::Closed(reason) => {
                return Step::Break(Ending {
                    end: End::Lost(Lost::Closed(reason.clone())),
                    close: reason,
                });
            }
            Incoming::TooLarge => {
                let ending =
                    Ending::closing(Lost::TooLarge, CloseCode::Size, "message over 64 KiB");
                return Step::Break(ending);
            }
            Incoming::Message(message, trace) => {
                progress.window.answered(&message);
                progress
                    .pipeline
                    .waiting
                    .push_back(Received { message, trace });
                progress.pipeline.start(self.store, self.metrics, out);
            }
        }
        Step::Continue(())
    }

    /// A batch was applied: sends its replies, then starts the next batch.
    async fn on_applied(
        &self,
        batch: Vec<Applied>,
        parts: &mut Parts<'_>,
        progress: &mut Progress<'a>,
    ) -> Step {
        progress.pipeline.finished(&batch);
        for applied in batch {
            let reply = match applied.result {
                Ok(reply) => reply,
                Err(e) => {
                    // Not applied, so not acked: Payments delivers it again, and
                    // the sweeper re-sends requests whose answer was lost this way.
                    tracing::error!(order_id = ?applied.order, error = %crate::error::error_chain(&e), "could not apply a message from Payments; it was not acked");
                    continue;
                }
            };
            let Some(reply) = reply else { continue };
            // Room was reserved when the batch started: never waits.
            match parts
                .out
                .try_send(text(self.metrics, &reply, applied.trace.as_ref()))
            {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Step::Break(Ending::lost(writer_end(&mut parts.writer).await));
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Not reached (one reply per message, reserved);
                    // if it were, Payments re-sends what needs it.
                    tracing::error!(order_id = ?applied.order, "the write queue is full; a reply was not sent");
                }
            }
        }
        progress
            .pipeline
            .start(self.store, self.metrics, &parts.out);
        Step::Continue(())
    }

    /// Sends the next page of requests of the catch-up or the sweep.
    async fn send_next_page(&self, out: &mpsc::Sender<Message>, progress: &mut Progress<'a>) {
        for message in next_page(self.store, &mut progress.catch_up, &mut progress.sweep).await {
            progress.window.sent(&message);
            // A re-send from the database: the order's first trace is not kept.
            let _ = out.try_send(text(self.metrics, &message, None));
        }
    }

    /// Turns one frame into what the loop must do, reassembling fragments.
    pub(super) fn on_frame(&mut self, frame: Frame) -> Incoming {
        match frame {
            Frame::Text(bytes) => self.on_text(&bytes),
            Frame::Binary(bytes) => {
                tracing::warn!(
                    len = bytes.len(),
                    "binary frame from Payments ignored (the protocol is text only)"
                );
                Incoming::Nothing
            }
            Frame::Continuation(item) => match item {
                Item::FirstText(bytes) => {
                    self.fragments = Some(bytes.to_vec());
                    self.check_fragments()
                }
                Item::FirstBinary(_) => {
                    tracing::warn!("fragmented binary message from Payments ignored");
                    self.fragments = None;
                    Incoming::Nothing
                }
                Item::Continue(ref bytes) | Item::Last(ref bytes) => {
                    let last = matches!(item, Item::Last(_));
                    let Some(buffer) = self.fragments.as_mut() else {
                        // Continuation of a binary message, or of nothing: ignore.
                        return Incoming::Nothing;
                    };
                    buffer.extend_from_slice(bytes);
                    if let too_large @ Incoming::TooLarge = self.check_fragments() {
                        return too_large;
                    }
                    if last {
                        let whole = self.fragments.take().unwrap_or_default();
                        self.on_text(&whole)
                    } else {
                        Incoming::Nothing
                    }
                }
            },
            Frame::Ping(payload) => Incoming::Pong(payload),
            Frame::Pong(_) => Incoming::Nothing,
            Frame::Close(reason) => Incoming::Closed(reason),
        }
    }

    pub(super) fn check_fragments(&mut self) -> Incoming {
        if self
            .fragments
            .as_ref()
            .is_some_and(|b| b.len() > MAX_MESSAGE_BYTES)
        {
            self.fragments = None;
            Incoming::TooLarge
        } else {
            Incoming::Nothing
        }
    }

    pub(super) fn on_text(&self, bytes: &[u8]) -> Incoming {
        let Ok(text) = std::str::from_utf8(bytes) else {
            tracing::warn!(
                len = bytes.len(),
                "text frame from Payments that is not UTF-8 ignored"
            );
            return Incoming::Nothing;
        };
        match shared_protocol::decode_traced::<ServerMessage>(text) {
            Ok((message, trace)) => {
                tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "received from Payments");
                self.metrics.message("in", message.type_name());
                Incoming::Message(message, trace)
            }
            Err(DecodeError::TooLarge { .. }) => Incoming::TooLarge,
            Err(e) => {
                tracing::warn!(error = %e, frame = %truncate(text, 256), "ignored a message from Payments that does not follow the protocol");
                Incoming::Nothing
            }
        }
    }
}

/// What a connection's loop works with: the socket's halves and the link's queues.
struct Parts<'c> {
    stream: SplitStream<Framed>,
    /// The writer's queue.
    out: mpsc::Sender<Message>,
    writer: JoinHandle<Lost>,
    /// New orders' requests, from the handle.
    outbox: &'c mut mpsc::Receiver<Outgoing>,
    overflow: &'c Overflow,
    shutdown: &'c mut watch::Receiver<bool>,
}

/// What the loop does after a step: go on, or end the connection.
type Step = ControlFlow<Ending>;

/// Where a connection stands: what is being applied, which requests await an answer,
/// which walk over the open orders is under way, and when Payments was last heard.
struct Progress<'a> {
    pipeline: Pipeline<'a>,
    window: Window,
    /// The walk over every open order: from the start on connect, from the oldest
    /// dropped request after an overflow.
    catch_up: Option<Walk>,
    /// The sweeper's walk over requests unanswered for `resend_after`.
    sweep: Option<Walk>,
    last_heard: Instant,
}

impl Progress<'_> {
    /// A new connection: everything open is to be sent, from the oldest order.
    fn new(now: Instant) -> Self {
        Progress {
            pipeline: Pipeline::new(),
            window: Window::default(),
            catch_up: Some(Walk::all_from(None)),
            sweep: None,
            last_heard: now,
        }
    }

    /// Whether a walk has pages of requests to send.
    fn walking(&self) -> bool {
        self.catch_up.is_some() || self.sweep.is_some()
    }

    /// Requests were dropped while the link was busy: walk the open orders from the
    /// oldest dropped one (re-sends are idempotent).
    fn catch_up_after_overflow(&mut self, overflow: &Overflow) {
        let Some(oldest) = overflow.take() else {
            return;
        };
        let from = OpenKey {
            created_at: oldest,
            id: OrderId(uuid::Uuid::nil()),
        };
        let after = match self.catch_up {
            Some(Walk {
                after: Some(at), ..
            }) => Some(at.min(from)),
            Some(Walk { after: None, .. }) => None,
            None => Some(from),
        };
        tracing::info!(%oldest, "requests were dropped while the link was busy; sending them from the database");
        self.catch_up = Some(Walk::all_from(after));
    }

    /// The sweeper's tick: requests unanswered this long are the sweep's to send again.
    fn start_sweep(&mut self, resend_after: Duration) {
        self.window.forget_older_than(resend_after);
        if self.sweep.is_none() {
            self.sweep = Some(Walk::sweep(resend_after));
        }
    }
}

/// The connection's clocks: a ping every `heartbeat_interval`, a sweep every
/// `resend_after`.
struct Timers {
    heartbeat: Interval,
    sweeper: Interval,
}

impl Timers {
    fn start(config: &LinkConfig, now: Instant) -> Self {
        let mut heartbeat = interval_at(now + config.heartbeat_interval, config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweeper = interval_at(now + config.resend_after, config.resend_after);
        sweeper.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Timers { heartbeat, sweeper }
    }
}

/// Lets the writer send what is queued and then `reason`'s close frame, then waits for
/// Payments' close frame (or the end of the stream), all within [`CLOSE_WAIT`].
///
/// Waiting for the answer is RFC 6455's order (§7.1.1: the server closes the TCP
/// connection first), and it matters here: a socket closed with Payments' replies still
/// unread in it is reset by the kernel, and the reset can destroy the close frame in
/// Payments' receive buffer before Payments reads it, so that Payments sees a dropped
/// connection, not 1001.
async fn close(
    out: mpsc::Sender<Message>,
    mut writer: JoinHandle<Lost>,
    stream: &mut SplitStream<Framed>,
    reason: Option<CloseReason>,
) {
    if writer.is_finished() {
        return;
    }
    let sends_close = reason.is_some();
    let wait = async {
        if let Some(reason) = reason {
            // Behind whatever is queued: Payments reads the requests, then the close.
            if out.send(Message::Close(Some(reason))).await.is_err() {
                return;
            }
        }
        drop(out);
        let _ = (&mut writer).await;
        if sends_close {
            until_peer_closes(stream).await;
        }
    };
    if tokio::time::timeout(CLOSE_WAIT, wait).await.is_err() {
        writer.abort();
    }
}

/// Reads and drops frames until Payments' close frame, an error or the end.
async fn until_peer_closes(stream: &mut SplitStream<Framed>) {
    while let Some(frame) = stream.next().await {
        if matches!(frame, Ok(Frame::Close(_)) | Err(_)) {
            return;
        }
    }
}

pub(super) enum Incoming {
    Nothing,
    Pong(Bytes),
    Closed(Option<CloseReason>),
    TooLarge,
    /// A message, and the trace context it carried, if any.
    Message(ServerMessage, Option<TraceContext>),
}

pub(super) fn close_code_for(e: &ProtocolError) -> CloseCode {
    match e {
        ProtocolError::Overflow => CloseCode::Size,
        _ => CloseCode::Protocol,
    }
}

pub(super) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
