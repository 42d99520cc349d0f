//! Why a service could not open its database: creating it, connecting, or running
//! its migrations. A leaf, so that [`crate::database`] (which opens the database and
//! runs the migrations) and [`crate::migrations`] both return it without importing
//! each other both ways.

use std::time::Duration;

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
    #[error(
        "migration {version} ({description}) waited {waited:?} (MIGRATION_LOCK_TIMEOUT) for a \
         lock on a table that another transaction holds, and gave up so that traffic does not \
         queue behind it; nothing of it was applied and the service did not start. Start it \
         again once that transaction has ended (pg_stat_activity shows it), or give \
         MIGRATION_LOCK_TIMEOUT more time"
    )]
    MigrationLockTimeout {
        version: i64,
        description: String,
        waited: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "another instance has been running the migrations for {waited:?}; gave up waiting \
         for it (a migration that builds an index on a large table takes that long: start \
         this one again when it is done)"
    )]
    MigrationsBusy { waited: Duration },
}
