//! Delivering outcome events, through the database rather than memory.
//!
//! An event is delivered first to the connection that last spoke about its order (on
//! whichever instance holds it), or, when that one is gone, to any open connection;
//! unacked events go again to every connection that opens. Every instance learns of
//! new events from a `LISTEN payment_events` (the insert trigger NOTIFYs on commit)
//! and, because a NOTIFY is lost while the listener reconnects, from a periodic scan.
//! Each delivery is claimed with a conditional UPDATE, so exactly one instance sends
//! it; an event still unacked `redeliver_after` after it was sent is claimed and sent
//! again, because a connection can die (or be dying unnoticed) with it unread, and the
//! next connection to open may have opened before the event existed. Open connections
//! are rows with a heartbeat, so an instance can tell that an event's connection lives
//! on another instance and leave it to that one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared_protocol::ServerMessage;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::protocol::error_chain;
use crate::store::{Pending, Store};

/// The connections open on this instance: where to push an event.
#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<HashMap<Uuid, mpsc::UnboundedSender<ServerMessage>>>,
}

impl Registry {
    pub fn add(&self, connection: Uuid, sender: mpsc::UnboundedSender<ServerMessage>) {
        self.lock().insert(connection, sender);
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

    fn sender(&self, connection: Uuid) -> Option<mpsc::UnboundedSender<ServerMessage>> {
        self.lock().get(&connection).cloned()
    }

    fn any(&self) -> Option<(Uuid, mpsc::UnboundedSender<ServerMessage>)> {
        self.lock().iter().next().map(|(id, s)| (*id, s.clone()))
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, mpsc::UnboundedSender<ServerMessage>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Delivery of one instance.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub instance: Uuid,
    /// A connection whose heartbeat is older than this is dead.
    pub stale_after: Duration,
    /// An event sent this long ago and still unacked is sent again.
    pub redeliver_after: Duration,
}

impl Delivery {
    /// Sends every undelivered event this instance should send.
    pub async fn dispatch(&self) {
        let pending = match self.store.undelivered(self.redeliver_after).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not read undelivered events; will retry");
                return;
            }
        };
        for Pending { event, owner } in pending {
            let target =
                match owner.and_then(|owner| self.registry.sender(owner).map(|s| (owner, s))) {
                    Some(local) => Some(local),
                    None => {
                        let owner_alive = match owner {
                            Some(owner) => self
                                .store
                                .connection_alive(owner, self.stale_after)
                                .await
                                .unwrap_or(true),
                            None => false,
                        };
                        if owner_alive {
                            continue; // its own instance delivers it
                        }
                        self.registry.any()
                    }
                };
            let Some((connection, sender)) = target else {
                continue; // no connection here: the next one to open gets it
            };
            match self.store.claim(event.event_id, self.redeliver_after).await {
                Ok(true) => {
                    tracing::info!(event_id = %event.event_id, order_id = %event.order_id, %connection, "delivering event");
                    let _ = sender.send(event.message());
                }
                Ok(false) => {} // another instance got there first
                Err(e) => tracing::warn!(error = %error_chain(&e), "could not claim an event"),
            }
        }
    }

    /// Runs until `shutdown`: wakes on NOTIFY and every `scan_interval`, refreshing
    /// this instance's connection heartbeats on each scan.
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
                    if let Err(e) = notification {
                        // PgListener reconnects on the next recv; the scan covers the gap.
                        tracing::warn!(error = %e, "event listener lost its connection");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    self.dispatch().await;
                }
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
