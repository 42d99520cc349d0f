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
//!
//! This file holds the [`FakeServer`] handle itself (start, stop, restart, connections
//! and handshake attempts); the rest is one file a concern, and their imports point one
//! way, down this list:
//!
//! - `builder`: [`FakeServerBuilder`], how a test configures a fake and starts it;
//! - the handles' side: `connection` and `controls`, the [`Connection`] handle a test
//!   drives one connection with; `closest`, the closest candidate of a failed
//!   expectation; `verify`, what fails the test when the server or a connection handle
//!   is dropped;
//! - `attempts`: the log of connection attempts, and the waits and assertions on it;
//! - the socket tasks' side, on the server's runtime: `accept`, the accept loop with
//!   admission and the handshake; `connection_task`, one loop a connection, with
//!   `frames` (what it does with a frame) and `rules` (which rule answers a message);
//! - `state`: what the two sides share, and how a handle waits on it. The sides meet
//!   there and in the `command` channel only: neither imports the other;
//! - plain types: `rule` ([`Rule`]), `admission` ([`HandshakeRule`], the admission
//!   mode), `handshake` ([`HandshakeRequest`], [`Attempt`]), `closed` ([`Closed`],
//!   [`SendError`]), `command`, `stream`, `pongs` (over `wire`) and `tls`.
//!
//! Two files import this one back: `builder`, whose `start` makes the [`FakeServer`]
//! that makes builders, and `tls`, which adds its feature's methods to both handles.
//!
//! Over 400 lines on purpose: it is one concern, the server handle's API, and two
//! fifths of it are this overview and the rustdoc (with examples) of that API.

mod accept;
mod admission;
mod attempts;
mod builder;
mod clock;
mod closed;
mod closest;
mod command;
mod connection;
mod connection_task;
mod controls;
mod faults;
mod frames;
mod handshake;
mod impairment;
mod intervals;
mod link;
mod pongs;
mod replay;
mod rule;
mod rules;
mod state;
mod stream;
mod tls;
mod verify;
mod wire;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use admission::HandshakeRule;
pub use builder::FakeServerBuilder;
pub use closed::{Closed, SendError};
pub use connection::{Connection, InvalidFrame};
pub use faults::Fault;
pub use handshake::{Attempt, AttemptOutcome, HandshakeRequest};
pub use impairment::Impairment;
pub use replay::Replay;
pub use rule::{DEFAULT_PRIORITY, Rule};

use crate::codec::Codec;
use crate::matcher::Matcher;
use accept::{Listening, accept_loop, bind};
use admission::{Admission, MountedHandshakeRule};
use command::Command;
use state::{MountedRule, Shared, fail_at_await, wait_for, wait_or_fail};
use verify::{fail_on_problems, problems_of};

/// How long every wait (`next_connection`, `expect`, `recv`, `wait_closed`, ...) waits
/// unless the builder's [`FakeServerBuilder::default_deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// The fake server. Dropping it stops it and verifies: unless the thread is already
/// panicking, it fails the test (a panic naming the line that started the server, with
/// every connection's transcript) when the client sent a message no expectation or
/// rule looked at (unless [`lenient`](FakeServerBuilder::lenient)), sent a frame that
/// is not a valid message, or a rule did not fire as often as its
/// [`Rule::times`] said. [`FakeServer::problems`] lists the same without panicking;
/// [`FakeServer::shutdown`] stops the server first, then verifies.
///
/// # Examples
///
/// A client message nobody looked at fails the test when the fake is dropped:
///
/// ```should_panic
/// use fake_ws_server::FakeServer;
/// use futures_util::SinkExt;
/// use serde_json::Value;
/// use tokio_tungstenite::tungstenite::Message;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fake = FakeServer::<Value, Value>::builder().start().await;
/// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
/// client.send(Message::text(r#"{"type":"unexpected"}"#)).await.unwrap();
/// let conn = fake.next_connection().await;
/// conn.wait_for_frames(1).await;
/// drop(fake); // panics: "a message that no expectation or rule looked at"
/// # }
/// ```
pub struct FakeServer<In, Out> {
    shared: Arc<Shared<In, Out>>,
    runtime: Handle,
    port: u16,
    listening: Mutex<Option<Listening>>,
    runtime_stop: Option<oneshot::Sender<()>>,
}

impl<In, Out> FakeServer<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// A builder with defaults: path `/ws`, [`JsonCodec`](crate::JsonCodec), no rules,
    /// strict, every wait up to [`DEFAULT_DEADLINE`]. `In` is what the client sends,
    /// `Out` what the fake sends: any serde types (with the default codec), such as an
    /// enum of the protocol's messages, `serde_json::Value` or `String`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use fake_ws_server::{FakeServer, json_includes};
    /// use futures_util::{SinkExt, StreamExt};
    /// use serde::{Deserialize, Serialize};
    /// use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    ///
    /// #[derive(Debug, Clone, Serialize, Deserialize)]
    /// #[serde(tag = "type", rename_all = "snake_case")]
    /// enum FromClient { Subscribe { topic: String } }
    ///
    /// #[derive(Serialize)]
    /// #[serde(tag = "type", rename_all = "snake_case")]
    /// enum ToClient { Subscribed { topic: String } }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<FromClient, ToClient>::builder()
    ///     .path("/feed")
    ///     .subprotocol("prices.v1")
    ///     .default_deadline(Duration::from_secs(2))
    ///     // Every subscribe is answered, and at least one must come.
    ///     .on(json_includes!({"type": "subscribe"}), |m| match m {
    ///         FromClient::Subscribe { topic } => vec![ToClient::Subscribed { topic: topic.clone() }],
    ///     })
    ///     .times(1..)
    ///     .start()
    ///     .await;
    ///
    /// let mut request = fake.url().into_client_request().unwrap();
    /// request.headers_mut().insert("sec-websocket-protocol", "prices.v1".parse().unwrap());
    /// let (mut client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    /// assert_eq!(response.headers()["sec-websocket-protocol"], "prices.v1");
    /// client.send(Message::text(r#"{"type":"subscribe","topic":"BTC"}"#)).await.unwrap();
    /// let answer = client.next().await.unwrap().unwrap();
    /// assert_eq!(answer.to_text().unwrap(), r#"{"type":"subscribed","topic":"BTC"}"#);
    /// # }
    /// ```
    pub fn builder() -> FakeServerBuilder<In, Out>
    where
        In: DeserializeOwned,
        Out: Serialize,
    {
        FakeServerBuilder::new()
    }

    /// A builder with the same defaults as [`FakeServer::builder`], but messages cross
    /// the wire through `codec` instead of [`JsonCodec`](crate::JsonCodec), so `In` and
    /// `Out` need no serde: protobuf types, a hand-written binary format. Everything but
    /// the JSON matchers (`json_includes!`, [`Matcher::json_includes`]) works the same.
    ///
    /// [`Matcher::json_includes`]: crate::Matcher::json_includes
    pub fn builder_with_codec(codec: impl Codec<In, Out>) -> FakeServerBuilder<In, Out> {
        FakeServerBuilder::with_codec(codec)
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
        let shared = Arc::new(builder.into_shared(location));
        let listener = handle
            .spawn(bind(shared.config.bind, shared.config.small_buffers))
            .await
            .expect("fake server runtime")
            .unwrap_or_else(|e| panic!("bind {}: {e}", shared.config.bind));
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

    /// `ws://127.0.0.1:PORT/ws`, or `wss://` with `FakeServerBuilder::tls` (cargo feature `tls`).
    pub fn url(&self) -> String {
        self.url_for(&self.shared.config.path)
    }

    /// The URL of `path` on this fake: `ws://127.0.0.1:PORT{path}` (or `wss://`), for a
    /// path of [`FakeServerBuilder::also_path`] (any other is answered with 404).
    pub fn url_for(&self, path: &str) -> String {
        let scheme = if self.shared.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}{path}", self.addr())
    }

    /// The port the fake listens on, on 127.0.0.1 (or the address of
    /// [`FakeServerBuilder::bind`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The fake's address: 127.0.0.1 and [`port`](Self::port), or the address of
    /// [`FakeServerBuilder::bind`] (127.0.0.1 when that is `0.0.0.0`, `[::1]` when `::`).
    pub fn addr(&self) -> SocketAddr {
        let ip = match self.shared.config.bind.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.port)
    }

    /// The next connection not yet handed out, waiting up to the server's default
    /// deadline ([`FakeServerBuilder::default_deadline`]); when none comes, fails the
    /// test at the caller with the log of handshake attempts. Connections are handed
    /// out in the order they were accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::FakeServer;
    /// use serde_json::Value;
    /// use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// let mut request = fake.url().into_client_request().unwrap();
    /// request.headers_mut().insert("authorization", "Bearer t0ken".parse().unwrap());
    /// let _first = tokio_tungstenite::connect_async(request).await.unwrap();
    /// let _second = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    ///
    /// let first = fake.next_connection().await;
    /// assert_eq!(first.index(), 0);
    /// assert_eq!(first.request().header("authorization"), Some("Bearer t0ken"));
    /// assert_eq!(fake.next_connection().await.index(), 1);
    /// # }
    /// ```
    #[track_caller]
    pub fn next_connection(
        &self,
    ) -> impl std::future::Future<Output = Connection<In, Out>> + Send + '_ {
        self.next_connection_within(self.shared.config.deadline)
    }

    /// The deadline of every wait that is not given one: see
    /// [`FakeServerBuilder::default_deadline`].
    pub fn default_deadline(&self) -> Duration {
        self.shared.config.deadline
    }

    /// The next connection not yet handed out, waiting up to `deadline`; panics with
    /// the log of attempts when none comes.
    #[track_caller]
    pub fn next_connection_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Connection<In, Out>> + Send + '_ {
        fail_at_await(self.next_connection_attempt(deadline))
    }

    /// [`FakeServer::next_connection_within`] that says why no connection came
    /// (`Err`, the message the test would fail with, with the log of attempts and
    /// without the caller's location) instead of failing the test: for a harness that
    /// reports failures its own way, such as the standalone fake's admin API.
    #[track_caller]
    pub fn try_next_connection_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Connection<In, Out>, String>> + Send + '_ {
        state::without_location(Location::caller(), self.next_connection_attempt(deadline))
    }

    #[track_caller]
    fn next_connection_attempt(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Connection<In, Out>, String>> + Send + '_ {
        let caller = Location::caller();
        async move {
            let id = wait_or_fail(
                &self.shared,
                &self.runtime,
                caller,
                deadline,
                |state| {
                    let conn = state.connections.iter_mut().find(|c| !c.claimed)?;
                    conn.claimed = true;
                    Some(conn.id)
                },
                |state| {
                    format!(
                        "no WebSocket connection within {deadline:?}; the attempts so far:\n{}",
                        attempts::attempt_log(state)
                    )
                },
            )
            .await?;
            Ok(Connection::new(&self.shared, &self.runtime, id, caller))
        }
    }

    /// A handle on connection `index` (0 for the first accepted), whether
    /// [`next_connection`](Self::next_connection) handed it out or not, without
    /// handing it out; `None` when fewer were accepted. Unlike a handed-out one, its
    /// drop checks nothing: the server's drop and [`problems`](Self::problems) still
    /// cover the connection. For a harness that looks connections up by index, such as
    /// the standalone fake's admin API.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::FakeServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::json().start().await;
    /// assert!(fake.connection(0).is_none());
    /// let _client = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// fake.wait_for_connections(1).await;
    /// assert!(fake.connection(0).unwrap().is_open());
    /// // Still there to hand out.
    /// assert_eq!(fake.next_connection().await.index(), 0);
    /// # }
    /// ```
    #[track_caller]
    pub fn connection(&self, index: usize) -> Option<Connection<In, Out>> {
        if index >= self.shared.lock().connections.len() {
            return None;
        }
        let conn = Connection::new(&self.shared, &self.runtime, index, Location::caller());
        Some(conn.unchecked())
    }

    /// How many WebSocket connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().connections.len()
    }

    /// Sends `message` (encoded once by the server's codec) to every connection open
    /// when it is called, whether the test took it or not, and returns to how many it
    /// was written: those that ended meanwhile, or after the fake's close frame, are
    /// skipped. Panics at the call when the codec cannot encode the message.
    #[track_caller]
    pub fn broadcast(&self, message: Out) -> impl std::future::Future<Output = usize> + '_ {
        let frame = match self.shared.config.codec.encode(&message) {
            Ok(payload) => payload.into_message(),
            Err(e) => panic!("the fake's codec could not encode the message to broadcast: {e}"),
        };
        let senders: Vec<_> = self
            .shared
            .lock()
            .outbound
            .iter()
            .flatten()
            .cloned()
            .collect();
        async move {
            let mut written = 0;
            for sender in senders {
                let (done, wait) = oneshot::channel();
                if sender.send(Command::Send(frame.clone(), done)).is_ok()
                    && matches!(wait.await, Ok(Ok(())))
                {
                    written += 1;
                }
            }
            written
        }
    }

    /// Mounts a rule on the running server, for every connection (those open now and
    /// those to come), after the rules mounted before it of the same priority. It is
    /// verified (its [`Rule::times`]) when the server is dropped.
    pub fn mount(&self, rule: Rule<In, Out>) {
        self.shared.lock().rules.push(MountedRule::new(rule, None));
    }

    /// Messages matching `matcher`, on any connection (open now or to come), need no
    /// expectation: they never fail the test. [`Connection::allow`] does it for one
    /// connection.
    pub fn allow(&self, matcher: Matcher<In>) {
        self.shared.lock().allowed.push(matcher);
    }

    /// Answers the next `n` upgrade requests with `status` instead of 101: the same as
    /// `mount_handshake_rule(HandshakeRule::reject(status).up_to_n_times(n))`.
    #[track_caller]
    pub fn reject_next_handshakes(&self, n: usize, status: u16) {
        self.mount_handshake_rule(HandshakeRule::reject(status).up_to_n_times(n));
    }

    /// Mounts a rule that rejects some upgrade requests (see [`HandshakeRule`]), after
    /// those mounted before it.
    pub fn mount_handshake_rule(&self, rule: HandshakeRule) {
        self.shared
            .lock()
            .handshake_rules
            .push(MountedHandshakeRule::new(rule));
    }

    /// From now on, every new TCP connection is accepted and reset at once, before its
    /// handshake: the fake is down, but each try is recorded as an attempt with outcome
    /// [`AttemptOutcome::Refused`] and its time. The client's connect succeeds and then
    /// the handshake fails with a reset (ECONNRESET, or the stream ending), not with
    /// ECONNREFUSED: for that, see [`FakeServer::unbind`]. Live connections go on (see
    /// [`FakeServer::reset_connections`]). Undone by [`FakeServer::accept_connections`].
    pub fn refuse_connections(&self) {
        self.set_admission(Admission::Refuse);
    }

    /// From now on, every new TCP connection is accepted and never answered: the
    /// client's handshake hangs until its own timeout (recorded as an attempt with
    /// outcome [`AttemptOutcome::Hung`]). Such connections are reset by
    /// [`FakeServer::reset_connections`] and [`FakeServer::stop`], and closed when the
    /// server is dropped. Undone (for new connections) by [`FakeServer::accept_connections`].
    pub fn hang_connections(&self) {
        self.set_admission(Admission::Hang);
    }

    /// Handshakes are answered again after [`FakeServer::refuse_connections`],
    /// [`FakeServer::hang_connections`] or [`FakeServer::stop`].
    pub fn accept_connections(&self) {
        self.set_admission(Admission::Accept);
    }

    fn set_admission(&self, admission: Admission) {
        self.shared.lock().admission = admission;
    }

    /// Drops every live connection without a close frame (a reset), and every hung
    /// one, and returns once their tasks have let go of the sockets. Handshakes in
    /// flight are dropped too. New connections are still accepted (unless refused).
    pub async fn reset_connections(&self) {
        self.abort_all();
        // Every connection task has let go of its socket.
        let _ = wait_for(
            &self.shared,
            &self.runtime,
            Some(self.shared.config.deadline),
            |state| state.outbound.iter().all(Option::is_none).then_some(()),
        )
        .await;
    }

    /// The fake goes down: [`FakeServer::refuse_connections`] and
    /// [`FakeServer::reset_connections`]. The port stays bound, so the client's tries
    /// are recorded (with outcome [`AttemptOutcome::Refused`]): it sees a reset, not
    /// ECONNREFUSED. Undone by [`FakeServer::restart`].
    pub async fn stop(&self) {
        self.refuse_connections();
        self.reset_connections().await;
    }

    /// Closes the listening socket itself and resets every connection: from now on
    /// the client gets ECONNREFUSED, and its tries are not recorded (the kernel
    /// refuses them). For a test that needs a port nobody listens on; [`FakeServer::stop`]
    /// is what most tests want. Undone by [`FakeServer::restart`], which binds the same
    /// port again.
    pub async fn unbind(&self) {
        if let Some(task) = self.halt() {
            // The listener is dropped when its task ends: from then on, connection refused.
            let _ = task.await;
        }
        self.reset_connections().await;
    }

    /// Answers handshakes again after [`FakeServer::stop`] (or refusing or hanging),
    /// listening again on the same port after [`FakeServer::unbind`].
    pub async fn restart(&self) {
        self.accept_connections();
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if listening {
            return;
        }
        let port = self.port;
        let addr = SocketAddr::new(self.shared.config.bind.ip(), port);
        let small_buffers = self.shared.config.small_buffers;
        let listener = self
            .runtime
            .spawn(async move {
                // The old socket may linger for a moment: retry briefly.
                let mut last = None;
                for _ in 0..200 {
                    match bind(addr, small_buffers).await {
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

    /// Everything that would fail the test at drop (empty when all is well), without
    /// failing it: to assert on, or to print.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::{FakeServer, Matcher};
    /// use futures_util::SinkExt;
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<String, String>::builder().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// client.send(Message::text(r#""hello""#)).await.unwrap();
    /// let conn = fake.next_connection().await;
    /// conn.wait_for_frames(1).await;
    /// let problems = fake.problems();
    /// assert_eq!(problems.len(), 1);
    /// assert!(problems[0].contains("a message that no expectation or rule looked at"));
    ///
    /// // Once the test has looked at it, all is well, and the drop passes.
    /// conn.expect(Matcher::new("hello", |m: &String| m == "hello")).await;
    /// assert!(fake.problems().is_empty());
    /// # }
    /// ```
    pub fn problems(&self) -> Vec<String> {
        problems_of(&self.shared, None)
    }
}

impl FakeServer<serde_json::Value, serde_json::Value> {
    /// A builder for a fake that speaks JSON both ways as `serde_json::Value`: the same
    /// as `FakeServer::<Value, Value>::builder()`, without the turbofish.
    pub fn json() -> FakeServerBuilder<serde_json::Value, serde_json::Value> {
        FakeServerBuilder::new()
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
        self.abort_all();
        task
    }

    /// Resets every live connection and every hung one; handshakes in flight are
    /// dropped when they end.
    fn abort_all(&self) {
        let mut state = self.shared.lock();
        // Handshakes still in flight belong to the old epoch and are dropped when they
        // end; hung connections see the change and are reset.
        state.epoch += 1;
        for sender in state.outbound.iter().flatten() {
            let (done, _) = oneshot::channel();
            let _ = sender.send(Command::Abort(done));
        }
        drop(state);
        self.shared.notify.notify_waiters();
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
                "{}: the fake WebSocket server started here",
                self.shared.config.location
            ),
        );
    }
}
