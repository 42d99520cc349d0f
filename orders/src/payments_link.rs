//! The one long-lived WebSocket from Orders to Payments (awc), carrying every order.
//!
//! awc is `!Send`, so the link runs on a thread of its own with its own actix system,
//! behind [`PaymentsLink`], a cloneable `Send` handle holding a channel sender. The
//! connection is one `select!` loop over frames from Payments, the outbound channel,
//! a ping every [`LinkConfig::heartbeat_interval`], the peer's silence deadline and the
//! sweeper. After any loss it reconnects with exponential backoff and full jitter,
//! forever; on every connect it re-sends the requests of open orders, so nothing
//! queued in memory matters: the database is the to-do list.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_http::Uri;
use actix_http::ws::Item;
use actix_rt::net::TcpStream;
use actix_service::ServiceExt;
use actix_tls::connect::{Connection as TcpConnection, Connector as TcpConnector, Resolver};
use actix_web::web::Bytes;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use chrono::{DateTime, Utc};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use shared_protocol::{
    ClientMessage, DecodeError, MAX_MESSAGE_BYTES, Message as _, OrderId, SUBPROTOCOL,
    ServerMessage,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, sleep_until};

use crate::flow;
use crate::metrics::Metrics;
use crate::store::{OpenKey, Store};

/// How many batches of messages from Payments are applied at once, each in its own
/// transaction on a pool connection.
const MAX_IN_FLIGHT: usize = 4;
/// The most messages one batch (one transaction) applies.
const MAX_BATCH: usize = 256;
/// How many messages read from Payments may wait to be applied; reading pauses beyond.
const MAX_WAITING: usize = 1024;
/// Frames queued for the writer task.
const WRITE_QUEUE: usize = 1024;
/// Room kept in the write queue for replies, pongs and new orders' requests: pages of
/// requests for older open orders only go out when more than this is free.
const REPLY_ROOM: usize = 128;
/// Open orders read per page when resuming, sweeping or catching up after drops.
const PAGE: i64 = 256;
/// The most orders with an `initiate_payment` out and no page (or outcome, or error)
/// back yet. Payments answers each with at most two messages (methods, then page) and
/// keeps half of its 2,048-frame outbox for replies; within this window its replies
/// always fit, so it never stops reading because Orders sent too much, and two large
/// backlogs cannot wedge the socket in both directions.
const MAX_OUTSTANDING: usize = 512;
/// Write-queue slots kept for pings and pongs.
const SPARE: usize = 16;
/// How long the writer may take to send what is queued and the close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A connection that stayed up this long resets the reconnect backoff; one that drops
/// sooner counts as a failure, so a peer that accepts and then fails cannot make the
/// link reconnect in a tight loop.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long [`LinkGuard::stop`] waits for the link's thread.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long a connection attempt (TCP + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timing and address of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub url: String,
    pub token: service_kit::token::SecretString,
    pub heartbeat_interval: Duration,
    pub peer_timeout: Duration,
    pub resend_after: Duration,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// How many requests may wait for the link; see [`PaymentsLink::send`].
    pub outbox_capacity: usize,
}

/// Whether the link is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    Stopped,
}

/// A cloneable, `Send` handle to the link.
#[derive(Debug, Clone)]
pub struct PaymentsLink {
    outbox: mpsc::Sender<ClientMessage>,
    overflow: Arc<Overflow>,
    state: watch::Receiver<LinkState>,
}

/// What the handle dropped because the outbox was full: the creation time of the oldest
/// such order, and a wake-up for the link.
#[derive(Debug, Default)]
struct Overflow {
    oldest: Mutex<Option<DateTime<Utc>>>,
    notify: Notify,
}

impl Overflow {
    fn record(&self, created_at: DateTime<Utc>) {
        let mut oldest = self.oldest.lock().unwrap_or_else(|e| e.into_inner());
        *oldest = Some(oldest.map_or(created_at, |o| o.min(created_at)));
        drop(oldest);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<DateTime<Utc>> {
        self.oldest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    async fn notified(&self) {
        self.notify.notified().await
    }
}

/// Stops the link when dropped (or on [`LinkGuard::stop`]): the link's thread closes
/// the WebSocket with 1001 Going Away and ends.
#[derive(Debug)]
pub struct LinkGuard {
    shutdown: Arc<watch::Sender<bool>>,
    /// Closed (its sender dropped) when the link's thread ends.
    ended: std::sync::mpsc::Receiver<()>,
}

impl PaymentsLink {
    /// Starts the link on its own thread.
    pub fn start(
        config: LinkConfig,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(PaymentsLink, LinkGuard)> {
        let (outbox_tx, outbox_rx) = mpsc::channel(config.outbox_capacity.max(1));
        let overflow = Arc::new(Overflow::default());
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<()>();
        let link_overflow = overflow.clone();
        std::thread::Builder::new()
            .name("payments-link".into())
            .spawn(move || {
                let _ended = ended_tx;
                let system = actix_rt::System::new();
                system.block_on(run(
                    config,
                    store,
                    metrics,
                    Inbound {
                        outbox: outbox_rx,
                        overflow: link_overflow,
                    },
                    state_tx,
                    shutdown_rx,
                ));
            })?;
        Ok((
            PaymentsLink {
                outbox: outbox_tx,
                overflow,
                state: state_rx,
            },
            LinkGuard {
                shutdown: Arc::new(shutdown_tx),
                ended: ended_rx,
            },
        ))
    }

    /// Queues a request about an order created at `created_at`. Never blocks: when the
    /// link is behind, the request is dropped and the link, told the oldest dropped
    /// order, sends it from the database within one page walk; when the link is down,
    /// the next connection resumes every open order from the database.
    pub fn send(&self, message: ClientMessage, created_at: DateTime<Utc>) {
        match self.outbox.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow.record(created_at),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("the link has stopped; request not queued")
            }
        }
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    pub fn is_connected(&self) -> bool {
        self.state() == LinkState::Connected
    }
}

impl PaymentsLink {
    /// Waits until the link has stopped for good.
    pub async fn stopped(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s == LinkState::Stopped).await;
    }
}

impl LinkGuard {
    /// A handle that can ask the link to stop, without owning it.
    pub fn stopper(&self) -> Arc<watch::Sender<bool>> {
        self.shutdown.clone()
    }

    /// Stops the link and waits, at most [`STOP_WAIT`], for its thread to end.
    pub fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = self.ended.recv_timeout(STOP_WAIT)
        {
            tracing::warn!(wait = ?STOP_WAIT, "the payments link did not stop in time");
        }
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Why a connection ended.
enum End {
    Shutdown,
    Lost(Lost),
}

/// Why a connection to Payments was lost: logged, then the link reconnects.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("Payments closed the TCP connection")]
    TcpClosed,
    #[error("Payments closed the connection: {0:?}")]
    Closed(Option<CloseReason>),
    #[error("WebSocket protocol error: {0}")]
    Protocol(String),
    #[error("Payments sent a message over 64 KiB")]
    TooLarge,
    #[error("no frame from Payments for {0:?}")]
    Silent(Duration),
    #[error("Payments read nothing for {0:?}")]
    NotReading(Duration),
    #[error("could not write to Payments: {0}")]
    Write(String),
    #[error("the connection was closed")]
    ClosedByUs,
    #[error("the writer failed: {0}")]
    WriterFailed(String),
}

/// What reaches the link from the handle.
struct Inbound {
    outbox: mpsc::Receiver<ClientMessage>,
    overflow: Arc<Overflow>,
}

async fn run(
    config: LinkConfig,
    store: Store,
    metrics: Arc<Metrics>,
    mut inbound: Inbound,
    state: watch::Sender<LinkState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut attempt: u64 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        attempt += 1;
        tracing::info!(attempt, url = %config.url, "connecting to Payments");
        let connected = tokio::select! {
            result = connect(&config) => result,
            _ = shutdown.changed() => break,
        };
        match connected {
            Ok(framed) => {
                let _ = state.send(LinkState::Connected);
                metrics.link_up();
                tracing::info!(url = %config.url, "connected to Payments");
                let since = Instant::now();
                let end = Connection::new(&config, &store, &metrics)
                    .run(
                        framed,
                        &mut inbound.outbox,
                        &inbound.overflow,
                        &mut shutdown,
                    )
                    .await;
                failures = if since.elapsed() >= HEALTHY_AFTER {
                    0
                } else {
                    failures.saturating_add(1)
                };
                let _ = state.send(LinkState::Connecting);
                metrics.link_down();
                match end {
                    End::Shutdown => break,
                    End::Lost(why) => {
                        tracing::warn!(reason = %why, "lost the connection to Payments")
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(attempt, error = %e, "could not connect to Payments");
            }
        }
        let delay = backoff(failures, config.reconnect_base, config.reconnect_cap);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to Payments after a delay"
        );
        tokio::select! {
            _ = sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = state.send(LinkState::Stopped);
    tracing::info!("payments link stopped");
}

/// Exponential backoff with full jitter: a random delay in `[0, min(cap, base · 2^failures)]`.
/// After a lost connection (`failures == 0`) the first retry waits at most `base`.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    let millis = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

#[derive(Debug)]
enum ConnectError {
    Handshake(awc::error::WsClientError),
    Refused(awc::http::StatusCode),
    Subprotocol(Option<String>),
    Timeout,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnectError::Refused(status) if status.as_u16() == 401 => {
                write!(f, "Payments answered {status}: check PAYMENTS_TOKEN")
            }
            ConnectError::Refused(status) => write!(f, "Payments answered {status} instead of 101"),
            ConnectError::Subprotocol(p) => write!(
                f,
                "Payments did not accept subprotocol {SUBPROTOCOL} (it chose {p:?})"
            ),
            ConnectError::Timeout => write!(f, "no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
}

type Framed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

async fn connect(config: &LinkConfig) -> Result<Framed, ConnectError> {
    // TCP_NODELAY: a frame goes out when it is written. With Nagle's algorithm a small
    // frame written while an earlier one is unacknowledged waits for that ACK, which the
    // peer's delayed ACK holds back up to 40 ms: most messages of a busy link did.
    let tcp = TcpConnector::new(Resolver::default()).service().map(
        |conn: TcpConnection<Uri, TcpStream>| {
            if let Err(e) = conn.io_ref().set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on the link");
            }
            conn
        },
    );
    let client = awc::Client::builder()
        .connector(awc::Connector::new().connector(tcp))
        .timeout(CONNECT_TIMEOUT)
        .finish();
    let request = client
        .ws(config.url.as_str())
        .protocols([SUBPROTOCOL])
        .bearer_auth(service_kit::token::ExposeSecret::expose_secret(
            &config.token,
        ))
        .max_frame_size(MAX_MESSAGE_BYTES);
    let (response, framed) = tokio::time::timeout(CONNECT_TIMEOUT, request.connect())
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| match e {
            awc::error::WsClientError::InvalidResponseStatus(status) => {
                ConnectError::Refused(status)
            }
            e => ConnectError::Handshake(e),
        })?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if chosen.as_deref() != Some(SUBPROTOCOL) {
        return Err(ConnectError::Subprotocol(chosen));
    }
    Ok(framed)
}

/// One open connection.
struct Connection<'a> {
    config: &'a LinkConfig,
    store: &'a Store,
    metrics: &'a Metrics,
    /// A fragmented message being reassembled.
    fragments: Option<Vec<u8>>,
}

/// A walk, oldest first and one page at a time, over the open orders that need a
/// request: on connect (all of them), after the handle dropped requests (from the oldest
/// dropped one) and on each sweep (only those unanswered for `resend_after`).
#[derive(Debug, Clone, Copy)]
struct Walk {
    stale_after: Option<Duration>,
    after: Option<OpenKey>,
}

/// The orders with an `initiate_payment` sent on this connection and not yet answered
/// with a page, an outcome or an error: at most [`MAX_OUTSTANDING`].
#[derive(Default)]
struct Window {
    sent: HashMap<OrderId, Instant>,
}

impl Window {
    fn has_room(&self, n: usize) -> bool {
        self.sent.len() + n <= MAX_OUTSTANDING
    }

    fn sent(&mut self, message: &ClientMessage) {
        if let ClientMessage::InitiatePayment { order_id, .. } = message {
            self.sent.entry(*order_id).or_insert_with(Instant::now);
        }
    }

    fn answered(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::PaymentMethods { .. } => {}
            ServerMessage::PaymentPage { order_id, .. }
            | ServerMessage::PaymentState { order_id, .. } => {
                self.sent.remove(order_id);
            }
            ServerMessage::Error { .. } => {
                if let Some(order_id) = message.order_id() {
                    self.sent.remove(&order_id);
                }
            }
        }
    }

    fn forget_older_than(&mut self, age: Duration) {
        self.sent.retain(|_, at| at.elapsed() < age);
    }
}

/// The messages read from Payments and not yet applied, and those being applied.
///
/// Group commit: whatever waits when a batch can start (at most one message per
/// order, up to [`MAX_BATCH`]) is applied in one transaction, with up to
/// [`MAX_IN_FLIGHT`] batches at once on different orders. Under light load a batch is
/// one message and costs one commit; under heavy load the batches grow, and the
/// commits per message shrink. Messages for one order are applied one after another,
/// in the order they arrived.
struct Pipeline<'a> {
    waiting: VecDeque<ServerMessage>,
    busy: HashSet<OrderId>,
    in_flight: FuturesUnordered<LocalBoxFuture<'a, Vec<Applied>>>,
    /// Write-queue slots promised to the replies of the batches in flight (at most one
    /// reply per message): a batch starts only when its replies fit, so the loop never
    /// waits on the writer and keeps reading.
    reserved: usize,
}

/// A message from Payments, applied (or not).
struct Applied {
    order: Option<OrderId>,
    /// The reply to send, if any.
    result: Result<Option<ClientMessage>, crate::store::StoreError>,
}

impl<'a> Pipeline<'a> {
    fn new() -> Self {
        Pipeline {
            waiting: VecDeque::new(),
            busy: HashSet::new(),
            in_flight: FuturesUnordered::new(),
            reserved: 0,
        }
    }

    /// Whether another message may be read from the socket.
    fn has_room(&self) -> bool {
        self.waiting.len() < MAX_WAITING
    }

    /// Write-queue slots free for new work: not promised to replies, not spare.
    fn free(&self, out: &mpsc::Sender<Message>) -> usize {
        out.capacity().saturating_sub(self.reserved + SPARE)
    }

    /// Whether messages wait only because the write queue has no room for replies.
    fn blocked_on_writer(&self, out: &mpsc::Sender<Message>) -> bool {
        !self.waiting.is_empty() && self.in_flight.len() < MAX_IN_FLIGHT && self.free(out) == 0
    }

    /// Starts a batch of the earliest waiting message of every order that has none in
    /// flight, if a batch may start and as many replies as it may send fit in the write
    /// queue.
    fn start(&mut self, store: &'a Store, metrics: &'a Metrics, out: &mpsc::Sender<Message>) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let limit = MAX_BATCH.min(self.free(out));
        let mut batch = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && batch.len() < limit {
            let order = self.waiting[i].order_id();
            if order.is_some_and(|o| self.busy.contains(&o)) {
                i += 1;
                continue;
            }
            let Some(message) = self.waiting.remove(i) else {
                break;
            };
            if let Some(order) = order {
                self.busy.insert(order);
            }
            batch.push(message);
        }
        if !batch.is_empty() {
            self.reserved += batch.len();
            self.in_flight.push(Box::pin(apply(store, metrics, batch)));
        }
    }

    fn finished(&mut self, applied: &[Applied]) {
        self.reserved = self.reserved.saturating_sub(applied.len());
        for applied in applied {
            if let Some(order) = applied.order {
                self.busy.remove(&order);
            }
        }
    }
}

/// Applies a batch in one transaction; if that fails, each message on its own, so one
/// message the database refuses (a poison message) cannot hold back the others.
async fn apply(store: &Store, metrics: &Metrics, batch: Vec<ServerMessage>) -> Vec<Applied> {
    let orders: Vec<Option<OrderId>> = batch.iter().map(|m| m.order_id()).collect();
    if batch.len() > 1 {
        match flow::handle_batch(store, metrics, batch.clone()).await {
            Ok(replies) => {
                return orders
                    .into_iter()
                    .zip(replies)
                    .map(|(order, reply)| Applied {
                        order,
                        result: Ok(reply),
                    })
                    .collect();
            }
            Err(e) => tracing::warn!(
                messages = batch.len(),
                error = %crate::error::error_chain(&e),
                "a batch from Payments failed; applying its messages one by one"
            ),
        }
    }
    let mut applied = Vec::with_capacity(batch.len());
    for (order, message) in orders.into_iter().zip(batch) {
        let kind = message.type_name();
        let result = flow::handle(store, metrics, message).await;
        if let (Err(e), Some(order)) = (&result, order)
            && e.is_deterministic()
        {
            // The database refuses this message itself (a value it cannot hold): it
            // would fail the same way every time. Counted like a refusal from Payments,
            // so the order is parked instead of being re-sent forever; an outcome is
            // not acked, so Payments keeps it (and dead-letters it after its attempts).
            let error = format!("could not store {kind}: {}", crate::error::error_chain(e));
            tracing::error!(order_id = %order, %error, "a message from Payments cannot be applied");
            match store.record_refusal(order, error).await {
                Ok(refusal) => {
                    metrics.refused(matches!(refusal, crate::store::Refusal::Parked { .. }))
                }
                Err(e) => {
                    tracing::warn!(order_id = %order, error = %crate::error::error_chain(&e), "could not count the refusal")
                }
            }
        }
        applied.push(Applied { order, result });
    }
    applied
}

/// Why a connection's loop ended, and the close frame to send, if any.
struct Ending {
    end: End,
    close: Option<CloseReason>,
}

impl Ending {
    fn lost(why: Lost) -> Self {
        Ending {
            end: End::Lost(why),
            close: None,
        }
    }

    fn closing(why: Lost, code: CloseCode, description: &str) -> Self {
        Ending {
            end: End::Lost(why),
            close: Some(CloseReason {
                code,
                description: Some(description.into()),
            }),
        }
    }
}

impl<'a> Connection<'a> {
    fn new(config: &'a LinkConfig, store: &'a Store, metrics: &'a Metrics) -> Self {
        Connection {
            config,
            store,
            metrics,
            fragments: None,
        }
    }

    async fn run(
        mut self,
        framed: Framed,
        outbox: &mut mpsc::Receiver<ClientMessage>,
        overflow: &Overflow,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let (sink, mut stream) = framed.split();
        // The writer owns the socket's sending half, so reading never waits on a write;
        // it gives up on a peer that reads nothing for `peer_timeout`.
        let (out, queue) = mpsc::channel(WRITE_QUEUE);
        let mut writer = tokio::task::spawn_local(write(sink, queue, self.config.peer_timeout));

        // Requests queued while the link was down are all in the database too: drop
        // them, and any record of dropped ones, and resume from the database alone.
        while outbox.try_recv().is_ok() {}
        overflow.take();
        let mut catch_up = Some(Walk {
            stale_after: None,
            after: None,
        });
        let mut sweep: Option<Walk> = None;

        let ending = self
            .serve(
                &mut stream,
                &out,
                &mut writer,
                outbox,
                overflow,
                shutdown,
                &mut catch_up,
                &mut sweep,
            )
            .await;

        // Let the writer send what is queued and the close frame, for a bounded time.
        if writer.is_finished() {
            return ending.end;
        }
        let wait = async {
            if let Some(reason) = ending.close {
                // Behind whatever is queued: Payments reads the requests, then the close.
                if out.send(Message::Close(Some(reason))).await.is_err() {
                    return;
                }
            }
            drop(out);
            let _ = (&mut writer).await;
        };
        if tokio::time::timeout(CLOSE_WAIT, wait).await.is_err() {
            writer.abort();
        }
        ending.end
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<Framed>,
        out: &mpsc::Sender<Message>,
        writer: &mut tokio::task::JoinHandle<Lost>,
        outbox: &mut mpsc::Receiver<ClientMessage>,
        overflow: &Overflow,
        shutdown: &mut watch::Receiver<bool>,
        catch_up: &mut Option<Walk>,
        sweep: &mut Option<Walk>,
    ) -> Ending {
        let now = Instant::now();
        let mut heartbeat = interval_at(
            now + self.config.heartbeat_interval,
            self.config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweeper = interval_at(now + self.config.resend_after, self.config.resend_after);
        sweeper.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = now;
        let mut pipeline = Pipeline::new();
        let mut window = Window::default();

        loop {
            // A page of requests goes out only when the writer has room for it and for
            // the replies to what is being read, and the window has room for its orders,
            // so requests never crowd out reading.
            let free = pipeline.free(out);
            let room_for_page =
                free >= PAGE as usize + REPLY_ROOM && window.has_room(PAGE as usize);
            tokio::select! {
                frame = stream.next(), if pipeline.has_room() => {
                    let frame = match frame {
                        None => return Ending::lost(Lost::TcpClosed),
                        Some(Err(e)) => {
                            // Oversized frames and protocol violations end up here.
                            let description = e.to_string();
                            return Ending::closing(Lost::Protocol(description.clone()), close_code_for(&e), &description);
                        }
                        Some(Ok(frame)) => frame,
                    };
                    last_heard = Instant::now();
                    match self.on_frame(frame) {
                        Incoming::Nothing => {}
                        Incoming::Pong(payload) => {
                            let _ = out.try_send(Message::Pong(payload));
                        }
                        Incoming::Closed(reason) => {
                            return Ending { end: End::Lost(Lost::Closed(reason.clone())), close: reason };
                        }
                        Incoming::TooLarge => {
                            return Ending::closing(Lost::TooLarge, CloseCode::Size, "message over 64 KiB");
                        }
                        Incoming::Message(message) => {
                            window.answered(&message);
                            pipeline.waiting.push_back(message);
                            pipeline.start(self.store, self.metrics, out);
                        }
                    }
                }
                Some(batch) = pipeline.in_flight.next(), if !pipeline.in_flight.is_empty() => {
                    pipeline.finished(&batch);
                    for applied in batch {
                        match applied.result {
                            Ok(reply) => {
                                if let Some(reply) = &reply {
                                    // Room was reserved when the batch started: never waits.
                                    match out.try_send(text(self.metrics, reply)) {
                                        Ok(()) => {}
                                        Err(mpsc::error::TrySendError::Closed(_)) => {
                                            return Ending::lost(writer_end(writer).await);
                                        }
                                        Err(mpsc::error::TrySendError::Full(_)) => {
                                            // Not reached (one reply per message, reserved);
                                            // if it were, Payments re-sends what needs it.
                                            tracing::error!(order_id = ?applied.order, "the write queue is full; a reply was not sent");
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                // Not applied, so not acked: Payments delivers it again, and
                                // the sweeper re-sends requests whose answer was lost this way.
                                tracing::error!(order_id = ?applied.order, error = %crate::error::error_chain(&e), "could not apply a message from Payments; it was not acked");
                            }
                        }
                    }
                    pipeline.start(self.store, self.metrics, out);
                }
                permits = out.reserve_many(SPARE + 1), if pipeline.blocked_on_writer(out) => {
                    // The writer made room: start what waited for it.
                    drop(permits);
                    pipeline.start(self.store, self.metrics, out);
                }
                Some(message) = outbox.recv(), if free > REPLY_ROOM && window.has_room(1) => {
                    window.sent(&message);
                    let _ = out.try_send(text(self.metrics, &message));
                }
                () = overflow.notified() => {
                    if let Some(oldest) = overflow.take() {
                        // Requests were dropped while the link was busy: walk the open
                        // orders from the oldest dropped one (re-sends are idempotent).
                        let from = OpenKey { created_at: oldest, id: OrderId(uuid::Uuid::nil()) };
                        let after = match catch_up {
                            Some(Walk { after: Some(at), .. }) => Some((*at).min(from)),
                            Some(Walk { after: None, .. }) => None,
                            None => Some(from),
                        };
                        tracing::info!(%oldest, "requests were dropped while the link was busy; sending them from the database");
                        *catch_up = Some(Walk { stale_after: None, after });
                    }
                }
                () = std::future::ready(()), if room_for_page && (catch_up.is_some() || sweep.is_some()) => {
                    // Awaited here, not raced in select!, so a busy socket cannot cancel it.
                    for message in next_page(self.store, catch_up, sweep).await {
                        window.sent(&message);
                        let _ = out.try_send(text(self.metrics, &message));
                    }
                }
                _ = heartbeat.tick() => {
                    let _ = out.try_send(Message::Ping(Bytes::new()));
                }
                _ = sleep_until(last_heard + self.config.peer_timeout) => {
                    // A dead peer cannot read a close frame; just drop the socket.
                    return Ending::lost(Lost::Silent(self.config.peer_timeout));
                }
                _ = sweeper.tick() => {
                    // Requests unanswered this long are the sweep's to send again.
                    window.forget_older_than(self.config.resend_after);
                    if sweep.is_none() {
                        *sweep = Some(Walk { stale_after: Some(self.config.resend_after), after: None });
                    }
                }
                why = &mut *writer => {
                    return Ending::lost(why.unwrap_or_else(|e| Lost::WriterFailed(e.to_string())));
                }
                _ = shutdown.changed() => {
                    return Ending {
                        end: End::Shutdown,
                        close: Some(CloseReason { code: CloseCode::Away, description: Some("Orders is shutting down".into()) }),
                    };
                }
            }
        }
    }

    /// Turns one frame into what the loop must do, reassembling fragments.
    fn on_frame(&mut self, frame: Frame) -> Incoming {
        match frame {
            Frame::Text(bytes) => self.on_text(&bytes),
            Frame::Binary(bytes) => {
                tracing::warn!(
                    len = bytes.len(),
                    "binary frame from Payments ignored (the protocol is text only)"
                );
                Incoming::Nothing
            }
            Frame::Continuation(item) => match item {
                Item::FirstText(bytes) => {
                    self.fragments = Some(bytes.to_vec());
                    self.check_fragments()
                }
                Item::FirstBinary(_) => {
                    tracing::warn!("fragmented binary message from Payments ignored");
                    self.fragments = None;
                    Incoming::Nothing
                }
                Item::Continue(ref bytes) | Item::Last(ref bytes) => {
                    let last = matches!(item, Item::Last(_));
                    let Some(buffer) = self.fragments.as_mut() else {
                        // Continuation of a binary message, or of nothing: ignore.
                        return Incoming::Nothing;
                    };
                    buffer.extend_from_slice(bytes);
                    if let too_large @ Incoming::TooLarge = self.check_fragments() {
                        return too_large;
                    }
                    if last {
                        let whole = self.fragments.take().unwrap_or_default();
                        self.on_text(&whole)
                    } else {
                        Incoming::Nothing
                    }
                }
            },
            Frame::Ping(payload) => Incoming::Pong(payload),
            Frame::Pong(_) => Incoming::Nothing,
            Frame::Close(reason) => Incoming::Closed(reason),
        }
    }

    fn check_fragments(&mut self) -> Incoming {
        if self
            .fragments
            .as_ref()
            .is_some_and(|b| b.len() > MAX_MESSAGE_BYTES)
        {
            self.fragments = None;
            Incoming::TooLarge
        } else {
            Incoming::Nothing
        }
    }

    fn on_text(&self, bytes: &[u8]) -> Incoming {
        let Ok(text) = std::str::from_utf8(bytes) else {
            tracing::warn!(
                len = bytes.len(),
                "text frame from Payments that is not UTF-8 ignored"
            );
            return Incoming::Nothing;
        };
        match shared_protocol::decode::<ServerMessage>(text) {
            Ok(message) => {
                tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "received from Payments");
                self.metrics.message("in", message.type_name());
                Incoming::Message(message)
            }
            Err(DecodeError::TooLarge { .. }) => Incoming::TooLarge,
            Err(e) => {
                tracing::warn!(error = %e, frame = %truncate(text, 256), "ignored a message from Payments that does not follow the protocol");
                Incoming::Nothing
            }
        }
    }
}

enum Incoming {
    Nothing,
    Pong(Bytes),
    Closed(Option<CloseReason>),
    TooLarge,
    Message(ServerMessage),
}

/// The frame of a request, counted and logged.
fn text(metrics: &Metrics, message: &ClientMessage) -> Message {
    tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "sending to Payments");
    metrics.message("out", message.type_name());
    Message::Text(shared_protocol::encode(message).into())
}

/// Writes queued frames to the socket, flushing when the queue runs dry, until the
/// queue closes (then closes the socket) or a write fails or takes longer than
/// `timeout`. Returns why it stopped.
async fn write(
    mut sink: futures_util::stream::SplitSink<Framed, Message>,
    mut queue: mpsc::Receiver<Message>,
    timeout: Duration,
) -> Lost {
    loop {
        let Some(first) = queue.recv().await else {
            let _ = tokio::time::timeout(timeout, sink.close()).await;
            return Lost::ClosedByUs;
        };
        let mut next = Some(first);
        let mut closing = false;
        while let Some(message) = next.take() {
            closing = matches!(message, Message::Close(_));
            match tokio::time::timeout(timeout, sink.feed(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Lost::Write(e.to_string()),
                Err(_) => return Lost::NotReading(timeout),
            }
            if closing {
                break;
            }
            next = queue.try_recv().ok();
        }
        match tokio::time::timeout(timeout, sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Lost::Write(e.to_string()),
            Err(_) => return Lost::NotReading(timeout),
        }
        if closing {
            let _ = tokio::time::timeout(timeout, sink.close()).await;
            return Lost::ClosedByUs;
        }
    }
}

/// Why the writer stopped, once it has.
async fn writer_end(writer: &mut tokio::task::JoinHandle<Lost>) -> Lost {
    match writer.await {
        Ok(why) => why,
        Err(e) => Lost::WriterFailed(e.to_string()),
    }
}

/// The next page of requests of the active walk (the catch-up before the sweep); ends
/// a walk on its last page, or on a database error (the sweeper tries again later).
async fn next_page(
    store: &Store,
    catch_up: &mut Option<Walk>,
    sweep: &mut Option<Walk>,
) -> Vec<ClientMessage> {
    let slot = if catch_up.is_some() { catch_up } else { sweep };
    let Some(walk) = *slot else {
        return Vec::new();
    };
    match store.open_orders(walk.stale_after, walk.after, PAGE).await {
        Ok(orders) => {
            *slot = match orders.last() {
                Some(last) if orders.len() as i64 == PAGE => Some(Walk {
                    after: Some(last.key),
                    ..walk
                }),
                _ => None,
            };
            if !orders.is_empty() {
                tracing::info!(
                    orders = orders.len(),
                    sweep = walk.stale_after.is_some(),
                    "sending requests for open orders"
                );
            }
            flow::requests_for(&orders)
        }
        Err(e) => {
            tracing::error!(error = %crate::error::error_chain(&e), "could not read open orders; the sweeper will retry");
            *slot = None;
            Vec::new()
        }
    }
}

fn close_code_for(e: &actix_http::ws::ProtocolError) -> CloseCode {
    match e {
        actix_http::ws::ProtocolError::Overflow => CloseCode::Size,
        _ => CloseCode::Protocol,
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_a_doubling_ceiling_and_capped() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(10);
        for _ in 0..200 {
            assert!(backoff(0, base, cap) <= base);
            assert!(backoff(1, base, cap) <= base * 2);
            assert!(backoff(3, base, cap) <= base * 8);
            assert!(backoff(40, base, cap) <= cap);
            assert!(backoff(u32::MAX, base, cap) <= cap);
        }
        // Full jitter: delays spread over the range instead of sitting at the ceiling.
        let samples: Vec<_> = (0..200).map(|_| backoff(10, base, cap)).collect();
        assert!(samples.iter().any(|d| *d < cap / 2));
        assert!(samples.iter().any(|d| *d > cap / 2));
    }
}
