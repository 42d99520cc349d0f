//! The accept loop: the listener (with small socket buffers if asked), admission of
//! each TCP connection by the server's mode (`admission`), and the handshake, TLS first
//! if configured, then the WebSocket upgrade, inspected, logged and possibly refused in
//! tungstenite's `accept_hdr_async` callback. Every attempt is recorded in the shared
//! state; an accepted connection gets its entry there and its task (`connection_task`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use super::admission::{Admission, Rejection, rejection};
use super::closed::Closed;
use super::command::Command;
use super::connection_task::{Filtered, reset, run_connection};
use super::frames::greet;
use super::handshake::{Attempt, AttemptOutcome, HandshakeRequest};
use super::link::{Link, LinkControl};
use super::pongs::PongFilter;
use super::state::{ConnState, Shared};
use super::stream::Stream;

/// `SO_RCVBUF` of the listener with [`FakeServerBuilder::small_socket_buffers`] (Linux
/// doubles it, and accepted connections inherit it).
///
/// [`FakeServerBuilder::small_socket_buffers`]: super::FakeServerBuilder::small_socket_buffers
const SMALL_RECEIVE_BUFFER: u32 = 2048;
/// The MSS the listener advertises with [`FakeServerBuilder::small_socket_buffers`]:
/// Linux grows a sender's send buffer in proportion to the peer's MSS, up to 4 MiB with
/// loopback's 64 KiB segments; with this one it stays around 100 KiB.
///
/// [`FakeServerBuilder::small_socket_buffers`]: super::FakeServerBuilder::small_socket_buffers
const SMALL_MSS: u32 = 536;

/// The accept loop of a listening server, and how to stop it.
pub(super) struct Listening {
    pub(super) stop: oneshot::Sender<()>,
    pub(super) task: JoinHandle<()>,
}

/// Listens on `addr` (port `0`: a free port), with small buffers if asked.
pub(super) async fn bind(addr: SocketAddr, small_buffers: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if small_buffers {
        // Set on the listener, before `listen`: accepted sockets inherit both, and the
        // window and MSS are announced in the SYN-ACK.
        socket.set_recv_buffer_size(SMALL_RECEIVE_BUFFER)?;
        socket2::SockRef::from(&socket).set_tcp_mss(SMALL_MSS)?;
    }
    socket.bind(addr)?;
    socket.listen(128)
}

pub(super) async fn accept_loop<In, Out>(
    shared: Arc<Shared<In, Out>>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted
                    && let Some(stream) = admit(&shared, stream)
                {
                    let epoch = shared.lock().epoch;
                    tokio::spawn(handle_connection(shared.clone(), stream, epoch));
                }
            }
        }
    }
}

/// What to do with a TCP connection just accepted: `Some` to go on with the
/// handshake; refused (reset at once) or hung (held, unanswered) according to the
/// server's [`Admission`], recorded as an attempt either way.
fn admit<In, Out>(shared: &Arc<Shared<In, Out>>, stream: TcpStream) -> Option<TcpStream>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    let at = shared.config.clock.now();
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
    let attempt = Attempt::new(shared.config.started, at, None, outcome);
    shared.lock().attempts.push(attempt);
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

async fn handle_connection<In, Out>(shared: Arc<Shared<In, Out>>, stream: TcpStream, epoch: u64)
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    let at = shared.config.clock.now();
    let Some((ws, request)) = upgrade(&shared, stream, at).await else {
        return;
    };
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let ends = Ends {
        commands: commands_tx.clone(),
        link: ws.get_ref().inner().control(),
    };
    let id = match register(&shared, epoch, at, request, ends) {
        Ok(id) => id,
        Err(request) => {
            reset(ws);
            let outcome = AttemptOutcome::Failed("the server stopped during the handshake".into());
            record_attempt(&shared, at, Some(request), outcome);
            return;
        }
    };
    // Greeted before the waiters wake: a connection the recording lacks is a
    // problem by the time `next_connection` hands it out.
    greet(&shared, id, &commands_tx);
    shared.notify.notify_waiters();
    run_connection(shared.clone(), id, ws, commands, commands_tx).await;
    let mut state = shared.lock();
    state.outbound[id] = None;
    state.connections[id].closed.get_or_insert(Closed::Dropped);
    drop(state);
    shared.notify.notify_waiters();
}

/// What the handshake callback saw: the request, and the status it was rejected with.
type Seen = Option<(HandshakeRequest, Option<u16>)>;

/// The handshake of a TCP connection accepted `at`: TLS first if configured, then the
/// WebSocket upgrade ([`answer_upgrade`]). The WebSocket and its request; `None` when
/// the handshake failed or was rejected, recorded as an attempt.
async fn upgrade<In, Out>(
    shared: &Arc<Shared<In, Out>>,
    stream: TcpStream,
    at: Instant,
) -> Option<(WebSocketStream<Filtered>, HandshakeRequest)>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    let stream = match &shared.config.tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream, shared.config.deadline).await {
            Ok(stream) => stream,
            Err(e) => {
                let outcome = AttemptOutcome::Failed(format!("TLS handshake: {e}"));
                record_attempt(shared, at, None, outcome);
                return None;
            }
        },
    };
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let result = tokio_tungstenite::accept_hdr_async_with_config(
        PongFilter::new(Link::new(stream)),
        answer_upgrade(shared.clone(), seen.clone()),
        Some(shared.config.websocket),
    )
    .await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (request, rejection) = match seen {
        Some((request, rejection)) => (Some(request), rejection),
        None => (None, None),
    };
    match (result, rejection) {
        (Ok(mut ws), _) => {
            ws.get_mut().track();
            Some((ws, request.expect("an accepted handshake had a request")))
        }
        (Err(_), Some(status)) => {
            record_attempt(shared, at, request, AttemptOutcome::Rejected(status));
            None
        }
        (Err(e), None) => {
            record_attempt(shared, at, request, AttemptOutcome::Failed(e.to_string()));
            None
        }
    }
}

/// tungstenite's handshake callback: notes the request (and the status it is rejected
/// with) in `seen`, and answers it: 404 off the server's path, the rejection of the
/// first handshake rule that holds for it, else 101 with the server's subprotocol if
/// the client offered it.
fn answer_upgrade<In, Out>(
    shared: Arc<Shared<In, Out>>,
    seen: Arc<Mutex<Seen>>,
) -> impl FnOnce(&Request, Response) -> Result<Response, ErrorResponse> {
    // tungstenite's callback signature fixes the error type; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    move |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let handshake = HandshakeRequest::from_request(request);
        let path = request.uri().path();
        let served =
            path == shared.config.path || shared.config.more_paths.iter().any(|p| p == path);
        let rejection = if !served {
            Some(Rejection {
                status: StatusCode::NOT_FOUND,
                headers: Vec::new(),
                body: None,
            })
        } else {
            rejection(&mut shared.lock().handshake_rules, &handshake)
        };
        let status = rejection.as_ref().map(|r| r.status.as_u16());
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((handshake.clone(), status));
        if let Some(Rejection {
            status,
            headers,
            body,
        }) = rejection
        {
            let body = body.unwrap_or_else(|| format!("rejected by the fake server with {status}"));
            let mut error = ErrorResponse::new(Some(body));
            *error.status_mut() = status;
            error
                .headers_mut()
                .extend(headers.into_iter().map(|(n, v)| (Some(n), v)));
            return Err(error);
        }
        for (name, value) in &shared.config.response_headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        if let Some(wanted) = &shared.config.subprotocol
            && handshake.subprotocols().iter().any(|p| p == wanted)
            && let Ok(value) = HeaderValue::from_str(wanted)
        {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        Ok(response)
    }
}

/// What a connection's handle drives it with: its task's command channel, and its link.
struct Ends {
    commands: mpsc::UnboundedSender<Command>,
    link: Arc<LinkControl>,
}

/// Gives a connection accepted `at` its entry in the shared state, with its [`Ends`],
/// and records its attempt as accepted; `Err`, handing the request back, when the
/// server stopped since the handshake began (in `epoch`).
fn register<In, Out>(
    shared: &Shared<In, Out>,
    epoch: u64,
    at: Instant,
    request: HandshakeRequest,
    ends: Ends,
) -> Result<usize, HandshakeRequest> {
    let mut state = shared.lock();
    if state.epoch != epoch {
        return Err(request);
    }
    let started = shared.config.started;
    let attempt = Attempt::new(started, at, Some(request.clone()), AttemptOutcome::Accepted);
    state.attempts.push(attempt);
    let id = state.connections.len();
    let mut conn = ConnState::new(id, request, shared.config.clock.clone());
    if let Some(impairment) = shared.config.impairment {
        ends.link.impair(Some(impairment));
    }
    conn.link = ends.link;
    state.connections.push(conn);
    state.outbound.push(Some(ends.commands));
    Ok(id)
}

fn record_attempt<In, Out>(
    shared: &Shared<In, Out>,
    at: Instant,
    request: Option<HandshakeRequest>,
    outcome: AttemptOutcome,
) {
    let attempt = Attempt::new(shared.config.started, at, request, outcome);
    shared.lock().attempts.push(attempt);
    shared.notify.notify_waiters();
}
