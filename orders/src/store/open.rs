//! The link's oldest-first keyset walk over the open orders.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::{Amount, Currency, OrderId};
use uuid::Uuid;

use super::{Store, StoreError, parse_amount, parse_currency, parse_status};
use crate::domain::OrderStatus;

/// An open order the link must (re-)send a request for.
#[derive(Debug, Clone)]
pub struct OpenOrder {
    pub key: OpenKey,
    pub amount: Amount,
    pub currency: Currency,
    pub status: OrderStatus,
    pub cancel_requested: bool,
}

/// Where an order stands in the link's oldest-first walks over open orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenKey {
    pub created_at: DateTime<Utc>,
    pub id: OrderId,
}
impl Store {
    /// One page, oldest first, of the open orders the link must (re-)send a request
    /// for: `pending_payment` orders and unconfirmed cancels; with `stale_after`, only
    /// those unanswered that long, plus `awaiting_payment` orders whose page expired that
    /// long ago (Payments must have decided by then: the outcome may have been lost).
    /// `after` is the key of the last order of the previous page.
    pub async fn open_orders(
        &self,
        stale_after: Option<Duration>,
        after: Option<OpenKey>,
        limit: i64,
    ) -> Result<Vec<OpenOrder>, StoreError> {
        let stale_secs = stale_after.map(|d| d.as_secs_f64());
        let (after_created, after_id) = match after {
            Some(key) => (Some(key.created_at), key.id.0),
            None => (None, Uuid::nil()),
        };
        let rows = sqlx::query!(
            r#"SELECT id, amount, currency, status, created_at,
                      cancel_requested_at IS NOT NULL AS "cancel_requested!"
             FROM orders
             WHERE status IN ('pending_payment', 'awaiting_payment') AND parked_at IS NULL
               -- Always a row comparison, never `$2 IS NULL OR …`: so it is an index
               -- condition on orders_open (created_at, id) in the generic plan, and a
               -- page starts at its cursor instead of re-reading the pages before it.
               AND (created_at, id) > (coalesce($2::timestamptz, '-infinity'), $3)
               AND (
                 (status = 'pending_payment' AND ($1::float8 IS NULL
                     OR updated_at < clock_timestamp() - make_interval(secs => $1)))
                 OR (cancel_requested_at IS NOT NULL AND ($1::float8 IS NULL
                     OR cancel_requested_at < clock_timestamp() - make_interval(secs => $1)))
                 OR ($1::float8 IS NOT NULL
                     AND payment_expires_at < clock_timestamp() - make_interval(secs => $1)))
             ORDER BY created_at, id
             LIMIT $4"#,
            stale_secs,
            after_created,
            after_id,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(OpenOrder {
                    key: OpenKey {
                        created_at: r.created_at,
                        id: OrderId(r.id),
                    },
                    amount: parse_amount(r.amount)?,
                    currency: parse_currency(&r.currency)?,
                    status: parse_status(&r.status)?,
                    cancel_requested: r.cancel_requested,
                })
            })
            .collect()
    }
}
