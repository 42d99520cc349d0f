//! [`RecordingProxy`]: a WebSocket proxy between a client and a real server that
//! forwards both ways and records every connection's frames as a [`Recording`].

use std::panic::Location;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{RecordedFrame, RecordedKind, Recording, RecordingError, Sender, line_of};

/// The close code for a frame the recording cannot hold (RFC 6455, 7.4.1: too big).
const CLOSE_TOO_BIG: u16 = 1009;
/// The close code for an upstream that could not be reached (1011: 1014, bad gateway,
/// is one tungstenite refuses).
const CLOSE_BAD_GATEWAY: u16 = 1011;
/// Request headers the proxy does not pass upstream: the handshake's own, which the
/// upstream connection makes anew.
const HOP_HEADERS: [&str; 7] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "content-length",
];

/// Configures a [`RecordingProxy`]: the upstream server's URL and the recording's limits.
#[must_use]
pub struct RecordingProxyBuilder {
    upstream: String,
    max_frame_size: usize,
    max_total_size: usize,
    deadline: Duration,
}

impl RecordingProxyBuilder {
    /// The largest frame the recording holds, in bytes of payload (default 1 MiB). A
    /// bigger one stops the recording with [`RecordingError::FrameTooBig`] and closes
    /// its connection with 1009, unforwarded (and every other connection at its next
    /// frame).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// The largest recording, in bytes of JSON lines (default 16 MiB). A frame that
    /// would go past it stops the recording with [`RecordingError::TooBig`] and closes
    /// its connection with 1009, unforwarded (and every other connection at its next
    /// frame).
    pub fn max_total_size(mut self, bytes: usize) -> Self {
        self.max_total_size = bytes;
        self
    }

    /// How long [`RecordingProxy::wait_for_frames`] waits, and how long the client's
    /// upgrade and the connection to the upstream may each take (default
    /// [`DEFAULT_DEADLINE`](crate::DEFAULT_DEADLINE), 5 s).
    pub fn default_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Binds `127.0.0.1:0` and starts proxying, on a thread and runtime of its own.
    pub async fn start(self) -> RecordingProxy {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("recording proxy runtime");
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-ws-recording-proxy".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("recording proxy thread");
        let listener = handle
            .spawn(TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("recording proxy runtime")
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let path = upstream_path(&self.upstream);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            count: watch::channel(0).0,
            limits: (self.max_frame_size, self.max_total_size),
            upstream: self.upstream,
        });
        handle.spawn(accept_loop(shared.clone(), listener, self.deadline));
        RecordingProxy {
            url: format!("ws://127.0.0.1:{port}{path}"),
            shared,
            runtime: handle,
            stop: Some(stop),
            deadline: self.deadline,
        }
    }
}

/// A WebSocket proxy between a client under test and a real server (`upstream`, a
/// `ws://` URL): the client connects to [`RecordingProxy::url`], the proxy opens a
/// connection to the upstream for each one, forwards text, binary and close frames
/// both ways, and records them as a [`Recording`] ([`RecordingProxy::recording`],
/// [`RecordingProxy::save`]) that [`Replay`](crate::Replay) turns into a fake.
///
/// The proxy answers the client's upgrade itself, selecting the first subprotocol the
/// client offers, then connects to the upstream with the client's request headers
/// (its `Authorization`, `Sec-WebSocket-Protocol`, ...). An upstream that refuses is
/// a [`RecordingError::Upstream`], and the client's connection is closed with 1011.
/// Pings and pongs are answered by each side's own WebSocket and neither forwarded nor
/// recorded. Bounded: see [`RecordingProxyBuilder::max_frame_size`] and
/// [`RecordingProxyBuilder::max_total_size`].
///
/// Dropping it stops it: its connections are dropped.
pub struct RecordingProxy {
    url: String,
    shared: Arc<Shared>,
    runtime: Handle,
    stop: Option<oneshot::Sender<()>>,
    deadline: Duration,
}

impl RecordingProxy {
    /// A builder for a proxy to the WebSocket server at `upstream` (`ws://host:port/path`).
    pub fn builder(upstream: impl Into<String>) -> RecordingProxyBuilder {
        RecordingProxyBuilder {
            upstream: upstream.into(),
            max_frame_size: 1 << 20,
            max_total_size: 16 << 20,
            deadline: crate::DEFAULT_DEADLINE,
        }
    }

    /// The URL for the client: `ws://127.0.0.1:PORT` with the upstream's path and query.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// What was recorded so far, or why the recording stopped (a limit, an upstream
    /// that could not be reached).
    pub fn recording(&self) -> Result<Recording, RecordingError> {
        let state = self.shared.lock();
        match &state.error {
            Some(error) => Err(error.clone()),
            None => Ok(Recording::new(state.frames.clone())),
        }
    }

    /// [`RecordingProxy::recording`], written to `path` as JSON lines.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<Recording, RecordingError> {
        let recording = self.recording()?;
        recording.save(path)?;
        Ok(recording)
    }

    /// Waits until the recording holds `n` frames, up to the default deadline.
    #[track_caller]
    pub fn wait_for_frames(&self, n: usize) -> impl Future<Output = ()> + Send + 'static {
        self.wait_for_frames_within(n, self.deadline)
    }

    /// Waits until the recording holds `n` frames, up to `deadline`; panics with what
    /// it holds when they do not come.
    #[track_caller]
    pub fn wait_for_frames_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let location = Location::caller();
        let mut count = self.shared.count.subscribe();
        let shared = self.shared.clone();
        let waited = self.runtime.spawn(async move {
            tokio::time::timeout(deadline, count.wait_for(|c| *c >= n))
                .await
                .is_ok_and(|r| r.is_ok())
        });
        async move {
            if waited.await.unwrap_or(false) {
                return;
            }
            let state = shared.lock();
            let lines: Vec<String> = state.frames.iter().map(|f| format!("    {f}")).collect();
            let error = state
                .error
                .as_ref()
                .map_or(String::new(), |e| format!("\nthe recording stopped: {e}"));
            panic!(
                "{location}: expected the recording to hold {n} frames within {deadline:?}, but it holds {}:{error}\n{}",
                state.frames.len(),
                lines.join("\n")
            );
        }
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The recording so far, shared by the connections' tasks and the handle.
struct Shared {
    state: Mutex<State>,
    /// How many frames are recorded, for [`RecordingProxy::wait_for_frames`].
    count: watch::Sender<usize>,
    /// The most bytes of one frame, and of the whole recording.
    limits: (usize, usize),
    upstream: String,
}

#[derive(Default)]
struct State {
    frames: Vec<RecordedFrame>,
    /// Bytes of JSON lines recorded.
    size: usize,
    /// Why the recording stopped, if it did.
    error: Option<RecordingError>,
    /// Connections accepted so far.
    connections: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a frame; `Err` with the close code when the recording cannot hold it.
    fn record(&self, frame: RecordedFrame, payload: usize) -> Result<(), u16> {
        let mut state = self.lock();
        if state.error.is_some() {
            return Err(CLOSE_TOO_BIG);
        }
        let (max_frame, max_total) = self.limits;
        let line = line_of(&frame).len();
        if payload > max_frame {
            state.error = Some(RecordingError::FrameTooBig {
                connection: frame.connection,
                from: frame.from,
                size: payload,
                max: max_frame,
            });
            return Err(CLOSE_TOO_BIG);
        }
        if state.size + line > max_total {
            state.error = Some(RecordingError::TooBig { max: max_total });
            return Err(CLOSE_TOO_BIG);
        }
        state.size += line;
        state.frames.push(frame);
        let count = state.frames.len();
        drop(state);
        self.count.send_replace(count);
        Ok(())
    }

    fn fail(&self, error: RecordingError) {
        self.lock().error.get_or_insert(error);
    }
}

/// The path and query of `url`, `/` when it has none.
fn upstream_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(i) => rest[i..].to_owned(),
        None => "/".to_owned(),
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, deadline: Duration) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(proxy_connection(shared.clone(), stream, deadline));
    }
}

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One client connection: the upgrade, the upstream connection, then forwarding. The
/// client's upgrade and the upstream's each get `deadline`.
async fn proxy_connection(shared: Arc<Shared>, stream: TcpStream, deadline: Duration) {
    let mut headers = HeaderMap::new();
    // tungstenite's callback type: its error is an HTTP response, large by nature.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        headers = request.headers().clone();
        let first = request
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|p| p.trim().parse().ok());
        if let Some(protocol) = first {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        Ok(response)
    };
    let upgrade = tokio_tungstenite::accept_hdr_async(stream, callback);
    let Ok(Ok(mut client)) = tokio::time::timeout(deadline, upgrade).await else {
        return; // not a WebSocket client, or too slow to be one
    };
    let index = {
        let mut state = shared.lock();
        state.connections += 1;
        state.connections - 1
    };
    let started = Instant::now();
    let connect = tokio::time::timeout(deadline, connect_upstream(&shared.upstream, headers));
    let upstream = match connect.await {
        Ok(Ok(upstream)) => Ok(upstream),
        Err(_) => Err(format!("no WebSocket connection within {deadline:?}")),
        Ok(Err(error)) => Err(error),
    };
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(error) => {
            shared.fail(RecordingError::Upstream {
                connection: index,
                error,
            });
            let _ = client
                .send(close(CLOSE_BAD_GATEWAY, "upstream unreachable"))
                .await;
            return;
        }
    };
    let link = Link {
        shared,
        index,
        started,
    };
    link.forward(client, upstream).await;
}

/// Connects to the upstream with the client's request headers, less the handshake's own.
async fn connect_upstream(url: &str, headers: HeaderMap) -> Result<Upstream, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    for (name, value) in &headers {
        if !HOP_HEADERS.contains(&name.as_str()) {
            request.headers_mut().append(name, value.clone());
        }
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(response)) => Err(format!("the upstream answered {}", response.status())),
        Err(e) => Err(e.to_string()),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// A client connection and its upstream, recorded as connection `index`.
struct Link {
    shared: Arc<Shared>,
    index: usize,
    started: Instant,
}

impl Link {
    /// Forwards frames both ways until both sides have ended.
    async fn forward(&self, client: WebSocketStream<TcpStream>, upstream: Upstream) {
        let (mut client_tx, mut client_rx) = client.split();
        let (mut upstream_tx, mut upstream_rx) = upstream.split();
        let (mut client_open, mut upstream_open) = (true, true);
        while client_open || upstream_open {
            let (from, frame) = tokio::select! {
                frame = client_rx.next(), if client_open => (Sender::Client, frame),
                frame = upstream_rx.next(), if upstream_open => (Sender::Server, frame),
            };
            let Some(Ok(message)) = frame else {
                // That side is gone without a close frame: so is the other.
                match from {
                    Sender::Client => client_open = false,
                    Sender::Server => upstream_open = false,
                }
                let _ = client_tx.close().await;
                let _ = upstream_tx.close().await;
                continue;
            };
            let Some(kind) = recorded_kind(&message) else {
                continue; // pings and pongs: each side answers its own
            };
            let size = payload_len(&kind);
            let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let frame = RecordedFrame {
                at_ms,
                connection: self.index,
                from,
                kind,
            };
            let sent = match self.shared.record(frame, size) {
                Ok(()) if from == Sender::Client => upstream_tx.send(message).await,
                Ok(()) => client_tx.send(message).await,
                Err(code) => {
                    let _ = client_tx
                        .send(close(code, "over the recording's limit"))
                        .await;
                    let _ = upstream_tx
                        .send(close(code, "over the recording's limit"))
                        .await;
                    return;
                }
            };
            // A frame the other side no longer takes (it closed first) is dropped.
            let _ = sent;
        }
    }
}

/// How a message is recorded; `None` for pings, pongs and raw frames.
fn recorded_kind(message: &Message) -> Option<RecordedKind> {
    Some(match message {
        Message::Text(text) => RecordedKind::Text {
            text: text.as_str().to_owned(),
        },
        Message::Binary(bytes) => RecordedKind::Binary {
            bytes: bytes.to_vec(),
        },
        Message::Close(frame) => RecordedKind::Close {
            code: frame.as_ref().map(|f| u16::from(f.code)),
            reason: frame
                .as_ref()
                .map_or(String::new(), |f| f.reason.as_str().to_owned()),
        },
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
    })
}

fn payload_len(kind: &RecordedKind) -> usize {
    match kind {
        RecordedKind::Text { text } => text.len(),
        RecordedKind::Binary { bytes } => bytes.len(),
        RecordedKind::Close { reason, .. } => reason.len() + 2,
    }
}
