//! The walks over open orders whose requests are (re-)sent, and the overflow of
//! requests that did not fit the outbound channel.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::ClientMessage;
use tokio::sync::Notify;

use super::PAGE;
use crate::flow;
use crate::store::{OpenKey, Store};

/// What the handle dropped because the outbox was full: the creation time of the oldest
/// such order, and a wake-up for the link.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    pub(super) oldest: Mutex<Option<DateTime<Utc>>>,
    pub(super) notify: Notify,
}

impl Overflow {
    pub(super) fn record(&self, created_at: DateTime<Utc>) {
        let mut oldest = self.oldest.lock().unwrap_or_else(|e| e.into_inner());
        *oldest = Some(oldest.map_or(created_at, |o| o.min(created_at)));
        drop(oldest);
        self.notify.notify_one();
    }

    pub(super) fn take(&self) -> Option<DateTime<Utc>> {
        self.oldest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) async fn notified(&self) {
        self.notify.notified().await
    }
}

/// A walk, oldest first and one page at a time, over the open orders that need a
/// request: on connect (all of them), after the handle dropped requests (from the oldest
/// dropped one) and on each sweep (only those unanswered for `resend_after`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk {
    pub(super) stale_after: Option<Duration>,
    pub(super) after: Option<OpenKey>,
}

/// The next page of requests of the active walk (the catch-up before the sweep); ends
/// a walk on its last page, or on a database error (the sweeper tries again later).
pub(super) async fn next_page(
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
