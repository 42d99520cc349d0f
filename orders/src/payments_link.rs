//! The one long-lived WebSocket from Orders to Payments (awc), carrying every order.
//!
//! awc is `!Send`, so the link runs on a thread of its own with its own actix system,
//! behind [`PaymentsLink`], a cloneable `Send` handle holding a channel sender. The
//! connection is one `select!` loop over frames from Payments, the outbound channel,
//! a ping every [`LinkConfig::heartbeat_interval`], the peer's silence deadline and the
//! sweeper. After any loss it reconnects with exponential backoff and full jitter,
//! forever; on every connect it re-sends the requests of open orders, so nothing
//! queued in memory matters: the database is the to-do list.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::Item;
use actix_web::web::Bytes;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use shared_protocol::{
    ClientMessage, DecodeError, MAX_MESSAGE_BYTES, Message as _, SUBPROTOCOL, ServerMessage,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, sleep_until};

use crate::flow;
use crate::metrics::Metrics;
use crate::store::Store;

/// How many requests may wait for the link; beyond that they are dropped, because
/// the sweeper and the next connect re-send them from the database anyway.
const OUTBOX_CAPACITY: usize = 4096;
/// How long a connection attempt (TCP + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timing and address of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub url: String,
    pub token: String,
    pub heartbeat_interval: Duration,
    pub peer_timeout: Duration,
    pub resend_after: Duration,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
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
    state: watch::Receiver<LinkState>,
}

/// Stops the link when dropped (or on [`LinkGuard::stop`]): the link's thread closes
/// the WebSocket with 1001 Going Away and ends.
#[derive(Debug)]
pub struct LinkGuard {
    shutdown: Arc<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PaymentsLink {
    /// Starts the link on its own thread.
    pub fn start(
        config: LinkConfig,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(PaymentsLink, LinkGuard)> {
        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("payments-link".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(run(
                    config,
                    store,
                    metrics,
                    outbox_rx,
                    state_tx,
                    shutdown_rx,
                ));
            })?;
        Ok((
            PaymentsLink {
                outbox: outbox_tx,
                state: state_rx,
            },
            LinkGuard {
                shutdown: Arc::new(shutdown_tx),
                thread: Some(thread),
            },
        ))
    }

    /// Queues a request for Payments. Never blocks: when the link is down or busy the
    /// request is dropped, since open orders are re-sent from the database.
    pub fn send(&self, message: ClientMessage) {
        if let Err(e) = self.outbox.try_send(message) {
            tracing::debug!(error = %e, "link outbox full or closed; the sweeper will re-send");
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

    /// Stops the link and waits (up to a few seconds) for its thread to end.
    pub fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
    Lost(String),
}

async fn run(
    config: LinkConfig,
    store: Store,
    metrics: Arc<Metrics>,
    mut outbox: mpsc::Receiver<ClientMessage>,
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
                failures = 0;
                let _ = state.send(LinkState::Connected);
                metrics.link_up();
                tracing::info!(url = %config.url, "connected to Payments");
                let end = Connection::new(&config, &store, &metrics)
                    .run(framed, &mut outbox, &mut shutdown)
                    .await;
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
    let client = awc::Client::builder().timeout(CONNECT_TIMEOUT).finish();
    let request = client
        .ws(config.url.as_str())
        .protocols([SUBPROTOCOL])
        .bearer_auth(&config.token)
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
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let (mut sink, mut stream) = framed.split();

        // Requests queued while the link was down are all in the database too:
        // drop them and resume from the database alone, so nothing goes out twice.
        while outbox.try_recv().is_ok() {}
        // Resume: everything still waiting for Payments, straight from the database.
        match self.store.open_orders(None).await {
            Ok(open) => {
                let requests = flow::requests_for(&open);
                tracing::info!(
                    orders = open.len(),
                    requests = requests.len(),
                    "resuming open orders"
                );
                for message in requests {
                    if let Err(why) = send(&mut sink, self.metrics, &message).await {
                        return End::Lost(why);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::error::error_chain(&e), "could not read open orders to resume; the sweeper will retry")
            }
        }

        let now = Instant::now();
        let mut heartbeat = interval_at(
            now + self.config.heartbeat_interval,
            self.config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweeper = interval_at(now + self.config.resend_after, self.config.resend_after);
        sweeper.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = now;

        loop {
            tokio::select! {
                frame = stream.next() => {
                    let frame = match frame {
                        None => return End::Lost("Payments closed the TCP connection".into()),
                        Some(Err(e)) => {
                            // Oversized frames and protocol violations end up here.
                            let reason = CloseReason { code: close_code_for(&e), description: Some(e.to_string()) };
                            let _ = sink.send(Message::Close(Some(reason))).await;
                            return End::Lost(format!("WebSocket protocol error: {e}"));
                        }
                        Some(Ok(frame)) => frame,
                    };
                    last_heard = Instant::now();
                    match self.on_frame(frame) {
                        Incoming::Nothing => {}
                        Incoming::Pong(payload) => {
                            if sink.send(Message::Pong(payload)).await.is_err() {
                                return End::Lost("could not answer a ping".into());
                            }
                        }
                        Incoming::Closed(reason) => {
                            let _ = sink.send(Message::Close(reason.clone())).await;
                            return End::Lost(format!("Payments closed the connection: {reason:?}"));
                        }
                        Incoming::TooLarge => {
                            let reason = CloseReason { code: CloseCode::Size, description: Some("message over 64 KiB".into()) };
                            let _ = sink.send(Message::Close(Some(reason))).await;
                            return End::Lost("Payments sent a message over 64 KiB".into());
                        }
                        Incoming::Message(message) => {
                            match flow::handle(self.store, self.metrics, message).await {
                                Ok(reaction) => {
                                    for reply in reaction.replies {
                                        if let Err(why) = send(&mut sink, self.metrics, &reply).await {
                                            return End::Lost(why);
                                        }
                                    }
                                }
                                Err(e) => {
                                    // Not applied, so not acked: reconnecting makes Payments
                                    // deliver it again, once the database answers.
                                    tracing::error!(error = %crate::error::error_chain(&e), "could not apply a message from Payments");
                                    let _ = sink.send(Message::Close(Some(CloseReason { code: CloseCode::Error, description: Some("storage unavailable".into()) }))).await;
                                    return End::Lost("storage error while applying a message".into());
                                }
                            }
                        }
                    }
                }
                Some(message) = outbox.recv() => {
                    if let Err(why) = send(&mut sink, self.metrics, &message).await {
                        return End::Lost(why);
                    }
                }
                _ = heartbeat.tick() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        return End::Lost("could not send a ping".into());
                    }
                }
                _ = sleep_until(last_heard + self.config.peer_timeout) => {
                    // A dead peer cannot read a close frame; just drop the socket.
                    return End::Lost(format!("no frame from Payments for {:?}", self.config.peer_timeout));
                }
                _ = sweeper.tick() => {
                    match self.store.open_orders(Some(self.config.resend_after)).await {
                        Ok(stale) if !stale.is_empty() => {
                            let requests = flow::requests_for(&stale);
                            tracing::info!(orders = stale.len(), "re-sending requests that got no answer");
                            for message in requests {
                                if let Err(why) = send(&mut sink, self.metrics, &message).await {
                                    return End::Lost(why);
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %crate::error::error_chain(&e), "sweeper could not read open orders"),
                    }
                }
                _ = shutdown.changed() => {
                    let reason = CloseReason { code: CloseCode::Away, description: Some("Orders is shutting down".into()) };
                    let _ = sink.send(Message::Close(Some(reason))).await;
                    let _ = sink.close().await;
                    return End::Shutdown;
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

async fn send<S>(sink: &mut S, metrics: &Metrics, message: &ClientMessage) -> Result<(), String>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: fmt::Display,
{
    tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "sending to Payments");
    metrics.message("out", message.type_name());
    sink.send(Message::Text(shared_protocol::encode(message).into()))
        .await
        .map_err(|e| format!("could not send {}: {e}", message.type_name()))
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
