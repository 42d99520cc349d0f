//! [`FakeServerBuilder`]: how a test configures a fake (its path, subprotocol, codec,
//! rules, handshake rules, limits and deadlines) and starts it.
//!
//! Starting turns the builder into the server's shared state (`state`): its settings
//! become the fixed [`Config`], its rules are mounted. The builder and the
//! [`FakeServer`] know each other on purpose: [`FakeServer::builder`] makes a builder
//! and [`FakeServerBuilder::start`] makes the server, one concern seen from both ends.

use std::fmt;
use std::net::SocketAddr;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::FakeServer;
use super::admission::HandshakeRule;
use super::clock::Clock;
use super::handshake::HandshakeRequest;
use super::impairment::Impairment;
use super::replay::{Replay, Replayer};
use super::rule::{Rule, check_priority};
use super::state::{Config, Contract, Greeting, Shared};
use super::tls::Tls;
use crate::codec::{Codec, JsonCodec};
use crate::matcher::Matcher;
use crate::response::Response;
use crate::times::Times;

/// Which kind of rule a builder mounted last: the one its modifiers (`times`, `named`,
/// `up_to_n_times`, ...) apply to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Message,
    Handshake,
}

/// The rule mounted last, of either kind.
enum LastRule<'a, In, Out> {
    Message(&'a mut Rule<In, Out>),
    Handshake(&'a mut HandshakeRule),
}

/// Configures a [`FakeServer`].
#[must_use]
pub struct FakeServerBuilder<In, Out> {
    pub(super) bind: SocketAddr,
    pub(super) path: String,
    pub(super) more_paths: Vec<String>,
    pub(super) subprotocol: Option<String>,
    pub(super) response_headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) codec: Arc<dyn Codec<In, Out>>,
    pub(super) rules: Vec<Rule<In, Out>>,
    pub(super) handshake_rules: Vec<HandshakeRule>,
    pub(super) strict: bool,
    pub(super) small_buffers: bool,
    pub(super) websocket: WebSocketConfig,
    pub(super) tls: Option<Arc<Tls>>,
    pub(super) deadline: Duration,
    pub(super) replay: Option<Replay>,
    pub(super) impairment: Option<Impairment>,
    pub(super) greeting: Option<Greeting<Out>>,
    pub(super) contract: Option<Contract>,
    /// The kind of rule mounted last, if any.
    last: Option<Last>,
}

impl<In, Out> FakeServerBuilder<In, Out>
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    /// A builder with the defaults: path `/ws`, no subprotocol, [`JsonCodec`], no rules,
    /// strict, and the [`DEFAULT_DEADLINE`](crate::DEFAULT_DEADLINE). The same as
    /// [`FakeServer::builder`].
    pub fn new() -> Self {
        Self::with_codec(JsonCodec)
    }
}

impl<In, Out> FakeServerBuilder<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// A builder with the defaults of [`FakeServerBuilder::new`] but `codec` instead of
    /// [`JsonCodec`], for message types without serde (protobuf, a hand-written binary
    /// format): the same as [`FakeServer::builder_with_codec`].
    pub fn with_codec(codec: impl Codec<In, Out>) -> Self {
        FakeServerBuilder {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            path: "/ws".into(),
            more_paths: Vec::new(),
            subprotocol: None,
            response_headers: Vec::new(),
            codec: Arc::new(codec),
            rules: Vec::new(),
            handshake_rules: Vec::new(),
            strict: true,
            small_buffers: false,
            websocket: WebSocketConfig::default(),
            tls: None,
            deadline: super::DEFAULT_DEADLINE,
            replay: None,
            impairment: None,
            greeting: None,
            contract: None,
            last: None,
        }
    }

    /// How long every wait of this server and its connections waits when not told
    /// otherwise (`next_connection`, `expect`, `expect_next`, `recv`, `expect_invalid`,
    /// `wait_for_frames`, `wait_closed`, `expect_pong`, `wait_for_attempts`); their
    /// `_within` variants take their own.
    /// Default [`DEFAULT_DEADLINE`](super::DEFAULT_DEADLINE), 5 s.
    pub fn default_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The address to listen on, instead of `127.0.0.1` and a free port: a port of
    /// your choosing (`restart` binds it again), or all interfaces (`0.0.0.0`) for a
    /// fake in a container. Port 0 still takes a free port; [`FakeServer::port`] says
    /// which. [`FakeServer::url`] names `127.0.0.1` when the address is unspecified
    /// (`0.0.0.0` or `::`), the address itself otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::FakeServer;
    /// use std::net::SocketAddr;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::json().bind(SocketAddr::from(([0, 0, 0, 0], 0))).start().await;
    /// assert_eq!(fake.url(), format!("ws://127.0.0.1:{}/ws", fake.port()));
    /// let (_client, response) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// assert_eq!(response.status(), 101);
    /// # fake.wait_for_connections(1).await;
    /// # }
    /// ```
    pub fn bind(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.bind = addr.into();
        self
    }

    /// The path WebSocket upgrades are accepted on (others get 404). Default `/ws`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// One more path upgrades are accepted on, besides [`FakeServerBuilder::path`]:
    /// for a client that opens several sockets (`/prices`, `/orders`) on one server.
    /// [`FakeServer::url_for`] gives its URL, and [`HandshakeRequest::path`] says
    /// which one a connection took.
    ///
    /// [`HandshakeRequest::path`]: super::HandshakeRequest::path
    pub fn also_path(mut self, path: impl Into<String>) -> Self {
        self.more_paths.push(path.into());
        self
    }

    /// The subprotocol to select when the client offers it.
    pub fn subprotocol(mut self, name: impl Into<String>) -> Self {
        self.subprotocol = Some(name.into());
        self
    }

    /// A header of every 101 Switching Protocols the fake answers (a session id, a
    /// server version: what the client under test may read from the upgrade's
    /// response). Panics when the name or value is not a valid HTTP header.
    #[track_caller]
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        let header = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(HeaderValue::from_str(value).ok())
            .unwrap_or_else(|| {
                panic!("response_header({name:?}, {value:?}): not a valid HTTP header; use a token name and a visible ASCII value")
            });
        self.response_headers.push(header);
        self
    }

    /// How data frames become `In` and `Out` becomes frames (default: [`JsonCodec`],
    /// JSON in text frames). See [`Codec`].
    pub fn codec(mut self, codec: impl Codec<In, Out>) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// Mounts an automatic reply (see [`Rule`] for which rule answers a message).
    pub fn rule(mut self, rule: Rule<In, Out>) -> Self {
        self.rules.push(rule);
        self.last = Some(Last::Message);
        self
    }

    /// Mounts a rule that rejects some upgrade requests (see [`HandshakeRule`]); rules
    /// are tried in mount order. The builder's `times`, `named` and `up_to_n_times`
    /// then apply to it.
    pub fn handshake_rule(mut self, rule: HandshakeRule) -> Self {
        self.handshake_rules.push(rule);
        self.last = Some(Last::Handshake);
        self
    }

    /// The rule mounted just before a modifier (`modifier`, for the panic), of either
    /// kind.
    #[track_caller]
    fn last_rule(&mut self, modifier: &str) -> LastRule<'_, In, Out> {
        let last = match self.last {
            Some(Last::Message) => self.rules.last_mut().map(LastRule::Message),
            Some(Last::Handshake) => self.handshake_rules.last_mut().map(LastRule::Handshake),
            None => None,
        };
        last.unwrap_or_else(|| {
            panic!(
                "{modifier} applies to the rule mounted just before it: mount one with `on`, `rule` or `handshake_rule` first"
            )
        })
    }

    /// The message rule mounted just before a modifier that only message rules have
    /// (`modifier`, for the panic).
    #[track_caller]
    fn last_message_rule(&mut self, modifier: &str) -> &mut Rule<In, Out> {
        match self.last_rule(modifier) {
            LastRule::Message(rule) => rule,
            LastRule::Handshake(_) => panic!(
                "{modifier} applies to message rules, and the rule mounted just before it is a handshake rule: mount the message rule with `on` or `rule` just before {modifier}"
            ),
        }
    }

    /// Shorthand for `rule(Rule::on(matcher).reply(reply))`: `reply` returns messages
    /// (a `Vec<Out>`) or a [`Response`].
    #[track_caller]
    pub fn on<R>(
        self,
        matcher: Matcher<In>,
        reply: impl Fn(&In) -> R + Send + Sync + 'static,
    ) -> Self
    where
        R: Into<Response<Out>>,
    {
        let rule = Rule::on(matcher).reply(reply);
        self.rule(rule)
    }

    /// The rule mounted just before (by `on`, `rule` or `handshake_rule`) must fire
    /// `times` times (a count or a range): see [`Rule::times`] and
    /// [`HandshakeRule::times`]. Panics when no rule was mounted before it.
    #[track_caller]
    pub fn times(mut self, times: impl Into<Times>) -> Self {
        let times = times.into();
        match self.last_rule("times") {
            LastRule::Message(rule) => rule.expected = Some(times),
            LastRule::Handshake(rule) => rule.expected = Some(times),
        }
        self
    }

    /// The old name of [`FakeServerBuilder::times`], kept for one release.
    #[track_caller]
    #[deprecated(note = "use `times`: `expect` is the connection's wait for a message")]
    pub fn expect(self, times: impl Into<Times>) -> Self {
        self.times(times)
    }

    /// The rule mounted just before (of either kind) answers only `n` times: see
    /// [`Rule::up_to_n_times`] and [`HandshakeRule::up_to_n_times`].
    #[track_caller]
    pub fn up_to_n_times(mut self, n: usize) -> Self {
        match self.last_rule("up_to_n_times") {
            LastRule::Message(rule) => rule.limit = Some(n),
            LastRule::Handshake(rule) => rule.limit = Some(n),
        }
        self
    }

    /// Names the rule mounted just before (of either kind): see [`Rule::named`].
    #[track_caller]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        let name = Some(name.into());
        match self.last_rule("named") {
            LastRule::Message(rule) => rule.name = name,
            LastRule::Handshake(rule) => rule.name = name,
        }
        self
    }

    /// The priority of the message rule mounted just before: see
    /// [`Rule::with_priority`]. Panics after a handshake rule (they have none).
    #[track_caller]
    pub fn with_priority(mut self, priority: u8) -> Self {
        check_priority(priority);
        self.last_message_rule("with_priority").priority = priority;
        self
    }

    /// The message rule mounted just before (by `on` or `rule`) answers after `delay`.
    /// Panics after a handshake rule (it answers at once).
    #[track_caller]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.last_message_rule("delay").delay = Some(delay);
        self
    }

    /// Sends `greeting(request)` (messages, a `Vec<Out>`, or a [`Response`]) on every
    /// new connection as soon as it is accepted: before anything a rule answers, and
    /// before [`FakeServer::next_connection`] hands it out. For a server that speaks
    /// first (a welcome, a snapshot); `request` is the connection's upgrade request.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::FakeServer;
    /// use futures_util::StreamExt;
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::json()
    ///     .on_connect(|request| vec![json!({"type": "welcome", "path": request.path()})])
    ///     .start()
    ///     .await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// let welcome = client.next().await.unwrap().unwrap();
    /// assert_eq!(welcome.to_text().unwrap(), r#"{"path":"/ws","type":"welcome"}"#);
    /// # fake.wait_for_connections(1).await;
    /// # }
    /// ```
    pub fn on_connect<R>(
        mut self,
        greeting: impl Fn(&HandshakeRequest) -> R + Send + Sync + 'static,
    ) -> Self
    where
        R: Into<Response<Out>>,
    {
        self.greeting = Some(Arc::new(move |request| greeting(request).into()));
        self
    }

    /// Checks every message the client sends against the AsyncAPI document `contract`
    /// before the codec decodes it: the channel whose `address` is the connection's
    /// path says which messages a client may send, and one that fits none of their
    /// schemas is a contract violation, as a frame the codec refuses is
    /// ([`Connection::expect_invalid`] takes it, the drop check reports it). Cargo
    /// feature `asyncapi`; see [`AsyncApi`](crate::AsyncApi).
    ///
    /// [`Connection::expect_invalid`]: super::Connection::expect_invalid
    #[cfg(feature = "asyncapi")]
    pub fn asyncapi(mut self, contract: crate::AsyncApi) -> Self {
        self.contract = Some(Arc::new(
            move |path: &str, payload: &crate::Payload| match payload {
                crate::Payload::Text(text) => contract.check(path, text),
                crate::Payload::Binary(_) => {
                    Err("a binary frame; the AsyncAPI channels carry JSON text".into())
                }
            },
        ));
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
    ///
    /// [`Connection::stop_reading`]: super::Connection::stop_reading
    pub fn small_socket_buffers(mut self) -> Self {
        self.small_buffers = true;
        self
    }

    /// The largest frame the client may send, in bytes (payload, default 16 MiB; tungstenite's
    /// `max_frame_size`). A bigger one is refused unread: the fake records it as a contract
    /// violation ([`FrameKind::Oversize`](crate::FrameKind::Oversize), which
    /// `expect_invalid` takes), closes with 1009 and drops the connection.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.websocket = self.websocket.max_frame_size(Some(bytes));
        self
    }

    /// The largest message the client may send, in bytes, all its fragments together
    /// (default 64 MiB; tungstenite's `max_message_size`). A bigger one is refused as
    /// [`FakeServerBuilder::max_frame_size`] says.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.websocket = self.websocket.max_message_size(Some(bytes));
        self
    }

    /// Replays a recording ([`Replay`], made by a
    /// [`RecordingProxy`](crate::RecordingProxy)): connection `i` of the fake plays the
    /// server of the recording's connection `i`. When it opens, the server's frames
    /// recorded before the client's first are sent; each client message that matches
    /// the next recorded client frame is answered with the server's frames recorded
    /// after it (with the recorded delays unless [`Replay::without_delays`]), and needs
    /// no `expect`. A message that does not match fails the test at drop (and is in
    /// [`FakeServer::problems`]) with a diff of the recorded message against it, its
    /// place in the recording and the transcript; the connection answers nothing more.
    /// So does a connection the recording does not have, and, at drop, a recording
    /// the client stopped short of (recorded client messages that never came; a
    /// recorded close from the client is not waited for). A rule that matches a
    /// message answers it instead of the replay, which then does not advance.
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }

    /// Every connection starts impaired with `impairment` (latency, jitter, a bandwidth
    /// limit), from the end of its handshake on: the handshake itself is not slowed, so
    /// connecting stays quick and the admission controls keep their timing. The same as
    /// calling [`Connection::impair`] on each connection before anything is sent, with
    /// no race; a connection's own `impair` or `clear_impairment` replaces it. Off by
    /// default (and kept across `restart`).
    ///
    /// [`Connection::impair`]: super::Connection::impair
    pub fn impairment(mut self, impairment: Impairment) -> Self {
        self.impairment = Some(impairment);
        self
    }

    /// Binds `127.0.0.1:0` (or the address of [`FakeServerBuilder::bind`]) and starts serving, on a thread and runtime of the fake's
    /// own (so the test may use any executor). Failures found when the server is
    /// dropped point at the line that called `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::FakeServer;
    /// use serde_json::Value;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// assert_eq!(fake.url(), format!("ws://127.0.0.1:{}/ws", fake.port()));
    ///
    /// let (_client, response) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// assert_eq!(response.status(), 101);
    /// assert_eq!(fake.next_connection().await.index(), 0);
    /// # }
    /// ```
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

impl<In, Out> FakeServerBuilder<In, Out> {
    /// The shared state of the server this builder starts at `location`: the settings
    /// become its fixed configuration, the rules are mounted.
    /// Times are on the clock of the runtime that runs this (the test's).
    pub(super) fn into_shared(self, location: &'static Location<'static>) -> Shared<In, Out> {
        let clock = Clock::of_caller();
        let config = Config {
            bind: self.bind,
            path: self.path,
            more_paths: self.more_paths,
            subprotocol: self.subprotocol,
            response_headers: self.response_headers,
            codec: self.codec,
            strict: self.strict,
            small_buffers: self.small_buffers,
            websocket: self.websocket,
            tls: self.tls,
            deadline: self.deadline,
            impairment: self.impairment,
            greeting: self.greeting,
            contract: self.contract,
            location,
            started: clock.now(),
            clock,
        };
        let replay = self.replay.map(Replayer::new);
        Shared::new(config, self.rules, self.handshake_rules, replay)
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
