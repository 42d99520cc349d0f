//! Each service owns its database and creates it at start-up when the server does not
//! have it yet, so a fresh PostgreSQL (or a fresh test database name) just works.

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

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

/// Why a service could not open its database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid DATABASE_URL")]
    BadUrl(#[source] sqlx::Error),
    #[error("could not create the database {name:?}")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("could not run the migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pooled connection idle at least this long is pinged before it is handed out.
pub const PING_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens a service's database: creates it if missing, connects a pool, and runs the
/// service's migrations.
pub async fn open(
    database_url: &str,
    migrator: &sqlx::migrate::Migrator,
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
        .max_connections(10)
        .acquire_timeout(std::time::Duration::from_secs(5))
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
        .connect_with(options)
        .await
        .map_err(OpenError::Connect)?;
    migrator.run(&pool).await?;
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
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
