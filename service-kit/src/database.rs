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
