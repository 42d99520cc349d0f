//! The walks over open orders whose requests are (re-)sent, and the overflow of
//! requests that did not fit the outbound channel.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::ClientMessage;
use tokio::sync::Notify;

use super::PAGE;
use crate::flow;
use crate::store::{ExpiryKey, OpenKey, OpenOrder, Store};

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

/// A walk, one page at a time, over the open orders that need a request: on connect
/// (all of them), after the handle dropped requests (from the oldest dropped one) and on
/// each sweep (only those unanswered for `resend_after`, oldest first; then, with
/// `expired` set, the pages that expired that long ago, oldest expiry first).
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk {
    pub(super) stale_after: Option<Duration>,
    pub(super) after: Option<OpenKey>,
    /// A sweep past its unanswered requests: where it stands in the expired pages.
    pub(super) expired: Option<ExpiredFrom>,
}

/// The cursor of a sweep's walk over expired pages (`None`: from the oldest).
#[derive(Debug, Clone, Copy)]
pub(super) struct ExpiredFrom(pub(super) Option<ExpiryKey>);

impl Walk {
    /// A walk over every open order that needs a request, from `after`.
    pub(super) fn all_from(after: Option<OpenKey>) -> Walk {
        Walk {
            stale_after: None,
            after,
            expired: None,
        }
    }

    /// A sweep: the requests unanswered for `stale_after`, then the pages that expired
    /// that long ago.
    pub(super) fn sweep(stale_after: Duration) -> Walk {
        Walk {
            stale_after: Some(stale_after),
            after: None,
            expired: None,
        }
    }

    /// The walk after `page` (a full page of `PAGE` means more may follow): the next
    /// page, the sweep's expired pages once its requests are done, or the end.
    fn after_page(self, page: &[OpenOrder]) -> Option<Walk> {
        let full = page.len() as i64 == PAGE;
        match (self.expired, page.last()) {
            (Some(_), Some(last)) if full => Some(Walk {
                expired: Some(ExpiredFrom(last.expiry_key())),
                ..self
            }),
            (Some(_), _) => None,
            (None, Some(last)) if full => Some(Walk {
                after: Some(last.key),
                ..self
            }),
            (None, _) if self.stale_after.is_some() => Some(Walk {
                expired: Some(ExpiredFrom(None)),
                ..self
            }),
            (None, _) => None,
        }
    }
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
    let page = match (walk.stale_after, walk.expired) {
        (Some(stale), Some(ExpiredFrom(after))) => store.expired_pages(stale, after, PAGE).await,
        _ => store.open_orders(walk.stale_after, walk.after, PAGE).await,
    };
    match page {
        Ok(orders) => {
            *slot = walk.after_page(&orders);
            if !orders.is_empty() {
                tracing::info!(
                    orders = orders.len(),
                    sweep = walk.stale_after.is_some(),
                    expired_pages = walk.expired.is_some(),
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
