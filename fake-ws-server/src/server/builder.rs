//! How a test configures a fake: [`Rule`] (an automatic reply, with how often it must
//! fire and how late it answers) and [`FakeServerBuilder`].
//!
//! The builder's rules are mounted into the shared state (`state`) when the server
//! starts; the socket tasks (`socket`) fire them, and `verify` checks at drop that each
//! fired as often as it was told to.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FakeServer;
use crate::codec::{Codec, JsonCodec};
use crate::matcher::Matcher;

pub(super) type Reply<In, Out> = Arc<dyn Fn(&In) -> Vec<Out> + Send + Sync>;

/// An automatic reply: when a message matches, send what `reply` returns.
pub struct Rule<In, Out> {
    pub(super) matcher: Matcher<In>,
    pub(super) reply: Reply<In, Out>,
    pub(crate) delay: Option<Duration>,
    pub(crate) expected: Option<usize>,
    pub(super) location: &'static Location<'static>,
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
fn last_rule<In, Out>(rules: &mut [Rule<In, Out>]) -> &mut Rule<In, Out> {
    rules.last_mut().expect(
        "times/expect/delay apply to the rule mounted just before: mount one with `on` first",
    )
}

/// Configures a [`FakeServer`].
#[must_use]
pub struct FakeServerBuilder<In, Out> {
    pub(super) path: String,
    pub(super) subprotocol: Option<String>,
    pub(super) codec: Arc<dyn Codec<In, Out>>,
    pub(super) rules: Vec<Rule<In, Out>>,
    pub(super) strict: bool,
    pub(super) small_buffers: bool,
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
            codec: Arc::new(JsonCodec),
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

    /// How data frames become `In` and `Out` becomes frames (default: [`JsonCodec`],
    /// JSON in text frames). See [`Codec`].
    pub fn codec(mut self, codec: impl Codec<In, Out>) -> Self {
        self.codec = Arc::new(codec);
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
    ///
    /// [`Connection::stop_reading`]: super::Connection::stop_reading
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
