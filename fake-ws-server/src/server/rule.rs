//! [`Rule`]: an automatic reply, with how often it must fire, how often it answers, its
//! name and priority, and how late it answers.
//!
//! A test makes rules and mounts them on the builder (`builder`), the running server or
//! one connection; they live, mounted, in the shared state (`state`). The connection
//! tasks pick and fire them (`rules`), and `verify` checks at drop that each fired as
//! often as it was told to.

use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

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
/// the one mounted first. A message a rule answered needs no `expect`, and is the
/// rule's: [`Connection::expect_next`](super::Connection::expect_next) and
/// [`Connection::recv`](super::Connection::recv), which take the next message, pass over
/// it; [`Connection::expect`](super::Connection::expect) can still take it, to assert
/// that it came.
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

    /// The rule must fire `times` times: an exact count (`times(2)`) or a range
    /// (`times(1..)`, `times(..=3)`, `times(2..=4)`). Checked when the server is
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
    ///     .rule(Rule::when(ping(), |_| vec!["first".to_owned()]).up_to_n_times(1).times(1))
    ///     // Answers the pings after that: at least one.
    ///     .rule(Rule::when(ping(), |_| vec!["again".to_owned()]).named("later pings").times(1..))
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
    pub fn times(mut self, times: impl Into<Times>) -> Self {
        self.expected = Some(times.into());
        self
    }

    /// The old name of [`Rule::times`], kept for one release: `expect` also names the
    /// connection's wait for a message, and `Option::expect` is always nearby.
    #[must_use]
    #[track_caller]
    #[deprecated(note = "use `times`: `expect` is the connection's wait for a message")]
    pub fn expect(self, times: impl Into<Times>) -> Self {
        self.times(times)
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
pub(super) fn check_priority(priority: u8) {
    assert!(
        priority > 0,
        "a rule's priority is 1 (the highest) or more; use with_priority(1) for the rule that must answer first"
    );
}
