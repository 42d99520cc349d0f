//! The [`Watcher`]: one task that tells each flow when its order has its page or is
//! fulfilled, from one bounded query per period on the Orders database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::observe::Observer;
use crate::stats::Recorder;

enum Want {
    Page(oneshot::Sender<(String, DateTime<Utc>)>),
    Fulfilled(oneshot::Sender<DateTime<Utc>>),
}

/// Tells each flow when its order has its page or is fulfilled, from one bounded
/// query per period on the Orders database.
pub struct Watcher {
    waiting: Arc<Mutex<HashMap<Uuid, Want>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn start(obs: Observer, period: Duration, rec: Arc<Recorder>) -> Watcher {
        let waiting: Arc<Mutex<HashMap<Uuid, Want>>> = Arc::default();
        let map = waiting.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ids: Vec<Uuid> = lock(&map).keys().copied().collect();
                for chunk in ids.chunks(5_000) {
                    let rows = match obs.orders_by_id(chunk).await {
                        Ok(rows) => rows,
                        Err(_) => {
                            rec.error("watcher: database error");
                            continue;
                        }
                    };
                    let mut map = lock(&map);
                    for row in rows {
                        let ready = match map.get(&row.id) {
                            Some(Want::Page(_)) => {
                                row.payment_url.is_some() || row.status == "cancelled"
                            }
                            Some(Want::Fulfilled(_)) => {
                                row.issued_at.is_some() || row.status == "cancelled"
                            }
                            None => false,
                        };
                        if !ready {
                            continue;
                        }
                        // A cancelled order drops the sender: the flow counts an error.
                        match map.remove(&row.id) {
                            Some(Want::Page(tx)) if row.status == "awaiting_payment" => {
                                let url = row.payment_url.clone().unwrap_or_default();
                                let _ = tx.send((url, row.updated_at));
                            }
                            Some(Want::Fulfilled(tx)) => {
                                if let Some(at) = row.issued_at {
                                    let _ = tx.send(at);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        Watcher { waiting, task }
    }

    /// The page URL and when it was recorded, or `None` after `timeout`.
    pub async fn page(
        &self,
        id: Uuid,
        timeout: Duration,
    ) -> Result<(String, DateTime<Utc>), &'static str> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, Want::Page(tx));
        self.wait(id, rx, timeout).await
    }

    /// When the order's invoice was issued, or `None` after `timeout`.
    pub async fn fulfilled(
        &self,
        id: Uuid,
        timeout: Duration,
    ) -> Result<DateTime<Utc>, &'static str> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, Want::Fulfilled(tx));
        self.wait(id, rx, timeout).await
    }

    async fn wait<T>(
        &self,
        id: Uuid,
        rx: oneshot::Receiver<T>,
        timeout: Duration,
    ) -> Result<T, &'static str> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("order cancelled"),
            Err(_) => {
                lock(&self.waiting).remove(&id);
                Err("timeout")
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
