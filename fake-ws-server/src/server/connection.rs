//! The [`Connection`] handle: the fake's side of one client connection, which a test
//! takes with [`FakeServer::next_connection`](super::FakeServer::next_connection).
//!
//! It sends, closes, aborts, stops and resumes reading and pings by [`Command`]s to its
//! connection's task (`connection_task`), through the channel the shared state (`state`)
//! keeps, and waits on that state for what the client sent: it never imports the task.
//! `controls` adds pings, pongs and fragments; `impairment`, a slow or blackholed
//! link (which it changes directly, not by a command). When its last clone is dropped, `verify`
//! checks that connection.
//!
//! Over 400 lines on purpose: it is one concern, everything a test does with one
//! connection, and a third of it is the rustdoc (with examples) of that API.

use std::collections::VecDeque;
use std::fmt;
use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::closed::{Closed, SendError};
use super::closest::closest_diff;
use super::command::Command;
use super::handshake::HandshakeRequest;
use super::rule::Rule;
use super::state::{
    ConnState, MountedRule, Shared, fail_at_await, wait_for, wait_or_fail, without_location,
};
use super::verify::fail_on_problems;
use crate::matcher::Matcher;
use crate::transcript::{FrameKind, TranscriptEntry};

/// A frame from the client that is not an `In`: what it was, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFrame {
    /// The frame as it came.
    pub frame: FrameKind,
    /// Why it is not an `In`: the codec's error, or what RFC 6455 forbids in a close
    /// frame (a code such as 1006, see the crate's docs on close codes).
    pub error: String,
}

/// The fake's side of one client connection. `Send`; cheap to clone.
///
/// When the last clone is dropped, the connection's own problems (frames nobody
/// looked at, contract violations) fail the test, pointing at `next_connection`.
pub struct Connection<In, Out> {
    pub(super) inner: Arc<ConnectionInner<In, Out>>,
}

pub(super) struct ConnectionInner<In, Out> {
    pub(super) shared: Arc<Shared<In, Out>>,
    runtime: Handle,
    id: usize,
    pub(super) commands: Option<mpsc::UnboundedSender<Command>>,
    /// The transcript entries of the pings of `ping` still waiting for `expect_pong`.
    pub(super) pings: Mutex<VecDeque<usize>>,
    request: HandshakeRequest,
    /// Where the test took this connection.
    location: &'static Location<'static>,
    /// Whether dropping the last clone checks the connection: not for a handle of
    /// [`FakeServer::connection`](super::FakeServer::connection).
    checked: bool,
}

impl<In, Out> Drop for ConnectionInner<In, Out> {
    fn drop(&mut self) {
        if !self.checked {
            return;
        }
        fail_on_problems(
            &self.shared,
            Some(self.id),
            &format!(
                "{}: connection {} of the fake WebSocket server, taken here,",
                self.location, self.id
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
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// The handle of connection `id`, taken by the test at `location`.
    pub(super) fn new(
        shared: &Arc<Shared<In, Out>>,
        runtime: &Handle,
        id: usize,
        location: &'static Location<'static>,
    ) -> Self {
        let state = shared.lock();
        Connection {
            inner: Arc::new(ConnectionInner {
                shared: shared.clone(),
                runtime: runtime.clone(),
                id,
                commands: state.outbound[id].clone(),
                pings: Mutex::default(),
                request: state.connections[id].request.clone(),
                location,
                checked: true,
            }),
        }
    }

    /// This fresh handle, whose drop checks nothing.
    pub(super) fn unchecked(mut self) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.checked = false;
        }
        self
    }

    /// The upgrade request of this connection.
    pub fn request(&self) -> &HandshakeRequest {
        &self.inner.request
    }

    /// Which connection of the server this is (0 for the first).
    pub fn index(&self) -> usize {
        self.inner.id
    }

    pub(super) async fn command(&self, make: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, wait) = oneshot::channel();
        if let Some(commands) = &self.inner.commands
            && commands.send(make(done)).is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Hands a frame to the connection's task and waits until it is written, or
    /// says why it was not: the connection had ended (and how), or the fake had already
    /// sent a close frame.
    async fn deliver(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), SendError>>) -> Command,
    ) -> Result<(), SendError> {
        let (done, wait) = oneshot::channel();
        if let Some(commands) = &self.inner.commands
            && commands.send(make(done)).is_ok()
            && let Ok(written) = wait.await
        {
            return written;
        }
        // The connection's task has ended: it recorded how before it did.
        let closed = self.inner.shared.lock().connections[self.inner.id]
            .closed
            .clone()
            .unwrap_or(Closed::Dropped);
        Err(SendError::Closed(closed))
    }

    /// Sends a typed message, encoded by the server's [`Codec`](crate::Codec), and
    /// waits until it is written. On a connection that has ended (or after the fake's
    /// close frame) nothing is sent and it says why: a [`SendError`], never a silent
    /// no-op. Panics when the codec cannot encode it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(conn: fake_ws_server::Connection<serde_json::Value, serde_json::Value>) {
    /// conn.send(serde_json::json!({"type": "price", "price": 7}))
    ///     .await
    ///     .expect("the client is still connected");
    /// # }
    /// ```
    #[track_caller]
    pub fn send(
        &self,
        message: Out,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + '_ {
        // Encoded here, not in the future: a panic points at the test's call.
        let frame = match self.inner.shared.config.codec.encode(&message) {
            Ok(payload) => payload.into_message(),
            Err(e) => panic!(
                "the fake's codec could not encode the message to send: {e}; send a raw frame with send_text or send_binary instead"
            ),
        };
        self.deliver(|done| Command::Send(frame, done))
    }

    /// Sends a raw text frame; see [`Connection::send`] for the error.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        let text = text.into();
        self.deliver(|done| Command::Send(Message::Text(text.into()), done))
            .await
    }

    /// Sends a raw binary frame; see [`Connection::send`] for the error.
    pub async fn send_binary(&self, bytes: Vec<u8>) -> Result<(), SendError> {
        self.deliver(|done| Command::Send(Message::Binary(bytes.into()), done))
            .await
    }

    /// Sends a close frame with `code` and `reason`; see [`Connection::send`] for the
    /// error. The connection ends when the client answers with its own close frame
    /// ([`Connection::wait_closed`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::{Closed, FakeServer};
    /// use futures_util::StreamExt;
    /// use serde_json::Value;
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// let conn = fake.next_connection().await;
    ///
    /// conn.close(1001, "going away").await.unwrap();
    /// let Some(Ok(Message::Close(Some(frame)))) = client.next().await else {
    ///     panic!("expected a close frame");
    /// };
    /// assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1001, "going away"));
    /// // The client answers the close frame with one of its own, and the connection ends.
    /// assert!(client.next().await.is_none());
    /// assert!(matches!(conn.wait_closed().await, Closed::Frame { code: 1001, .. }));
    /// // Nothing may follow a close: sending now says why it did not.
    /// assert!(conn.send_text("too late").await.is_err());
    /// # }
    /// ```
    pub async fn close(&self, code: u16, reason: impl Into<String>) -> Result<(), SendError> {
        let reason = reason.into();
        self.deliver(|done| Command::Close(code, reason, done))
            .await
    }

    /// Drops the TCP connection at once: no close frame, a reset.
    pub async fn abort(&self) {
        self.command(Command::Abort).await;
    }

    /// From now on the fake answers no ping on this connection, as a server that hangs
    /// would not: the client should find it dead by its own heartbeat. It still reads
    /// and records what the client sends (unlike [`Connection::stop_reading`]), so a
    /// test can see the client's pings and messages meanwhile; rules still answer
    /// messages. No awaiting needed: the connection's task takes commands before frames,
    /// so it holds for every ping the client writes after this call returns. Undone by
    /// [`Connection::resume_answering_pings`] (and by [`Connection::resume_reading`],
    /// which resumes both).
    pub fn stop_answering_pings(&self) {
        if let Some(commands) = &self.inner.commands {
            let (done, _) = oneshot::channel();
            let _ = commands.send(Command::Stall(true, done));
        }
    }

    /// Answers the client's pings again after [`Connection::stop_answering_pings`], and
    /// returns once the connection's task does; whether the fake reads is left as it
    /// is ([`Connection::resume_reading`] resumes both).
    pub async fn resume_answering_pings(&self) {
        self.command(|done| Command::Stall(false, done)).await;
    }

    /// Stops reading the socket, and returns once the connection's task has stopped:
    /// what the client sends stays in the kernel's buffers (unread, unanswered, not in
    /// the transcript), so once they are full the client's writes block, like those to a
    /// peer that hangs or reads too slowly. Pings are not answered either. The fake can
    /// still send; a send that fails because the client dropped the connection ends it
    /// ([`Connection::is_open`], [`Connection::wait_closed`]), and that is how a fake that
    /// does not read finds out: keep sending, e.g. with [`Connection::ping_every`].
    /// With [`FakeServerBuilder::small_socket_buffers`] some 50 KiB fill the buffers.
    ///
    /// [`FakeServerBuilder::small_socket_buffers`]: super::FakeServerBuilder::small_socket_buffers
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

    /// The server's default deadline ([`FakeServerBuilder::default_deadline`]).
    ///
    /// [`FakeServerBuilder::default_deadline`]: super::FakeServerBuilder::default_deadline
    fn deadline(&self) -> Duration {
        self.inner.shared.config.deadline
    }

    /// Waits (up to the server's default deadline) for a message matching `matcher`
    /// that no earlier `expect` or `recv` took, wherever it is among those not taken,
    /// and takes it; earlier ones stay for later. [`Connection::expect_next`] insists
    /// on the order. When none comes in time, fails the test at the caller with what
    /// it waited for, the transcript and (for a JSON matcher) a diff against the
    /// closest message.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::{FakeServer, Matcher, json_includes};
    /// use futures_util::SinkExt;
    /// use serde_json::Value;
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// client.send(Message::text(r#"{"type":"hello","name":"ferris"}"#)).await.unwrap();
    /// client.send(Message::text(r#"{"type":"subscribe","topic":"BTC"}"#)).await.unwrap();
    ///
    /// let conn = fake.next_connection().await;
    /// // Any order: the subscribe is taken though the hello came first...
    /// let subscribe = conn.expect(json_includes!({"type": "subscribe"})).await;
    /// assert_eq!(subscribe["topic"], "BTC");
    /// // ...and the hello is still there to take, here with a predicate of your own.
    /// conn.expect(Matcher::new("a hello", |m: &Value| m["type"] == "hello")).await;
    /// # }
    /// ```
    #[track_caller]
    pub fn expect(&self, matcher: Matcher<In>) -> impl std::future::Future<Output = In> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.expect_within(matcher, self.deadline())
    }

    /// Waits (up to the server's default deadline) for the next message that no
    /// earlier `expect` or `recv` took, and takes it: it must match `matcher`, or the
    /// test fails at once, showing what came instead (as opposed to
    /// [`Connection::expect`], which takes the first match wherever it is). Frames that
    /// are not messages (invalid ones) are not in the way, and neither are messages a
    /// rule answered: those are the rule's ([`Connection::expect`] can still take one,
    /// to assert that it came).
    #[track_caller]
    pub fn expect_next(
        &self,
        matcher: Matcher<In>,
    ) -> impl std::future::Future<Output = In> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.expect_next_within(matcher, self.deadline())
    }

    /// [`Connection::expect_next`] with a deadline of your choosing.
    #[track_caller]
    pub fn expect_next_within(
        &self,
        matcher: Matcher<In>,
        deadline: Duration,
    ) -> impl std::future::Future<Output = In> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        fail_at_await(self.expect_next_attempt(matcher, deadline))
    }

    /// [`Connection::expect_next_within`] that returns the failure (`Err`, the message
    /// the test would fail with, with the transcript and without the caller's
    /// location) instead of failing the test: for a harness that reports failures its
    /// own way, such as the standalone fake's admin API.
    #[track_caller]
    pub fn try_expect_next_within(
        &self,
        matcher: Matcher<In>,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<In, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        without_location(
            Location::caller(),
            self.expect_next_attempt(matcher, deadline),
        )
    }

    #[track_caller]
    fn expect_next_attempt(
        &self,
        matcher: Matcher<In>,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<In, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        let described = matcher.clone();
        let next = self.try_wait(
            deadline,
            move |conn| {
                let inbound = conn.take(|i| i.message.is_some() && !i.handled)?;
                let message = inbound.message.clone()?;
                if matcher.matches(&message) {
                    Some(Ok(message))
                } else {
                    Some(Err(inbound.entry))
                }
            },
            {
                let described = described.clone();
                move |id| {
                    format!(
                        "expected the next message on connection {id} to be {described} within {deadline:?}, but none came."
                    )
                }
            },
        );
        let id = self.inner.id;
        async move {
            match next.await? {
                Ok(message) => Ok(message),
                Err(entry) => {
                    let failure = {
                        let state = self.inner.shared.lock();
                        let conn = &state.connections[id];
                        let mut what = format!(
                            "expected the next message on connection {id} to be {described}, but it was:\n    {}",
                            conn.transcript[entry]
                        );
                        if let Some(diff) = closest_diff(conn, &described) {
                            what = format!("{what}\n{diff}");
                        }
                        conn.failure(what)
                    };
                    Err(format!("{caller}: {failure}"))
                }
            }
        }
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
        fail_at_await(self.expect_attempt(matcher, deadline))
    }

    /// [`Connection::expect_within`] that returns the failure (`Err`, the message the
    /// test would fail with: what it waited for, the diff against the closest message
    /// and the transcript, without the caller's location) instead of failing the
    /// test: for a harness that reports failures its own way, such as the standalone
    /// fake's admin API.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use fake_ws_server::{FakeServer, json_includes};
    /// use futures_util::SinkExt;
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::json().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// client.send(Message::text(r#"{"type":"say","text":"hello"}"#)).await.unwrap();
    /// let conn = fake.next_connection().await;
    /// let failure = conn
    ///     .try_expect_within(json_includes!({"text": "hi"}), Duration::from_millis(100))
    ///     .await
    ///     .unwrap_err();
    /// assert!(failure.contains(r#"client → fake  text {"type":"say","text":"hello"}"#));
    /// conn.expect(json_includes!({"text": "hello"})).await;
    /// # }
    /// ```
    #[track_caller]
    pub fn try_expect_within(
        &self,
        matcher: Matcher<In>,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<In, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        without_location(Location::caller(), self.expect_attempt(matcher, deadline))
    }

    #[track_caller]
    fn expect_attempt(
        &self,
        matcher: Matcher<In>,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<In, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let described = matcher.clone();
        self.try_wait_with(
            deadline,
            move |conn| {
                conn.take(|i| i.message.as_ref().is_some_and(|m| matcher.matches(m)))?
                    .message
                    .clone()
            },
            move |conn| {
                let id = conn.id;
                let mut what = format!(
                    "expected {described} within {deadline:?} on connection {id}, but it did not come."
                );
                if let Some(diff) = closest_diff(conn, &described) {
                    what = format!("{what}\n{diff}");
                }
                what
            },
        )
    }

    /// The next message not yet taken, whatever it is: `Some(message)`, or `None` once
    /// the connection has ended and nothing is left. Messages a rule answered are the
    /// rule's: `recv` passes over them, as [`Connection::expect_next`] does. Waits up to the server's default
    /// deadline; when it passes with neither, the test fails there with the transcript
    /// (like every wait; it never returns `None` for "nothing yet").
    #[track_caller]
    pub fn recv(&self) -> impl std::future::Future<Output = Option<In>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.recv_within(self.deadline())
    }

    /// [`Connection::recv`] with a deadline of your choosing.
    #[track_caller]
    pub fn recv_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Option<In>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        fail_at_await(self.recv_attempt(deadline))
    }

    /// [`Connection::recv_within`] that returns the failure (`Err`, the message the
    /// test would fail with, with the transcript and without the caller's location)
    /// instead of failing the test.
    #[track_caller]
    pub fn try_recv_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Option<In>, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        without_location(Location::caller(), self.recv_attempt(deadline))
    }

    #[track_caller]
    fn recv_attempt(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Option<In>, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.try_wait(
            deadline,
            |conn| match conn.take(|i| i.message.is_some() && !i.handled) {
                Some(inbound) => Some(inbound.message.clone()),
                None => conn.closed.as_ref().map(|_| None),
            },
            move |id| {
                format!(
                    "expected a message (or the end) of connection {id} within {deadline:?}, but neither came."
                )
            },
        )
    }

    /// Waits (up to the server's default deadline) for a frame from the client that is
    /// not an `In` (a binary frame, or text that does not decode), or a close frame
    /// RFC 6455 forbids (a code such as 1006, recorded as sent), and takes it, so a
    /// test of a misbehaving client can assert on it instead of failing at drop.
    #[track_caller]
    pub fn expect_invalid(&self) -> impl std::future::Future<Output = InvalidFrame> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.expect_invalid_within(self.deadline())
    }

    /// [`Connection::expect_invalid`] with a deadline of your choosing.
    #[track_caller]
    pub fn expect_invalid_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = InvalidFrame> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        fail_at_await(self.invalid_attempt(deadline))
    }

    /// [`Connection::expect_invalid_within`] that returns the failure (`Err`, with the
    /// transcript and without the caller's location) instead of failing the test.
    #[track_caller]
    pub fn try_expect_invalid_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<InvalidFrame, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        without_location(Location::caller(), self.invalid_attempt(deadline))
    }

    #[track_caller]
    fn invalid_attempt(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<InvalidFrame, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.try_wait(
            deadline,
            |conn| {
                let (entry, error) = conn
                    .take(|i| i.error.is_some())
                    .map(|i| (i.entry, i.error.clone().unwrap_or_default()))?;
                Some(InvalidFrame {
                    frame: conn.transcript[entry].frame.clone(),
                    error,
                })
            },
            move |id| {
                format!(
                    "expected a frame that is not a valid message within {deadline:?} on connection {id}, but none came."
                )
            },
        )
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
        fail_at_await(async move {
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
                let failure = self.inner.shared.lock().connections[id].failure(format!(
                    "expected silence for {duration:?} on connection {id}, but the client sent a frame."
                ));
                return Err(format!("{caller}: {failure}"));
            }
            Ok(())
        })
    }

    /// Waits (up to the server's default deadline) until the transcript holds at least
    /// `n` frames, whatever they are: for tests of raw or invalid frames.
    #[track_caller]
    pub fn wait_for_frames(&self, n: usize) -> impl std::future::Future<Output = ()> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.wait_for_frames_within(n, self.deadline())
    }

    /// [`Connection::wait_for_frames`] with a deadline of your choosing.
    #[track_caller]
    pub fn wait_for_frames_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        fail_at_await(self.frames_attempt(n, deadline))
    }

    /// [`Connection::wait_for_frames_within`] that returns the failure (`Err`, with the
    /// transcript and without the caller's location) instead of failing the test.
    #[track_caller]
    pub fn try_wait_for_frames_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        without_location(Location::caller(), self.frames_attempt(n, deadline))
    }

    #[track_caller]
    fn frames_attempt(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.try_wait(
            deadline,
            move |conn| (conn.transcript.len() >= n).then_some(()),
            move |id| format!("connection {id} carried fewer than {n} frames within {deadline:?}."),
        )
    }

    /// Mounts a rule for this connection only: it answers before the server-wide rules
    /// of the same priority, and its [`Rule::times`] is verified when the last clone
    /// of this handle is dropped (or the server is, if that comes first).
    pub fn mount(&self, rule: Rule<In, Out>) {
        self.inner
            .shared
            .lock()
            .rules
            .push(MountedRule::new(rule, Some(self.inner.id)));
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

    /// How the connection ended, without waiting: `None` while it is open (see
    /// [`Connection::wait_closed`]).
    pub fn closed(&self) -> Option<Closed> {
        self.inner.shared.lock().connections[self.inner.id]
            .closed
            .clone()
    }

    /// Whether the connection is still open: `false` once it ended, however
    /// ([`Connection::wait_closed`] says how).
    pub fn is_open(&self) -> bool {
        self.inner.shared.lock().connections[self.inner.id]
            .closed
            .is_none()
    }

    /// Waits (up to the server's default deadline) until the connection ends, and says
    /// how: a close frame from the client with a code (and reason) or without one, the
    /// client's TCP connection dropped without a close frame, or the fake's own abort.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(conn: fake_ws_server::Connection<serde_json::Value, serde_json::Value>) {
    /// use fake_ws_server::Closed;
    /// match conn.wait_closed().await {
    ///     Closed::Frame { code: 1000, .. } => {}
    ///     other => panic!("expected a normal close, got {other:?}"),
    /// }
    /// # }
    /// ```
    #[track_caller]
    pub fn wait_closed(&self) -> impl std::future::Future<Output = Closed> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.wait_closed_within(self.deadline())
    }

    /// [`Connection::wait_closed`] with a deadline of your choosing.
    #[track_caller]
    pub fn wait_closed_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Closed> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        fail_at_await(self.wait_closed_attempt(deadline))
    }

    /// [`Connection::wait_closed_within`] that returns the failure (`Err`, with the
    /// transcript and without the caller's location) instead of failing the test.
    #[track_caller]
    pub fn try_wait_closed_within(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Closed, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        without_location(Location::caller(), self.wait_closed_attempt(deadline))
    }

    #[track_caller]
    fn wait_closed_attempt(
        &self,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Closed, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.try_wait(
            deadline,
            |conn| conn.closed.clone(),
            move |id| format!("connection {id} still open after {deadline:?}."),
        )
    }

    /// Waits up to `deadline` until `check` finds in this connection's state what it
    /// looks for, and returns it; when the deadline passes first, yields the failure:
    /// what did not come (`what`, given the connection's index) above the transcript,
    /// after the caller's location. A wait that fails the test wraps it in
    /// `fail_at_await`, a `try_*` one in `without_location`. [`wait_or_fail`] for one
    /// connection.
    #[track_caller]
    pub(super) fn try_wait<T>(
        &self,
        deadline: Duration,
        check: impl FnMut(&mut ConnState<In>) -> Option<T> + Send + 'static,
        what: impl FnOnce(usize) -> String + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
        T: Send + 'static,
    {
        self.try_wait_with(deadline, check, move |conn| what(conn.id))
    }

    /// [`Connection::try_wait`], where what did not come is said from the connection's
    /// state (to show the closest candidate, say).
    #[track_caller]
    fn try_wait_with<T>(
        &self,
        deadline: Duration,
        mut check: impl FnMut(&mut ConnState<In>) -> Option<T> + Send + 'static,
        what: impl FnOnce(&ConnState<In>) -> String + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
        T: Send + 'static,
    {
        let caller = Location::caller();
        let id = self.inner.id;
        wait_or_fail(
            &self.inner.shared,
            &self.inner.runtime,
            caller,
            deadline,
            move |state| check(&mut state.connections[id]),
            move |state| {
                let conn = &state.connections[id];
                conn.failure(what(conn))
            },
        )
    }
}
