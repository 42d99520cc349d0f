//! What a connection's task (`connection_task`) does with frames, beyond its loop: a
//! frame from the client is recorded, decoded and answered by the rule that picks it
//! ([`on_frame`], with `rules`), or, over the builder's limits
//! ([`FakeServerBuilder::max_message_size`](super::FakeServerBuilder::max_message_size)),
//! recorded as a contract violation and answered with a close 1009 ([`on_oversize`]); a
//! message of the test is cut into [`fragments`]; and every frame shows in the
//! transcript as its [`frame_kind`], except the client's close frame, recorded as it was
//! on the wire ([`on_close`], with `wire`), since tungstenite changes what RFC 6455
//! forbids in it.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::closed::Closed;
use super::command::Command;
use super::rules::{fire, pick};
use super::state::{Inbound, Shared, State};
use super::wire::WireClose;
use crate::codec::Payload;
use crate::response::Response;
use crate::transcript::{Direction, FrameKind};

/// The close code for a message too big to process (RFC 6455, 7.4.1).
const CLOSE_TOO_BIG: u16 = 1009;

/// Records a frame from the client: a data frame decoded and answered ([`on_data`]), a
/// close frame as it was on the wire (`wire`, which the stream saw; else as tungstenite
/// read it) and as how the connection ended ([`on_close`]), any other as it came.
pub(super) fn on_frame<In, Out>(
    shared: &Arc<Shared<In, Out>>,
    id: usize,
    frame: Message,
    wire: Option<WireClose>,
    commands: &mpsc::UnboundedSender<Command>,
) where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    let kind = frame_kind(&frame);
    match frame {
        Message::Text(_) | Message::Binary(_) => {
            if let Some(payload) = payload(frame) {
                on_data(shared, id, kind, payload, commands);
            }
        }
        Message::Close(frame) => {
            let wire = wire.unwrap_or_else(|| match frame {
                Some(f) => WireClose::from_parts(Some(u16::from(f.code)), f.reason.as_str()),
                None => WireClose::from_parts(None, ""),
            });
            on_close(shared, id, &wire);
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
            shared.lock().connections[id].record(Direction::FromClient, kind, None);
        }
    }
}

/// Records the client's close frame as it was on the wire, and how the connection
/// ended: with its code and reason, or without a code (an empty payload, or a 1-byte
/// one). What RFC 6455 forbids in it (a code such as 1006, see
/// [`WireClose::problems`]) makes it a protocol violation too, which `expect_invalid`
/// takes and the drop check reports. Also for a close frame tungstenite could not
/// read (it ends the connection then, with no answer).
pub(super) fn on_close<In, Out>(shared: &Shared<In, Out>, id: usize, wire: &WireClose) {
    let (code, reason) = (wire.code(), wire.reason());
    let problems = wire.problems().join("; ");
    let mut state = shared.lock();
    let conn = &mut state.connections[id];
    let kind = FrameKind::Close {
        code,
        reason: reason.clone(),
    };
    if problems.is_empty() {
        conn.record(Direction::FromClient, kind, None);
    } else {
        let note = format!("protocol violation: {problems}");
        let entry = conn.record(Direction::FromClient, kind, Some(note));
        conn.inbound.push(Inbound {
            entry,
            message: None,
            error: Some(problems),
            consumed: false,
            handled: false,
        });
    }
    conn.closed = Some(match code {
        Some(code) => Closed::Frame { code, reason },
        None => Closed::FrameWithoutCode,
    });
}

/// Decodes a data frame from the client and records it, noted with the rule that
/// answers it (see `rules::pick`) or why it is not an `In`; then fires that rule.
fn on_data<In, Out>(
    shared: &Arc<Shared<In, Out>>,
    id: usize,
    kind: FrameKind,
    payload: Payload,
    commands: &mpsc::UnboundedSender<Command>,
) where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    let mut state = shared.lock();
    let fits = match &shared.config.contract {
        Some(contract) => contract(state.connections[id].request.path(), &payload),
        None => Ok(()),
    };
    let (message, error) = match fits.and_then(|()| shared.config.codec.decode(&payload)) {
        Ok(message) => (Some(message), None),
        Err(e) => (None, Some(e)),
    };
    let mut note = error.as_ref().map(|e| format!("contract violation: {e}"));
    // The rule's reply runs after the lock is released, so a reply closure may call
    // back into the fake.
    let mut answer = None;
    if let Some(message) = &message
        && let Some((reply, delay, described)) = pick(&mut state.rules, id, message)
    {
        note = Some(described);
        answer = Some((reply, delay));
    }
    let replayed = answer.is_none() && state.replay.is_some();
    let conn = &mut state.connections[id];
    let entry = conn.record(Direction::FromClient, kind, note);
    conn.inbound.push(Inbound {
        entry,
        message: message.clone(),
        error,
        consumed: false,
        handled: answer.is_some() || replayed,
    });
    let replay = replayed
        .then(|| replay(&mut state, id, entry, &payload))
        .flatten();
    drop(state);
    if let (Some((reply, delay)), Some(message)) = (answer, message) {
        fire(shared, id, reply(&message), delay, commands);
    }
    if let Some(response) = replay {
        fire(shared, id, response, None, commands);
    }
}

/// The replay's answer to the client's frame `entry` on connection `id`, noted in the
/// transcript; a frame that leaves the recording is a failure, reported at drop.
fn replay<In, Out>(
    state: &mut State<In, Out>,
    id: usize,
    entry: usize,
    payload: &Payload,
) -> Option<Response<Out>> {
    let State {
        replay,
        connections,
        failures,
        ..
    } = state;
    let conn = &mut connections[id];
    let (answer, note) = match replay.as_mut()?.answer(id, payload, &conn.transcript) {
        Ok(Some(response)) => (Some(response), "answered by the replay"),
        Ok(None) => (None, "not answered: the client had left the recording"),
        Err(failure) => {
            failures.push(failure);
            (None, "left the recording")
        }
    };
    conn.transcript[entry].note = Some(note.to_owned());
    answer
}

/// What the fake sends on connection `id` as it opens: the builder's `on_connect`
/// greeting, then, when replaying, the server's frames recorded before the client's
/// first. A connection the recording does not have is a failure, reported at drop.
pub(super) fn greet<In: 'static, Out: 'static>(
    shared: &Shared<In, Out>,
    id: usize,
    commands: &mpsc::UnboundedSender<Command>,
) {
    if let Some(greeting) = &shared.config.greeting {
        let request = shared.lock().connections[id].request.clone();
        fire(shared, id, greeting(&request), None, commands);
    }
    let mut state = shared.lock();
    let Some(replay) = state.replay.as_mut() else {
        return;
    };
    match replay.greeting(id) {
        Ok(response) => {
            drop(state);
            fire(shared, id, response, None, commands);
        }
        Err(failure) => state.failures.push(failure),
    }
}

/// The frames that carry `payload` in fragments of at most `size` bytes (`size` > 0).
pub(super) fn fragments(payload: Payload, size: usize) -> Vec<Message> {
    let (opcode, bytes) = match payload {
        Payload::Text(text) => (Data::Text, text.into_bytes()),
        Payload::Binary(bytes) => (Data::Binary, bytes),
    };
    let size = size.max(1);
    let count = bytes.len().div_ceil(size).max(1);
    let mut frames = Vec::with_capacity(count);
    let mut chunks = bytes.chunks(size);
    for i in 0..count {
        let chunk = chunks.next().unwrap_or_default().to_vec();
        let opcode = if i == 0 { opcode } else { Data::Continue };
        frames.push(Message::Frame(Frame::message(
            chunk,
            OpCode::Data(opcode),
            i + 1 == count,
        )));
    }
    frames
}

/// How a fragmented message shows in the transcript: the whole of it, as one frame.
pub(super) fn fragmented_entry(payload: &Payload, size: usize) -> (FrameKind, String) {
    let (frame, len) = match payload {
        Payload::Text(text) => (FrameKind::Text(text.clone()), text.len()),
        Payload::Binary(bytes) => (FrameKind::Binary(bytes.clone()), bytes.len()),
    };
    let count = len.div_ceil(size.max(1)).max(1);
    (
        frame,
        format!("sent in {count} fragments of at most {size} bytes"),
    )
}

/// Records a frame or message from the client over the builder's limits (tungstenite
/// refused it unread) as a contract violation, and the fake's close with 1009 that
/// answers it; returns that close frame, for the caller to write.
pub(super) fn on_oversize<In, Out>(
    shared: &Shared<In, Out>,
    id: usize,
    error: &CapacityError,
) -> Message {
    let (size, max) = match error {
        CapacityError::MessageTooLong { size, max_size } => (*size, *max_size),
        CapacityError::TooManyHeaders => (0, 0),
    };
    let reason = "message too big";
    let mut state = shared.lock();
    let conn = &mut state.connections[id];
    let entry = conn.record(
        Direction::FromClient,
        FrameKind::Oversize { size, max },
        Some(format!("contract violation: {error}")),
    );
    conn.inbound.push(Inbound {
        entry,
        message: None,
        error: Some(format!("over the fake's size limit: {error}")),
        consumed: false,
        handled: false,
    });
    conn.record(
        Direction::ToClient,
        FrameKind::Close {
            code: Some(CLOSE_TOO_BIG),
            reason: reason.into(),
        },
        None,
    );
    drop(state);
    shared.notify.notify_waiters();
    Message::Close(Some(CloseFrame {
        code: CLOSE_TOO_BIG.into(),
        reason: reason.into(),
    }))
}
/// How a frame shows in the transcript.
pub(super) fn frame_kind(message: &Message) -> FrameKind {
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
