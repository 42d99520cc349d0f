//! The `/ws` endpoint: the handshake checks (token, subprotocol) and one `select!` loop
//! per connection over frames from Orders, the resume of unacked events, a heartbeat,
//! the peer's silence deadline and shutdown.
//!
//! Three tasks per connection, none of which waits on another's socket direction:
//! - the frame reader, on the actix arbiter (actix-ws' stream is `!Send`), forwards
//!   frames into a bounded channel and holds nothing but the socket;
//! - the loop, a tokio task, takes every frame already read (up to
//!   [`INBOUND_FRAMES`]), answers the batch with one transaction
//!   ([`flow::answer_batch`]) and queues the replies, in the order of the messages;
//! - the writer, a tokio task, owns the session and drains the bounded outbox. Every
//!   send has a deadline of `PEER_TIMEOUT`: a peer that stops reading is dropped.
//!
//! On connect every unacked event that is not dead-lettered goes out again (a send counts
//! a delivery attempt only when the last one is `REDELIVER_AFTER` old, see
//! [`crate::store::Attempts`]), one keyset page per loop turn and
//! only while the outbox has room beyond what replies need, so a big backlog never
//! stops the loop from reading (two peers that both wrote their whole backlog before
//! reading used to block each other for good). Events dispatched by
//! [`crate::delivery`] go straight into the outbox under the same rule.
//!
//! Every database call runs in tokio tasks, never on the arbiter, so a stopping
//! server never drops a checked-out pool connection outside the runtime (which
//! panics). On shutdown the loop closes with 1001 at once (queued messages are dropped:
//! what matters is in the database), lets go of the frames so that the HTTP connection
//! ends, and only then forgets the connection's row.
//!
//! Kept whole (over 400 lines): the three tasks hand each other the socket's directions
//! and shut down in one order, and that interplay reads best in one file.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use service_kit::error_chain;
use service_kit::trace_context::Traced;
use shared_protocol::{
    ClientMessage, DecodeError, MAX_MESSAGE_BYTES, Message, SUBPROTOCOL, ServerMessage,
    TraceContext,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until, timeout};
use tracing::Instrument;
use uuid::Uuid;

use crate::delivery::{Delivery, OUTBOX_CAPACITY, Outbox, Outgoing, REPLY_ROOM};
use crate::error::ApiError;
use crate::flow::{self, Context};
use crate::state::AppState;

/// Frames read ahead of the connection loop; a group-commit batch is at most this.
pub const INBOUND_FRAMES: usize = 256;
/// Unacked events sent per loop turn while resuming.
pub const RESUME_BATCH: usize = 256;
/// How long closing may take: the close frame, and removing the connection's row (a
/// row left behind goes stale and is ignored after a few delivery scans anyway).
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ws`: 401 without the token, 400 without the subprotocol, 503 when
/// `PAYMENTS_MAX_WEBSOCKETS` are open, else 101.
pub async fn endpoint(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    require_subprotocol(&req)?;
    let Ok(permit) = state.websockets.clone().try_acquire_owned() else {
        tracing::warn!(peer = ?req.peer_addr(), max = state.config.max_websockets, "WebSocket refused: PAYMENTS_MAX_WEBSOCKETS are open");
        return Err(ApiError::TooManyWebSockets(state.config.max_websockets));
    };
    let (response, session, stream) =
        match actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL]) {
            Ok(parts) => parts,
            Err(e) => return Ok(e.error_response()),
        };
    let stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let state = state.into_inner();
    let connection = Uuid::new_v4();
    tracing::info!(%connection, "Orders connected");
    // The frame stream is `!Send` and stays on this arbiter; it holds nothing but the
    // socket. Everything that touches the database runs as a tokio task instead: an
    // arbiter that stops drops its local tasks outside any runtime, and a pool
    // connection dropped there panics ("this functionality requires a Tokio context"),
    // whereas tokio drops its own tasks inside the runtime.
    let (frames_tx, frames) = mpsc::channel(INBOUND_FRAMES);
    actix_web::rt::spawn(read_frames(stream, frames_tx));
    tokio::spawn(async move {
        run(state, connection, session, frames).await;
        drop(permit);
    });
    Ok(response)
}

/// Refuses a handshake without the bearer token (401).
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let authorized = service_kit::token::bearer_matches(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        &state.config.common.payments_token,
    );
    if !authorized {
        tracing::warn!(peer = ?req.peer_addr(), "WebSocket handshake without a valid bearer token");
        return Err(ApiError::Unauthorized(
            "a valid `Authorization: Bearer` token is required",
        ));
    }
    Ok(())
}

/// Refuses a handshake that does not offer the `payments.v1` subprotocol (400).
fn require_subprotocol(req: &HttpRequest) -> Result<(), ApiError> {
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(ApiError::UnsupportedSubprotocol(format!(
            "offer the subprotocol {SUBPROTOCOL} in Sec-WebSocket-Protocol"
        )));
    }
    Ok(())
}

type Frame = Result<AggregatedMessage, ProtocolError>;

/// Forwards frames to the connection loop until the peer's stream ends, a close or
/// an error is read, or the loop is gone (which drops the stream, ending the HTTP
/// connection). The channel is bounded: a busy loop makes this stop reading.
async fn read_frames(mut stream: actix_ws::AggregatedMessageStream, frames: mpsc::Sender<Frame>) {
    loop {
        tokio::select! {
            frame = stream.recv() => {
                let Some(frame) = frame else { break };
                let last = matches!(frame, Err(_) | Ok(AggregatedMessage::Close(_)));
                if frames.send(frame).await.is_err() || last {
                    break;
                }
            }
            _ = frames.closed() => break,
        }
    }
}

/// Owns the session: sends what the outbox holds, each send within `peer_timeout`,
/// until the outbox closes, a send fails or times out, or the loop asks to close
/// (which goes out at once, ahead of whatever is still queued).
async fn write_frames(
    mut session: actix_ws::Session,
    mut outbox: mpsc::Receiver<Outgoing>,
    mut close: oneshot::Receiver<Option<CloseReason>>,
    peer_timeout: Duration,
    delivery: Delivery,
    connection: Uuid,
) {
    loop {
        let next = tokio::select! {
            biased;
            reason = &mut close => {
                let reason = reason.unwrap_or(None);
                let _ = timeout(CLEANUP_TIMEOUT, session.close(reason)).await;
                return;
            }
            next = outbox.recv() => next,
        };
        let Some(next) = next else { return };
        let send = async {
            match next {
                Outgoing::Text(text) => session.text(text).await,
                Outgoing::Ping => session.ping(b"").await,
                Outgoing::Pong(payload) => session.pong(&payload).await,
            }
        };
        let sent = tokio::select! {
            biased;
            reason = &mut close => {
                let reason = reason.unwrap_or(None);
                let _ = timeout(CLEANUP_TIMEOUT, session.close(reason)).await;
                return;
            }
            sent = timeout(peer_timeout, send) => sent,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return, // the connection is gone
            Err(_) => {
                // Dropping the session leaves actix writing what it holds; the socket's
                // TCP_USER_TIMEOUT (PEER_TIMEOUT, service_kit::http_server) ends the connection in
                // the kernel.
                tracing::warn!(%connection, timeout = ?peer_timeout, "Orders stopped reading; dropping the connection");
                return;
            }
        }
        if outbox.len() < REPLY_ROOM {
            delivery.room_freed();
        }
    }
}

/// Serves one connection from start to end: registers it, starts its writer, runs
/// the loop until the connection must end, then closes and forgets it.
async fn run(
    state: Arc<AppState>,
    connection: Uuid,
    session: actix_ws::Session,
    mut frames: mpsc::Receiver<Frame>,
) {
    register(&state, connection).await;
    let writer = Writer::start(&state, connection, session);
    state
        .delivery
        .registry
        .add(connection, writer.outbox.clone());
    let close = serve(&state, connection, &writer.outbox, &mut frames).await;
    state.delivery.registry.remove(connection);
    // Close first, so the peer hears it at once, and let go of the frames, so the HTTP
    // connection ends (a stopping server waits for it) whatever the database does.
    drop(frames);
    writer.close(close).await;
    tracing::info!(%connection, "connection closed");
    unregister(&state, connection).await;
}

/// Records the connection as open on this instance (a failure is logged, not fatal).
async fn register(state: &AppState, connection: Uuid) {
    let delivery = &state.delivery;
    if let Err(e) = delivery
        .store
        .register_connection(connection, delivery.instance)
        .await
    {
        tracing::error!(error = %error_chain(&e), "could not register the connection");
    }
}

/// The loop's side of the writer task: the outbox it drains, the way to ask it to
/// close, and the task itself.
struct Writer {
    outbox: Outbox,
    close: oneshot::Sender<Option<CloseReason>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts the writer task, which owns the session.
    fn start(state: &AppState, connection: Uuid, session: actix_ws::Session) -> Writer {
        let (outbox, outbox_rx) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
        let (close, close_rx) = oneshot::channel();
        let task = tokio::spawn(write_frames(
            session,
            outbox_rx,
            close_rx,
            state.config.common.peer_timeout,
            state.delivery.clone(),
            connection,
        ));
        Writer {
            outbox,
            close,
            task,
        }
    }

    /// Asks the writer to close with `close`, lets go of the outbox, and waits (bounded)
    /// for the writer to end.
    async fn close(self, close: Option<CloseReason>) {
        let _ = self.close.send(close);
        drop(self.outbox);
        let _ = timeout(CLEANUP_TIMEOUT * 2, self.task).await;
    }
}

/// The connection loop: answers frames, resumes unacked events, sends heartbeats, and
/// watches the peer's silence and shutdown. Returns how to close the connection.
async fn serve(
    state: &AppState,
    connection: Uuid,
    outbox: &Outbox,
    frames: &mut mpsc::Receiver<Frame>,
) -> Option<CloseReason> {
    let config = &state.config;
    let mut shutdown = state.shutdown.clone();
    let ctx = context(state, connection);
    let now = Instant::now();
    let mut heartbeat = heartbeat_ticks(config.common.heartbeat_interval, now);
    let mut last_heard = now;
    // Every unacked event goes to every connection that opens: the keyset cursor of
    // that resume, until a short page ends it.
    let mut resume: Option<i64> = Some(0);
    let mut batch = Vec::with_capacity(INBOUND_FRAMES);

    loop {
        tokio::select! {
            received = frames.recv_many(&mut batch, INBOUND_FRAMES) => {
                if received == 0 {
                    break None; // the reader ended: the peer is gone
                }
                last_heard = Instant::now();
                match on_frames(&ctx, outbox, batch.drain(..)).await {
                    Ok(None) => {}
                    Ok(Some(close)) => break close,
                    Err(Gone) => break None,
                }
            }
            permits = outbox.reserve_many(RESUME_BATCH + REPLY_ROOM), if resume.is_some() => {
                let Ok(permits) = permits else { break None };
                resume = resume_next_page(state, connection, resume.unwrap_or_default(), permits).await;
            }
            _ = heartbeat.tick() => {
                // A full outbox means the writer is busy already; its deadline covers it.
                let _ = outbox.try_send(Outgoing::Ping);
            }
            _ = sleep_until(last_heard + config.common.peer_timeout) => {
                tracing::warn!(%connection, timeout = ?config.common.peer_timeout, "Orders went silent; dropping the connection");
                break Some(reason(CloseCode::Policy, "no frame within the peer timeout"));
            }
            _ = outbox.closed() => break None, // the writer gave up: the peer stopped reading
            _ = shutdown.changed() => {
                break Some(reason(CloseCode::Away, "Payments is shutting down"));
            }
        }
    }
}

/// What answering the connection's messages needs.
fn context(state: &AppState, connection: Uuid) -> Context<'_> {
    Context {
        store: &state.store,
        ttl: state.config.payment_ttl,
        public_url: &state.public_url,
        connection,
        trace: None,
    }
}

/// The heartbeat's ticks: every `every`, the first one `every` after `now`.
fn heartbeat_ticks(every: Duration, now: Instant) -> Interval {
    let mut heartbeat = interval_at(now + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat
}

/// Sends the next page of unacked events after the cursor `after`, one per permit;
/// returns the cursor of the page after it, if any.
async fn resume_next_page(
    state: &AppState,
    connection: Uuid,
    after: i64,
    permits: mpsc::PermitIterator<'_, Outgoing>,
) -> Option<i64> {
    let delivery = &state.delivery;
    match state
        .store
        .resume_page(after, RESUME_BATCH as i64, delivery.attempts)
        .await
    {
        Ok(page) => {
            if !page.dead.is_empty() {
                delivery.dead_lettered(&page.dead);
            }
            let events = page.send;
            if !events.is_empty() {
                tracing::info!(%connection, events = events.len(), "redelivering unacked events");
            }
            for (event, permit) in events.iter().zip(permits) {
                tracing::debug!(event_id = %event.event_id, order_id = %event.order_id, %connection, "redelivering unacked event");
                permit.send(Outgoing::Text(event.frame()));
            }
            page.next
        }
        Err(e) => {
            // Not lost: redelivery sends them after REDELIVER_AFTER.
            tracing::error!(error = %error_chain(&e), "could not read unacked events for a new connection");
            None
        }
    }
}

/// Forgets the connection's row, within `CLEANUP_TIMEOUT` (a failure is logged).
async fn unregister(state: &AppState, connection: Uuid) {
    match timeout(
        CLEANUP_TIMEOUT,
        state.store.unregister_connection(connection),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "could not unregister the connection")
        }
        Err(_) => tracing::warn!(%connection, "unregistering the connection timed out"),
    }
}

/// The writer is gone (the peer stopped reading, or the connection broke).
struct Gone;

/// Handles the frames read so far: the text messages in one batch, control frames in
/// place. Returns `Some(close)` when the connection must end.
async fn on_frames(
    ctx: &Context<'_>,
    outbox: &Outbox,
    frames: impl Iterator<Item = Frame>,
) -> Result<Option<Option<CloseReason>>, Gone> {
    let inbound = Inbound::read(ctx.connection, frames);
    for payload in inbound.pongs {
        outbox
            .send(Outgoing::Pong(payload))
            .await
            .map_err(|_| Gone)?;
    }
    let (answers, trace) = if inbound.messages.is_empty() {
        (Vec::new(), None)
    } else {
        let Traced { span, context } = batch_trace(&inbound.messages, &inbound.traces);
        let ctx = Context {
            trace: context.as_ref(),
            ..*ctx
        };
        let answers = flow::answer_batch(&ctx, inbound.messages)
            .instrument(span)
            .await;
        (answers, context)
    };
    send_replies(outbox, inbound.slots, answers, trace.as_ref()).await?;
    Ok(inbound.end)
}

/// Where a reply goes in the order of the messages: decoding errors in place, the rest
/// from the batch.
enum Slot {
    Now(ServerMessage),
    Batch,
}

/// What a run of frames holds, up to the one that ends the connection if any.
#[derive(Default)]
struct Inbound {
    /// One per message, in order: where its reply comes from.
    slots: Vec<Slot>,
    /// The decoded messages, for one batch.
    messages: Vec<ClientMessage>,
    /// The trace context each message carried, if any.
    traces: Vec<Option<TraceContext>>,
    /// The payloads of the pings, to answer with pongs.
    pongs: Vec<actix_web::web::Bytes>,
    /// `Some(close)` when the connection must end.
    end: Option<Option<CloseReason>>,
}

/// What one frame means for the connection.
enum Meaning {
    /// A message, and the trace context it carried, if any.
    Message(ClientMessage, Option<TraceContext>),
    /// Refused, with this reply in its place.
    Refused(ServerMessage),
    Ping(actix_web::web::Bytes),
    Ignored,
    /// The connection must end (`Some(reason)`: close with it).
    End(Option<CloseReason>),
}

impl Inbound {
    /// Sorts the frames by what they mean, stopping at the first that ends the connection.
    fn read(connection: Uuid, frames: impl Iterator<Item = Frame>) -> Inbound {
        let mut inbound = Inbound::default();
        for frame in frames {
            match meaning(connection, frame) {
                Meaning::Message(message, trace) => {
                    inbound.messages.push(message);
                    inbound.traces.push(trace);
                    inbound.slots.push(Slot::Batch);
                }
                Meaning::Refused(reply) => inbound.slots.push(Slot::Now(reply)),
                Meaning::Ping(payload) => inbound.pongs.push(payload),
                Meaning::Ignored => {}
                Meaning::End(close) => {
                    inbound.end = Some(close);
                    break;
                }
            }
        }
        inbound
    }
}

/// Decides what one frame means, logging what the connection should hear of.
fn meaning(connection: Uuid, frame: Frame) -> Meaning {
    match frame {
        Ok(AggregatedMessage::Text(text)) => text_meaning(connection, &text),
        Ok(AggregatedMessage::Binary(_)) => {
            tracing::warn!(%connection, "binary frame refused");
            Meaning::End(Some(reason(
                CloseCode::Unsupported,
                "binary frames are not part of payments.v1",
            )))
        }
        Ok(AggregatedMessage::Ping(payload)) => Meaning::Ping(payload),
        Ok(AggregatedMessage::Pong(_)) => Meaning::Ignored,
        Ok(AggregatedMessage::Close(why)) => {
            tracing::info!(%connection, reason = ?why, "Orders closed the connection");
            Meaning::End(why)
        }
        Err(e) if dropped_mid_stream(&e) => {
            // The peer vanished (crashed, or its close frame never came): nothing
            // wrong with what it sent, and Orders reconnects on its own.
            tracing::info!(%connection, "Orders dropped the connection without a close frame");
            Meaning::End(None)
        }
        Err(e) => Meaning::End(Some(protocol_error(connection, &e))),
    }
}

/// Decodes a text frame: a message, a refusal to answer in its place, or (too large)
/// the end of the connection.
fn text_meaning(connection: Uuid, text: &str) -> Meaning {
    match shared_protocol::decode_traced::<ClientMessage>(text) {
        Ok((message, trace)) => {
            tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "received");
            Meaning::Message(message, trace)
        }
        Err(DecodeError::TooLarge { .. }) => Meaning::End(Some(reason(
            CloseCode::Size,
            "messages are limited to 64 KiB",
        ))),
        Err(e) => {
            tracing::warn!(%connection, error = %e, "refused a message");
            Meaning::Refused(ServerMessage::error(e.order_id(), e.code(), e.to_string()))
        }
    }
}

/// The close reason for a WebSocket protocol error (logged).
fn protocol_error(connection: Uuid, e: &ProtocolError) -> CloseReason {
    let too_large = matches!(e, ProtocolError::Overflow)
        || matches!(e, ProtocolError::Io(io) if io.to_string().contains("maximum continuation size"));
    // actix-ws reports text that is not UTF-8 as invalid data.
    let not_utf8 =
        matches!(e, ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData);
    tracing::warn!(%connection, error = %e, "WebSocket protocol error");
    if too_large {
        reason(CloseCode::Size, "messages are limited to 64 KiB")
    } else if not_utf8 {
        // RFC 6455 §7.4.1: 1007, data not consistent with the message type.
        reason(CloseCode::Invalid, "text frames must be UTF-8")
    } else {
        reason(CloseCode::Protocol, "protocol error")
    }
}

/// The span of a batch of messages from Orders, and the context its replies carry
/// ([`service_kit::trace_context::batch_trace`]: no span in an unsampled trace).
fn batch_trace(messages: &[ClientMessage], traces: &[Option<TraceContext>]) -> Traced {
    let contexts = traces.iter().map(Option::as_ref);
    let order = messages.first().and_then(|m| m.order_id());
    service_kit::trace_context::batch_trace("answer messages from Orders", contexts, order)
}

/// Queues the replies in the order of the messages: each slot's own reply, or the
/// next answer of the batch, which carries the batch's trace context.
async fn send_replies(
    outbox: &Outbox,
    slots: Vec<Slot>,
    answers: Vec<Vec<ServerMessage>>,
    trace: Option<&TraceContext>,
) -> Result<(), Gone> {
    let mut answers = answers.into_iter();
    for slot in slots {
        let (replies, trace) = match slot {
            Slot::Now(reply) => (vec![reply], None),
            Slot::Batch => (answers.next().unwrap_or_default(), trace),
        };
        for reply in replies {
            tracing::debug!(r#type = reply.type_name(), order_id = ?reply.order_id(), "sending");
            // Waits while the outbox is full: the writer's deadline bounds the wait.
            outbox
                .send(Outgoing::Text(shared_protocol::encode_traced(
                    &reply, trace,
                )))
                .await
                .map_err(|_| Gone)?;
        }
    }
    Ok(())
}

fn reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(description.to_owned()),
    }
}

/// Whether the stream ended because the TCP connection did (actix-ws reports the end of
/// the request payload mid-stream as an I/O error wrapping `PayloadError::Incomplete`).
fn dropped_mid_stream(error: &ProtocolError) -> bool {
    let ProtocolError::Io(io) = error else {
        return false;
    };
    io.kind() == std::io::ErrorKind::UnexpectedEof
        || io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<actix_web::error::PayloadError>())
            .is_some_and(|payload| matches!(payload, actix_web::error::PayloadError::Incomplete(_)))
}
