//! All the SQL of the Orders service, in one place.
//!
//! Every state change is one conditional `UPDATE … WHERE status IN (…)`: the database,
//! not Rust, decides whether a transition still applies, so concurrent or repeated
//! messages cannot apply one twice. Zero rows affected is a normal answer. A fulfilled
//! order gets its invoice in the same transaction as the status change.
//!
//! Batch statements join their rows as arrays (`FROM unnest($1, …) AS u`) and also say
//! `key = ANY($1)`: the planner guesses 100 rows for an `unnest` and would then hash-join
//! against a scan of a whole index (or table) for a batch of three; with `= ANY` it looks
//! the rows up by key, whatever the table's size. Joins to a row per batch row are
//! `LATERAL … LIMIT 1` lookups for the same reason. Their status conditions are written
//! `(status …) IS TRUE`, which no index can serve: as plain conditions the generic plan
//! walked `orders_by_status_newest` over EVERY pending order when the statistics
//! (taken between backlogs) said there were few, 100,000 entries per batch on resume.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use service_kit::group_commit::{self, Batch, BoxFuture, GroupCommit, Limits};
use shared_protocol::{Amount, CancelReason, Currency, OrderId, PaymentId, PaymentOutcome};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Attention, Incident, Invoice, NewOrder, Order, OrderStatus, invoice_number};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the database")]
    Open(#[from] service_kit::database::OpenError),
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    #[error("row holds a value the code does not know: {0}")]
    Corrupt(String),
    #[error("the order writer is unavailable")]
    Writer(#[source] group_commit::Error<std::convert::Infallible>),
}

impl StoreError {
    /// Whether the request was refused for load, not failed: the insert writer's queue
    /// stayed full, it did not answer in time, or it stopped with the service. The
    /// client should retry (a 503).
    pub fn is_overload(&self) -> bool {
        matches!(self, StoreError::Writer(_))
    }

    /// Whether the database refused the statement for what it holds (a data exception,
    /// SQLSTATE class 22, or an integrity constraint, class 23): trying the same again
    /// fails the same way, unlike a lost connection or a timeout.
    pub fn is_deterministic(&self) -> bool {
        match self {
            StoreError::Sqlx(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
            StoreError::Corrupt(_) => true,
            _ => false,
        }
    }
}

impl From<group_commit::Error<StoreError>> for StoreError {
    fn from(e: group_commit::Error<StoreError>) -> StoreError {
        match e {
            group_commit::Error::Apply(e) => e,
            group_commit::Error::Busy { writer, waited } => {
                StoreError::Writer(group_commit::Error::Busy { writer, waited })
            }
            group_commit::Error::Timeout { writer, waited } => {
                StoreError::Writer(group_commit::Error::Timeout { writer, waited })
            }
            group_commit::Error::Stopped(writer) => {
                StoreError::Writer(group_commit::Error::Stopped(writer))
            }
        }
    }
}

/// The order store: a connection pool on this service's database, and the
/// group-commit writer of `POST /orders` on it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    inserts: GroupCommit<OrderInserts>,
    max_payment_attempts: i32,
}

/// How many refusals from Payments an order takes before it is parked, by default.
pub const DEFAULT_MAX_PAYMENT_ATTEMPTS: i32 = 5;

/// How many `POST /orders` are inserted together, at most, and how many may wait.
pub const INSERT_LIMITS: Limits = Limits {
    max_batch: 256,
    queue: 4096,
    queue_wait: Duration::from_secs(5),
    apply_timeout: Duration::from_secs(10),
    answer_wait: Duration::from_secs(30),
};

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
    /// The order holds another payment than the event's: nothing changed.
    PaymentMismatch {
        status: OrderStatus,
        stored: PaymentId,
    },
    UnknownOrder,
}

/// What counting a refusal from Payments did to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Counted; the order's request will be re-sent.
    Counted { attempts: i32 },
    /// Counted, and that was the last attempt: the order is parked.
    Parked { attempts: i32 },
    /// Not counted: no such order, it is final, or it is parked already.
    Ignored,
}

/// The answer to an operator's retry of an order.
#[derive(Debug)]
pub enum Retried {
    /// Unparked; its requests are to be sent again.
    Unparked(Order, OpenOrder),
    /// The order is not parked (it is being handled, or it is final).
    NotParked(Order),
    NotFound,
}

/// An incident to record on an order (see `order_incidents`).
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub order_id: OrderId,
    /// `contradicting_outcome` or `payment_id_mismatch`.
    pub kind: &'static str,
    pub event_id: i64,
    pub detail: String,
}

/// The most incidents `GET /orders/{id}/incidents` returns (the oldest first).
pub const INCIDENTS_LIMIT: i64 = 100;

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

/// One page of `GET /orders`.
#[derive(Debug)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// The cursor of the next page, when there is one.
    pub next: Option<OrderId>,
}

/// An `orders` row as the API's queries read it.
#[derive(Clone)]
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
    payment_attempts: i32,
    last_payment_error: Option<String>,
    parked_at: Option<DateTime<Utc>>,
    incidents: i32,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;
    fn try_from(r: OrderRow) -> Result<Order, StoreError> {
        Ok(Order {
            id: OrderId(r.id),
            amount: parse_amount(r.amount)?,
            currency: parse_currency(&r.currency)?,
            description: r.description,
            status: parse_status(&r.status)?,
            payment_method: r.payment_method,
            payment_url: r.payment_url,
            cancel_reason: r.cancel_reason.as_deref().map(parse_reason).transpose()?,
            created_at: r.created_at,
            updated_at: r.updated_at,
            attention: Attention::of(
                r.payment_attempts,
                r.last_payment_error,
                r.parked_at,
                r.incidents,
            ),
        })
    }
}

fn parse_status(s: &str) -> Result<OrderStatus, StoreError> {
    OrderStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("order status {s:?}")))
}

// A row is parsed into the domain's types once, here; the CHECK constraints make a
// failure a corrupt row, never a panic.
fn parse_amount(minor: i64) -> Result<Amount, StoreError> {
    Amount::new(minor).map_err(|_| StoreError::Corrupt(format!("amount {minor}")))
}

fn parse_currency(s: &str) -> Result<Currency, StoreError> {
    Currency::parse(s).map_err(|_| StoreError::Corrupt(format!("currency {s:?}")))
}

fn parse_reason(s: &str) -> Result<CancelReason, StoreError> {
    CancelReason::parse(s).ok_or_else(|| StoreError::Corrupt(format!("cancel reason {s:?}")))
}

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        let pool =
            service_kit::database::open(database_url, &sqlx::migrate!("../migrations/orders"))
                .await?;
        Ok(Store::new(pool))
    }

    /// A store on `pool`; starts the insert writer on the current tokio runtime.
    pub fn new(pool: PgPool) -> Store {
        let inserts = GroupCommit::start("order insert", pool.clone(), OrderInserts, INSERT_LIMITS);
        Store {
            pool,
            inserts,
            max_payment_attempts: DEFAULT_MAX_PAYMENT_ATTEMPTS,
        }
    }

    /// Parks an order after this many refusals from Payments (at least 1).
    pub fn with_max_payment_attempts(mut self, attempts: u32) -> Store {
        self.max_payment_attempts = i32::try_from(attempts.max(1)).unwrap_or(i32::MAX);
        self
    }

    pub fn max_payment_attempts(&self) -> i32 {
        self.max_payment_attempts
    }

    /// Whether the `POST /orders` writer task runs (for `/readyz`).
    pub fn writer_running(&self) -> bool {
        self.inserts.is_running()
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a new order in `pending_payment`, honouring an idempotency key. Concurrent
    /// inserts share one statement and one commit ([`OrderInserts`]).
    pub async fn insert_order(
        &self,
        new: &NewOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let request = InsertRequest {
            id: OrderId(Uuid::new_v4()),
            new: new.clone(),
            key: idempotency_key.map(str::to_owned),
        };
        Ok(self.inserts.submit(request).await?)
    }

    pub async fn order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query_as!(
            OrderRow,
            "SELECT id, amount, currency, description, status, payment_method, payment_url, \
                 cancel_reason, created_at, updated_at, payment_attempts, last_payment_error, \
                 parked_at, incidents \
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
                 cancel_reason, created_at, updated_at, payment_attempts, last_payment_error, \
                 parked_at, incidents \
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
                 payment_url, cancel_reason, created_at, updated_at, payment_attempts, \
                 last_payment_error, parked_at, incidents",
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
        row.map(|r| {
            Ok(Invoice {
                number: invoice_number(r.number),
                order_id: OrderId(r.order_id),
                amount: parse_amount(r.amount)?,
                currency: parse_currency(&r.currency)?,
                issued_at: r.issued_at,
            })
        })
        .transpose()
    }

    /// Starts a transaction for a batch of messages from Payments.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Payments offered methods (non-empty) for these orders (one offer per order): pick
    /// the first, once, in one statement inside the caller's transaction. The answers are in the order of `offers`.
    pub async fn choose_methods(
        conn: &mut PgConnection,
        offers: &[(OrderId, &[String])],
    ) -> Result<Vec<MethodChoice>, StoreError> {
        if offers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = offers.iter().map(|(id, _)| id.0).collect();
        let firsts: Vec<String> = offers
            .iter()
            .map(|(_, m)| m.first().cloned().unwrap_or_default())
            .collect();
        let offered: Vec<String> = offers
            .iter()
            .map(|(_, m)| serde_json::to_string(m).unwrap_or_else(|_| "[]".into()))
            .collect();
        // Keep a method chosen earlier if it is still offered, so a repeated offer never
        // makes us ask for a second one (Payments would answer `conflict`).
        let rows = sqlx::query!(
            r#"UPDATE orders o SET payment_method = CASE
                   WHEN o.payment_method IS NOT NULL AND u.offered::jsonb ? o.payment_method
                   THEN o.payment_method ELSE u.first END,
                 updated_at = clock_timestamp()
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, first, offered)
               WHERE o.id = u.id AND o.id = ANY($1)
                 AND (o.status = 'pending_payment') IS TRUE
                 AND u.first <> ''
               RETURNING o.id, o.payment_method AS "payment_method!""#,
            &ids,
            &firsts,
            &offered,
        )
        .fetch_all(&mut *conn)
        .await?;
        let chosen: HashMap<Uuid, String> =
            rows.into_iter().map(|r| (r.id, r.payment_method)).collect();
        let statuses = Self::statuses_of_missing(conn, &ids, |id| chosen.contains_key(id)).await?;
        Ok(ids
            .iter()
            .map(|id| match chosen.get(id) {
                Some(method) => MethodChoice::Select(method.clone()),
                None => match statuses.get(id) {
                    Some(status) => MethodChoice::NotPending(*status),
                    None => MethodChoice::UnknownOrder,
                },
            })
            .collect())
    }

    /// Payments sent these pages: the orders now await the customer's payment. One
    /// statement inside the caller's transaction. The answers are in the order of `pages`.
    pub async fn record_pages(
        conn: &mut PgConnection,
        pages: &[(OrderId, PaymentId, &str, DateTime<Utc>)],
    ) -> Result<Vec<PageRecorded>, StoreError> {
        if pages.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = pages.iter().map(|p| p.0.0).collect();
        let payment_ids: Vec<Uuid> = pages.iter().map(|p| p.1.0).collect();
        let urls: Vec<String> = pages.iter().map(|p| p.2.to_owned()).collect();
        let expiries: Vec<DateTime<Utc>> = pages.iter().map(|p| p.3).collect();
        let recorded: HashSet<Uuid> = sqlx::query_scalar!(
            "UPDATE orders o SET status = 'awaiting_payment', payment_id = u.payment_id, \
                 payment_url = u.url, payment_expires_at = u.expires_at, \
                 updated_at = clock_timestamp() \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) \
                 AS u(id, payment_id, url, expires_at) \
             WHERE o.id = u.id AND o.id = ANY($1) \
               AND (o.status IN ('pending_payment', 'awaiting_payment')) IS TRUE \
               AND o.payment_url IS DISTINCT FROM u.url \
             RETURNING o.id",
            &ids,
            &payment_ids,
            &urls,
            &expiries,
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let statuses = Self::statuses_of_missing(conn, &ids, |id| recorded.contains(id)).await?;
        Ok(ids
            .iter()
            .map(|id| {
                if recorded.contains(id) {
                    PageRecorded::Recorded
                } else {
                    match statuses.get(id) {
                        Some(status) => PageRecorded::Unchanged(*status),
                        None => PageRecorded::UnknownOrder,
                    }
                }
            })
            .collect())
    }

    /// Applies final outcomes from Payments: one UPDATE for the transitions and one
    /// INSERT for the invoices (one per fulfilled order, at most), inside the caller's transaction, so the batch commits
    /// (or not) as one. The answers are in the order of `outcomes`.
    pub async fn apply_outcomes(
        conn: &mut PgConnection,
        outcomes: &[(OrderId, PaymentId, PaymentOutcome, Option<CancelReason>)],
    ) -> Result<Vec<Applied>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = outcomes.iter().map(|o| o.0.0).collect();
        let payment_ids: Vec<Uuid> = outcomes.iter().map(|o| o.1.0).collect();
        let statuses: Vec<String> = outcomes
            .iter()
            .map(|o| OrderStatus::after(o.2).as_str().to_owned())
            .collect();
        // '' stands for no reason (NULLIF below): a fulfilled order has none.
        let reasons: Vec<String> = outcomes
            .iter()
            .map(|o| match o.2 {
                PaymentOutcome::Fulfill => String::new(),
                PaymentOutcome::Cancel => o.3.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            })
            .collect();
        let moved = sqlx::query!(
            "UPDATE orders o SET status = u.status, cancel_reason = NULLIF(u.reason, ''), \
                 payment_id = coalesce(o.payment_id, u.payment_id), \
                 updated_at = clock_timestamp() \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[]) \
                 AS u(id, status, reason, payment_id) \
             WHERE o.id = u.id AND o.id = ANY($1) \
               AND (o.status IN ('pending_payment', 'awaiting_payment')) IS TRUE \
               AND (o.payment_id IS NULL OR o.payment_id = u.payment_id) \
             RETURNING o.id, o.status, o.amount, o.currency",
            &ids,
            &statuses,
            &reasons,
            &payment_ids,
        )
        .fetch_all(&mut *conn)
        .await?;
        let fulfilled: Vec<_> = moved
            .iter()
            .filter(|r| r.status == OrderStatus::Fulfilled.as_str())
            .collect();
        let invoice_orders: Vec<Uuid> = fulfilled.iter().map(|r| r.id).collect();
        let amounts: Vec<i64> = fulfilled.iter().map(|r| r.amount).collect();
        let currencies: Vec<String> = fulfilled.iter().map(|r| r.currency.clone()).collect();
        let invoices: HashMap<Uuid, i64> = if invoice_orders.is_empty() {
            HashMap::new()
        } else {
            sqlx::query!(
                "INSERT INTO invoices (order_id, amount, currency) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[]) \
                 RETURNING order_id, number",
                &invoice_orders,
                &amounts,
                &currencies,
            )
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| (r.order_id, r.number))
            .collect()
        };
        let moved: HashMap<Uuid, OrderStatus> = moved
            .iter()
            .map(|r| Ok((r.id, parse_status(&r.status)?)))
            .collect::<Result<_, StoreError>>()?;
        let missing: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !moved.contains_key(id))
            .collect();
        let others: HashMap<Uuid, (OrderStatus, Option<Uuid>)> = if missing.is_empty() {
            HashMap::new()
        } else {
            sqlx::query!(
                "SELECT id, status, payment_id FROM orders WHERE id = ANY($1)",
                &missing
            )
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| Ok((r.id, (parse_status(&r.status)?, r.payment_id))))
            .collect::<Result<_, StoreError>>()?
        };
        Ok(ids
            .iter()
            .zip(&payment_ids)
            .map(|(id, payment_id)| match moved.get(id) {
                Some(status) => Applied::Transitioned {
                    status: *status,
                    invoice: invoices.get(id).map(|n| invoice_number(*n)),
                },
                None => match others.get(id) {
                    Some((status, Some(stored))) if stored != payment_id => {
                        Applied::PaymentMismatch {
                            status: *status,
                            stored: PaymentId(*stored),
                        }
                    }
                    Some((status, _)) => Applied::AlreadyFinal(*status),
                    None => Applied::UnknownOrder,
                },
            })
            .collect())
    }

    /// Counts refusals from Payments (`(order, "code: message")`), in the caller's
    /// transaction, with one UPDATE: each open, unparked order's attempts go up by one
    /// and its last error is kept; the one that reaches the store's maximum is parked.
    /// The answers are in the order of `refusals`.
    pub async fn record_refusals(
        conn: &mut PgConnection,
        refusals: &[(OrderId, String)],
        max_attempts: i32,
    ) -> Result<Vec<Refusal>, StoreError> {
        if refusals.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = refusals.iter().map(|r| r.0.0).collect();
        let errors: Vec<String> = refusals
            .iter()
            .map(|r| r.1.chars().take(1000).collect())
            .collect();
        let counted: HashMap<Uuid, (i32, bool)> = sqlx::query!(
            r#"UPDATE orders o SET payment_attempts = o.payment_attempts + 1,
                   last_payment_error = u.error,
                   parked_at = CASE WHEN o.payment_attempts + 1 >= $3 THEN clock_timestamp() END
               FROM (SELECT DISTINCT ON (id) id, error
                     FROM unnest($1::uuid[], $2::text[]) AS r(id, error)) AS u
               WHERE o.id = u.id AND o.id = ANY($1)
                 AND (o.status IN ('pending_payment', 'awaiting_payment')) IS TRUE
                 AND o.parked_at IS NULL
               RETURNING o.id, o.payment_attempts, o.parked_at IS NOT NULL AS "parked!""#,
            &ids,
            &errors,
            max_attempts,
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.id, (r.payment_attempts, r.parked)))
        .collect();
        Ok(ids
            .iter()
            .map(|id| match counted.get(id) {
                Some(&(attempts, true)) => Refusal::Parked { attempts },
                Some(&(attempts, false)) => Refusal::Counted { attempts },
                None => Refusal::Ignored,
            })
            .collect())
    }

    /// Counts one refusal outside any batch (a message that could not be applied).
    pub async fn record_refusal(
        &self,
        order: OrderId,
        error: String,
    ) -> Result<Refusal, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut refusals =
            Self::record_refusals(&mut conn, &[(order, error)], self.max_payment_attempts).await?;
        Ok(refusals.pop().unwrap_or(Refusal::Ignored))
    }

    /// Records incidents in the caller's transaction (one per order, kind and event,
    /// however often the event comes) and counts them on their orders. Returns those
    /// that were new.
    pub async fn record_incidents<'i>(
        conn: &mut PgConnection,
        incidents: &'i [NewIncident],
    ) -> Result<Vec<&'i NewIncident>, StoreError> {
        if incidents.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = incidents.iter().map(|i| i.order_id.0).collect();
        let kinds: Vec<String> = incidents.iter().map(|i| i.kind.to_owned()).collect();
        let events: Vec<i64> = incidents.iter().map(|i| i.event_id).collect();
        let details: Vec<String> = incidents
            .iter()
            .map(|i| i.detail.chars().take(1000).collect())
            .collect();
        let rows = sqlx::query!(
            "WITH new AS ( \
                 INSERT INTO order_incidents (order_id, kind, event_id, detail) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[]) \
                 ON CONFLICT DO NOTHING \
                 RETURNING order_id, kind, event_id), \
             counted AS (UPDATE orders o SET incidents = o.incidents + c.n \
                 FROM (SELECT order_id, count(*)::int AS n FROM new GROUP BY order_id) c \
                 WHERE o.id = c.order_id) \
             SELECT order_id AS \"order_id!\", kind AS \"kind!\", event_id AS \"event_id!\" FROM new",
            &ids,
            &kinds,
            &events,
            &details,
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(incidents
            .iter()
            .filter(|i| {
                rows.iter().any(|r| {
                    r.order_id == i.order_id.0 && r.kind == i.kind && r.event_id == i.event_id
                })
            })
            .collect())
    }

    /// The incidents of an order, oldest first (at most [`INCIDENTS_LIMIT`]); `None`
    /// when there is no such order.
    pub async fn incidents(&self, id: OrderId) -> Result<Option<Vec<Incident>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let exists = sqlx::query_scalar!("SELECT 1 FROM orders WHERE id = $1", id.0)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query!(
            "SELECT kind, event_id, detail, created_at FROM order_incidents \
             WHERE order_id = $1 ORDER BY id LIMIT $2",
            id.0,
            INCIDENTS_LIMIT,
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.into_iter()
                .map(|r| Incident {
                    kind: r.kind,
                    event_id: r.event_id,
                    detail: r.detail,
                    created_at: r.created_at,
                })
                .collect(),
        ))
    }

    /// An operator's retry of a parked order: unparks it and resets its attempts, so
    /// the link sends its request again (the caller sends it at once).
    pub async fn retry(&self, id: OrderId) -> Result<Retried, StoreError> {
        let row = sqlx::query!(
            r#"UPDATE orders SET parked_at = NULL, payment_attempts = 0,
                   updated_at = clock_timestamp()
               WHERE id = $1 AND parked_at IS NOT NULL
                 AND status IN ('pending_payment', 'awaiting_payment')
               RETURNING created_at, cancel_requested_at IS NOT NULL AS "cancel_requested!""#,
            id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(order) = self.order(id).await? else {
            return Ok(Retried::NotFound);
        };
        Ok(match row {
            Some(row) => {
                let open = OpenOrder {
                    key: OpenKey {
                        created_at: row.created_at,
                        id,
                    },
                    amount: order.amount,
                    currency: order.currency,
                    status: order.status,
                    cancel_requested: row.cancel_requested,
                };
                Retried::Unparked(order, open)
            }
            None => Retried::NotParked(order),
        })
    }

    /// The status of each of `ids` that `done` leaves out (one query; none when all done).
    async fn statuses_of_missing(
        conn: &mut PgConnection,
        ids: &[Uuid],
        done: impl Fn(&Uuid) -> bool,
    ) -> Result<HashMap<Uuid, OrderStatus>, StoreError> {
        let missing: Vec<Uuid> = ids.iter().copied().filter(|id| !done(id)).collect();
        if missing.is_empty() {
            return Ok(HashMap::new());
        }
        sqlx::query!("SELECT id, status FROM orders WHERE id = ANY($1)", &missing)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| Ok((r.id, parse_status(&r.status)?)))
            .collect()
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

/// One `POST /orders` for the insert writer.
#[derive(Debug)]
pub struct InsertRequest {
    /// The new order's id, chosen once per request, so that applying the request again
    /// (after an attempt whose answer was lost) finds the order it created.
    pub id: OrderId,
    pub new: NewOrder,
    pub key: Option<String>,
}

/// Inserts a batch of new orders with ONE statement (`INSERT … SELECT FROM unnest …
/// ON CONFLICT DO NOTHING`), so concurrent `POST /orders` share a commit. A request
/// whose order already exists (its id: a repeated attempt after a lost answer) gets it
/// as created; one whose key is taken (by an earlier order, or by an earlier request of
/// the same batch) gets the order holding it: a replay when the bodies match, a reused
/// key when not, exactly as one insert at a time would answer.
#[derive(Debug)]
pub struct OrderInserts;

impl Batch for OrderInserts {
    type Item = InsertRequest;
    type Output = Inserted;
    type Error = StoreError;

    fn apply<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        items: &'c [InsertRequest],
    ) -> BoxFuture<'c, Result<Vec<Inserted>, StoreError>> {
        Box::pin(insert_orders(conn, items))
    }
}

async fn insert_orders(
    conn: &mut PgConnection,
    items: &[InsertRequest],
) -> Result<Vec<Inserted>, StoreError> {
    let ids: Vec<Uuid> = items.iter().map(|i| i.id.0).collect();
    let amounts: Vec<i64> = items.iter().map(|i| i.new.amount.minor()).collect();
    let currencies: Vec<String> = items
        .iter()
        .map(|i| i.new.currency.as_str().to_owned())
        .collect();
    let descriptions: Vec<Option<String>> =
        items.iter().map(|i| i.new.description.clone()).collect();
    let keys: Vec<Option<String>> = items.iter().map(|i| i.key.clone()).collect();
    // WITH ORDINALITY and ORDER BY: rows go in in request order, so of two requests of
    // one batch with the same key, the first one's order holds it.
    let rows = sqlx::query_as!(
        OrderRow,
        r#"INSERT INTO orders (id, amount, currency, description, idempotency_key)
           SELECT id, amount, currency, description, key
           FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[])
               WITH ORDINALITY AS r(id, amount, currency, description, key, n)
           ORDER BY n
           ON CONFLICT DO NOTHING
           RETURNING id AS "id!", amount AS "amount!", currency AS "currency!", description,
               status AS "status!", payment_method, payment_url, cancel_reason,
               created_at AS "created_at!", updated_at AS "updated_at!",
               payment_attempts AS "payment_attempts!", last_payment_error, parked_at,
               incidents AS "incidents!""#,
        &ids,
        &amounts,
        &currencies,
        &descriptions as &[Option<String>],
        &keys as &[Option<String>],
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut created: HashMap<Uuid, OrderRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    // An insert skipped because its id exists: an earlier attempt of this request made
    // the order (ids are fresh UUIDs, chosen per request).
    let skipped: Vec<Uuid> = ids
        .iter()
        .filter(|id| !created.contains_key(*id))
        .copied()
        .collect();
    if !skipped.is_empty() {
        let rows = sqlx::query_as!(
            OrderRow,
            "SELECT id, amount, currency, description, status, payment_method, payment_url, \
                 cancel_reason, created_at, updated_at, payment_attempts, last_payment_error, \
                 parked_at, incidents \
             FROM orders WHERE id = ANY($1)",
            &skipped,
        )
        .fetch_all(&mut *conn)
        .await?;
        created.extend(rows.into_iter().map(|r| (r.id, r)));
    }
    // Otherwise only a key conflict skips an insert: look up the orders holding those keys.
    let taken: Vec<String> = items
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !created.contains_key(id))
        .filter_map(|(item, _)| item.key.clone())
        .collect();
    let mut holders: HashMap<String, OrderRow> = HashMap::new();
    if !taken.is_empty() {
        let rows = sqlx::query!(
            "SELECT id, amount, currency, description, status, payment_method, payment_url, \
                 cancel_reason, created_at, updated_at, payment_attempts, last_payment_error, \
                 parked_at, incidents, idempotency_key AS \"key!\" \
             FROM orders WHERE idempotency_key = ANY($1)",
            &taken,
        )
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            holders.insert(
                r.key,
                OrderRow {
                    id: r.id,
                    amount: r.amount,
                    currency: r.currency,
                    description: r.description,
                    status: r.status,
                    payment_method: r.payment_method,
                    payment_url: r.payment_url,
                    cancel_reason: r.cancel_reason,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                    payment_attempts: r.payment_attempts,
                    last_payment_error: r.last_payment_error,
                    parked_at: r.parked_at,
                    incidents: r.incidents,
                },
            );
        }
    }
    items
        .iter()
        .zip(&ids)
        .map(|(item, id)| {
            if let Some(row) = created.remove(id) {
                return Ok(Inserted::Created(row.try_into()?));
            }
            let holder = item.key.as_ref().and_then(|k| holders.get(k));
            let Some(existing) = holder else {
                return Err(StoreError::Corrupt(
                    "an order insert was skipped but no order holds its key".into(),
                ));
            };
            let same = existing.amount == item.new.amount.minor()
                && existing.currency == item.new.currency.as_str()
                && existing.description == item.new.description;
            Ok(if same {
                Inserted::Replayed(existing.clone().try_into()?)
            } else {
                Inserted::KeyReused
            })
        })
        .collect()
}
