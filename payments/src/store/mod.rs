//! The Payments service's store: one connection pool on its database, and the SQL, split
//! by consumer: `sessions` (the protocol and the page: sessions, the protocol's batch,
//! the page's Pay/Cancel), `outbox` (delivery: the outcome events, their claims, acks
//! and dead letters) and `connections` (liveness of the WebSocket connections).
//!
//! Each state change and its outcome event are written in ONE transaction, as a
//! conditional `UPDATE … WHERE state = …` (or `WHERE is_open`) followed by the event's
//! `INSERT`; a trigger on the events table NOTIFYs every instance when it commits. Zero rows
//! updated is a normal answer: someone else got there first, or the session is final.
//!
//! Batch statements join their rows as arrays (`FROM unnest($1, …) AS u WHERE s.key =
//! u.key`, on the key alone) in transactions that turn seq scans off
//! ([`service_kit::database::BATCH_BEGIN`]), so each row is looked up by its key
//! whatever the table's size and whenever the plan was made. Joins to a row per batch
//! row are `LATERAL … LIMIT 1` lookups.

mod connections;
mod outbox;
mod sessions;

use std::time::Duration;

use service_kit::database::DatabaseConfig;
use service_kit::group_commit::{self, GroupCommit, Limits};
use sqlx::PgPool;

pub use crate::domain::SessionState;
pub use outbox::{Attempts, Backlog, Claimed, Dead, Event, EventRecord, Pending, Resumed, Retry};
pub use sessions::batch::Batch;
pub use sessions::{Finished, PageFinish, PageFinished, PageFinishes, Session};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the database")]
    Open(#[from] service_kit::database::OpenError),
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    #[error("row holds a value the code does not know: {0}")]
    Corrupt(String),
    #[error("the service is stopping")]
    Stopping,
    #[error("the page writer is unavailable")]
    Writer(#[source] group_commit::Error<std::convert::Infallible>),
}

impl StoreError {
    /// Whether the page writer refused for load or the service is stopping, or the
    /// database was too busy (no pool connection in time, a statement or lock timeout:
    /// [`service_kit::database::is_overload`]): a 503 to retry shortly, not a failure.
    pub fn is_overload(&self) -> bool {
        match self {
            StoreError::Writer(_) | StoreError::Stopping => true,
            StoreError::Sqlx(e) => service_kit::database::is_overload(e),
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
            group_commit::Error::Stopped(_) => StoreError::Stopping,
        }
    }
}

/// Runs store work as a tokio task and waits for it. HTTP handlers run on actix
/// arbiters, which drop their unfinished local tasks outside any runtime when they stop
/// (a stop that outlasts the shutdown timeout), and a pool connection dropped there
/// panics ("this functionality requires a Tokio context"); tokio drops its own tasks
/// inside the runtime, where a pool connection goes back (or away) cleanly.
pub async fn off_arbiter<T, F>(work: F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Stopping),
    }
}

/// The most rows one scan reads or one batch statement claims.
pub const SCAN_LIMIT: i64 = 1000;

/// The session store: a connection pool on this service's database, and the
/// group-commit writer of the payment page's Pay and Cancel on it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    finishes: GroupCommit<PageFinishes>,
}

/// How many Pay/Cancel of the page are written together, at most, and how many may wait.
pub const FINISH_LIMITS: Limits = Limits {
    max_batch: 256,
    queue: 4096,
    queue_wait: Duration::from_secs(5),
    apply_timeout: Duration::from_secs(10),
    answer_wait: Duration::from_secs(30),
};

/// The service's migrations (`migrations/payments/`), embedded at build time.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("../migrations/payments")
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

    /// A store on `pool`; starts the page writer on the current tokio runtime.
    pub fn new(pool: PgPool) -> Store {
        let finishes = GroupCommit::start("page", pool.clone(), PageFinishes, FINISH_LIMITS);
        Store { pool, finishes }
    }

    /// Whether the page's Pay/Cancel writer task runs (for `/readyz`).
    pub fn writer_running(&self) -> bool {
        self.finishes.is_running()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}
