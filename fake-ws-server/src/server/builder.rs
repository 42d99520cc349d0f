//! How a test configures a fake: [`Rule`] (an automatic reply, with how often it must
//! fire, how often it answers, its name and priority, and how late it answers) and
//! [`FakeServerBuilder`].
//!
//! The builder's rules are mounted into the shared state (`state`) when the server
//! starts; the connection tasks (`connection_task`) fire them, and `verify` checks at
//! drop that each fired as often as it was told to.
//!
//! About 400 lines, a third of them rustdoc: one concern, how a fake is configured.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::FakeServer;
use super::admission::HandshakeRule;
use super::tls::Tls;
use crate::codec::{Codec, JsonCodec};
use crate::matcher::Matcher;
use crate::response::Response;
use crate::times::Times;

pub(super) type Reply<In, Out> = Arc<dyn Fn(&In) -> Response<Out> + Send + Sync>;

/// The priority of a rule that was given none (wiremock's default): 1 is the highest.
pub const DEFAULT_PRIORITY: u8 = 5;

/// An automatic reply: when a message matches, answer with what the reply returns.
///
/// Which rule answers: among the rules that match and still answer (see
/// [`Rule::up_to_n_times`]), the one with the highest priority (the lowest number,
/// [`Rule::with_priority`]); on equal priority a rule scoped to the connection
/// ([`Connection::mount`](super::Connection::mount)) before a server-wide one, then
/// the one mounted first. A message a rule answered needs no `expect`.
pub struct Rule<In, Out> {
    pub(super) matcher: Matcher<In>,
    pub(super) reply: Reply<In, Out>,
    pub(crate) delay: Option<Duration>,
    pub(crate) expected: Option<Times>,
    pub(crate) limit: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) priority: u8,
    pub(super) location: &'static Location<'static>,
}

impl<In, Out> Rule<In, Out> {
    /// A rule for messages matching `matcher` that answers nothing (the message counts
    /// as handled) until [`Rule::reply`] says what to answer.
    #[track_caller]
    pub fn on(matcher: Matcher<In>) -> Self {
        Rule {
            matcher,
            reply: Arc::new(|_| Response::new()),
            delay: None,
            expected: None,
            limit: None,
            name: None,
            priority: DEFAULT_PRIORITY,
            location: Location::caller(),
        }
    }

    /// A rule that answers messages matching `matcher` with `reply(message)`: the same
    /// as `Rule::on(matcher).reply(reply)`.
    #[track_caller]
    pub fn when<R>(matcher: Matcher<In>, reply: impl Fn(&In) -> R + Send + Sync + 'static) -> Self
    where
        R: Into<Response<Out>>,
    {
        Rule::on(matcher).reply(reply)
    }

    /// What the rule answers a message with: messages (a `Vec<Out>`) or a
    /// [`Response`] (messages, raw frames, a close, an abort, a stall, delays, in order).
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::{FakeServer, Matcher, Response, Rule};
    /// use futures_util::{SinkExt, StreamExt};
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<String, String>::builder()
    ///     .rule(Rule::on(Matcher::new("hello", |m: &String| m == "hello")).reply(|_| {
    ///         Response::new().send("hi".to_owned()).close(1000, "bye")
    ///     }))
    ///     .start()
    ///     .await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// client.send(Message::text(r#""hello""#)).await.unwrap();
    /// assert_eq!(client.next().await.unwrap().unwrap(), Message::text(r#""hi""#));
    /// assert!(matches!(client.next().await.unwrap().unwrap(), Message::Close(Some(_))));
    /// # }
    /// ```
    #[must_use]
    pub fn reply<R>(mut self, reply: impl Fn(&In) -> R + Send + Sync + 'static) -> Self
    where
        R: Into<Response<Out>>,
    {
        self.reply = Arc::new(move |message| reply(message).into());
        self
    }

    /// Answer after `delay` (the connection goes on meanwhile).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The rule must fire `times` times: an exact count (`expect(2)`) or a range
    /// (`expect(1..)`, `expect(..=3)`, `expect(2..=4)`). Checked when the server is
    /// dropped (a rule scoped to a connection: when that connection's handle is), with
    /// the rule's name and where it was made in the failure. It does not limit how
    /// often the rule answers: that is [`Rule::up_to_n_times`].
    ///
    /// # Examples
    ///
    /// ```
    /// use fake_ws_server::{FakeServer, Matcher, Rule};
    /// use futures_util::{SinkExt, StreamExt};
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ping = || Matcher::new("ping", |m: &String| m == "ping");
    /// let fake = FakeServer::<String, String>::builder()
    ///     // Answers the first ping only, and must have answered it at drop.
    ///     .rule(Rule::when(ping(), |_| vec!["first".to_owned()]).up_to_n_times(1).expect(1))
    ///     // Answers the pings after that: at least one.
    ///     .rule(Rule::when(ping(), |_| vec!["again".to_owned()]).named("later pings").expect(1..))
    ///     .start()
    ///     .await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// for answer in [r#""first""#, r#""again""#, r#""again""#] {
    ///     client.send(Message::text(r#""ping""#)).await.unwrap();
    ///     assert_eq!(client.next().await.unwrap().unwrap(), Message::text(answer));
    /// }
    /// assert!(fake.problems().is_empty());
    /// # }
    /// ```
    #[must_use]
    #[track_caller]
    pub fn expect(mut self, times: impl Into<Times>) -> Self {
        self.expected = Some(times.into());
        self
    }

    /// The rule answers only the first `n` matching messages; later ones fall through
    /// to the next matching rule (or to the test's `expect`).
    #[must_use]
    pub fn up_to_n_times(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// A name for the rule, shown in failure messages and in the transcript.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The rule's priority: 1 is the highest, the default is 5 (as in wiremock). A
    /// matching rule of higher priority answers before one mounted earlier.
    #[must_use]
    #[track_caller]
    pub fn with_priority(mut self, priority: u8) -> Self {
        check_priority(priority);
        self.priority = priority;
        self
    }

    /// How failure messages and the transcript name the rule.
    pub(super) fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("the rule {name:?} for {}", self.matcher),
            None => format!("the rule for {}", self.matcher),
        }
    }
}

#[track_caller]
fn check_priority(priority: u8) {
    assert!(
        priority > 0,
        "a rule's priority is 1 (the highest) or more; use with_priority(1) for the rule that must answer first"
    );
}

/// The rule a builder's `expect`/`delay`/... applies to: the one mounted last.
#[track_caller]
fn last_rule<In, Out>(rules: &mut [Rule<In, Out>]) -> &mut Rule<In, Out> {
    rules.last_mut().expect(
        "expect/up_to_n_times/named/with_priority/delay apply to the rule mounted just before: mount one with `on` or `rule` first",
    )
}

/// Configures a [`FakeServer`].
#[must_use]
pub struct FakeServerBuilder<In, Out> {
    pub(super) path: String,
    pub(super) subprotocol: Option<String>,
    pub(super) codec: Arc<dyn Codec<In, Out>>,
    pub(super) rules: Vec<Rule<In, Out>>,
    pub(super) handshake_rules: Vec<HandshakeRule>,
    pub(super) strict: bool,
    pub(super) small_buffers: bool,
    pub(super) websocket: WebSocketConfig,
    pub(super) tls: Option<Arc<Tls>>,
    pub(super) deadline: Duration,
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
        FakeServerBuilder {
            path: "/ws".into(),
            subprotocol: None,
            codec: Arc::new(JsonCodec),
            rules: Vec::new(),
            handshake_rules: Vec::new(),
            strict: true,
            small_buffers: false,
            websocket: WebSocketConfig::default(),
            tls: None,
            deadline: super::DEFAULT_DEADLINE,
        }
    }

    /// How long every wait of this server and its connections waits when not told
    /// otherwise (`next_connection`, `expect`, `expect_next`, `recv`, `expect_invalid`,
    /// `wait_for_frames`, `wait_closed`); their `_within` variants take their own.
    /// Default [`DEFAULT_DEADLINE`](super::DEFAULT_DEADLINE), 5 s.
    pub fn default_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
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

    /// How data frames become `In` and `Out` becomes frames (default: [`JsonCodec`],
    /// JSON in text frames). See [`Codec`].
    pub fn codec(mut self, codec: impl Codec<In, Out>) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// Mounts an automatic reply (see [`Rule`] for which rule answers a message).
    pub fn rule(mut self, rule: Rule<In, Out>) -> Self {
        self.rules.push(rule);
        self
    }

    /// Mounts a rule that rejects some upgrade requests (see [`HandshakeRule`]); rules
    /// are tried in mount order.
    pub fn handshake_rule(mut self, rule: HandshakeRule) -> Self {
        self.handshake_rules.push(rule);
        self
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

    /// The rule mounted last (by `on` or `rule`) must fire `times` times (a count or a
    /// range): see [`Rule::expect`].
    #[track_caller]
    pub fn expect(mut self, times: impl Into<Times>) -> Self {
        let times = times.into();
        last_rule(&mut self.rules).expected = Some(times);
        self
    }

    /// The rule mounted last answers only `n` times: see [`Rule::up_to_n_times`].
    #[track_caller]
    pub fn up_to_n_times(mut self, n: usize) -> Self {
        last_rule(&mut self.rules).limit = Some(n);
        self
    }

    /// Names the rule mounted last: see [`Rule::named`].
    #[track_caller]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        last_rule(&mut self.rules).name = Some(name.into());
        self
    }

    /// The priority of the rule mounted last: see [`Rule::with_priority`].
    #[track_caller]
    pub fn with_priority(mut self, priority: u8) -> Self {
        check_priority(priority);
        last_rule(&mut self.rules).priority = priority;
        self
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

    /// Binds `127.0.0.1:0` and starts serving, on a thread and runtime of the fake's
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

impl<In, Out> Default for FakeServerBuilder<In, Out>
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}
