//! All the SQL of the Orders service, in one place.
//!
//! Every state change is one conditional `UPDATE … WHERE status IN (…)`: the database,
//! not Rust, decides whether a transition still applies, so concurrent or repeated
//! messages cannot apply one twice. Zero rows affected is a normal answer. A fulfilled
//! order gets its invoice in the same transaction as the status change.
//!
//! Batch statements join their rows as arrays (`FROM unnest($1, …) AS u WHERE o.id =
//! u.id`, on the key alone) in transactions that turn seq scans off
//! ([`service_kit::database::BATCH_BEGIN`]), so each row is looked up by primary key
//! whatever the table's size and whenever the plan was made; that constant's doc says
//! what `loadgen resume` measured before. Joins to a row per batch row are `LATERAL …
//! LIMIT 1` lookups. Their status conditions are written `(status …) IS TRUE`, which no
//! index can serve: as plain conditions the plan walked `orders_by_status_newest` over
//! EVERY pending order when the statistics (taken between backlogs) said there were
//! few, 100,000 entries per batch on resume.
//!
//! The statements are in files by who uses them: `orders` (the HTTP API's reads and
//! writes), `inserts` (the group-commit writer of `POST /orders`), `link` (the batches
//! the payments link applies in its transactions) and `open` (the link's walk over open
//! orders).

/// `sqlx::query_as!(OrderRow, …)` with the row's column list written once, here:
/// `$head` is the statement up to where the columns go (`SELECT`, or `UPDATE …
/// RETURNING`), `$tail` the rest (`FROM orders WHERE …`, or `""`). The query stays
/// checked at compile time, and a column added to [`OrderRow`] is added to every query.
macro_rules! query_orders {
    ($head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            OrderRow,
            $head
                + r#" id AS "id!", amount AS "amount!", currency AS "currency!",
                 description AS "description?", status AS "status!",
                 payment_method AS "payment_method?", payment_url AS "payment_url?",
                 cancel_reason AS "cancel_reason?", created_at AS "created_at!",
                 updated_at AS "updated_at!", payment_attempts AS "payment_attempts!",
                 last_payment_error AS "last_payment_error?", parked_at AS "parked_at?",
                 incidents AS "incidents!", idempotency_key AS "idempotency_key?" "#
                + $tail,
            $($arg),*
        )
    };
}

mod inserts;
mod link;
mod open;
mod orders;

pub use inserts::{INSERT_LIMITS, InsertRequest, Inserted, OrderInserts};
pub use link::{Applied, MethodChoice, NewIncident, Outcome, PageRecorded, Refusal};
pub use open::{ExpiryKey, OpenKey, OpenOrder};
pub use orders::{CancelRequest, INCIDENTS_LIMIT, OrderPage, Retried};

use chrono::{DateTime, Utc};
use service_kit::database::DatabaseConfig;
use service_kit::group_commit::{self, GroupCommit};
use shared_protocol::{Amount, CancelReason, Currency, OrderId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Attention, Order, OrderStatus};

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
    /// stayed full, it did not answer in time, or it stopped with the service; or the
    /// database was too busy (no pool connection in time, a statement or lock timeout:
    /// [`service_kit::database::is_overload`]). The client should retry (a 503).
    pub fn is_overload(&self) -> bool {
        match self {
            StoreError::Writer(_) => true,
            StoreError::Sqlx(e) => service_kit::database::is_overload(e),
            _ => false,
        }
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

/// An `orders` row as the API's queries read it (through [`query_orders!`]).
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
    idempotency_key: Option<String>,
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
    Currency::from_stored(s).map_err(|_| StoreError::Corrupt(format!("currency {s:?}")))
}

fn parse_reason(s: &str) -> Result<CancelReason, StoreError> {
    CancelReason::parse(s).ok_or_else(|| StoreError::Corrupt(format!("cancel reason {s:?}")))
}

/// The service's migrations (`migrations/orders/`), embedded at build time.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("../migrations/orders")
}

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        Store::open(database_url, &DatabaseConfig::default()).await
    }

    /// Like [`Store::connect`], with the pool and session limits of `config`.
    pub async fn open(database_url: &str, config: &DatabaseConfig) -> Result<Store, StoreError> {
        let pool = service_kit::database::open(database_url, migrator(), config).await?;
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
}
