//! What the handles and the socket tasks share: [`Shared`], one mutex over [`State`]
//! (every connection's [`ConnState`] with its transcript, the handshake attempts, the
//! mounted rules, each connection task's command channel) and a [`Notify`] that wakes
//! every waiter when it changes.
//!
//! The socket tasks (`accept`, `connection_task`) write into it; the
//! [`FakeServer`](super::FakeServer) and [`Connection`](super::Connection) handles read
//! it and wait on it with [`wait_for`] or, when the test cannot go on without what they
//! wait for, [`wait_or_fail`]; `verify` reads it at drop.
//!
//! It is where the two sides meet, so it knows neither: it holds only plain types from
//! the files below it (rules, handshake rules and records, how a connection ended,
//! [`Command`], the [`Tls`] of its configuration), and every file that acts on it
//! imports it, never the other way round.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::clock::Clock;

use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::admission::{Admission, HandshakeRule, MountedHandshakeRule};
use super::closed::Closed;
use super::command::Command;
use super::handshake::{Attempt, HandshakeRequest};
use super::impairment::Impairment;
use super::link::LinkControl;
use super::replay::Replayer;
use super::rule::Rule;
use super::tls::Tls;
use crate::codec::Codec;
use crate::matcher::Matcher;
use crate::response::Response;
use crate::transcript::{Direction, FrameKind, TranscriptEntry, render};

/// A data frame from the client, and what became of it.
pub(super) struct Inbound<In> {
    /// Index into the transcript.
    pub(super) entry: usize,
    pub(super) message: Option<In>,
    /// Why the frame is not an `In` (a contract violation), if it is not.
    pub(super) error: Option<String>,
    pub(super) consumed: bool,
    pub(super) handled: bool,
}

/// One accepted connection: its request, its transcript, what the client sent and
/// what became of it.
pub(super) struct ConnState<In> {
    pub(super) id: usize,
    pub(super) started: Instant,
    /// The test's clock, which stamps the transcript.
    pub(super) clock: Clock,
    pub(super) request: HandshakeRequest,
    pub(super) transcript: Vec<TranscriptEntry>,
    pub(super) inbound: Vec<Inbound<In>>,
    pub(super) allowed: Vec<Matcher<In>>,
    /// How it ended, once it has.
    pub(super) closed: Option<Closed>,
    pub(super) claimed: bool,
    /// Its problems already failed the test (when its handle was dropped).
    pub(super) reported: bool,
    /// What its handle impairs its link with (`impairment`).
    pub(super) link: Arc<LinkControl>,
}

impl<In> ConnState<In> {
    /// Connection `id`, accepted just now with `request`: nothing sent or received yet;
    /// its times are on `clock`.
    pub(super) fn new(id: usize, request: HandshakeRequest, clock: Clock) -> Self {
        ConnState {
            id,
            started: clock.now(),
            clock,
            request,
            transcript: Vec::new(),
            inbound: Vec::new(),
            allowed: Vec::new(),
            closed: None,
            claimed: false,
            reported: false,
            link: Arc::default(),
        }
    }

    /// Takes the first frame not yet taken that satisfies `wanted`: the one way
    /// `expect`, `recv` and `expect_invalid` consume what the client sent.
    pub(super) fn take(
        &mut self,
        wanted: impl Fn(&Inbound<In>) -> bool,
    ) -> Option<&mut Inbound<In>> {
        let inbound = self.inbound.iter_mut().find(|i| !i.consumed && wanted(i))?;
        inbound.consumed = true;
        Some(inbound)
    }

    pub(super) fn record(
        &mut self,
        direction: Direction,
        frame: FrameKind,
        note: Option<String>,
    ) -> usize {
        self.transcript.push(TranscriptEntry {
            at: self.clock.now().saturating_duration_since(self.started),
            direction,
            frame,
            note,
        });
        self.transcript.len() - 1
    }

    /// How a wait on this connection fails the test: `what` went wrong, above the
    /// transcript so far.
    pub(super) fn failure(&self, what: String) -> String {
        format!("{what}\ntranscript:\n{}", render(&self.transcript))
    }
}

/// Everything the handles and the socket tasks share, behind [`Shared`]'s mutex.
pub(super) struct State<In, Out> {
    /// Bumped by every stop: a handshake that began before it is not let in after it.
    pub(super) epoch: u64,
    pub(super) connections: Vec<ConnState<In>>,
    pub(super) attempts: Vec<Attempt>,
    /// What the accept loop does with a new TCP connection.
    pub(super) admission: Admission,
    pub(super) handshake_rules: Vec<MountedHandshakeRule>,
    pub(super) rules: Vec<MountedRule<In, Out>>,
    /// Messages that need no expectation on any connection ([`FakeServer::allow`]).
    ///
    /// [`FakeServer::allow`]: super::FakeServer::allow
    pub(super) allowed: Vec<Matcher<In>>,
    pub(super) outbound: Vec<Option<mpsc::UnboundedSender<Command>>>,
    /// What went wrong on the server's side (a rule's reply the codec could not
    /// encode): fails the test at drop.
    pub(super) failures: Vec<String>,
    /// The recording the fake replays ([`FakeServerBuilder::replay`]), if any.
    ///
    /// [`FakeServerBuilder::replay`]: super::FakeServerBuilder::replay
    pub(super) replay: Option<Replayer>,
}

/// The state, the wake-up of every waiter when it changes, and the fixed configuration.
pub(super) struct Shared<In, Out> {
    pub(super) state: Mutex<State<In, Out>>,
    pub(super) notify: Notify,
    pub(super) config: Config<In, Out>,
}

/// What a new connection is sent first, made from its upgrade request
/// ([`FakeServerBuilder::on_connect`](super::FakeServerBuilder::on_connect)).
pub(super) type Greeting<Out> = Arc<dyn Fn(&HandshakeRequest) -> Response<Out> + Send + Sync>;

/// A check of every data frame from the client before the codec decodes it, given the
/// connection's path: `Err` is a contract violation (an AsyncAPI document's, with the
/// `asyncapi` feature).
pub(super) type Contract = Arc<dyn Fn(&str, &crate::Payload) -> Result<(), String> + Send + Sync>;

/// What the builder set, fixed for the server's life.
pub(super) struct Config<In, Out> {
    /// The address to listen on ([`FakeServerBuilder::bind`]); port 0 for a free one.
    ///
    /// [`FakeServerBuilder::bind`]: super::FakeServerBuilder::bind
    pub(super) bind: std::net::SocketAddr,
    pub(super) path: String,
    /// More paths upgrades are accepted on ([`FakeServerBuilder::also_path`]).
    ///
    /// [`FakeServerBuilder::also_path`]: super::FakeServerBuilder::also_path
    pub(super) more_paths: Vec<String>,
    pub(super) subprotocol: Option<String>,
    /// Headers of every 101 Switching Protocols.
    pub(super) response_headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) codec: Arc<dyn Codec<In, Out>>,
    pub(super) strict: bool,
    pub(super) small_buffers: bool,
    pub(super) websocket: WebSocketConfig,
    /// `Some` for `wss://`.
    pub(super) tls: Option<Arc<Tls>>,
    /// How long a wait waits when the test does not say (`default_deadline`).
    pub(super) deadline: Duration,
    /// What every connection's link starts impaired with (`impairment`).
    pub(super) impairment: Option<Impairment>,
    /// What every new connection is sent first (`on_connect`).
    pub(super) greeting: Option<Greeting<Out>>,
    /// What every client frame must fit before it is decoded (`asyncapi`).
    pub(super) contract: Option<Contract>,
    pub(super) location: &'static Location<'static>,
    /// When the server started: attempts' times are shown since then.
    pub(super) started: Instant,
    /// The clock of the runtime that started the server (the test's), which stamps
    /// attempts and transcripts.
    pub(super) clock: Clock,
}

impl<In, Out> Shared<In, Out> {
    /// The state of a server just started with `config`: no connection yet, `rules`
    /// and `handshake_rules` mounted, none fired.
    pub(super) fn new(
        config: Config<In, Out>,
        rules: Vec<Rule<In, Out>>,
        handshake_rules: Vec<HandshakeRule>,
        replay: Option<Replayer>,
    ) -> Self {
        Shared {
            state: Mutex::new(State {
                epoch: 0,
                connections: Vec::new(),
                attempts: Vec::new(),
                admission: Admission::Accept,
                handshake_rules: handshake_rules
                    .into_iter()
                    .map(MountedHandshakeRule::new)
                    .collect(),
                rules: rules
                    .into_iter()
                    .map(|rule| MountedRule::new(rule, None))
                    .collect(),
                allowed: Vec::new(),
                outbound: Vec::new(),
                failures: Vec::new(),
                replay,
            }),
            notify: Notify::new(),
            config,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State<In, Out>> {
        // A panic in a test thread must not poison the fake for the drop check.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mounted rule (the builder's, or mounted later on the server or one connection),
/// and how often it fired so far.
pub(super) struct MountedRule<In, Out> {
    pub(super) rule: Rule<In, Out>,
    pub(super) hits: usize,
    /// The connection it is scoped to; `None`: every connection.
    pub(super) scope: Option<usize>,
}

impl<In, Out> MountedRule<In, Out> {
    pub(super) fn new(rule: Rule<In, Out>, scope: Option<usize>) -> Self {
        MountedRule {
            rule,
            hits: 0,
            scope,
        }
    }
}

/// Waits on the server's runtime until `check` yields, or `deadline` (if any) passes.
pub(super) async fn wait_for<In, Out, T>(
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
pub(super) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`wait_for`] up to `deadline`: returns what `check` yields; when the deadline passes
/// first, `Err` with what `failure` says of the state then (what did not happen within
/// the deadline, and what did: the transcript, the handshake attempts), after the
/// `caller`'s location. Every wait that fails the test when its deadline passes goes
/// through here, and [`AtAwait`] turns the `Err` into the test's failure.
pub(super) async fn wait_or_fail<In, Out, T>(
    shared: &Shared<In, Out>,
    runtime: &Handle,
    caller: &'static Location<'static>,
    deadline: Duration,
    check: impl FnMut(&mut State<In, Out>) -> Option<T>,
    failure: impl FnOnce(&State<In, Out>) -> String,
) -> Result<T, String> {
    if let Some(value) = wait_for(shared, runtime, Some(deadline), check).await {
        return Ok(value);
    }
    let failure = failure(&shared.lock());
    Err(format!("{caller}: {failure}"))
}

/// `wait`, with the failure's first words (`caller`'s location, which [`wait_or_fail`]
/// puts there) taken off: the `try_` waits say why they failed, not where.
pub(super) async fn without_location<T>(
    caller: &'static Location<'static>,
    wait: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    wait.await.map_err(|failure| {
        failure
            .strip_prefix(&format!("{caller}: "))
            .map(str::to_owned)
            .unwrap_or(failure)
    })
}

/// A wait of the test that fails it (panics) where the test awaits it: `fail_at_await`
/// wraps a future that yields `Err(failure)` instead of panicking.
///
/// `#[track_caller]` cannot reach into an `async` block, but it does reach a hand-written
/// `poll`: `.await` calls [`Future::poll`] from the test's own code, so the panic of a
/// `#[track_caller]` `poll` is reported at the test's `.await` (unless something else
/// polls it, such as `tokio::time::timeout` or `tokio::spawn`: then the location is
/// theirs, and the message's first words still name the test's line).
pub(super) struct AtAwait<'a, T> {
    inner: Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>,
}

/// See [`AtAwait`].
pub(super) fn fail_at_await<'a, T>(
    wait: impl Future<Output = Result<T, String>> + Send + 'a,
) -> AtAwait<'a, T> {
    AtAwait {
        inner: Box::pin(wait),
    }
}

impl<T> Future for AtAwait<'_, T> {
    type Output = T;

    #[track_caller]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.inner.as_mut().poll(cx) {
            Poll::Ready(Ok(value)) => Poll::Ready(value),
            Poll::Ready(Err(failure)) => panic!("{failure}"),
            Poll::Pending => Poll::Pending,
        }
    }
}
