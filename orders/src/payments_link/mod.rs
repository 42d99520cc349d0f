//! The one long-lived WebSocket from Orders to Payments (awc), carrying every order.
//!
//! awc is `!Send`, so the link runs on a thread of its own with its own actix system,
//! behind [`PaymentsLink`], a cloneable `Send` handle holding a channel sender. The
//! connection is one `select!` loop over frames from Payments, the outbound channel,
//! a ping every [`LinkConfig::heartbeat_interval`], the peer's silence deadline and the
//! sweeper. After any loss it reconnects with exponential backoff and full jitter,
//! forever; on every connect it re-sends the requests of open orders, so nothing
//! queued in memory matters: the database is the to-do list.
//!
//! The parts: `connect` opens the socket, `connection` runs one connection's loop,
//! `pipeline` applies what Payments sends, `writer` writes frames, `walk` pages
//! through the open orders to (re-)send.

mod connect;
mod connection;
mod pipeline;
mod walk;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use awc::ws::CloseReason;
use chrono::{DateTime, Utc};
use rand::Rng;
use shared_protocol::{ClientMessage, Message as _, TraceContext};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep};

use crate::metrics::Metrics;
use crate::store::Store;
use connect::connect;
use connection::Connection;
use walk::Overflow;

/// How many batches of messages from Payments are applied at once, each in its own
/// transaction on a pool connection. One: reading, writing and the database still
/// overlap (the link keeps reading while a batch commits, and the next batch holds
/// everything that arrived meanwhile), and on a machine whose cores PostgreSQL and
/// both services share, fewer and larger batches cost less CPU per message than
/// more concurrent ones. Measured at 1,000 flows/s open loop (bench/README.md): p99
/// create → page 46.5 ms with 1, 50.2 ms with 2, 57.2 ms with 4, 104 ms with 16
/// (medians of 2 to 7 interleaved runs); resume of 100,000 was no slower (7.3 s with
/// 1, 7.7 s with 4, one run each). Payments, too, applies one batch at a time per
/// connection.
const MAX_IN_FLIGHT: usize = 1;
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
/// How long the writer may take to send what is queued and the close frame, and
/// Payments to answer it (within [`STOP_WAIT`]).
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// A connection that stayed up this long resets the reconnect backoff; one that drops
/// sooner counts as a failure, so a peer that accepts and then fails cannot make the
/// link reconnect in a tight loop.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long [`LinkGuard::stop`] waits for the link's thread: the background part of
/// the stop's budget (`service_kit::startup::STOP_BUDGET`).
const STOP_WAIT: Duration = service_kit::startup::BACKGROUND_STOP;
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
    /// For `wss://`: a CA trusted besides the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// For `wss://` to a Payments that requires one: the certificate and key presented.
    pub client_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
    outbox: mpsc::Sender<Outgoing>,
    overflow: Arc<Overflow>,
    state: watch::Receiver<LinkState>,
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
                let inbound = Inbound {
                    outbox: outbox_rx,
                    overflow: link_overflow,
                };
                let link = std::panic::AssertUnwindSafe(move || {
                    let system = actix_rt::System::new();
                    let link = Link {
                        config,
                        store,
                        metrics,
                        inbound,
                        state: state_tx,
                        shutdown: shutdown_rx,
                    };
                    system.block_on(link.run());
                });
                // A panic ends the thread (and drops the state's sender, which is how
                // `died` sees it); say so where operators look.
                if let Err(panic) = std::panic::catch_unwind(link) {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %why, "the payments link's thread died: no order reaches Payments until the service restarts (/healthz answers 503)");
                }
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
    ///
    /// With traces on, a `send` span (a child of the caller's) stands for the request,
    /// and the message carries its context to Payments (in an unsampled trace, the
    /// caller's context, unsampled, and no span).
    pub fn send(&self, message: ClientMessage, created_at: DateTime<Utc>) {
        let trace = send_span_context(&message);
        match self.outbox.try_send(Outgoing { message, trace }) {
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

    /// Whether the link's thread ended without being asked to (a panic): the link does
    /// not come back by itself, so the process is not healthy.
    pub fn died(&self) -> bool {
        self.state.has_changed().is_err() && self.state() != LinkState::Stopped
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

    /// Stops the link and waits, at most `STOP_WAIT`, for its thread to end.
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

/// A request from the handle, with the trace context of the span that sent it.
struct Outgoing {
    message: ClientMessage,
    trace: Option<TraceContext>,
}

/// The context of a `send` span for `message`, a child of the current span: `None`,
/// and no span, when traces are off; in an unsampled trace, no span and the current
/// span's context ([`service_kit::trace_context::traced_with_context`]).
fn send_span_context(message: &ClientMessage) -> Option<TraceContext> {
    service_kit::trace_context::traced_with_context(|| {
        tracing::info_span!(
            "send",
            otel.name = format!("send {}", message.type_name()),
            order_id = message.order_id().map(|id| id.to_string()),
        )
    })
    .context
}

/// What reaches the link from the handle.
struct Inbound {
    outbox: mpsc::Receiver<Outgoing>,
    overflow: Arc<Overflow>,
}

/// The link's thread: its configuration, the store and metrics, and its ends of the
/// handle's channels.
struct Link {
    config: LinkConfig,
    store: Store,
    metrics: Arc<Metrics>,
    inbound: Inbound,
    state: watch::Sender<LinkState>,
    shutdown: watch::Receiver<bool>,
}

impl Link {
    /// Connects, serves the connection until it ends, and reconnects after a backoff,
    /// until asked to stop.
    async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut attempt: u64 = 0;
        while !*self.shutdown.borrow() {
            attempt += 1;
            tracing::info!(attempt, url = %self.config.url, "connecting to Payments");
            let connected = tokio::select! {
                result = connect(&self.config) => result,
                _ = self.shutdown.changed() => break,
            };
            match connected {
                Ok(framed) => {
                    let since = Instant::now();
                    if let End::Shutdown = self.serve(framed).await {
                        break;
                    }
                    failures = if since.elapsed() >= HEALTHY_AFTER {
                        0
                    } else {
                        failures.saturating_add(1)
                    };
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(attempt, error = %e, "could not connect to Payments");
                }
            }
            if !self.pause(failures).await {
                break;
            }
        }
        let _ = self.state.send(LinkState::Stopped);
        tracing::info!("payments link stopped");
    }

    /// Serves one connection; the link's state and metrics say it is up meanwhile.
    async fn serve(&mut self, framed: connect::Framed) -> End {
        // The line first: whoever sees the state Connected finds it already logged.
        tracing::info!(url = %self.config.url, "connected to Payments");
        let _ = self.state.send(LinkState::Connected);
        self.metrics.link_up();
        let end = Connection::new(&self.config, &self.store, &self.metrics)
            .run(
                framed,
                &mut self.inbound.outbox,
                &self.inbound.overflow,
                &mut self.shutdown,
            )
            .await;
        let _ = self.state.send(LinkState::Connecting);
        self.metrics.link_down();
        if let End::Lost(why) = &end {
            tracing::warn!(reason = %why, "lost the connection to Payments")
        }
        end
    }

    /// Waits the backoff after `failures` failures; false when asked to stop meanwhile.
    async fn pause(&mut self, failures: u32) -> bool {
        let delay = backoff(
            failures,
            self.config.reconnect_base,
            self.config.reconnect_cap,
        );
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to Payments after a delay"
        );
        tokio::select! {
            _ = sleep(delay) => true,
            _ = self.shutdown.changed() => false,
        }
    }
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
