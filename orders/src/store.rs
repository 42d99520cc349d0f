//! All the SQL of the Orders service, in one place.
//!
//! Every state change is one conditional `UPDATE … WHERE status IN (…)`: the database,
//! not Rust, decides whether a transition still applies, so concurrent or repeated
//! messages cannot apply one twice. Zero rows affected is a normal answer. A fulfilled
//! order gets its invoice in the same transaction as the status change.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::{CancelReason, OrderId, PaymentId, PaymentOutcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Invoice, NewOrder, Order, OrderStatus, invoice_number};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the database")]
    Open(#[from] service_kit::database::OpenError),
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    #[error("row holds a value the code does not know: {0}")]
    Corrupt(String),
}

/// The order store: a connection pool on this service's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

/// The answer to an insert with an optional idempotency key.
#[derive(Debug)]
pub enum Inserted {
    /// A new order.
    Created(Order),
    /// The key was used before with the same request: the first order.
    Replayed(Order),
    /// The key was used before with another request.
    KeyReused,
}

/// The answer to a cancel request from the API.
#[derive(Debug)]
pub enum CancelRequest {
    /// Recorded; the link will ask Payments.
    Requested(Order),
    /// The order is already fulfilled or cancelled.
    Final(Order),
    NotFound,
}

/// What the link should do after Payments offered methods.
#[derive(Debug, PartialEq, Eq)]
pub enum MethodChoice {
    /// Select this method (the first offered, or the one chosen earlier).
    Select(String),
    /// The order has moved on (page known, or final): nothing to do.
    NotPending(OrderStatus),
    UnknownOrder,
}

/// What applying a `payment_state` event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The order moved to its final state (with an invoice when fulfilled).
    Transitioned {
        status: OrderStatus,
        invoice: Option<String>,
    },
    /// The order was already final: nothing changed.
    AlreadyFinal(OrderStatus),
    UnknownOrder,
}

/// What recording a payment page did.
#[derive(Debug, PartialEq, Eq)]
pub enum PageRecorded {
    /// The order now awaits payment at this page.
    Recorded,
    /// Nothing changed: the same page again, or the order is final.
    Unchanged(OrderStatus),
    UnknownOrder,
}

/// An open order the link must (re-)send a request for.
#[derive(Debug, Clone)]
pub struct OpenOrder {
    pub key: OpenKey,
    pub amount: i64,
    pub currency: String,
    pub status: OrderStatus,
    pub cancel_requested: bool,
}

/// Where an order stands in the link's oldest-first walks over open orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenKey {
    pub created_at: DateTime<Utc>,
    pub id: OrderId,
}

/// One page of `GET /orders`.
#[derive(Debug)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// The cursor of the next page, when there is one.
    pub next: Option<OrderId>,
}

/// An `orders` row as the API's queries read it.
struct OrderRow {
    id: Uuid,
    amount: i64,
    currency: String,
    description: Option<String>,
    status: String,
    payment_method: Option<String>,
    payment_url: Option<String>,
    cancel_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;
    fn try_from(r: OrderRow) -> Result<Order, StoreError> {
        Ok(Order {
            id: OrderId(r.id),
            amount: r.amount,
            currency: r.currency,
            description: r.description,
            status: parse_status(&r.status)?,
            payment_method: r.payment_method,
            payment_url: r.payment_url,
            cancel_reason: r.cancel_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn parse_status(s: &str) -> Result<OrderStatus, StoreError> {
    OrderStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("order status {s:?}")))
}

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        let pool =
            service_kit::database::open(database_url, &sqlx::migrate!("../migrations/orders"))
                .await?;
        Ok(Store { pool })
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a new order in `pending_payment`, honouring an idempotency key.
    pub async fn insert_order(
        &self,
        new: &NewOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let inserted = sqlx::query_as!(
            OrderRow,
            "INSERT INTO orders (id, amount, currency, description, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING id, amount, currency, description, status, payment_method, \
                 payment_url, cancel_reason, created_at, updated_at",
            Uuid::new_v4(),
            new.amount.minor(),
            new.currency.as_str(),
            new.description.as_deref(),
            idempotency_key,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = inserted {
            return Ok(Inserted::Created(row.try_into()?));
        }
        // Only a key conflict skips the insert: the key is set.
        let existing = sqlx::query_as!(
            OrderRow,
            "SELECT id, amount, currency, description, status, payment_method, payment_url, \
                 cancel_reason, created_at, updated_at \
             FROM orders WHERE idempotency_key = $1",
            idempotency_key,
        )
        .fetch_one(&self.pool)
        .await?;
        let same = existing.amount == new.amount.minor()
            && existing.currency == new.currency.as_str()
            && existing.description == new.description;
        Ok(if same {
            Inserted::Replayed(existing.try_into()?)
        } else {
            Inserted::KeyReused
        })
    }

    pub async fn order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query_as!(
            OrderRow,
            "SELECT id, amount, currency, description, status, payment_method, payment_url, \
                 cancel_reason, created_at, updated_at \
             FROM orders WHERE id = $1",
            id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(Order::try_from).transpose()
    }

    /// Orders newest first, optionally of one status, after the cursor `after`.
    /// Returns `None` when `after` names no order.
    pub async fn list(
        &self,
        status: Option<OrderStatus>,
        limit: u32,
        after: Option<OrderId>,
    ) -> Result<Option<OrderPage>, StoreError> {
        let cursor = match after {
            None => None,
            Some(id) => {
                let found = sqlx::query!("SELECT created_at, id FROM orders WHERE id = $1", id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                match found {
                    None => return Ok(None),
                    Some(row) => Some((row.created_at, row.id)),
                }
            }
        };
        let rows = sqlx::query_as!(
            OrderRow,
            "SELECT id, amount, currency, description, status, payment_method, payment_url, \
                 cancel_reason, created_at, updated_at \
             FROM orders \
             WHERE ($1::text IS NULL OR status = $1) \
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid)) \
             ORDER BY created_at DESC, id DESC \
             LIMIT $4",
            status.map(OrderStatus::as_str),
            cursor.map(|c| c.0),
            cursor.map(|c| c.1),
            i64::from(limit) + 1,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut orders = rows
            .into_iter()
            .map(Order::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if orders.len() > limit as usize {
            orders.truncate(limit as usize);
            orders.last().map(|o| o.id)
        } else {
            None
        };
        Ok(Some(OrderPage { orders, next }))
    }

    /// Records that the customer wants to cancel an open order.
    pub async fn request_cancel(&self, id: OrderId) -> Result<CancelRequest, StoreError> {
        let row = sqlx::query_as!(
            OrderRow,
            "UPDATE orders SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp()) \
             WHERE id = $1 AND status IN ('pending_payment', 'awaiting_payment') \
             RETURNING id, amount, currency, description, status, payment_method, \
                 payment_url, cancel_reason, created_at, updated_at",
            id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(CancelRequest::Requested(row.try_into()?));
        }
        Ok(match self.order(id).await? {
            Some(order) => CancelRequest::Final(order),
            None => CancelRequest::NotFound,
        })
    }

    pub async fn invoice(&self, order_id: OrderId) -> Result<Option<Invoice>, StoreError> {
        let row = sqlx::query!(
            "SELECT number, order_id, amount, currency, issued_at FROM invoices WHERE order_id = $1",
            order_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Invoice {
            number: invoice_number(r.number),
            order_id: OrderId(r.order_id),
            amount: r.amount,
            currency: r.currency,
            issued_at: r.issued_at,
        }))
    }

    /// Payments offered `methods` (non-empty) for an order: pick the first, once.
    pub async fn choose_method(
        &self,
        id: OrderId,
        methods: &[String],
    ) -> Result<MethodChoice, StoreError> {
        let Some(first) = methods.first() else {
            return Ok(MethodChoice::NotPending(OrderStatus::PendingPayment));
        };
        // Keep a method chosen earlier if it is still offered, so a repeated offer
        // never makes us ask for a second one (Payments would answer `conflict`).
        let chosen = sqlx::query_scalar!(
            "UPDATE orders SET payment_method = CASE \
                 WHEN payment_method IS NOT NULL AND payment_method = ANY($3) THEN payment_method \
                 ELSE $2 END, \
               updated_at = clock_timestamp() \
             WHERE id = $1 AND status = 'pending_payment' \
             RETURNING payment_method",
            id.0,
            first,
            methods,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(Some(method)) = chosen {
            return Ok(MethodChoice::Select(method));
        }
        Ok(match self.status(id).await? {
            Some(status) => MethodChoice::NotPending(status),
            None => MethodChoice::UnknownOrder,
        })
    }

    /// Payments sent the page: the order now awaits the customer's payment.
    pub async fn record_page(
        &self,
        id: OrderId,
        payment_id: PaymentId,
        url: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<PageRecorded, StoreError> {
        let updated = sqlx::query!(
            "UPDATE orders SET status = 'awaiting_payment', payment_id = $2, payment_url = $3, \
                 payment_expires_at = $4, updated_at = clock_timestamp() \
             WHERE id = $1 AND status IN ('pending_payment', 'awaiting_payment') \
               AND payment_url IS DISTINCT FROM $3",
            id.0,
            payment_id.0,
            url,
            expires_at,
        )
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 1 {
            return Ok(PageRecorded::Recorded);
        }
        Ok(match self.status(id).await? {
            Some(status) => PageRecorded::Unchanged(status),
            None => PageRecorded::UnknownOrder,
        })
    }

    /// Applies a final outcome from Payments: one transaction, one invoice at most.
    pub async fn apply_outcome(
        &self,
        id: OrderId,
        payment_id: PaymentId,
        outcome: PaymentOutcome,
        reason: Option<CancelReason>,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (status, reason) = match outcome {
            PaymentOutcome::Fulfill => (OrderStatus::Fulfilled, None),
            PaymentOutcome::Cancel => (OrderStatus::Cancelled, reason.map(CancelReason::as_str)),
        };
        let moved = sqlx::query!(
            "UPDATE orders SET status = $2, cancel_reason = $3, \
                 payment_id = coalesce(payment_id, $4), updated_at = clock_timestamp() \
             WHERE id = $1 AND status IN ('pending_payment', 'awaiting_payment') \
             RETURNING amount, currency",
            id.0,
            status.as_str(),
            reason,
            payment_id.0,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(moved) = moved else {
            drop(tx);
            return Ok(match self.status(id).await? {
                Some(status) => Applied::AlreadyFinal(status),
                None => Applied::UnknownOrder,
            });
        };
        let invoice = if status == OrderStatus::Fulfilled {
            let number = sqlx::query_scalar!(
                "INSERT INTO invoices (order_id, amount, currency) VALUES ($1, $2, $3) RETURNING number",
                id.0,
                moved.amount,
                moved.currency,
            )
            .fetch_one(&mut *tx)
            .await?;
            Some(invoice_number(number))
        } else {
            None
        };
        tx.commit().await?;
        Ok(Applied::Transitioned { status, invoice })
    }

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
             WHERE status IN ('pending_payment', 'awaiting_payment')
               AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
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
                    amount: r.amount,
                    currency: r.currency,
                    status: parse_status(&r.status)?,
                    cancel_requested: r.cancel_requested,
                })
            })
            .collect()
    }

    async fn status(&self, id: OrderId) -> Result<Option<OrderStatus>, StoreError> {
        let status = sqlx::query_scalar!("SELECT status FROM orders WHERE id = $1", id.0)
            .fetch_optional(&self.pool)
            .await?;
        status.map(|s| parse_status(&s)).transpose()
    }
}
