//! The record of each upgrade: [`HandshakeRequest`] (what the client asked for) and
//! [`Attempt`] (when, and how it ended: [`AttemptOutcome`]).
//!
//! The accept loop (`accept`) makes them in tungstenite's handshake callback and pushes
//! them into the shared state (`state`); the server hands out the attempts, and each
//! [`Connection`](super::Connection) its request.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use tokio_tungstenite::tungstenite::handshake::server::Request;

use super::closed::Closed;

/// The upgrade request a client sent.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

impl HandshakeRequest {
    pub(super) fn from_request(request: &Request) -> Self {
        HandshakeRequest {
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
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

    /// The path of the request's URI (without the query).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query of the request's URI, without the `?` (`token=abc&v=2`), if it had
    /// one: upgrades are matched on the path alone, so `/ws?token=abc` reaches `/ws`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in the request's order, as (name, value) pairs.
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
    /// The handshake succeeded: a [`Connection`](super::Connection) for the test.
    Accepted,
    /// The handshake was answered with this HTTP status.
    Rejected(u16),
    /// The TCP connection closed or the handshake was not a valid upgrade.
    Failed(String),
    /// The fake was refusing connections ([`FakeServer::stop`] or
    /// [`FakeServer::refuse_connections`]): it accepted the TCP connection and reset
    /// it at once, before any handshake (so there is no request).
    ///
    /// [`FakeServer::stop`]: super::FakeServer::stop
    /// [`FakeServer::refuse_connections`]: super::FakeServer::refuse_connections
    Refused,
    /// The fake was hanging connections ([`FakeServer::hang_connections`]): it
    /// accepted the TCP connection and never answered the handshake (so there is no
    /// request).
    ///
    /// [`FakeServer::hang_connections`]: super::FakeServer::hang_connections
    Hung,
}

/// One handshake attempt, with when it happened. Its `Display` is one line of the
/// attempts' log: `+0.051s Rejected 401 GET /ws`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub(super) at: Instant,
    /// `at`, since the server started.
    pub(super) since_start: Duration,
    pub(super) request: Option<HandshakeRequest>,
    pub(super) outcome: AttemptOutcome,
}

impl Attempt {
    /// An attempt at `at` of the server started at `started`.
    pub(super) fn new(
        started: Instant,
        at: Instant,
        request: Option<HandshakeRequest>,
        outcome: AttemptOutcome,
    ) -> Self {
        Attempt {
            at,
            since_start: at.saturating_duration_since(started),
            request,
            outcome,
        }
    }

    /// When the fake accepted the TCP connection (or began the handshake): compare
    /// two attempts' times to measure a client's backoff
    /// ([`FakeServer::attempt_gaps`](super::FakeServer::attempt_gaps) does). On the
    /// clock of the runtime that started the server (the test's): virtual time when the
    /// test paused it.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// [`Attempt::at`] as the time since the server started (`start()`), as the
    /// attempts' log shows it.
    pub fn since_start(&self) -> Duration {
        self.since_start
    }

    /// The upgrade request, if the fake read one (not for a refused or hung attempt,
    /// nor when the client sent no valid request).
    pub fn request(&self) -> Option<&HandshakeRequest> {
        self.request.as_ref()
    }

    /// How the attempt ended.
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

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:.3}s ", self.since_start.as_secs_f64())?;
        let request = self.request.as_ref().map(|r| format!(" GET {}", r.path));
        let request = request.as_deref().unwrap_or("");
        match &self.outcome {
            AttemptOutcome::Accepted => write!(f, "Accepted{request}"),
            AttemptOutcome::Rejected(status) => write!(f, "Rejected {status}{request}"),
            AttemptOutcome::Failed(why) => write!(f, "Failed{request}: {why}"),
            AttemptOutcome::Refused => f.write_str("Refused (reset before the handshake)"),
            AttemptOutcome::Hung => f.write_str("Hung (the handshake never answered)"),
        }
    }
}

/// The attempts' log, one attempt a line, with the gap since the one before, and for
/// each accepted one its connection and how it stands (`closed[i]`: how connection
/// `i` ended, `None` while open).
pub(super) fn render_attempts(attempts: &[Attempt], closed: &[Option<Closed>]) -> String {
    if attempts.is_empty() {
        return "    (no attempts)".to_owned();
    }
    let mut connection = 0;
    let mut lines = Vec::new();
    for (i, attempt) in attempts.iter().enumerate() {
        let mut line = format!("    {attempt}");
        if i > 0 {
            let gap = attempt.at.saturating_duration_since(attempts[i - 1].at);
            line.push_str(&format!(" (gap {} ms)", gap.as_millis()));
        }
        if attempt.outcome == AttemptOutcome::Accepted {
            let state = match closed.get(connection) {
                Some(Some(how)) => format!("closed: {how}"),
                _ => "open".to_owned(),
            };
            line.push_str(&format!(" → connection {connection}, {state}"));
            connection += 1;
        }
        lines.push(line);
    }
    lines.join("\n")
}
