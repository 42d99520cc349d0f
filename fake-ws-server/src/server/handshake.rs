//! The record of each upgrade: [`HandshakeRequest`] (what the client asked for) and
//! [`Attempt`] (when, and how it ended: [`AttemptOutcome`]).
//!
//! The accept loop (`accept`) makes them in tungstenite's handshake callback and pushes
//! them into the shared state (`state`); the server hands out the attempts, and each
//! [`Connection`](super::Connection) its request.

use std::time::Instant;

use tokio_tungstenite::tungstenite::handshake::server::Request;

/// The upgrade request a client sent.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    path: String,
    headers: Vec<(String, String)>,
}

impl HandshakeRequest {
    pub(super) fn from_request(request: &Request) -> Self {
        HandshakeRequest {
            path: request.uri().path().to_owned(),
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

/// One handshake attempt, with when it happened.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub(super) at: Instant,
    pub(super) request: Option<HandshakeRequest>,
    pub(super) outcome: AttemptOutcome,
}

impl Attempt {
    /// When the fake accepted the TCP connection (or began the handshake): compare
    /// two attempts' times to measure a client's backoff.
    pub fn at(&self) -> Instant {
        self.at
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
