//! [`Replay`]: a [`Recording`] played back as the fake's answers
//! ([`FakeServerBuilder::replay`](super::FakeServerBuilder::replay)). Each connection
//! follows the recording's connection of the same index: the server's frames before
//! the first client frame are sent when it opens, and each client message that matches
//! the next recorded one is answered with the server's frames recorded after it. A
//! message that does not match is a failure with a diff, the place in the recording,
//! and the transcript.

use std::time::Duration;

use serde_json::Value;

use super::closest::{diff, pretty};
use crate::codec::Payload;
use crate::record::{RecordedFrame, RecordedKind, Recording, Sender};
use crate::response::Response;
use crate::transcript::{TranscriptEntry, render};

/// A recording to replay as a fake server, with how to match the client's messages
/// against the recorded ones. Mount it with
/// [`FakeServerBuilder::replay`](super::FakeServerBuilder::replay).
///
/// Matching: a recorded client text frame and the client's text frame match when both
/// are JSON and equal once the ignored fields ([`Replay::ignore_fields`],
/// [`Replay::echo_fields`]) are removed from both, or, when either is not JSON, when
/// the texts are equal; binary frames match when their bytes are equal.
///
/// # Examples
///
/// ```
/// use fake_ws_server::{FakeServer, Recording, Replay};
/// use futures_util::{SinkExt, StreamExt};
/// use tokio_tungstenite::tungstenite::Message;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let recording = Recording::from_jsonl(concat!(
///     r#"{"at_ms":0,"connection":0,"from":"server","kind":"text","text":"{\"type\":\"welcome\"}"}"#, "\n",
///     r#"{"at_ms":5,"connection":0,"from":"client","kind":"text","text":"{\"type\":\"join\",\"id\":\"a1\"}"}"#, "\n",
///     r#"{"at_ms":9,"connection":0,"from":"server","kind":"text","text":"{\"type\":\"joined\",\"id\":\"a1\"}"}"#, "\n",
/// )).unwrap();
/// let fake = FakeServer::json()
///     .replay(Replay::new(recording).echo_fields(["/id"]).without_delays())
///     .start()
///     .await;
/// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
/// let greeting = client.next().await.unwrap().unwrap();
/// assert_eq!(greeting, Message::text(r#"{"type":"welcome"}"#));
/// client.send(Message::text(r#"{"type":"join","id":"b2"}"#)).await.unwrap();
/// // The recorded answer, with the client's id where the recording had "a1".
/// let joined = client.next().await.unwrap().unwrap();
/// assert_eq!(joined, Message::text(r#"{"id":"b2","type":"joined"}"#));
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Replay {
    recording: Recording,
    ignored: Vec<String>,
    echoed: Vec<String>,
    delays: bool,
}

impl Replay {
    /// Replays `recording`, matching the client's messages exactly, with the recorded
    /// delays.
    pub fn new(recording: Recording) -> Self {
        Replay {
            recording,
            ignored: Vec::new(),
            echoed: Vec::new(),
            delays: true,
        }
    }

    /// Fields left out when a client message is compared with the recorded one, as JSON
    /// pointers (RFC 6901: `"/order_id"`, `"/trace/traceparent"`, `"/items/0/id"`): what
    /// differs from run to run (ids, timestamps). A pointer to nothing is no error.
    pub fn ignore_fields<S: Into<String>>(mut self, pointers: impl IntoIterator<Item = S>) -> Self {
        self.ignored.extend(pointers.into_iter().map(Into::into));
        self
    }

    /// Fields the server echoes: ignored when matching, as
    /// [`Replay::ignore_fields`], and the value the client sent there replaces, in every
    /// server frame replayed after it on that connection, each JSON value equal to the
    /// one the recording had there (strings and numbers, anywhere in the frame). So an
    /// `order_id` the client made up this run comes back in the recorded answers
    /// instead of the recorded run's, wherever the answers carry it.
    pub fn echo_fields<S: Into<String>>(mut self, pointers: impl IntoIterator<Item = S>) -> Self {
        self.echoed.extend(pointers.into_iter().map(Into::into));
        self
    }

    /// Sends the recorded answers at once, without the recorded delays (the default
    /// keeps them: each answer comes as long after the frame before it as it did when
    /// recorded).
    pub fn without_delays(mut self) -> Self {
        self.delays = false;
        self
    }
}

/// Where one connection of the fake stands in its recorded connection.
#[derive(Default)]
struct Cursor {
    /// The next frame of the connection's script.
    next: usize,
    /// The client left the recording: nothing more is answered.
    derailed: bool,
    /// Recorded values of echoed fields, and what the client sent instead.
    substitutions: Vec<(Value, Value)>,
}

/// A [`Replay`] being played: the recording's frames by connection, and a cursor for
/// each connection of the fake.
pub(super) struct Replayer {
    replay: Replay,
    cursors: Vec<Cursor>,
}

impl Replayer {
    pub(super) fn new(replay: Replay) -> Self {
        Replayer {
            replay,
            cursors: Vec::new(),
        }
    }

    /// The frames of recorded connection `conn`, with their places in the recording.
    fn script(&self, conn: usize) -> Vec<(usize, &RecordedFrame)> {
        self.replay.recording.connection(conn).collect()
    }

    fn cursor(&mut self, conn: usize) -> &mut Cursor {
        if self.cursors.len() <= conn {
            self.cursors.resize_with(conn + 1, Cursor::default);
        }
        &mut self.cursors[conn]
    }

    /// What connection `conn` sends when it opens: the server's frames recorded before
    /// the client's first; a failure when the recording has no such connection.
    pub(super) fn greeting<Out>(&mut self, conn: usize) -> Result<Response<Out>, String> {
        let recorded = self.replay.recording.connections();
        if conn >= recorded {
            self.cursor(conn).derailed = true;
            return Err(format!(
                "connection {conn}: the client opened a connection the recording does not have (it has {recorded}); the fake answers nothing on it"
            ));
        }
        Ok(self.answers(conn, 0))
    }

    /// The answer to `payload`, a data frame from the client on connection `conn`,
    /// whose transcript (this frame included) is `transcript`: the server's frames
    /// recorded after the matching client frame; `Err` with the failure message when it
    /// does not match; `Ok(None)` after an earlier failure.
    pub(super) fn answer<Out>(
        &mut self,
        conn: usize,
        payload: &Payload,
        transcript: &[TranscriptEntry],
    ) -> Result<Option<Response<Out>>, String> {
        if self.cursor(conn).derailed {
            return Ok(None);
        }
        let next = self.cursor(conn).next;
        let expected = self
            .script(conn)
            .get(next)
            .map(|&(place, f)| (place, f.clone()));
        let Some((place, expected)) = expected else {
            return Err(self.deviation(conn, None, payload, transcript));
        };
        let matched = expected.from == Sender::Client && self.matches(&expected.kind, payload);
        if !matched {
            return Err(self.deviation(conn, Some((place, &expected)), payload, transcript));
        }
        let substitutions = self.substitutions(&expected.kind, payload);
        let cursor = self.cursor(conn);
        cursor.substitutions.extend(substitutions);
        cursor.next = next + 1;
        Ok(Some(self.answers(conn, expected.at_ms)))
    }

    /// The server frames from the cursor on, up to the next client frame, as a
    /// response; `since_ms` is when the frame before them was recorded.
    fn answers<Out>(&mut self, conn: usize, mut since_ms: u64) -> Response<Out> {
        let start = self.cursor(conn).next;
        let frames: Vec<RecordedFrame> = self
            .script(conn)
            .into_iter()
            .skip(start)
            .take_while(|(_, f)| f.from == Sender::Server)
            .map(|(_, f)| f.clone())
            .collect();
        self.cursor(conn).next = start + frames.len();
        let mut response = Response::new();
        for frame in frames {
            if self.replay.delays && frame.at_ms > since_ms {
                response = response.delay(Duration::from_millis(frame.at_ms - since_ms));
            }
            since_ms = since_ms.max(frame.at_ms);
            response = match frame.kind {
                RecordedKind::Text { text } => response.text(self.substitute(conn, text)),
                RecordedKind::Binary { bytes } => response.binary(bytes),
                RecordedKind::Close { code, reason } => {
                    response.close(code.unwrap_or(1000), reason)
                }
            };
        }
        response
    }

    /// Whether the client's `payload` matches the recorded `kind`.
    fn matches(&self, kind: &RecordedKind, payload: &Payload) -> bool {
        match (kind, payload) {
            (RecordedKind::Text { text: expected }, Payload::Text(actual)) => {
                match (self.comparable(expected), self.comparable(actual)) {
                    (Some(expected), Some(actual)) => expected == actual,
                    _ => expected == actual,
                }
            }
            (RecordedKind::Binary { bytes }, Payload::Binary(actual)) => bytes == actual,
            _ => false,
        }
    }

    /// `text` as JSON without the ignored and echoed fields; `None` when not JSON.
    fn comparable(&self, text: &str) -> Option<Value> {
        let mut json: Value = serde_json::from_str(text).ok()?;
        for pointer in self.replay.ignored.iter().chain(&self.replay.echoed) {
            remove(&mut json, pointer);
        }
        Some(json)
    }

    /// What the echoed fields were in the recording, and are in the client's message.
    fn substitutions(&self, kind: &RecordedKind, payload: &Payload) -> Vec<(Value, Value)> {
        let (RecordedKind::Text { text: recorded }, Payload::Text(actual)) = (kind, payload) else {
            return Vec::new();
        };
        let (Ok(recorded), Ok(actual)) = (
            serde_json::from_str::<Value>(recorded),
            serde_json::from_str::<Value>(actual),
        ) else {
            return Vec::new();
        };
        self.replay
            .echoed
            .iter()
            .filter_map(|p| Some((recorded.pointer(p)?.clone(), actual.pointer(p)?.clone())))
            .filter(|(from, to)| from != to && (from.is_string() || from.is_number()))
            .collect()
    }

    /// A recorded server text with the connection's substitutions made, when it is JSON.
    fn substitute(&self, conn: usize, text: String) -> String {
        let substitutions = &self.cursors[conn].substitutions;
        if substitutions.is_empty() {
            return text;
        }
        let Ok(mut json) = serde_json::from_str::<Value>(&text) else {
            return text;
        };
        replace_values(&mut json, substitutions);
        json.to_string()
    }

    /// The failure message of a client message that left the recording: what was
    /// expected there (or that the recording had ended), a diff, the place, the
    /// recorded connection and the transcript.
    fn deviation(
        &mut self,
        conn: usize,
        expected: Option<(usize, &RecordedFrame)>,
        payload: &Payload,
        transcript: &[TranscriptEntry],
    ) -> String {
        let script = self.script(conn);
        let next = self.cursors[conn].next;
        let actual = payload_text(payload);
        let head = match expected {
            None => format!(
                "connection {conn}: the client sent a message after the end of the recording's connection {conn} ({} frames): {actual}",
                script.len()
            ),
            Some((place, frame)) if frame.from == Sender::Server => format!(
                "connection {conn}: the client sent a message where the recording has the server's frame at line {} (frame {} of connection {conn}): {actual}",
                place + 1,
                next + 1
            ),
            Some((place, frame)) => format!(
                "connection {conn}: the client's message does not match the recording at line {} (frame {} of connection {conn}, {}).\nthe recorded message, against the one the client sent (- recorded, + received){}:\n{}",
                place + 1,
                next + 1,
                self.matching_rule(),
                self.ignored_note(),
                self.diff(&frame.kind, payload)
            ),
        };
        let recorded = script
            .iter()
            .enumerate()
            .map(|(i, (_, f))| format!("  {} {f}", if i == next { "▶" } else { " " }))
            .collect::<Vec<_>>()
            .join("\n");
        self.cursors[conn].derailed = true;
        format!(
            "{head}\nthe recording's connection {conn} (▶ where the client left it):\n{recorded}\ntranscript:\n{}",
            render(transcript)
        )
    }

    fn matching_rule(&self) -> &'static str {
        "JSON compared without the ignored fields, other text exactly"
    }

    fn ignored_note(&self) -> String {
        let fields: Vec<&str> = self
            .replay
            .ignored
            .iter()
            .chain(&self.replay.echoed)
            .map(String::as_str)
            .collect();
        if fields.is_empty() {
            String::new()
        } else {
            format!("; ignored: {}", fields.join(", "))
        }
    }

    /// A line diff of the recorded frame and the client's, as pretty JSON without the
    /// ignored fields where both are JSON.
    fn diff(&self, kind: &RecordedKind, payload: &Payload) -> String {
        let expected = match kind {
            RecordedKind::Text { text } => {
                self.comparable(text).map_or(text.clone(), |j| pretty(&j))
            }
            other => format!("{other:?}"),
        };
        let actual = match payload {
            Payload::Text(text) => self.comparable(text).map_or(text.clone(), |j| pretty(&j)),
            Payload::Binary(bytes) => format!("Binary {{ bytes: {bytes:?} }}"),
        };
        diff(&format!("{expected}\n"), &format!("{actual}\n"))
    }

    /// What connections left the recording unfinished: recorded client messages the
    /// client never sent, and recorded connections it never opened.
    pub(super) fn unfinished(&self, opened: usize) -> Vec<String> {
        let recorded = self.replay.recording.connections();
        let mut problems = Vec::new();
        for conn in 0..recorded.min(opened) {
            let cursor = self.cursors.get(conn);
            if cursor.is_some_and(|c| c.derailed) {
                continue;
            }
            let next = cursor.map_or(0, |c| c.next);
            let missing = self
                .script(conn)
                .into_iter()
                .skip(next)
                .filter(|(_, f)| {
                    f.from == Sender::Client && !matches!(f.kind, RecordedKind::Close { .. })
                })
                .count();
            if let Some((place, frame)) = self.script(conn).get(next).filter(|_| missing > 0) {
                problems.push(format!(
                    "connection {conn}: the client stopped short of the recording: {missing} recorded client message(s) never came, the next at line {}: {frame}",
                    place + 1
                ));
            }
        }
        if opened < recorded {
            problems.push(format!(
                "the recording has {recorded} connection(s), the client opened {opened}"
            ));
        }
        problems
    }
}

/// Removes what `pointer` points at from `json`, if anything.
fn remove(json: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match json.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&key);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// Replaces every value of `json` equal to a recorded value by the client's.
fn replace_values(json: &mut Value, substitutions: &[(Value, Value)]) {
    if let Some((_, to)) = substitutions.iter().find(|(from, _)| from == json) {
        *json = to.clone();
        return;
    }
    match json {
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| replace_values(v, substitutions)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_values(v, substitutions)),
        _ => {}
    }
}

fn payload_text(payload: &Payload) -> String {
    match payload {
        Payload::Text(text) => format!("text {text}"),
        Payload::Binary(bytes) => format!("binary ({} bytes)", bytes.len()),
    }
}
