//! What the fake does with a new TCP connection and its upgrade request, before any
//! WebSocket frame: [`HandshakeRule`]s that reject an upgrade (a status, headers, a
//! body), and the server-wide [`Admission`] mode: accept, refuse (accept the TCP
//! connection and reset it at once, the fake being "down"), or hang (accept the TCP
//! connection and never answer the handshake).
//!
//! The accept loop (`accept`) asks [`admit`] about every TCP connection, and the
//! handshake callback asks [`rejection`] about every upgrade request; both record an
//! [`Attempt`](super::Attempt) in the shared state (`state`), so a test sees the
//! client's every try, also while the fake is down.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode};

use super::handshake::{AttemptOutcome, HandshakeRequest};
use super::state::{Shared, State};

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
/// [`AttemptOutcome::Rejected`].
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
    limit: Option<usize>,
    name: Option<String>,
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

    /// A name for the rule, shown in the attempts' log.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
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
}

/// How the fake answers an upgrade request it rejects.
pub(super) struct Rejection {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Option<String>,
}

/// The rejection of `request` by the first handshake rule that holds for it (counted
/// as answered), if any.
pub(super) fn rejection<In, Out>(
    state: &mut State<In, Out>,
    request: &HandshakeRequest,
) -> Option<Rejection> {
    let mounted = state
        .handshake_rules
        .iter_mut()
        .find(|m| m.rule.limit.is_none_or(|limit| m.hits < limit) && (m.rule.predicate)(request))?;
    mounted.hits += 1;
    Some(Rejection {
        status: mounted.rule.status,
        headers: mounted.rule.headers.clone(),
        body: mounted.rule.body.clone(),
    })
}

/// What to do with a TCP connection just accepted: `Some` to go on with the
/// handshake; refused (reset at once) or hung (held, unanswered) according to the
/// server's [`Admission`], recorded as an attempt either way.
pub(super) fn admit<In, Out>(shared: &Arc<Shared<In, Out>>, stream: TcpStream) -> Option<TcpStream>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    let at = Instant::now();
    let (admission, epoch) = {
        let state = shared.lock();
        (state.admission, state.epoch)
    };
    let outcome = match admission {
        Admission::Accept => return Some(stream),
        Admission::Refuse => {
            reset_tcp(stream);
            AttemptOutcome::Refused
        }
        Admission::Hang => {
            tokio::spawn(hold(shared.clone(), stream, epoch));
            AttemptOutcome::Hung
        }
    };
    shared.lock().attempts.push(super::handshake::Attempt {
        at,
        request: None,
        outcome,
    });
    shared.notify.notify_waiters();
    None
}

/// Holds a hung connection without answering: reads and drops whatever the client
/// sends (its upgrade request), until the client goes away or the fake resets its
/// connections (the epoch changes), then resets it. The runtime's shutdown at the
/// server's drop ends it too.
async fn hold<In, Out>(shared: Arc<Shared<In, Out>>, mut stream: TcpStream, epoch: u64) {
    let mut buffer = [0u8; 1024];
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.lock().epoch != epoch {
            break;
        }
        tokio::select! {
            _ = &mut notified => {}
            read = stream.read(&mut buffer) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
    reset_tcp(stream);
}

/// Drops a TCP connection with a RST instead of a FIN.
fn reset_tcp(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
