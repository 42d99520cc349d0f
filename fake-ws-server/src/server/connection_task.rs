//! The task of one accepted connection: one `select!` loop over the socket's frames,
//! the [`Command`]s of the test and its own pings. It records every frame in the
//! shared state (`state`), decodes what the client sends, fires the mounted rules
//! (`builder`, `rules`), and wakes the waiters; a [`Connection`](super::Connection)
//! handle drives it through the [`Command`] channel.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::closed::{Closed, SendError};
use super::frames::{fragmented_entry, fragments, on_oversize};
use super::pongs::PongFilter;
use super::rules::{fire, pick};
use super::state::{Inbound, Shared};
use super::stream::Stream;
use crate::codec::Payload;
use crate::transcript::{Direction, FrameKind};

/// What a connection's WebSocket runs over: its stream, under the filter that lets a
/// stalled connection answer no ping.
type Filtered = PongFilter<Stream>;

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
    /// Go on reading, but answer no ping.
    Stall(oneshot::Sender<()>),
    /// Ping the client every so often (`None`: stop).
    PingEvery(Option<Duration>, oneshot::Sender<()>),
    /// Ping the client once with this payload; answers with the ping's transcript entry.
    Ping(Vec<u8>, oneshot::Sender<usize>),
    /// Send a message in fragments of at most this many bytes.
    Fragmented(Payload, usize, oneshot::Sender<()>),
}

pub(super) async fn run_connection<In, Out>(
    shared: Arc<Shared<In, Out>>,
    id: usize,
    mut ws: WebSocketStream<Filtered>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    commands_tx: mpsc::UnboundedSender<Command>,
) where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    let mut reading = true;
    let mut pings: Option<tokio::time::Interval> = None;
    loop {
        tokio::select! {
            // Commands first: one the test sent before the client wrote a frame takes
            // effect before that frame is read (`stop_answering_pings` relies on it).
            biased;
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Send(message, done) => {
                        let written = write(&shared, id, &mut ws, message).await;
                        let gone = written == Err(SendError::Closed(Closed::Dropped));
                        let _ = done.send(written);
                        if gone {
                            return;
                        }
                    }
                    Command::Close(code, reason, done) => {
                        let message = Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }));
                        let written = write(&shared, id, &mut ws, message).await;
                        let gone = written == Err(SendError::Closed(Closed::Dropped));
                        let _ = done.send(written);
                        if gone {
                            return;
                        }
                    }
                    Command::Abort(done) => {
                        reset(ws);
                        let mut state = shared.lock();
                        state.connections[id].closed.get_or_insert(Closed::Aborted);
                        drop(state);
                        let _ = done.send(());
                        return;
                    }
                    Command::Read(read, done) => {
                        reading = read;
                        if read {
                            ws.get_mut().stall(false);
                        }
                        let _ = done.send(());
                    }
                    Command::Stall(done) => {
                        ws.get_mut().stall(true);
                        let _ = done.send(());
                    }
                    Command::Ping(payload, done) => {
                        // Not written, no entry: `done` is dropped and the ping is not awaited.
                        match write(&shared, id, &mut ws, Message::Ping(payload.into())).await {
                            Ok(()) => {
                                let entry = shared.lock().connections[id].transcript.len() - 1;
                                let _ = done.send(entry);
                            }
                            Err(SendError::Closed(Closed::Dropped)) => return,
                            Err(_) => {}
                        }
                    }
                    Command::Fragmented(payload, size, done) => {
                        let (frame, note) = fragmented_entry(&payload, size);
                        let mut written = Ok(());
                        for fragment in fragments(payload, size) {
                            written = write_unrecorded(&shared, id, &mut ws, fragment).await;
                            if written.is_err() {
                                break;
                            }
                        }
                        if written.is_ok() {
                            shared.lock().connections[id].record(Direction::ToClient, frame, Some(note));
                        }
                        let _ = done.send(());
                        if written == Err(SendError::Closed(Closed::Dropped)) {
                            return;
                        }
                    }
                    Command::PingEvery(every, done) => {
                        pings = every.map(|every| {
                            let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                            pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            pings
                        });
                        let _ = done.send(());
                    }
                }
            }
            _ = async { pings.as_mut().expect("guarded").tick().await }, if pings.is_some() => {
                let ping = Message::Ping(Vec::new().into());
                if write(&shared, id, &mut ws, ping).await == Err(SendError::Closed(Closed::Dropped)) {
                    return;
                }
            }
            frame = ws.next(), if reading => {
                let frame = match frame {
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(error))) => {
                        // The frame is half read: close with 1009 and end the connection.
                        let close = on_oversize(&shared, id, &error);
                        let _ = write_unrecorded(&shared, id, &mut ws, close).await;
                        return;
                    }
                    None | Some(Err(_)) => return,
                    Some(Ok(frame)) => frame,
                };
                let closed = matches!(frame, Message::Close(_));
                on_frame(&shared, id, frame, &commands_tx);
                shared.notify.notify_waiters();
                if closed {
                    // tungstenite answers the close; flush it, then the stream ends.
                    let _ = ws.flush().await;
                }
            }
        }
    }
}

/// Writes a frame and records it in the transcript once written (only then). A broken
/// socket (the client is gone) is `Closed(Dropped)`, which ends the connection even
/// while the fake is not reading (when a read would not tell); a frame after a close
/// frame is refused by tungstenite and not sent.
async fn write<In, Out>(
    shared: &Shared<In, Out>,
    id: usize,
    ws: &mut WebSocketStream<Filtered>,
    message: Message,
) -> Result<(), SendError> {
    let frame = frame_kind(&message);
    write_unrecorded(shared, id, ws, message).await?;
    shared.lock().connections[id].record(Direction::ToClient, frame, None);
    Ok(())
}

/// [`write`] without the transcript entry: for the fragments of one message, which
/// is recorded once, whole.
async fn write_unrecorded<In, Out>(
    shared: &Shared<In, Out>,
    id: usize,
    ws: &mut WebSocketStream<Filtered>,
    message: Message,
) -> Result<(), SendError> {
    match ws.send(message).await {
        Ok(()) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Io(_)) => {
            Err(SendError::Closed(Closed::Dropped))
        }
        Err(_) => Err(match &shared.lock().connections[id].closed {
            Some(closed) => SendError::Closed(closed.clone()),
            None => SendError::Closing,
        }),
    }
}

/// Drops the TCP connection with a RST instead of a FIN: the abrupt end a crashed
/// peer produces.
pub(super) fn reset(ws: WebSocketStream<Filtered>) {
    let _ = socket2::SockRef::from(ws.get_ref().inner().tcp()).set_linger(Some(Duration::ZERO));
    drop(ws);
}

fn frame_kind(message: &Message) -> FrameKind {
    match message {
        Message::Text(text) => FrameKind::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => FrameKind::Binary(bytes.to_vec()),
        Message::Ping(bytes) => FrameKind::Ping(bytes.to_vec()),
        Message::Pong(bytes) => FrameKind::Pong(bytes.to_vec()),
        Message::Close(frame) => FrameKind::Close {
            code: frame.as_ref().map(|f| u16::from(f.code)),
            reason: frame
                .as_ref()
                .map(|f| f.reason.as_str().to_owned())
                .unwrap_or_default(),
        },
        Message::Frame(_) => FrameKind::Binary(Vec::new()),
    }
}

/// The payload of a data frame (`None` for a control frame).
fn payload(message: Message) -> Option<Payload> {
    match message {
        Message::Text(text) => Some(Payload::Text(text.as_str().to_owned())),
        Message::Binary(bytes) => Some(Payload::Binary(bytes.to_vec())),
        _ => None,
    }
}

/// Records a frame from the client, decodes it, and runs the rule that answers it.
fn on_frame<In, Out>(
    shared: &Arc<Shared<In, Out>>,
    id: usize,
    frame: Message,
    commands: &mpsc::UnboundedSender<Command>,
) where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    let kind = frame_kind(&frame);
    let mut state = shared.lock();
    match frame {
        Message::Text(_) | Message::Binary(_) => {
            let Some(payload) = payload(frame) else {
                return;
            };
            let decoded = shared.config.codec.decode(&payload);
            let (message, error) = match decoded {
                Ok(message) => (Some(message), None),
                Err(e) => (None, Some(e)),
            };
            let mut note = error.as_ref().map(|e| format!("contract violation: {e}"));
            // The rule that answers (see `rules::pick`); its reply runs after the lock
            // is released, so a reply closure may call back into the fake.
            let mut answer = None;
            if let Some(message) = &message
                && let Some((reply, delay, described)) = pick(&mut state.rules, id, message)
            {
                note = Some(described);
                answer = Some((reply, delay));
            }
            let conn = &mut state.connections[id];
            let entry = conn.record(Direction::FromClient, kind, note);
            conn.inbound.push(Inbound {
                entry,
                message: message.clone(),
                error,
                consumed: false,
                handled: answer.is_some(),
            });
            drop(state);
            if let (Some((reply, delay)), Some(message)) = (answer, message) {
                fire(shared, id, reply(&message), delay, commands);
            }
        }
        Message::Close(frame) => {
            let conn = &mut state.connections[id];
            conn.record(Direction::FromClient, kind, None);
            conn.closed = Some(match frame {
                Some(f) => Closed::Frame {
                    code: u16::from(f.code),
                    reason: f.reason.as_str().to_owned(),
                },
                None => Closed::FrameWithoutCode,
            });
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
            state.connections[id].record(Direction::FromClient, kind, None);
        }
    }
}
