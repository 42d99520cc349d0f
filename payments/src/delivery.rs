//! Delivering outcome events, through the database rather than memory.
//!
//! An event is delivered first to the connection that last spoke about its order (on
//! whichever instance holds it), or, when that one is gone, to any open connection;
//! unacked events go again to every connection that opens (see `ws.rs`). Every
//! instance learns of new events from a `LISTEN payment_events` (the insert trigger
//! NOTIFYs on commit) and, because a NOTIFY is lost while the listener reconnects, from
//! a periodic scan. NOTIFYs are coalesced: the ones already queued are drained before a
//! dispatch, so a burst of a thousand costs a handful of dispatches.
//!
//! A dispatch claims a batch of events with ONE statement (`FOR UPDATE SKIP LOCKED`,
//! see [`Store::claim`]), so exactly one instance sends each delivery; an event still
//! unacked `redeliver_after` after it was sent is claimed and sent again, because a
//! connection can die (or be dying unnoticed) with it unread. Open connections are rows
//! with a heartbeat, so an instance can tell that an event's connection lives on
//! another instance and leave it to that one.
//!
//! A send counts a delivery attempt, in the statement that claims it (or, for a new
//! connection, that resumes it), when the last counted one is `redeliver_after` old
//! ([`Attempts`]): a link that flaps resends, but counts once per `redeliver_after`.
//! An event still unacked after `max` attempts (an outcome for an order Orders does
//! not know is never acked) is dead-lettered by the claim or resume that would have
//! counted one more: `dead_at` is set, it leaves the
//! scans' partial index, an ERROR is logged and `payments_events_dead_lettered_total`
//! counts it. Only an operator's retry (`POST /admin/events/{id}/retry`) sends it again.
//!
//! Memory is bounded: each connection's outbox is a bounded channel, and events take
//! at most [`EVENT_ROOM`] of it (the rest is kept for replies). A dispatch claims no
//! more than the room there is; an event that finds no room is given back unsent and
//! stays in the database, the queue, until a connection drains its outbox and wakes
//! the dispatcher again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{Attempts, Claimed, Dead, Pending, SCAN_LIMIT, Store};
use service_kit::error_chain;

/// Capacity of a connection's outbox (messages waiting for its writer).
pub const OUTBOX_CAPACITY: usize = 2048;
/// Slots of the outbox kept free for replies: events are only queued while more than
/// this is free, so events never hold up answering (at most
/// `OUTBOX_CAPACITY - REPLY_ROOM` of them wait in memory per connection).
pub const REPLY_ROOM: usize = 1024;
/// The most events one connection's outbox holds.
pub const EVENT_ROOM: usize = OUTBOX_CAPACITY - REPLY_ROOM;

/// What a connection's writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded protocol message.
    Text(String),
    Ping,
    Pong(actix_web::web::Bytes),
}

/// The sending end of a connection's outbox.
pub type Outbox = mpsc::Sender<Outgoing>;

/// The connections open on this instance: where to push an event.
#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<HashMap<Uuid, Outbox>>,
}

impl Registry {
    pub fn add(&self, connection: Uuid, outbox: Outbox) {
        self.lock().insert(connection, outbox);
    }

    pub fn remove(&self, connection: Uuid) {
        self.lock().remove(&connection);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Vec<(Uuid, Outbox)> {
        self.lock()
            .iter()
            .map(|(id, outbox)| (*id, outbox.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Outbox>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Room for events in an outbox.
fn event_room(outbox: &Outbox) -> usize {
    outbox.capacity().saturating_sub(REPLY_ROOM)
}

/// Queues an event if the outbox has room for events; never waits.
fn offer(outbox: &Outbox, text: &str) -> bool {
    event_room(outbox) > 0 && outbox.try_send(Outgoing::Text(text.to_owned())).is_ok()
}

/// Queues each claimed event on its order's connection, or on any with room when that
/// one is not here; returns the ids of the events that found no room.
fn queue(targets: &[(Uuid, Outbox)], send: Vec<Pending>) -> Vec<i64> {
    let mut unsent = Vec::new();
    for Pending { event, owner } in send {
        // With traces on, the delivery is a span of the trace that made the event.
        let text = event.frame();
        let sent = match owner.and_then(|o| targets.iter().find(|(id, _)| *id == o)) {
            // Its order's connection is here: it goes there or waits for room.
            Some((connection, outbox)) => offer(outbox, &text).then_some(*connection),
            None => targets
                .iter()
                .find(|(_, outbox)| offer(outbox, &text))
                .map(|(connection, _)| *connection),
        };
        match sent {
            Some(connection) => {
                tracing::debug!(event_id = %event.event_id, order_id = %event.order_id, %connection, "delivering event")
            }
            None => unsent.push(event.event_id.0),
        }
    }
    unsent
}

/// Delivery of one instance.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub instance: Uuid,
    /// A connection whose heartbeat is older than this is dead.
    pub stale_after: Duration,
    /// An event sent this long ago and still unacked is sent again; what counts as a
    /// delivery attempt, and how many an event gets before it is dead-lettered.
    pub attempts: Attempts,
    pub metrics: Arc<Metrics>,
    /// Wakes the dispatcher (coalesced: many wakes before it runs make one dispatch).
    pub wake: Arc<Notify>,
    /// Set when a dispatch left events in the database for want of room.
    pub starved: Arc<AtomicBool>,
}

impl Delivery {
    pub fn new(
        store: Store,
        instance: Uuid,
        stale_after: Duration,
        redeliver_after: Duration,
        max_attempts: u32,
        metrics: Arc<Metrics>,
    ) -> Delivery {
        Delivery {
            store,
            registry: Arc::new(Registry::default()),
            instance,
            stale_after,
            attempts: Attempts {
                max: i32::try_from(max_attempts).unwrap_or(i32::MAX).max(1),
                redeliver_after,
            },
            metrics,
            wake: Arc::new(Notify::new()),
            starved: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A connection's writer made room in its outbox: if a dispatch went without room,
    /// run another.
    pub fn room_freed(&self) {
        if self.starved.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Reports events just dead-lettered (by a claim or a resume): an ERROR each, and
    /// the counter.
    pub fn dead_lettered(&self, dead: &[Dead]) {
        for Dead { event, attempts } in dead {
            tracing::error!(
                event_id = %event.event_id,
                order_id = %event.order_id,
                attempts,
                "outcome event dead-lettered: sent {attempts} times without an ack; it is \
                 not sent again until an operator retries it (POST /admin/events/{}/retry)",
                event.event_id,
            );
        }
        self.metrics.dead_lettered(dead.len());
    }

    /// Sends the events this instance should send, as far as its connections have room:
    /// claims in batches until nothing more qualifies or the room is used up.
    pub async fn dispatch(&self) {
        loop {
            let targets = self.registry.snapshot();
            if targets.is_empty() {
                return; // the next connection to open gets every unacked event
            }
            let room: usize = targets.iter().map(|(_, outbox)| event_room(outbox)).sum();
            if room == 0 {
                self.starved.store(true, Ordering::Release);
                return;
            }
            let limit = room.min(SCAN_LIMIT as usize);
            let Some(Claimed { send, dead }) = self.claim(&targets, limit).await else {
                return;
            };
            let count = send.len() + dead.len();
            if !dead.is_empty() {
                self.dead_lettered(&dead);
            }
            let unsent = queue(&targets, send);
            if !unsent.is_empty() {
                self.give_back(&unsent).await;
                return;
            }
            if count < limit {
                return;
            }
        }
    }

    /// Claims up to `limit` events for the connections open here (a failure is logged).
    async fn claim(&self, targets: &[(Uuid, Outbox)], limit: usize) -> Option<Claimed> {
        let local: Vec<Uuid> = targets.iter().map(|(id, _)| *id).collect();
        match self
            .store
            .claim(&local, self.stale_after, self.attempts, limit as i64)
            .await
        {
            Ok(claimed) => Some(claimed),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not claim events; will retry");
                None
            }
        }
    }

    /// Gives claimed events that found no room back to the database, and marks the
    /// dispatcher starved so that freed room wakes it.
    async fn give_back(&self, unsent: &[i64]) {
        self.starved.store(true, Ordering::Release);
        if let Err(e) = self.store.release(unsent).await {
            // Claimed but unsent: sent again after redeliver_after, never lost.
            tracing::warn!(error = %error_chain(&e), "could not give back unsent events");
        }
    }

    /// Runs until `shutdown`: wakes on NOTIFY (coalesced), on [`Delivery::room_freed`]
    /// and every `scan_interval`, refreshing this instance's connection heartbeats on
    /// each scan.
    pub async fn run(self, scan_interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut listener = match PgListener::connect_with(self.store.pool()).await {
            Ok(mut listener) => match listener.listen("payment_events").await {
                Ok(()) => Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; delivering by scan only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no listener connection; delivering by scan only");
                None
            }
        };
        let mut scan = tokio::time::interval(scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                notification = recv(&mut listener) => {
                    match notification {
                        // Every NOTIFY already here is covered by the one dispatch below.
                        Ok(()) => drain(&mut listener),
                        Err(e) => {
                            // PgListener reconnects on the next recv; the scan covers the gap.
                            tracing::warn!(error = %e, "event listener lost its connection");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    self.dispatch().await;
                }
                _ = self.wake.notified() => self.dispatch().await,
                _ = scan.tick() => {
                    if let Err(e) = self.store.heartbeat(self.instance, self.stale_after).await {
                        tracing::warn!(error = %error_chain(&e), "could not refresh connection heartbeats");
                    }
                    self.dispatch().await;
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Err(e) = self.store.unregister_instance(self.instance).await {
            tracing::warn!(error = %error_chain(&e), "could not unregister this instance's connections");
        }
    }
}

async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

fn drain(listener: &mut Option<PgListener>) {
    if let Some(listener) = listener {
        while listener.next_buffered().is_some() {}
    }
}
