//! `FakeServer<In, Out>`: an in-process WebSocket server for testing a client.
//!
//! The server runs on a thread of its own with its own tokio runtime, so it works
//! under `#[tokio::test]`, `#[actix_web::test]` or a plain `#[test]` with any executor,
//! and every handle is `Send`. Handles share the server's state behind a mutex; the
//! connection tasks record each frame in it and wake waiters. Every deadline is timed
//! on the server's runtime, never the caller's.
//!
//! `In` is what the client sends (decoded from each text frame), `Out` what the fake
//! sends. Everything the client sent must be looked at by the test (`expect`, `recv`),
//! answered by a rule, or explicitly allowed: anything else fails the test when the
//! server (or the last handle of that connection) is dropped, with the transcript
//! (strict by default, like wiremock's verify), but never while already panicking.
//!
//! Each connection is one task running one `select!` loop over the socket's frames, a
//! channel of commands from the test (send, close, abort, stop or resume reading, ping)
//! and its own pings; the handshake is inspected, logged and possibly refused in
//! tungstenite's `accept_hdr_async` callback.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::panic::Location;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::matcher::Matcher;
use crate::transcript::{Direction, FrameKind, TranscriptEntry, render};

/// How long `next_connection`, `expect` and `wait_closed` wait by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// `SO_RCVBUF` of the listener with [`FakeServerBuilder::small_socket_buffers`] (Linux
/// doubles it, and accepted connections inherit it).
const SMALL_RECEIVE_BUFFER: u32 = 2048;
/// The MSS the listener advertises with [`FakeServerBuilder::small_socket_buffers`]:
/// Linux grows a sender's send buffer in proportion to the peer's MSS, up to 4 MiB with
/// loopback's 64 KiB segments; with this one it stays around 100 KiB.
const SMALL_MSS: u32 = 536;

/// Turns the text of a frame into a message, or says why it is not one.
pub type Decoder<In> = Arc<dyn Fn(&str) -> Result<In, String> + Send + Sync>;
type Reply<In, Out> = Arc<dyn Fn(&In) -> Vec<Out> + Send + Sync>;

/// An automatic reply: when a message matches, send what `reply` returns.
pub struct Rule<In, Out> {
    matcher: Matcher<In>,
    reply: Reply<In, Out>,
    pub(crate) delay: Option<Duration>,
    pub(crate) expected: Option<usize>,
    location: &'static Location<'static>,
}

impl<In, Out> Rule<In, Out> {
    /// A rule that answers messages matching `matcher` with `reply(message)`.
    #[track_caller]
    pub fn when(
        matcher: Matcher<In>,
        reply: impl Fn(&In) -> Vec<Out> + Send + Sync + 'static,
    ) -> Self {
        Rule {
            matcher,
            reply: Arc::new(reply),
            delay: None,
            expected: None,
            location: Location::caller(),
        }
    }

    /// Answer after `delay` (the connection goes on meanwhile).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The rule must fire exactly `times` times, checked when the server is dropped.
    #[must_use]
    pub fn expect(mut self, times: usize) -> Self {
        self.expected = Some(times);
        self
    }

    /// Same as [`Rule::expect`], in wiremock's words.
    #[must_use]
    pub fn times(self, times: usize) -> Self {
        self.expect(times)
    }
}

/// The rule a builder's `times`/`delay` applies to: the one mounted last.
#[track_caller]
pub(crate) fn last_rule<In, Out>(rules: &mut [Rule<In, Out>]) -> &mut Rule<In, Out> {
    rules.last_mut().expect(
        "times/expect/delay apply to the rule mounted just before: mount one with `on` first",
    )
}

struct MountedRule<In, Out> {
    rule: Rule<In, Out>,
    hits: usize,
}

/// Configures a [`FakeServer`].
#[must_use]
pub struct FakeServerBuilder<In, Out> {
    path: String,
    subprotocol: Option<String>,
    decoder: Decoder<In>,
    rules: Vec<Rule<In, Out>>,
    strict: bool,
    small_buffers: bool,
}

impl<In, Out> FakeServerBuilder<In, Out>
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    pub fn new() -> Self {
        FakeServerBuilder {
            path: "/ws".into(),
            subprotocol: None,
            decoder: Arc::new(|text| serde_json::from_str(text).map_err(|e| e.to_string())),
            rules: Vec::new(),
            strict: true,
            small_buffers: false,
        }
    }

    /// The path WebSocket upgrades are accepted on (others get 404). Default `/ws`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The subprotocol to select when the client offers it.
    pub fn subprotocol(mut self, name: impl Into<String>) -> Self {
        self.subprotocol = Some(name.into());
        self
    }

    /// How a text frame becomes an `In` (default: `serde_json`).
    pub fn decoder(
        mut self,
        decoder: impl Fn(&str) -> Result<In, String> + Send + Sync + 'static,
    ) -> Self {
        self.decoder = Arc::new(decoder);
        self
    }

    /// Mounts an automatic reply; earlier rules win.
    pub fn rule(mut self, rule: Rule<In, Out>) -> Self {
        self.rules.push(rule);
        self
    }

    /// Shorthand for `rule(Rule::when(matcher, reply))`.
    #[track_caller]
    pub fn on(
        self,
        matcher: Matcher<In>,
        reply: impl Fn(&In) -> Vec<Out> + Send + Sync + 'static,
    ) -> Self {
        let rule = Rule::when(matcher, reply);
        self.rule(rule)
    }

    /// The rule mounted last (by `on` or `rule`) must fire exactly `n` times.
    #[track_caller]
    pub fn times(mut self, n: usize) -> Self {
        last_rule(&mut self.rules).expected = Some(n);
        self
    }

    /// Same as [`FakeServerBuilder::times`].
    #[track_caller]
    pub fn expect(self, n: usize) -> Self {
        self.times(n)
    }

    /// The rule mounted last (by `on` or `rule`) answers after `delay`.
    #[track_caller]
    pub fn delay(mut self, delay: Duration) -> Self {
        last_rule(&mut self.rules).delay = Some(delay);
        self
    }

    /// Frames the test never looked at do not fail it.
    pub fn lenient(mut self) -> Self {
        self.strict = false;
        self
    }

    /// Small TCP buffers on every accepted connection: a receive buffer of a few KiB,
    /// and a small advertised MSS, which keeps the client's send buffer small too (Linux
    /// sizes it by the peer's MSS). A client writing to a connection that stopped reading
    /// ([`Connection::stop_reading`]) then blocks after some 50 KiB instead of several
    /// MiB. For backpressure tests; off by default (and kept across `restart`).
    pub fn small_socket_buffers(mut self) -> Self {
        self.small_buffers = true;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    #[track_caller]
    pub fn start(self) -> impl std::future::Future<Output = FakeServer<In, Out>> + Send {
        let location = Location::caller();
        FakeServer::launch(self, location)
    }

    /// [`FakeServerBuilder::start`], naming the caller that drop-time failures point at.
    pub fn start_at(
        self,
        location: &'static Location<'static>,
    ) -> impl std::future::Future<Output = FakeServer<In, Out>> + Send {
        FakeServer::launch(self, location)
    }
}

impl<In, Out> Default for FakeServerBuilder<In, Out>
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// The upgrade request a client sent.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    path: String,
    headers: Vec<(String, String)>,
}

impl HandshakeRequest {
    fn from_request(request: &Request) -> Self {
        HandshakeRequest {
            path: request.uri().path().to_owned(),
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The subprotocols the client offered, in its order.
    pub fn subprotocols(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|(_, v)| v.split(',').map(|p| p.trim().to_owned()))
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// How a connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Accepted,
    /// The handshake was answered with this HTTP status.
    Rejected(u16),
    /// The TCP connection closed or the handshake was not a valid upgrade.
    Failed(String),
}

/// One handshake attempt, with when it happened.
#[derive(Debug, Clone)]
pub struct Attempt {
    at: Instant,
    request: Option<HandshakeRequest>,
    outcome: AttemptOutcome,
}

impl Attempt {
    pub fn at(&self) -> Instant {
        self.at
    }

    pub fn request(&self) -> Option<&HandshakeRequest> {
        self.request.as_ref()
    }

    pub fn outcome(&self) -> &AttemptOutcome {
        &self.outcome
    }

    /// The status the handshake was refused with, if it was.
    pub fn rejected_with(&self) -> Option<u16> {
        match self.outcome {
            AttemptOutcome::Rejected(status) => Some(status),
            _ => None,
        }
    }
}

/// A frame from the client that is not an `In`: what it was, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFrame {
    pub frame: FrameKind,
    pub error: String,
}

/// A data frame from the client, and what became of it.
struct Inbound<In> {
    /// Index into the transcript.
    entry: usize,
    message: Option<In>,
    /// Why the frame is not an `In` (a contract violation), if it is not.
    error: Option<String>,
    consumed: bool,
    handled: bool,
}

struct ConnState<In> {
    id: usize,
    started: Instant,
    request: HandshakeRequest,
    transcript: Vec<TranscriptEntry>,
    inbound: Vec<Inbound<In>>,
    allowed: Vec<Matcher<In>>,
    /// `Some(code)` once closed; the inner value is the client's close code, if any.
    closed: Option<Option<u16>>,
    claimed: bool,
    /// Its problems already failed the test (when its handle was dropped).
    reported: bool,
}

impl<In> ConnState<In> {
    /// Takes the first frame not yet taken that satisfies `wanted`: the one way
    /// `expect`, `recv` and `expect_invalid` consume what the client sent.
    fn take(&mut self, wanted: impl Fn(&Inbound<In>) -> bool) -> Option<&mut Inbound<In>> {
        let inbound = self.inbound.iter_mut().find(|i| !i.consumed && wanted(i))?;
        inbound.consumed = true;
        Some(inbound)
    }

    fn record(&mut self, direction: Direction, frame: FrameKind, note: Option<String>) -> usize {
        self.transcript.push(TranscriptEntry {
            at: self.started.elapsed(),
            direction,
            frame,
            note,
        });
        self.transcript.len() - 1
    }
}

struct State<In, Out> {
    /// Bumped by every stop: a handshake that began before it is not let in after it.
    epoch: u64,
    connections: Vec<ConnState<In>>,
    attempts: Vec<Attempt>,
    reject_next: VecDeque<u16>,
    rules: Vec<MountedRule<In, Out>>,
    outbound: Vec<Option<mpsc::UnboundedSender<Command>>>,
}

struct Shared<In, Out> {
    state: Mutex<State<In, Out>>,
    notify: Notify,
    config: Config<In>,
}

struct Config<In> {
    path: String,
    subprotocol: Option<String>,
    decoder: Decoder<In>,
    strict: bool,
    small_buffers: bool,
    location: &'static Location<'static>,
}

impl<In, Out> Shared<In, Out> {
    fn lock(&self) -> MutexGuard<'_, State<In, Out>> {
        // A panic in a test thread must not poison the fake for the drop check.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The accept loop of a listening server, and how to stop it.
struct Listening {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

enum Command {
    Send(Message, oneshot::Sender<()>),
    Close(u16, String, oneshot::Sender<()>),
    Abort(oneshot::Sender<()>),
    /// Read from the socket (`true`) or not (`false`).
    Read(bool, oneshot::Sender<()>),
    /// Ping the client every so often (`None`: stop).
    PingEvery(Option<Duration>, oneshot::Sender<()>),
}

/// The fake server. Dropping it stops it and, unless lenient or already panicking,
/// fails the test if the client sent anything that nobody looked at.
pub struct FakeServer<In, Out> {
    shared: Arc<Shared<In, Out>>,
    runtime: Handle,
    port: u16,
    listening: Mutex<Option<Listening>>,
    runtime_stop: Option<oneshot::Sender<()>>,
}

impl<In, Out> FakeServer<In, Out>
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    /// A builder with defaults: path `/ws`, serde_json decoding, no rules, strict.
    pub fn builder() -> FakeServerBuilder<In, Out> {
        FakeServerBuilder::new()
    }

    async fn launch(
        builder: FakeServerBuilder<In, Out>,
        location: &'static Location<'static>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fake server runtime");
        let handle = runtime.handle().clone();
        let (runtime_stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-websocket-server".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("fake server thread");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                epoch: 0,
                connections: Vec::new(),
                attempts: Vec::new(),
                reject_next: VecDeque::new(),
                rules: builder
                    .rules
                    .into_iter()
                    .map(|rule| MountedRule { rule, hits: 0 })
                    .collect(),
                outbound: Vec::new(),
            }),
            notify: Notify::new(),
            config: Config {
                path: builder.path,
                subprotocol: builder.subprotocol,
                decoder: builder.decoder,
                strict: builder.strict,
                small_buffers: builder.small_buffers,
                location,
            },
        });
        let listener = handle
            .spawn(bind(0, builder.small_buffers))
            .await
            .expect("fake server runtime")
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let server = FakeServer {
            shared,
            runtime: handle,
            port,
            listening: Mutex::new(None),
            runtime_stop: Some(runtime_stop),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let task = self
            .runtime
            .spawn(accept_loop(self.shared.clone(), listener, stopped));
        *self.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(Listening { stop, task });
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, self.shared.config.path)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The next connection not yet handed out, waiting up to [`DEFAULT_DEADLINE`].
    #[track_caller]
    pub fn next_connection(
        &self,
    ) -> impl std::future::Future<Output = Connection<In, Out>> + Send + '_ {
        self.next_connection_within(DEFAULT_DEADLINE)
    }

    /// The next connection not yet handed out, waiting up to `deadline`; panics with
    /// the log of attempts when none comes.
    #[track_caller]
    pub fn next_connection_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Connection<In, Out>> + Send + '_ {
        let caller = Location::caller();
        async move {
            let found = wait_for(&self.shared, &self.runtime, Some(deadline), |state| {
                let conn = state.connections.iter_mut().find(|c| !c.claimed)?;
                conn.claimed = true;
                Some(conn.id)
            })
            .await;
            match found {
                Some(id) => self.connection(id, caller),
                None => {
                    let attempts = self.attempts();
                    panic!(
                        "{caller}: no WebSocket connection within {deadline:?}; handshake attempts so far: {attempts:#?}"
                    )
                }
            }
        }
    }

    fn connection(&self, id: usize, location: &'static Location<'static>) -> Connection<In, Out> {
        let state = self.shared.lock();
        Connection {
            inner: Arc::new(ConnectionInner {
                shared: self.shared.clone(),
                runtime: self.runtime.clone(),
                id,
                commands: state.outbound[id].clone(),
                request: state.connections[id].request.clone(),
                location,
            }),
        }
    }

    /// How many WebSocket connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().connections.len()
    }

    /// Every handshake attempt so far, oldest first.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.lock().attempts.clone()
    }

    /// Answers the next `n` upgrade requests with `status` instead of 101.
    pub fn reject_next_handshakes(&self, n: usize, status: u16) {
        let mut state = self.shared.lock();
        state.reject_next.extend(std::iter::repeat_n(status, n));
    }

    /// Stops listening and drops every connection without a close frame: the client
    /// sees a reset, then "connection refused" until [`FakeServer::restart`].
    pub async fn stop(&self) {
        if let Some(task) = self.halt() {
            // The listener is dropped when its task ends: from then on, connection refused.
            let _ = task.await;
        }
        // And every connection task has let go of its socket.
        let _ = wait_for(
            &self.shared,
            &self.runtime,
            Some(DEFAULT_DEADLINE),
            |state| state.outbound.iter().all(Option::is_none).then_some(()),
        )
        .await;
    }

    /// Listens again on the same port after [`FakeServer::stop`].
    pub async fn restart(&self) {
        let port = self.port;
        let small_buffers = self.shared.config.small_buffers;
        let listener = self
            .runtime
            .spawn(async move {
                // The old socket may linger for a moment: retry briefly.
                let mut last = None;
                for _ in 0..200 {
                    match bind(port, small_buffers).await {
                        Ok(listener) => return Ok(listener),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(last.expect("at least one attempt"))
            })
            .await
            .expect("fake server runtime")
            .unwrap_or_else(|e| panic!("could not listen on port {port} again: {e}"));
        self.serve(listener);
    }

    /// Stops the server and checks what the client sent (see the type's docs).
    pub async fn shutdown(self) {
        self.stop().await;
        drop(self);
    }

    /// Everything that would fail the test at drop (empty when all is well).
    pub fn problems(&self) -> Vec<String> {
        problems_of(&self.shared, None)
    }
}

impl<In, Out> FakeServer<In, Out> {
    /// Closes the listener and drops every connection abruptly (a reset); returns the
    /// accept task, which owns the listener, so a caller can wait for the port to close.
    fn halt(&self) -> Option<JoinHandle<()>> {
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let task = listening.map(|Listening { stop, task }| {
            let _ = stop.send(());
            task
        });
        let mut state = self.shared.lock();
        // Handshakes still in flight belong to the old epoch and are dropped when they end.
        state.epoch += 1;
        for sender in state.outbound.iter().flatten() {
            let (done, _) = oneshot::channel();
            let _ = sender.send(Command::Abort(done));
        }
        task
    }
}

impl<In, Out> Drop for FakeServer<In, Out> {
    fn drop(&mut self) {
        // No waiting here: a drop must not block, and the runtime's own shutdown
        // closes whatever is left.
        let _ = self.halt();
        if let Some(stop) = self.runtime_stop.take() {
            let _ = stop.send(());
        }
        fail_on_problems(
            &self.shared,
            None,
            &format!(
                "the fake WebSocket server started at {}",
                self.shared.config.location
            ),
        );
    }
}

/// Panics with every problem of the fake (`only: None`) or of one connection, unless
/// the thread is already panicking. Reported connections are not reported again.
fn fail_on_problems<In, Out>(shared: &Shared<In, Out>, only: Option<usize>, whose: &str) {
    if std::thread::panicking() {
        return;
    }
    let problems = problems_of(shared, only);
    if problems.is_empty() {
        return;
    }
    let transcripts = {
        let mut state = shared.lock();
        state
            .connections
            .iter_mut()
            .filter(|c| only.is_none_or(|id| id == c.id))
            .map(|c| {
                c.reported = true;
                format!("  connection {}:\n{}", c.id, render(&c.transcript))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{whose} found problems:\n- {}\n\ntranscripts:\n{transcripts}",
        problems.join("\n- ")
    );
}

/// What fails the test at drop: of the whole fake (`None`) or of one connection.
fn problems_of<In, Out>(shared: &Shared<In, Out>, only: Option<usize>) -> Vec<String> {
    let state = shared.lock();
    let mut problems = Vec::new();
    let connections = state
        .connections
        .iter()
        .filter(|c| !c.reported && only.is_none_or(|id| id == c.id));
    for conn in connections {
        for inbound in &conn.inbound {
            if inbound.consumed {
                continue;
            }
            if let Some(message) = &inbound.message
                && conn.allowed.iter().any(|a| a.matches(message))
            {
                continue;
            }
            let entry = &conn.transcript[inbound.entry];
            if let Some(error) = &inbound.error {
                problems.push(format!(
                    "connection {}: contract violation, a frame that is not a valid message ({error}): {entry}",
                    conn.id
                ));
            } else if shared.config.strict && !inbound.handled {
                problems.push(format!(
                    "connection {}: a message that no expectation or rule looked at: {entry}",
                    conn.id
                ));
            }
        }
    }
    if only.is_none() {
        for mounted in &state.rules {
            if let Some(expected) = mounted.rule.expected
                && mounted.hits != expected
            {
                problems.push(format!(
                    "the rule for {} (mounted at {}) fired {} times, expected {expected}",
                    mounted.rule.matcher, mounted.rule.location, mounted.hits
                ));
            }
        }
    }
    problems
}

/// Waits on the server's runtime until `check` yields, or `deadline` (if any) passes.
async fn wait_for<In, Out, T>(
    shared: &Shared<In, Out>,
    runtime: &Handle,
    deadline: Option<Duration>,
    mut check: impl FnMut(&mut State<In, Out>) -> Option<T>,
) -> Option<T> {
    // The sleep is created inside a task of the fake's runtime: creating it here would
    // need the caller's runtime, which may not be tokio or may have no timer.
    let mut timer = deadline.map(|deadline| {
        AbortOnDrop(runtime.spawn(async move { tokio::time::sleep(deadline).await }))
    });
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = check(&mut shared.lock()) {
            return Some(value);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = async { (&mut timer.as_mut().expect("guarded").0).await }, if timer.is_some() => {
                return check(&mut shared.lock());
            }
        }
    }
}

/// A timer task that goes away with the wait that started it (even a cancelled one).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn bind(port: u16, small_buffers: bool) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if small_buffers {
        // Set on the listener, before `listen`: accepted sockets inherit both, and the
        // window and MSS are announced in the SYN-ACK.
        socket.set_recv_buffer_size(SMALL_RECEIVE_BUFFER)?;
        socket2::SockRef::from(&socket).set_tcp_mss(SMALL_MSS)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(128)
}

async fn accept_loop<In, Out>(
    shared: Arc<Shared<In, Out>>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let epoch = shared.lock().epoch;
                    tokio::spawn(handle_connection(shared.clone(), stream, epoch));
                }
            }
        }
    }
}

async fn handle_connection<In, Out>(shared: Arc<Shared<In, Out>>, stream: TcpStream, epoch: u64)
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    let at = Instant::now();
    // What the handshake callback saw: the request, and the status it was refused with.
    type Seen = Option<(HandshakeRequest, Option<u16>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let callback = {
        let shared = shared.clone();
        let seen = seen.clone();
        // tungstenite's callback signature fixes the error type; its size is not ours to choose.
        #[allow(clippy::result_large_err)]
        move |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            let handshake = HandshakeRequest::from_request(request);
            let rejection = if request.uri().path() != shared.config.path {
                Some(404)
            } else {
                shared.lock().reject_next.pop_front()
            };
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((handshake.clone(), rejection));
            if let Some(status) = rejection {
                let mut error =
                    ErrorResponse::new(Some(format!("rejected by the fake server with {status}")));
                *error.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                return Err(error);
            }
            if let Some(wanted) = &shared.config.subprotocol
                && handshake.subprotocols().iter().any(|p| p == wanted)
                && let Ok(value) = HeaderValue::from_str(wanted)
            {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", value);
            }
            Ok(response)
        }
    };
    let result = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (request, rejection) = match seen {
        Some((request, rejection)) => (Some(request), rejection),
        None => (None, None),
    };
    let ws = match (result, rejection) {
        (Ok(ws), _) => ws,
        (Err(_), Some(status)) => {
            record_attempt(&shared, at, request, AttemptOutcome::Rejected(status));
            return;
        }
        (Err(e), None) => {
            record_attempt(&shared, at, request, AttemptOutcome::Failed(e.to_string()));
            return;
        }
    };
    let request = request.expect("an accepted handshake had a request");
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let id = {
        let mut state = shared.lock();
        if state.epoch != epoch {
            drop(state);
            reset(ws);
            let outcome = AttemptOutcome::Failed("the server stopped during the handshake".into());
            record_attempt(&shared, at, Some(request), outcome);
            return;
        }
        state.attempts.push(Attempt {
            at,
            request: Some(request.clone()),
            outcome: AttemptOutcome::Accepted,
        });
        let id = state.connections.len();
        state.connections.push(ConnState {
            id,
            started: Instant::now(),
            request,
            transcript: Vec::new(),
            inbound: Vec::new(),
            allowed: Vec::new(),
            closed: None,
            claimed: false,
            reported: false,
        });
        state.outbound.push(Some(commands_tx.clone()));
        id
    };
    shared.notify.notify_waiters();
    run_connection(shared.clone(), id, ws, commands, commands_tx).await;
    let mut state = shared.lock();
    state.outbound[id] = None;
    if state.connections[id].closed.is_none() {
        state.connections[id].closed = Some(None);
    }
    drop(state);
    shared.notify.notify_waiters();
}

fn record_attempt<In, Out>(
    shared: &Shared<In, Out>,
    at: Instant,
    request: Option<HandshakeRequest>,
    outcome: AttemptOutcome,
) {
    shared.lock().attempts.push(Attempt {
        at,
        request,
        outcome,
    });
    shared.notify.notify_waiters();
}

async fn run_connection<In, Out>(
    shared: Arc<Shared<In, Out>>,
    id: usize,
    mut ws: WebSocketStream<TcpStream>,
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
                        record_sent(&shared, id, &message, None);
                        let written = write(&mut ws, message).await;
                        let _ = done.send(());
                        if !written {
                            return;
                        }
                    }
                    Command::Close(code, reason, done) => {
                        let message = Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }));
                        record_sent(&shared, id, &message, None);
                        let written = write(&mut ws, message).await;
                        let _ = done.send(());
                        if !written {
                            return;
                        }
                    }
                    Command::Abort(done) => {
                        reset(ws);
                        let mut state = shared.lock();
                        state.connections[id].closed.get_or_insert(None);
                        drop(state);
                        let _ = done.send(());
                        return;
                    }
                    Command::Read(read, done) => {
                        reading = read;
                        let _ = done.send(());
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
                record_sent(&shared, id, &ping, None);
                if !write(&mut ws, ping).await {
                    return;
                }
            }
            frame = ws.next(), if reading => {
                let frame = match frame {
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

/// Writes a frame; `false` when the socket is broken (the client is gone), which ends
/// the connection even while the fake is not reading (when a read would not tell).
async fn write(ws: &mut WebSocketStream<TcpStream>, message: Message) -> bool {
    !matches!(
        ws.send(message).await,
        Err(tokio_tungstenite::tungstenite::Error::Io(_))
    )
}

/// Drops the TCP connection with a RST instead of a FIN: the abrupt end a crashed
/// peer produces.
fn reset(ws: WebSocketStream<TcpStream>) {
    let _ = socket2::SockRef::from(ws.get_ref()).set_linger(Some(Duration::ZERO));
    drop(ws);
}

fn record_sent<In, Out>(
    shared: &Shared<In, Out>,
    id: usize,
    message: &Message,
    note: Option<String>,
) {
    let frame = frame_kind(message);
    shared.lock().connections[id].record(Direction::ToClient, frame, note);
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

/// Records a frame from the client, decodes it, and runs the first matching rule.
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
        Message::Text(text) => {
            let decoded = (shared.config.decoder)(text.as_str());
            let (message, error) = match decoded {
                Ok(message) => (Some(message), None),
                Err(e) => (None, Some(e)),
            };
            let mut note = error.as_ref().map(|e| format!("contract violation: {e}"));
            // The first matching rule; its reply runs after the lock is released, so a
            // reply closure may call back into the fake.
            let mut answer = None;
            if let Some(message) = &message
                && let Some(mounted) = state
                    .rules
                    .iter_mut()
                    .find(|mounted| mounted.rule.matcher.matches(message))
            {
                mounted.hits += 1;
                note = Some(format!("answered by the rule for {}", mounted.rule.matcher));
                answer = Some((mounted.rule.reply.clone(), mounted.rule.delay));
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
                let texts: Vec<String> = reply(&message)
                    .iter()
                    .map(|r| serde_json::to_string(r).expect("Out serialises"))
                    .collect();
                let commands = commands.clone();
                let send_all = move || {
                    for text in texts {
                        let (done, _) = oneshot::channel();
                        let _ = commands.send(Command::Send(Message::Text(text.into()), done));
                    }
                };
                match delay {
                    None => send_all(),
                    Some(delay) => {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            send_all();
                        });
                    }
                }
            }
        }
        Message::Binary(_) => {
            let conn = &mut state.connections[id];
            let entry = conn.record(
                Direction::FromClient,
                kind,
                Some("contract violation: binary frame".into()),
            );
            conn.inbound.push(Inbound {
                entry,
                message: None,
                error: Some("a binary frame; the protocol is text only".into()),
                consumed: false,
                handled: false,
            });
        }
        Message::Close(frame) => {
            let conn = &mut state.connections[id];
            conn.record(Direction::FromClient, kind, None);
            conn.closed = Some(frame.map(|f| u16::from(f.code)));
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
            state.connections[id].record(Direction::FromClient, kind, None);
        }
    }
}

/// The fake's side of one client connection. `Send`; cheap to clone.
///
/// When the last clone is dropped, the connection's own problems (frames nobody
/// looked at, contract violations) fail the test, pointing at `next_connection`.
pub struct Connection<In, Out> {
    inner: Arc<ConnectionInner<In, Out>>,
}

struct ConnectionInner<In, Out> {
    shared: Arc<Shared<In, Out>>,
    runtime: Handle,
    id: usize,
    commands: Option<mpsc::UnboundedSender<Command>>,
    request: HandshakeRequest,
    /// Where the test took this connection.
    location: &'static Location<'static>,
}

impl<In, Out> Drop for ConnectionInner<In, Out> {
    fn drop(&mut self) {
        fail_on_problems(
            &self.shared,
            Some(self.id),
            &format!(
                "connection {} of the fake WebSocket server, taken at {},",
                self.id, self.location
            ),
        );
    }
}

impl<In, Out> Clone for Connection<In, Out> {
    fn clone(&self) -> Self {
        Connection {
            inner: self.inner.clone(),
        }
    }
}

impl<In, Out> Connection<In, Out>
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    /// The upgrade request of this connection.
    pub fn request(&self) -> &HandshakeRequest {
        &self.inner.request
    }

    /// Which connection of the server this is (0 for the first).
    pub fn index(&self) -> usize {
        self.inner.id
    }

    async fn command(&self, make: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, wait) = oneshot::channel();
        if let Some(commands) = &self.inner.commands
            && commands.send(make(done)).is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Sends a typed message and waits until it is written.
    pub async fn send(&self, message: Out) {
        let text = serde_json::to_string(&message).expect("Out serialises");
        self.send_text(text).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&self, text: impl Into<String>) {
        let text = text.into();
        self.command(|done| Command::Send(Message::Text(text.into()), done))
            .await;
    }

    /// Sends a raw binary frame.
    pub async fn send_binary(&self, bytes: Vec<u8>) {
        self.command(|done| Command::Send(Message::Binary(bytes.into()), done))
            .await;
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn close(&self, code: u16, reason: impl Into<String>) {
        let reason = reason.into();
        self.command(|done| Command::Close(code, reason, done))
            .await;
    }

    /// Drops the TCP connection at once: no close frame, a reset.
    pub async fn abort(&self) {
        self.command(Command::Abort).await;
    }

    /// From now on the fake reads nothing from this connection, so it answers no ping
    /// and sees no frame: the client should find it dead by its own heartbeat. The same
    /// as [`Connection::stop_reading`], without awaiting: the connection's task takes
    /// commands before frames, so it holds for every frame the client writes after
    /// this call returns.
    pub fn stop_answering_pings(&self) {
        if let Some(commands) = &self.inner.commands {
            let (done, _) = oneshot::channel();
            let _ = commands.send(Command::Read(false, done));
        }
    }

    /// Stops reading the socket, and returns once the connection's task has stopped:
    /// what the client sends stays in the kernel's buffers (unread, unanswered, not in
    /// the transcript), so once they are full the client's writes block, like those to a
    /// peer that hangs or reads too slowly. Pings are not answered either. The fake can
    /// still send; a send that fails because the client dropped the connection ends it
    /// ([`Connection::is_open`], [`Connection::wait_closed`]), and that is how a fake that
    /// does not read finds out: keep sending, e.g. with [`Connection::ping_every`].
    /// With [`FakeServerBuilder::small_socket_buffers`] some 50 KiB fill the buffers.
    pub async fn stop_reading(&self) {
        self.command(|done| Command::Read(false, done)).await;
    }

    /// Reads the socket again after [`Connection::stop_reading`] (or
    /// [`Connection::stop_answering_pings`]), starting with whatever the client wrote
    /// meanwhile; returns once the connection's task reads again.
    pub async fn resume_reading(&self) {
        self.command(|done| Command::Read(true, done)).await;
    }

    /// From now on the fake pings the client every `every` (an empty ping frame, in the
    /// transcript), reading or not: a peer that is alive and talking, so a client's
    /// silence deadline never fires. A ping that cannot be written because the client
    /// dropped the connection ends it.
    pub async fn ping_every(&self, every: Duration) {
        self.command(|done| Command::PingEvery(Some(every), done))
            .await;
    }

    /// Stops the pings of [`Connection::ping_every`].
    pub async fn stop_pinging(&self) {
        self.command(|done| Command::PingEvery(None, done)).await;
    }

    /// Waits (up to [`DEFAULT_DEADLINE`]) for a message matching `matcher` that no
    /// earlier `expect` or `recv` took, and takes it.
    #[track_caller]
    pub fn expect(&self, matcher: Matcher<In>) -> impl std::future::Future<Output = In> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.expect_within(matcher, DEFAULT_DEADLINE)
    }

    /// [`Connection::expect`] with a deadline of your choosing.
    #[track_caller]
    pub fn expect_within(
        &self,
        matcher: Matcher<In>,
        deadline: Duration,
    ) -> impl std::future::Future<Output = In> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        async move {
            let id = self.inner.id;
            let found = wait_for(
                &self.inner.shared,
                &self.inner.runtime,
                Some(deadline),
                |state| {
                    state.connections[id]
                        .take(|i| i.message.as_ref().is_some_and(|m| matcher.matches(m)))?
                        .message
                        .clone()
                },
            )
            .await;
            match found {
                Some(message) => message,
                None => panic!(
                    "{caller}: expected {matcher} within {deadline:?} on connection {id}, but it did not come.\ntranscript:\n{}",
                    render(&self.transcript())
                ),
            }
        }
    }

    /// The next message not yet taken; `None` once the connection is closed and
    /// nothing is left.
    pub async fn recv(&self) -> Option<In> {
        let id = self.inner.id;
        let found = wait_for(&self.inner.shared, &self.inner.runtime, None, |state| {
            let conn = &mut state.connections[id];
            match conn.take(|i| i.message.is_some()) {
                Some(inbound) => Some(inbound.message.clone()),
                None => conn.closed.map(|_| None),
            }
        })
        .await;
        found.flatten()
    }

    /// Waits (up to [`DEFAULT_DEADLINE`]) for a frame from the client that is not an
    /// `In` (a binary frame, or text that does not decode) and takes it, so a test of
    /// a misbehaving client can assert on it instead of failing at drop.
    #[track_caller]
    pub fn expect_invalid(&self) -> impl std::future::Future<Output = InvalidFrame> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        async move {
            let id = self.inner.id;
            let found = wait_for(
                &self.inner.shared,
                &self.inner.runtime,
                Some(DEFAULT_DEADLINE),
                |state| {
                    let conn = &mut state.connections[id];
                    let (entry, error) = conn
                        .take(|i| i.error.is_some())
                        .map(|i| (i.entry, i.error.clone().unwrap_or_default()))?;
                    Some(InvalidFrame {
                        frame: conn.transcript[entry].frame.clone(),
                        error,
                    })
                },
            )
            .await;
            found.unwrap_or_else(|| {
                panic!(
                    "{caller}: expected a frame that is not a valid message within {DEFAULT_DEADLINE:?} on connection {id}, but none came.\ntranscript:\n{}",
                    render(&self.transcript())
                )
            })
        }
    }

    /// Fails if the client sends any data frame within `duration`.
    #[track_caller]
    pub fn expect_silence(
        &self,
        duration: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        async move {
            let id = self.inner.id;
            let before = self.inner.shared.lock().connections[id].inbound.len();
            let broke = wait_for(
                &self.inner.shared,
                &self.inner.runtime,
                Some(duration),
                |state| (state.connections[id].inbound.len() > before).then_some(()),
            )
            .await;
            if broke.is_some() {
                panic!(
                    "{caller}: expected silence for {duration:?} on connection {id}, but the client sent a frame.\ntranscript:\n{}",
                    render(&self.transcript())
                );
            }
        }
    }

    /// Waits (up to [`DEFAULT_DEADLINE`]) until the transcript holds at least `n`
    /// frames, whatever they are: for tests of raw or invalid frames.
    #[track_caller]
    pub fn wait_for_frames(&self, n: usize) -> impl std::future::Future<Output = ()> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        async move {
            let id = self.inner.id;
            let reached = wait_for(
                &self.inner.shared,
                &self.inner.runtime,
                Some(DEFAULT_DEADLINE),
                |state| (state.connections[id].transcript.len() >= n).then_some(()),
            )
            .await;
            if reached.is_none() {
                panic!(
                    "{caller}: connection {id} carried fewer than {n} frames within {DEFAULT_DEADLINE:?}.\ntranscript:\n{}",
                    render(&self.transcript())
                );
            }
        }
    }

    /// Messages matching `matcher` need no expectation: they never fail the test.
    pub fn allow(&self, matcher: Matcher<In>) {
        self.inner.shared.lock().connections[self.inner.id]
            .allowed
            .push(matcher);
    }

    /// Every frame of this connection so far, both ways, in order.
    pub fn transcript(&self) -> Vec<TranscriptEntry> {
        self.inner.shared.lock().connections[self.inner.id]
            .transcript
            .clone()
    }

    pub fn is_open(&self) -> bool {
        self.inner.shared.lock().connections[self.inner.id]
            .closed
            .is_none()
    }

    /// Waits (up to [`DEFAULT_DEADLINE`]) until the client closes or drops the
    /// connection; returns the client's close code, if it sent one.
    #[track_caller]
    pub fn wait_closed(&self) -> impl std::future::Future<Output = Option<u16>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        async move {
            let id = self.inner.id;
            match wait_for(
                &self.inner.shared,
                &self.inner.runtime,
                Some(DEFAULT_DEADLINE),
                |state| state.connections[id].closed,
            )
            .await
            {
                Some(code) => code,
                None => panic!(
                    "{caller}: connection {id} still open after {DEFAULT_DEADLINE:?}.\ntranscript:\n{}",
                    render(&self.transcript())
                ),
            }
        }
    }
}
