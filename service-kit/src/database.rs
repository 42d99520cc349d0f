//! Each service owns its database and creates it at start-up when the server does not
//! have it yet, so a fresh PostgreSQL (or a fresh test database name) just works.
//!
//! Every pooled session is bounded ([`DatabaseConfig`]): a statement that runs too long,
//! a wait for a lock, or a transaction left idle is ended by the server, so no request
//! (an unauthenticated one least of all) can hold a pool connection for long, and a
//! pool that stays busy answers with an error the services turn into a 503
//! ([`is_overload`]).

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::durations::millis;
pub use crate::open_error::OpenError;

/// Creates the database named in `options` when it does not exist. Another instance
/// creating it at the same moment is fine.
pub async fn create_if_missing(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // Quoted as an identifier above; CREATE DATABASE takes no bind parameters.
        match sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{quoted}""#)))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // duplicate_database: another instance created it between our check and CREATE
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// The pool and the limits of its sessions, the same settings for both services.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DatabaseConfig {
    /// Connections in the pool: the most statements the service runs at once. One of
    /// them is kept by the writer that group-commits HTTP writes (Orders' new orders,
    /// Payments' Pay and Cancel), so at least 2.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub db_pool_size: u32,

    /// How long a request waits for a pool connection before it is refused with 503.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = crate::durations::duration)]
    pub db_acquire_timeout: Duration,

    /// The longest a statement may run (PostgreSQL's `statement_timeout`). Every
    /// statement of the services reads or writes a bounded batch by key; one that runs
    /// this long is stuck, not busy.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "10s", value_parser = crate::durations::duration)]
    pub db_statement_timeout: Duration,

    /// The longest a statement waits for a lock (`lock_timeout`): a long migration or
    /// a stuck transaction does not hold traffic up past this.
    #[arg(long, env = "DB_LOCK_TIMEOUT", default_value = "2s", value_parser = crate::durations::duration)]
    pub db_lock_timeout: Duration,

    /// The longest a transaction may sit idle (`idle_in_transaction_session_timeout`):
    /// a session that went away mid-transaction frees its locks and its connection.
    #[arg(long, env = "DB_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "10s", value_parser = crate::durations::duration)]
    pub db_idle_in_transaction_timeout: Duration,

    /// The longest a migration at start-up waits for a lock on a table in use. Past it,
    /// the service does not start (and says why) rather than queue traffic behind it.
    #[arg(long, env = "MIGRATION_LOCK_TIMEOUT", default_value = "5s", value_parser = crate::durations::duration)]
    pub migration_lock_timeout: Duration,
}

impl Default for DatabaseConfig {
    /// The defaults of the flags above.
    fn default() -> DatabaseConfig {
        DatabaseConfig {
            db_pool_size: 10,
            db_acquire_timeout: Duration::from_secs(5),
            db_statement_timeout: Duration::from_secs(10),
            db_lock_timeout: Duration::from_secs(2),
            db_idle_in_transaction_timeout: Duration::from_secs(10),
            migration_lock_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseConfig {
    /// The session settings of every pooled connection, sent with the connection's
    /// start-up packet (no round trip of their own).
    ///
    /// `jit = off`: every statement of the services is a short one by key, and sqlx
    /// prepares them, so PostgreSQL runs them on generic plans. The generic plan of the
    /// batched invoice insert is costed above `jit_above_cost` (100,000), and JIT code
    /// is not kept between executions: each fulfilment batch compiled it again, about
    /// 110-150 ms of CPU, which was most of complete → fulfilled (7 ms without it).
    fn session_options(&self) -> [(&'static str, String); 4] {
        [
            ("jit", "off".to_owned()),
            ("statement_timeout", millis(self.db_statement_timeout)),
            ("lock_timeout", millis(self.db_lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                millis(self.db_idle_in_transaction_timeout),
            ),
        ]
    }
}

/// Whether `e` says the database is too busy to serve now, rather than that the
/// request failed: no pool connection within the acquire timeout, or a statement ended
/// by `statement_timeout` (SQLSTATE 57014) or `lock_timeout` (55P03). Worth a 503 with
/// `Retry-After`.
pub fn is_overload(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57014") | Some("55P03"))
        }
        _ => false,
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(30);

/// Opens a service's database: creates it if missing, connects a pool, and runs the
/// service's migrations.
pub async fn open(
    database_url: &str,
    migrator: sqlx::migrate::Migrator,
    config: &DatabaseConfig,
) -> Result<sqlx::PgPool, OpenError> {
    use std::str::FromStr;
    let options = PgConnectOptions::from_str(database_url).map_err(OpenError::BadUrl)?;
    create_if_missing(&options)
        .await
        .map_err(|source| OpenError::Create {
            name: options.get_database().unwrap_or_default().to_owned(),
            source,
        })?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(config.db_acquire_timeout)
        // sqlx pings a connection (one round trip) on every checkout by default: on the
        // hot paths that is a round trip per statement for nothing. Only a connection
        // that sat idle long enough for PostgreSQL or a proxy to have dropped it is
        // tested; a connection that breaks anyway fails its statement, which every
        // caller already handles (503, or the link not acking so Payments re-sends).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options.clone().options(config.session_options()))
        .await
        .map_err(OpenError::Connect)?;
    crate::migrations::migrate(&options, migrator, config.migration_lock_timeout).await?;
    Ok(pool)
}

/// How a batch transaction starts: `BEGIN`, and lookups by key only.
///
/// The batch statements join sets of a few to a few hundred rows (arrays,
/// `unnest($1, …)`, or a keyset page of an index) to tables that grow from empty to
/// millions of rows, and every one of them means "these rows, by their key". The
/// planner's defaults get that wrong, as `loadgen resume` measured with auto_explain
/// (30,000 orders):
///
/// - sqlx prepares every statement once per connection, and PostgreSQL soon settles on
///   a *generic* plan, made without the arrays' sizes and with the table sizes of that
///   moment, and keeps it until the table is analyzed again. A plan made while
///   `payment_sessions` was nearly empty seq-scanned 12,000 rows per batch.
/// - Even planned with the arrays in view, with the default page costs (which assume a
///   disk rather than a cache) a batch of 128 preferred a seq scan of all 30,000 orders
///   (15–30 ms) to 128 primary-key probes (under 1 ms), and would up to tables of about
///   100,000 rows.
///
/// With `enable_seqscan = off` the key is the way in, whatever the table's size and
/// whenever the plan was made. The statements join on the key alone (no extra
/// `key = ANY($1)`): with one, a plan made without statistics drove the join from a
/// bitmap scan and re-ran `unnest` once per matched row, 65,000 comparisons for a batch
/// of 256. `SET LOCAL` ends with the transaction, and it goes in the same round trip as
/// the `BEGIN`.
pub const BATCH_BEGIN: &str = "BEGIN; SET LOCAL enable_seqscan = off";

/// Starts a transaction for batch statements; see [`BATCH_BEGIN`].
pub async fn begin_batch(
    pool: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(BATCH_BEGIN).await
}

/// How long a service waits at exit for its pooled connections to come back and close.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes `pool` once the service has stopped, waiting at most [`CLOSE_WAIT`].
///
/// sqlx tests every connection it takes back into a pool with a round trip, on a task
/// of its own. A connection released while the runtime was going away had that test
/// fail and logged "error occurred while testing the connection on-release" at WARN,
/// after a clean stop; a closed pool closes what it gets back instead.
pub async fn close_at_exit(pool: &sqlx::PgPool) {
    if tokio::time::timeout(CLOSE_WAIT, pool.close())
        .await
        .is_err()
    {
        tracing::warn!(wait = ?CLOSE_WAIT, "database connections were still in use at exit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags alone, to read their defaults.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        database: DatabaseConfig,
    }

    #[test]
    fn the_default_is_what_the_flags_default_to() {
        use clap::Parser;
        let flags = Flags::try_parse_from(["x"]).unwrap();
        assert_eq!(flags.database, DatabaseConfig::default());
    }

    #[test]
    fn a_pool_needs_room_beside_its_writer() {
        use clap::Parser;
        assert!(Flags::try_parse_from(["x", "--db-pool-size=1"]).is_err());
        assert!(Flags::try_parse_from(["x", "--db-pool-size=2"]).is_ok());
    }

    #[test]
    fn sessions_get_their_timeouts_in_milliseconds() {
        let config = DatabaseConfig {
            db_statement_timeout: Duration::from_secs(10),
            db_lock_timeout: Duration::from_micros(10),
            ..DatabaseConfig::default()
        };
        assert_eq!(
            config.session_options(),
            [
                ("jit", "off".to_owned()),
                ("statement_timeout", "10000ms".to_owned()),
                ("lock_timeout", "1ms".to_owned()),
                ("idle_in_transaction_session_timeout", "10000ms".to_owned()),
            ]
        );
    }
}
