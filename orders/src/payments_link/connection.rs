//! One connection's loop: frames from Payments, requests to send, pings, the peer's
//! silence deadline, and how the connection ends.

use actix_http::ws::Item;
use actix_web::web::Bytes;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use futures_util::StreamExt;
use shared_protocol::{
    ClientMessage, DecodeError, MAX_MESSAGE_BYTES, Message as _, OrderId, ServerMessage,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use super::connect::Framed;
use super::pipeline::{Pipeline, Window};
use super::walk::{Overflow, Walk, next_page};
use super::writer::{text, write, writer_end};
use super::{CLOSE_WAIT, End, LinkConfig, Lost, PAGE, REPLY_ROOM, SPARE, WRITE_QUEUE};
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

    pub(super) async fn run(
        mut self,
        framed: Framed,
        outbox: &mut mpsc::Receiver<ClientMessage>,
        overflow: &Overflow,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let (sink, mut stream) = framed.split();
        // The writer owns the socket's sending half, so reading never waits on a write;
        // it gives up on a peer that reads nothing for `peer_timeout`.
        let (out, queue) = mpsc::channel(WRITE_QUEUE);
        let mut writer = tokio::task::spawn_local(write(sink, queue, self.config.peer_timeout));

        // Requests queued while the link was down are all in the database too: drop
        // them, and any record of dropped ones, and resume from the database alone.
        while outbox.try_recv().is_ok() {}
        overflow.take();
        let mut catch_up = Some(Walk::all_from(None));
        let mut sweep: Option<Walk> = None;

        let ending = self
            .serve(
                &mut stream,
                &out,
                &mut writer,
                outbox,
                overflow,
                shutdown,
                &mut catch_up,
                &mut sweep,
            )
            .await;

        // Let the writer send what is queued and the close frame, for a bounded time.
        if writer.is_finished() {
            return ending.end;
        }
        let wait = async {
            if let Some(reason) = ending.close {
                // Behind whatever is queued: Payments reads the requests, then the close.
                if out.send(Message::Close(Some(reason))).await.is_err() {
                    return;
                }
            }
            drop(out);
            let _ = (&mut writer).await;
        };
        if tokio::time::timeout(CLOSE_WAIT, wait).await.is_err() {
            writer.abort();
        }
        ending.end
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<Framed>,
        out: &mpsc::Sender<Message>,
        writer: &mut tokio::task::JoinHandle<Lost>,
        outbox: &mut mpsc::Receiver<ClientMessage>,
        overflow: &Overflow,
        shutdown: &mut watch::Receiver<bool>,
        catch_up: &mut Option<Walk>,
        sweep: &mut Option<Walk>,
    ) -> Ending {
        let now = Instant::now();
        let mut heartbeat = interval_at(
            now + self.config.heartbeat_interval,
            self.config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweeper = interval_at(now + self.config.resend_after, self.config.resend_after);
        sweeper.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = now;
        let mut pipeline = Pipeline::new();
        let mut window = Window::default();

        loop {
            // A page of requests goes out only when the writer has room for it and for
            // the replies to what is being read, and the window has room for its orders,
            // so requests never crowd out reading.
            let free = pipeline.free(out);
            let room_for_page =
                free >= PAGE as usize + REPLY_ROOM && window.has_room(PAGE as usize);
            tokio::select! {
                frame = stream.next(), if pipeline.has_room() => {
                    let frame = match frame {
                        None => return Ending::lost(Lost::TcpClosed),
                        Some(Err(e)) => {
                            // Oversized frames and protocol violations end up here.
                            let description = e.to_string();
                            return Ending::closing(Lost::Protocol(description.clone()), close_code_for(&e), &description);
                        }
                        Some(Ok(frame)) => frame,
                    };
                    last_heard = Instant::now();
                    match self.on_frame(frame) {
                        Incoming::Nothing => {}
                        Incoming::Pong(payload) => {
                            let _ = out.try_send(Message::Pong(payload));
                        }
                        Incoming::Closed(reason) => {
                            return Ending { end: End::Lost(Lost::Closed(reason.clone())), close: reason };
                        }
                        Incoming::TooLarge => {
                            return Ending::closing(Lost::TooLarge, CloseCode::Size, "message over 64 KiB");
                        }
                        Incoming::Message(message) => {
                            window.answered(&message);
                            pipeline.waiting.push_back(message);
                            pipeline.start(self.store, self.metrics, out);
                        }
                    }
                }
                Some(batch) = pipeline.in_flight.next(), if !pipeline.in_flight.is_empty() => {
                    pipeline.finished(&batch);
                    for applied in batch {
                        match applied.result {
                            Ok(reply) => {
                                if let Some(reply) = &reply {
                                    // Room was reserved when the batch started: never waits.
                                    match out.try_send(text(self.metrics, reply)) {
                                        Ok(()) => {}
                                        Err(mpsc::error::TrySendError::Closed(_)) => {
                                            return Ending::lost(writer_end(writer).await);
                                        }
                                        Err(mpsc::error::TrySendError::Full(_)) => {
                                            // Not reached (one reply per message, reserved);
                                            // if it were, Payments re-sends what needs it.
                                            tracing::error!(order_id = ?applied.order, "the write queue is full; a reply was not sent");
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                // Not applied, so not acked: Payments delivers it again, and
                                // the sweeper re-sends requests whose answer was lost this way.
                                tracing::error!(order_id = ?applied.order, error = %crate::error::error_chain(&e), "could not apply a message from Payments; it was not acked");
                            }
                        }
                    }
                    pipeline.start(self.store, self.metrics, out);
                }
                permits = out.reserve_many(SPARE + 1), if pipeline.blocked_on_writer(out) => {
                    // The writer made room: start what waited for it.
                    drop(permits);
                    pipeline.start(self.store, self.metrics, out);
                }
                Some(message) = outbox.recv(), if free > REPLY_ROOM && window.has_room(1) => {
                    window.sent(&message);
                    let _ = out.try_send(text(self.metrics, &message));
                }
                () = overflow.notified() => {
                    if let Some(oldest) = overflow.take() {
                        // Requests were dropped while the link was busy: walk the open
                        // orders from the oldest dropped one (re-sends are idempotent).
                        let from = OpenKey { created_at: oldest, id: OrderId(uuid::Uuid::nil()) };
                        let after = match catch_up {
                            Some(Walk { after: Some(at), .. }) => Some((*at).min(from)),
                            Some(Walk { after: None, .. }) => None,
                            None => Some(from),
                        };
                        tracing::info!(%oldest, "requests were dropped while the link was busy; sending them from the database");
                        *catch_up = Some(Walk::all_from(after));
                    }
                }
                () = std::future::ready(()), if room_for_page && (catch_up.is_some() || sweep.is_some()) => {
                    // Awaited here, not raced in select!, so a busy socket cannot cancel it.
                    for message in next_page(self.store, catch_up, sweep).await {
                        window.sent(&message);
                        let _ = out.try_send(text(self.metrics, &message));
                    }
                }
                _ = heartbeat.tick() => {
                    let _ = out.try_send(Message::Ping(Bytes::new()));
                }
                _ = sleep_until(last_heard + self.config.peer_timeout) => {
                    // A dead peer cannot read a close frame; just drop the socket.
                    return Ending::lost(Lost::Silent(self.config.peer_timeout));
                }
                _ = sweeper.tick() => {
                    // Requests unanswered this long are the sweep's to send again.
                    window.forget_older_than(self.config.resend_after);
                    if sweep.is_none() {
                        *sweep = Some(Walk::sweep(self.config.resend_after));
                    }
                }
                why = &mut *writer => {
                    return Ending::lost(why.unwrap_or_else(|e| Lost::WriterFailed(e.to_string())));
                }
                _ = shutdown.changed() => {
                    return Ending {
                        end: End::Shutdown,
                        close: Some(CloseReason { code: CloseCode::Away, description: Some("Orders is shutting down".into()) }),
                    };
                }
            }
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
        match shared_protocol::decode::<ServerMessage>(text) {
            Ok(message) => {
                tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "received from Payments");
                self.metrics.message("in", message.type_name());
                Incoming::Message(message)
            }
            Err(DecodeError::TooLarge { .. }) => Incoming::TooLarge,
            Err(e) => {
                tracing::warn!(error = %e, frame = %truncate(text, 256), "ignored a message from Payments that does not follow the protocol");
                Incoming::Nothing
            }
        }
    }
}

pub(super) enum Incoming {
    Nothing,
    Pong(Bytes),
    Closed(Option<CloseReason>),
    TooLarge,
    Message(ServerMessage),
}

pub(super) fn close_code_for(e: &actix_http::ws::ProtocolError) -> CloseCode {
    match e {
        actix_http::ws::ProtocolError::Overflow => CloseCode::Size,
        _ => CloseCode::Protocol,
    }
}

pub(super) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
