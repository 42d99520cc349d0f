//! Record and replay: the file format of a recording ([`Recording`], JSON lines), the
//! proxy that writes one ([`RecordingProxy`], in `proxy`), and its errors.

mod proxy;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use proxy::{RecordingProxy, RecordingProxyBuilder};

/// Who sent a recorded frame: the client, or the real server it talked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// The client (the side the fake plays against when it replays).
    Client,
    /// The real server (the side the fake plays when it replays).
    Server,
}

/// What a recorded frame carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedKind {
    /// A text message: `"text"` in the file.
    Text {
        /// Its text.
        text: String,
    },
    /// A binary message: `"base64"` in the file (standard alphabet, padded).
    Binary {
        /// Its bytes.
        #[serde(rename = "base64", with = "base64_bytes")]
        bytes: Vec<u8>,
    },
    /// A close frame: `"code"` (absent or `null` for none) and `"reason"`.
    Close {
        /// The close code, `None` for a close frame without one.
        #[serde(default)]
        code: Option<u16>,
        /// The close reason, empty when there is none.
        #[serde(default)]
        reason: String,
    },
}

/// One frame of a recording: one line of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFrame {
    /// Milliseconds since its connection was accepted.
    pub at_ms: u64,
    /// Which connection, counted from 0 in the order they were accepted.
    pub connection: usize,
    /// Who sent it.
    pub from: Sender,
    /// What it carried.
    #[serde(flatten)]
    pub kind: RecordedKind,
}

impl fmt::Display for RecordedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.from {
            Sender::Client => "client → server",
            Sender::Server => "server → client",
        };
        write!(f, "{:>8.3}s  {arrow}  ", self.at_ms as f64 / 1000.0)?;
        match &self.kind {
            RecordedKind::Text { text } => write!(f, "text {text}"),
            RecordedKind::Binary { bytes } => write!(f, "binary ({} bytes)", bytes.len()),
            RecordedKind::Close {
                code: Some(code),
                reason,
            } => write!(f, "close {code} {reason:?}"),
            RecordedKind::Close { code: None, .. } => f.write_str("close without a code"),
        }
    }
}

/// A recording: the frames of one or more connections, as a [`RecordingProxy`] saw
/// them between a client and a real server. Its file is JSON lines, one frame a line
/// (see [`RecordedFrame`]):
///
/// ```text
/// {"at_ms":0,"connection":0,"from":"client","kind":"text","text":"{\"type\":\"hello\"}"}
/// {"at_ms":3,"connection":0,"from":"server","kind":"binary","base64":"AAE="}
/// {"at_ms":9,"connection":0,"from":"client","kind":"close","code":1000,"reason":"bye"}
/// ```
///
/// # Examples
///
/// ```
/// use fake_ws_server::{Recording, Sender};
///
/// let recording = Recording::from_jsonl(concat!(
///     r#"{"at_ms":0,"connection":0,"from":"server","kind":"text","text":"welcome"}"#, "\n",
///     r#"{"at_ms":5,"connection":0,"from":"client","kind":"text","text":"hi"}"#, "\n",
/// )).unwrap();
/// assert_eq!(recording.frames().len(), 2);
/// assert_eq!(recording.frames()[1].from, Sender::Client);
/// assert_eq!(Recording::from_jsonl(&recording.to_jsonl()).unwrap(), recording);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    frames: Vec<RecordedFrame>,
}

impl Recording {
    /// A recording of these frames.
    pub fn new(frames: Vec<RecordedFrame>) -> Self {
        Recording { frames }
    }

    /// Reads a recording from a JSON-lines file (blank lines are skipped).
    pub fn load(path: impl AsRef<Path>) -> Result<Recording, RecordingError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| RecordingError::Io {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        Recording::from_jsonl(&text).map_err(|e| match e {
            RecordingError::Parse { line, error, .. } => RecordingError::Parse {
                path: Some(path.to_owned()),
                line,
                error,
            },
            e => e,
        })
    }

    /// Parses a recording from JSON lines (blank lines are skipped).
    pub fn from_jsonl(text: &str) -> Result<Recording, RecordingError> {
        let mut frames = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let frame = serde_json::from_str(line).map_err(|e| RecordingError::Parse {
                path: None,
                line: index + 1,
                error: e.to_string(),
            })?;
            frames.push(frame);
        }
        Ok(Recording { frames })
    }

    /// The recording as JSON lines, one frame a line, each ending with a newline.
    pub fn to_jsonl(&self) -> String {
        self.frames.iter().map(line_of).collect()
    }

    /// Writes the recording to a file as JSON lines, replacing what it held.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), RecordingError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_jsonl()).map_err(|e| RecordingError::Io {
            path: path.to_owned(),
            error: e.to_string(),
        })
    }

    /// Its frames, in the order they were recorded.
    pub fn frames(&self) -> &[RecordedFrame] {
        &self.frames
    }

    /// The frames of connection `index`, with their places in the recording (from 0).
    pub fn connection(&self, index: usize) -> impl Iterator<Item = (usize, &RecordedFrame)> {
        self.frames
            .iter()
            .enumerate()
            .filter(move |(_, f)| f.connection == index)
    }

    /// How many connections it has: one more than the highest index.
    pub fn connections(&self) -> usize {
        self.frames
            .iter()
            .map(|f| f.connection + 1)
            .max()
            .unwrap_or(0)
    }
}

/// A frame as one line of the file, with its newline.
pub(crate) fn line_of(frame: &RecordedFrame) -> String {
    // A struct of strings and numbers always serialises.
    let mut line = serde_json::to_string(frame).unwrap_or_default();
    line.push('\n');
    line
}

/// Why a recording could not be made, read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordingError {
    /// A frame over the proxy's [`RecordingProxyBuilder::max_frame_size`]: the proxy
    /// stopped recording and closed that connection with 1009.
    FrameTooBig {
        /// The connection it came on.
        connection: usize,
        /// Who sent it.
        from: Sender,
        /// Its size, in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The recording would have grown past [`RecordingProxyBuilder::max_total_size`]:
    /// the proxy stopped recording and closed the connection with 1009.
    TooBig {
        /// The limit, in bytes of JSON lines.
        max: usize,
    },
    /// The upstream server could not be reached, or refused the upgrade: the proxy
    /// closed the client's connection with 1011.
    Upstream {
        /// The client's connection.
        connection: usize,
        /// What went wrong.
        error: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: String,
    },
    /// A line of the file is not a recorded frame.
    Parse {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The line, from 1.
        line: usize,
        /// What serde_json said.
        error: String,
    },
}

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordingError::FrameTooBig {
                connection,
                from,
                size,
                max,
            } => write!(
                f,
                "connection {connection}: a frame from the {from:?} of {size} bytes is over the recording's per-frame limit of {max} bytes (max_frame_size); the recording stopped there"
            ),
            RecordingError::TooBig { max } => write!(
                f,
                "the recording went over its limit of {max} bytes of JSON lines (max_total_size); it stopped there"
            ),
            RecordingError::Upstream { connection, error } => write!(
                f,
                "connection {connection}: the proxy could not connect to the upstream server: {error}"
            ),
            RecordingError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            RecordingError::Parse { path, line, error } => {
                let file = path
                    .as_deref()
                    .map_or("the recording".into(), |p| p.display().to_string());
                write!(f, "{file}, line {line}: not a recorded frame: {error}")
            }
        }
    }
}

impl std::error::Error for RecordingError {}

/// Binary payloads as base64 text in the file.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}
