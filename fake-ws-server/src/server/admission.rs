//! The rules of admission, before any WebSocket frame: [`HandshakeRule`]s that reject
//! an upgrade (a status, headers, a body), and the server-wide [`Admission`] mode:
//! accept, refuse (accept the TCP connection and reset it at once, the fake being
//! "down"), or hang (accept the TCP connection and never answer the handshake).
//!
//! They are plain data, mounted in the shared state (`state`): the accept loop
//! (`accept`) reads the mode for every TCP connection, asks [`rejection`] about every
//! upgrade request, and records an [`Attempt`](super::Attempt) either way, so a test
//! sees the client's every try, also while the fake is down.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode};

use super::handshake::HandshakeRequest;
use crate::times::Times;

/// What the fake does with a new TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Read the upgrade request and answer it (101, or a [`HandshakeRule`]'s status).
    Accept,
    /// Accept the TCP connection and reset it at once.
    Refuse,
    /// Accept the TCP connection and never answer.
    Hang,
}

/// A rule for upgrade requests: reject those a predicate holds for with a status,
/// headers and a body, instead of switching protocols.
///
/// Mount it with [`FakeServerBuilder::handshake_rule`](super::FakeServerBuilder::handshake_rule)
/// or, on a running server, [`FakeServer::mount_handshake_rule`](super::FakeServer::mount_handshake_rule).
/// The first mounted rule whose predicate holds (and that has not answered its
/// [`HandshakeRule::up_to_n_times`] yet) answers; the attempt is recorded as
/// [`AttemptOutcome::Rejected`](super::AttemptOutcome::Rejected).
///
/// ```
/// use fake_ws_server::HandshakeRule;
///
/// let rule = HandshakeRule::reject(401)
///     .when(|request| request.header("authorization").is_none())
///     .header("www-authenticate", "Bearer")
///     .body("a token, please");
/// let busy = HandshakeRule::reject(503).header("retry-after", "2").up_to_n_times(3);
/// # let _ = (rule, busy);
/// ```
pub struct HandshakeRule {
    predicate: Arc<dyn Fn(&HandshakeRequest) -> bool + Send + Sync>,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<String>,
    pub(super) limit: Option<usize>,
    pub(super) name: Option<String>,
    /// How often it must answer, checked when the server is dropped.
    pub(super) expected: Option<Times>,
    location: &'static Location<'static>,
}

impl HandshakeRule {
    /// Rejects every upgrade request with `status` (narrow it with [`HandshakeRule::when`]).
    /// Panics when `status` is not an HTTP status (100 to 999).
    #[track_caller]
    pub fn reject(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or_else(|_| {
            panic!(
                "HandshakeRule::reject({status}): not an HTTP status; use one such as 401 or 503"
            )
        });
        HandshakeRule {
            predicate: Arc::new(|_| true),
            status,
            headers: Vec::new(),
            body: None,
            limit: None,
            name: None,
            expected: None,
            location: Location::caller(),
        }
    }

    /// Only for requests `predicate` holds for (e.g. no `Authorization` header).
    #[must_use]
    pub fn when(
        mut self,
        predicate: impl Fn(&HandshakeRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Arc::new(predicate);
        self
    }

    /// A header of the rejection (e.g. `Retry-After`). Panics when the name or value is
    /// not a valid HTTP header.
    #[must_use]
    #[track_caller]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let header = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(HeaderValue::from_str(value).ok())
            .unwrap_or_else(|| {
                panic!("HandshakeRule::header({name:?}, {value:?}): not a valid HTTP header; use a token name and a visible ASCII value")
            });
        self.headers.push(header);
        self
    }

    /// The body of the rejection.
    #[must_use]
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The rule rejects only the first `n` requests it holds for; later ones go on to
    /// the next rule, or are accepted.
    #[must_use]
    pub fn up_to_n_times(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// A name for the rule, shown in failure messages.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The rule must answer (reject) `times` upgrade requests: a count or a range, as
    /// [`Rule::times`](super::Rule::times). Checked when the server is dropped. It does
    /// not limit how often it answers: that is [`HandshakeRule::up_to_n_times`].
    #[must_use]
    pub fn times(mut self, times: impl Into<Times>) -> Self {
        self.expected = Some(times.into());
        self
    }
}

impl fmt::Debug for HandshakeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRule")
            .field("name", &self.name)
            .field("status", &self.status.as_u16())
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("limit", &self.limit)
            .field("expected", &self.expected)
            .field("location", &format_args!("{}", self.location))
            .finish()
    }
}

/// A mounted handshake rule, and how often it answered.
pub(super) struct MountedHandshakeRule {
    rule: HandshakeRule,
    hits: usize,
}

impl MountedHandshakeRule {
    pub(super) fn new(rule: HandshakeRule) -> Self {
        MountedHandshakeRule { rule, hits: 0 }
    }

    /// What fails the test at drop when the rule did not answer as often as its
    /// [`HandshakeRule::times`] said.
    pub(super) fn problem(&self) -> Option<String> {
        let expected = self.rule.expected?;
        if expected.contains(self.hits) {
            return None;
        }
        let name = match &self.rule.name {
            Some(name) => format!(" {name:?}"),
            None => String::new(),
        };
        Some(format!(
            "the handshake rule{name} rejecting with {} (mounted at {}) answered {} times, expected {expected}",
            self.rule.status.as_u16(),
            self.rule.location,
            self.hits
        ))
    }
}

/// How the fake answers an upgrade request it rejects.
pub(super) struct Rejection {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Option<String>,
}

/// The rejection of `request` by the first of the mounted `rules` that holds for it
/// (counted as answered), if any.
pub(super) fn rejection(
    rules: &mut [MountedHandshakeRule],
    request: &HandshakeRequest,
) -> Option<Rejection> {
    let mounted = rules
        .iter_mut()
        .find(|m| m.rule.limit.is_none_or(|limit| m.hits < limit) && (m.rule.predicate)(request))?;
    mounted.hits += 1;
    Some(Rejection {
        status: mounted.rule.status,
        headers: mounted.rule.headers.clone(),
        body: mounted.rule.body.clone(),
    })
}
