//! The link's keyset walks over the open orders that need a request: oldest first over
//! unanswered requests (on connect, after dropped requests, and in each sweep), and,
//! in each sweep, oldest expiry first over the pages that expired long ago.
//!
//! Every walk reads its rows through a partial index whose range condition is the walk
//! itself (`orders_pending`, `orders_cancel_requested`, `orders_expired_pages`), so a
//! page reads the rows it returns and few others, however many orders are open: the
//! walks used to share one index of every open order and filter the stale ones out,
//! so a sweep read every order awaiting its customer's payment, every 30 s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::{Amount, Currency, OrderId};
use sqlx::PgConnection;
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
    /// When its payment page expires, if it has one: where it stands in the walk over
    /// expired pages.
    pub expires_at: Option<DateTime<Utc>>,
}

impl OpenOrder {
    /// Where the order stands in the walk over expired pages (`None` without a page).
    pub fn expiry_key(&self) -> Option<ExpiryKey> {
        self.expires_at.map(|expires_at| ExpiryKey {
            expires_at,
            id: self.key.id,
        })
    }
}

/// Where an order stands in the link's oldest-first walks over open orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenKey {
    pub created_at: DateTime<Utc>,
    pub id: OrderId,
}

/// Where an order stands in the walk over expired payment pages, oldest expiry first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpiryKey {
    pub expires_at: DateTime<Utc>,
    pub id: OrderId,
}

/// An `OpenOrder`'s row, as both walks read it.
struct OpenRow {
    id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    created_at: DateTime<Utc>,
    cancel_requested: bool,
    payment_expires_at: Option<DateTime<Utc>>,
}

impl TryFrom<OpenRow> for OpenOrder {
    type Error = StoreError;
    fn try_from(r: OpenRow) -> Result<OpenOrder, StoreError> {
        Ok(OpenOrder {
            key: OpenKey {
                created_at: r.created_at,
                id: OrderId(r.id),
            },
            amount: parse_amount(r.amount)?,
            currency: parse_currency(&r.currency)?,
            status: parse_status(&r.status)?,
            cancel_requested: r.cancel_requested,
            expires_at: r.payment_expires_at,
        })
    }
}

impl Store {
    /// One page, oldest first, of the open orders the link must (re-)send a request
    /// for: `pending_payment` orders and unconfirmed cancels; with `stale_after`, only
    /// those unanswered that long. `after` is the key of the last order of the previous
    /// page. See [`Store::open_orders_in`].
    pub async fn open_orders(
        &self,
        stale_after: Option<Duration>,
        after: Option<OpenKey>,
        limit: i64,
    ) -> Result<Vec<OpenOrder>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::open_orders_in(&mut conn, stale_after, after, limit).await
    }

    /// [`Store::open_orders`] on `conn`: the pending orders through `orders_pending`,
    /// the unconfirmed cancels through `orders_cancel_requested`, each a range of its
    /// index from the cursor (and, in a sweep, up to the orders created `stale_after`
    /// ago: an order updated since is the only kind read and left out).
    pub async fn open_orders_in(
        conn: &mut PgConnection,
        stale_after: Option<Duration>,
        after: Option<OpenKey>,
        limit: i64,
    ) -> Result<Vec<OpenOrder>, StoreError> {
        let stale_secs = stale_after.map(|d| d.as_secs_f64());
        let (after_created, after_id) = match after {
            Some(key) => (Some(key.created_at), key.id.0),
            None => (None, Uuid::nil()),
        };
        // Conditions an index can take: a row comparison from the cursor, never
        // `$2 IS NULL OR …`; a bound by `now()` (stable), not `clock_timestamp()`
        // (volatile, which no index condition may use); `infinity` when not sweeping.
        let rows = sqlx::query_as!(
            OpenRow,
            r#"SELECT id AS "id!", amount AS "amount!", currency AS "currency!",
                   status AS "status!", created_at AS "created_at!",
                   cancel_requested AS "cancel_requested!", payment_expires_at
             FROM (
               (SELECT id, amount, currency, status, created_at, payment_expires_at,
                       cancel_requested_at IS NOT NULL AS cancel_requested
                FROM orders
                WHERE status = 'pending_payment' AND parked_at IS NULL
                  AND (created_at, id) > (coalesce($2::timestamptz, '-infinity'), $3)
                  AND created_at < coalesce(now() - make_interval(secs => $1), 'infinity')
                  AND updated_at < coalesce(now() - make_interval(secs => $1), 'infinity')
                ORDER BY created_at, id
                LIMIT $4)
               UNION
               (SELECT id, amount, currency, status, created_at, payment_expires_at, true
                FROM orders
                WHERE cancel_requested_at IS NOT NULL
                  AND status IN ('pending_payment', 'awaiting_payment') AND parked_at IS NULL
                  AND (created_at, id) > (coalesce($2::timestamptz, '-infinity'), $3)
                  AND created_at < coalesce(now() - make_interval(secs => $1), 'infinity')
                  AND cancel_requested_at
                      < coalesce(now() - make_interval(secs => $1), 'infinity')
                ORDER BY created_at, id
                LIMIT $4)
             ) AS open
             ORDER BY created_at, id
             LIMIT $4"#,
            stale_secs,
            after_created,
            after_id,
            limit,
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(OpenOrder::try_from).collect()
    }

    /// One page, oldest expiry first, of the `awaiting_payment` orders whose page
    /// expired `stale_after` ago: Payments must have decided their outcome by then, and
    /// it may have been lost, so the sweep asks again. See [`Store::expired_pages_in`].
    pub async fn expired_pages(
        &self,
        stale_after: Duration,
        after: Option<ExpiryKey>,
        limit: i64,
    ) -> Result<Vec<OpenOrder>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::expired_pages_in(&mut conn, stale_after, after, limit).await
    }

    /// [`Store::expired_pages`] on `conn`: a range of `orders_expired_pages`, from the
    /// cursor to the pages that expired `stale_after` ago.
    pub async fn expired_pages_in(
        conn: &mut PgConnection,
        stale_after: Duration,
        after: Option<ExpiryKey>,
        limit: i64,
    ) -> Result<Vec<OpenOrder>, StoreError> {
        let (after_expiry, after_id) = match after {
            Some(key) => (Some(key.expires_at), key.id.0),
            None => (None, Uuid::nil()),
        };
        let rows = sqlx::query_as!(
            OpenRow,
            r#"SELECT id, amount, currency, status, created_at, payment_expires_at,
                   cancel_requested_at IS NOT NULL AS "cancel_requested!"
             FROM orders
             WHERE status = 'awaiting_payment' AND parked_at IS NULL
               AND (payment_expires_at, id)
                   > (coalesce($2::timestamptz, '-infinity'), $3)
               AND payment_expires_at < now() - make_interval(secs => $1)
             ORDER BY payment_expires_at, id
             LIMIT $4"#,
            stale_after.as_secs_f64(),
            after_expiry,
            after_id,
            limit,
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(OpenOrder::try_from).collect()
    }
}
