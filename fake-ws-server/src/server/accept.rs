//! The accept loop: the listener (with small socket buffers if asked), admission of
//! each TCP connection (`admission`), and the handshake, TLS first if configured, then
//! the WebSocket upgrade, inspected, logged and possibly refused in tungstenite's
//! `accept_hdr_async` callback. Every attempt is recorded in the shared state; an
//! accepted connection gets its entry there and its task (`connection_task`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use super::admission::{Rejection, admit, rejection};
use super::closed::Closed;
use super::connection_task::{reset, run_connection};
use super::handshake::{Attempt, AttemptOutcome, HandshakeRequest};
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

/// Listens on `127.0.0.1:port` (`0`: a free port), with small buffers if asked.
pub(super) async fn bind(port: u16, small_buffers: bool) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if small_buffers {
        // Set on the listener, before `listen`: accepted sockets inherit both, and the
        // window and MSS are announced in the SYN-ACK.
        socket.set_recv_buffer_size(SMALL_RECEIVE_BUFFER)?;
        socket2::SockRef::from(&socket).set_tcp_mss(SMALL_MSS)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(128)
}

pub(super) async fn accept_loop<In, Out>(
    shared: Arc<Shared<In, Out>>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
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

async fn handle_connection<In, Out>(shared: Arc<Shared<In, Out>>, stream: TcpStream, epoch: u64)
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    let at = Instant::now();
    // What the handshake callback saw: the request, and the status it was rejected with.
    type Seen = Option<(HandshakeRequest, Option<u16>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let callback = {
        let shared = shared.clone();
        let seen = seen.clone();
        // tungstenite's callback signature fixes the error type; its size is not ours to choose.
        #[allow(clippy::result_large_err)]
        move |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            let handshake = HandshakeRequest::from_request(request);
            let rejection = if request.uri().path() != shared.config.path {
                Some(Rejection {
                    status: StatusCode::NOT_FOUND,
                    headers: Vec::new(),
                    body: None,
                })
            } else {
                rejection(&mut shared.lock(), &handshake)
            };
            let status = rejection.as_ref().map(|r| r.status.as_u16());
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((handshake.clone(), status));
            if let Some(Rejection {
                status,
                headers,
                body,
            }) = rejection
            {
                let body =
                    body.unwrap_or_else(|| format!("rejected by the fake server with {status}"));
                let mut error = ErrorResponse::new(Some(body));
                *error.status_mut() = status;
                error
                    .headers_mut()
                    .extend(headers.into_iter().map(|(n, v)| (Some(n), v)));
                return Err(error);
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
    };
    let stream = match &shared.config.tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => stream,
            Err(e) => {
                let outcome = AttemptOutcome::Failed(format!("TLS handshake: {e}"));
                record_attempt(&shared, at, None, outcome);
                return;
            }
        },
    };
    let result = tokio_tungstenite::accept_hdr_async_with_config(
        PongFilter::new(stream),
        callback,
        Some(shared.config.websocket),
    )
    .await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (request, rejection) = match seen {
        Some((request, rejection)) => (Some(request), rejection),
        None => (None, None),
    };
    let mut ws = match (result, rejection) {
        (Ok(ws), _) => ws,
        (Err(_), Some(status)) => {
            record_attempt(&shared, at, request, AttemptOutcome::Rejected(status));
            return;
        }
        (Err(e), None) => {
            record_attempt(&shared, at, request, AttemptOutcome::Failed(e.to_string()));
            return;
        }
    };
    ws.get_mut().track();
    let request = request.expect("an accepted handshake had a request");
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let id = {
        let mut state = shared.lock();
        if state.epoch != epoch {
            drop(state);
            reset(ws);
            let outcome = AttemptOutcome::Failed("the server stopped during the handshake".into());
            record_attempt(&shared, at, Some(request), outcome);
            return;
        }
        state.attempts.push(Attempt {
            at,
            request: Some(request.clone()),
            outcome: AttemptOutcome::Accepted,
        });
        let id = state.connections.len();
        state.connections.push(ConnState {
            id,
            started: Instant::now(),
            request,
            transcript: Vec::new(),
            inbound: Vec::new(),
            allowed: Vec::new(),
            closed: None,
            claimed: false,
            reported: false,
        });
        state.outbound.push(Some(commands_tx.clone()));
        id
    };
    shared.notify.notify_waiters();
    run_connection(shared.clone(), id, ws, commands, commands_tx).await;
    let mut state = shared.lock();
    state.outbound[id] = None;
    state.connections[id].closed.get_or_insert(Closed::Dropped);
    drop(state);
    shared.notify.notify_waiters();
}

fn record_attempt<In, Out>(
    shared: &Shared<In, Out>,
    at: Instant,
    request: Option<HandshakeRequest>,
    outcome: AttemptOutcome,
) {
    shared.lock().attempts.push(Attempt {
        at,
        request,
        outcome,
    });
    shared.notify.notify_waiters();
}
