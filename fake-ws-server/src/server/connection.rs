//! The [`Connection`] handle: the fake's side of one client connection, which a test
//! takes with [`FakeServer::next_connection`](super::FakeServer::next_connection).
//!
//! It sends, closes, aborts, stops and resumes reading and pings through its
//! connection's task (`socket`, by [`Command`]), and waits on the shared state
//! (`state`) for what the client sent. When its last clone is dropped, `verify`
//! checks that connection.

use std::collections::VecDeque;
use std::fmt;
use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::DEFAULT_DEADLINE;
use super::builder::Rule;
use super::handshake::HandshakeRequest;
use super::socket::Command;
use super::state::{ConnState, MountedRule, Shared, wait_for, wait_or_fail};
use super::verify::fail_on_problems;
use crate::matcher::Matcher;
use crate::transcript::{FrameKind, TranscriptEntry};

/// A frame from the client that is not an `In`: what it was, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFrame {
    pub frame: FrameKind,
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
            }),
        }
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

    /// Sends a typed message, encoded by the server's [`Codec`](crate::Codec), and
    /// waits until it is written. Panics when the codec cannot encode it.
    pub async fn send(&self, message: Out) {
        let frame = match self.inner.shared.config.codec.encode(&message) {
            Ok(payload) => payload.into_message(),
            Err(e) => panic!(
                "the fake's codec could not encode the message to send: {e}; send a raw frame with send_text or send_binary instead"
            ),
        };
        self.command(|done| Command::Send(frame, done)).await;
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
        let described = matcher.clone();
        self.wait_or_fail(
            deadline,
            move |conn| {
                conn.take(|i| i.message.as_ref().is_some_and(|m| matcher.matches(m)))?
                    .message
                    .clone()
            },
            move |id| {
                format!(
                    "expected {described} within {deadline:?} on connection {id}, but it did not come."
                )
            },
        )
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
        self.wait_or_fail(
            DEFAULT_DEADLINE,
            |conn| {
                let (entry, error) = conn
                    .take(|i| i.error.is_some())
                    .map(|i| (i.entry, i.error.clone().unwrap_or_default()))?;
                Some(InvalidFrame {
                    frame: conn.transcript[entry].frame.clone(),
                    error,
                })
            },
            |id| {
                format!(
                    "expected a frame that is not a valid message within {DEFAULT_DEADLINE:?} on connection {id}, but none came."
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
                let failure = self.inner.shared.lock().connections[id].failure(format!(
                    "expected silence for {duration:?} on connection {id}, but the client sent a frame."
                ));
                panic!("{caller}: {failure}");
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
        self.wait_or_fail(
            DEFAULT_DEADLINE,
            move |conn| (conn.transcript.len() >= n).then_some(()),
            move |id| {
                format!(
                    "connection {id} carried fewer than {n} frames within {DEFAULT_DEADLINE:?}."
                )
            },
        )
    }

    /// Mounts a rule for this connection only: it answers before the server-wide rules
    /// of the same priority, and its [`Rule::expect`] is verified when the last clone
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
        self.wait_or_fail(
            DEFAULT_DEADLINE,
            |conn| conn.closed,
            |id| format!("connection {id} still open after {DEFAULT_DEADLINE:?}."),
        )
    }

    /// Waits up to `deadline` until `check` finds in this connection's state what it
    /// looks for, and returns it; when the deadline passes first, fails the test at the
    /// caller, saying what did not come (`what`, given the connection's index) above
    /// the transcript. [`wait_or_fail`] for one connection.
    #[track_caller]
    pub(super) fn wait_or_fail<T>(
        &self,
        deadline: Duration,
        mut check: impl FnMut(&mut ConnState<In>) -> Option<T> + Send + 'static,
        what: impl FnOnce(usize) -> String + Send + 'static,
    ) -> impl std::future::Future<Output = T> + Send + '_
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
            move |state| state.connections[id].failure(what(id)),
        )
    }
}
