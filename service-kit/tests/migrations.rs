//! Migrations fit for a rolling deploy (issue 18), on real PostgreSQL: a migration
//! that needs a table's lock while a long transaction holds it gives up after its
//! lock timeout, with an error that names it, and the traffic that queued behind it
//! goes on; instances that start together build an index concurrently without
//! deadlocking on the migration lock; and a concurrent build that was cut off is
//! built again on the next start.

use std::str::FromStr;
use std::time::Duration;

use service_kit::database::OpenError;
use service_kit::migrations::migrate;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, SqlSafeStr};
use test_harness::postgres::TestDatabase;

const DEADLINE: Duration = Duration::from_secs(20);

fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        description.into(),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(sql).into_sql_str(),
        sql.starts_with("-- no-transaction"),
    )
}

fn migrator(migrations: Vec<Migration>) -> Migrator {
    Migrator::with_migrations(migrations)
}

const CREATE: (i64, &str, &str) = (
    1,
    "create the table",
    "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
     INSERT INTO items SELECT n, 'item ' || n FROM generate_series(1, 1000) n;",
);

fn base() -> Vec<Migration> {
    vec![migration(CREATE.0, CREATE.1, CREATE.2)]
}

fn options(db: &TestDatabase) -> PgConnectOptions {
    PgConnectOptions::from_str(db.url()).unwrap()
}

/// Waits until some session waits for a lock on `items` (the migration, queued).
async fn someone_waits_for_items(conn: &mut PgConnection, mode: &str) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE relation = 'items'::regclass \
             AND NOT granted AND mode = $1",
        )
        .bind(mode)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "nobody waited for {mode}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_migration_gives_up_on_a_held_lock_and_traffic_behind_it_goes_on() {
    let db = TestDatabase::create("migrations").await;
    migrate(&options(&db), migrator(base()), Duration::from_secs(5))
        .await
        .unwrap();

    // A long transaction reads the table (and so holds ACCESS SHARE until it ends).
    let mut long = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut long).await.unwrap();
    sqlx::query("SELECT count(*) FROM items")
        .execute(&mut long)
        .await
        .unwrap();

    // A new version's migration needs ACCESS EXCLUSIVE on the table.
    let mut next = base();
    next.push(migration(
        2,
        "add a column",
        "ALTER TABLE items ADD COLUMN colour text",
    ));
    let lock_timeout = Duration::from_millis(1500);
    let opts = options(&db);
    let migrating = tokio::spawn(async move { migrate(&opts, migrator(next), lock_timeout).await });
    let mut watcher = PgConnection::connect(db.url()).await.unwrap();
    someone_waits_for_items(&mut watcher, "AccessExclusiveLock").await;

    // Traffic now queues behind the waiting migration (PostgreSQL grants locks in
    // order)...
    let reader_url = db.url().to_owned();
    let reader = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&reader_url).await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM items")
            .fetch_one(&mut conn)
            .await
    });

    // ... until the migration gives up, within its lock timeout, naming itself.
    let error = tokio::time::timeout(DEADLINE, migrating)
        .await
        .expect("the migration waited past its lock timeout")
        .unwrap()
        .expect_err("the migration went through a held lock");
    let OpenError::MigrationLockTimeout {
        version, waited, ..
    } = &error
    else {
        panic!("not a lock timeout: {error:?}");
    };
    assert_eq!((*version, *waited), (2, lock_timeout));
    let message = error.to_string();
    assert!(
        message.starts_with("migration 2 (add a column) waited 1.5s (MIGRATION_LOCK_TIMEOUT)"),
        "{message}"
    );

    // The reader got its answer while the long transaction still holds its lock.
    let count = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("traffic stayed queued behind the migration")
        .unwrap()
        .unwrap();
    assert_eq!(count, 1000);
    sqlx::query("SELECT 1").execute(&mut long).await.unwrap();

    // Nothing of it was applied; once the long transaction ends, it goes through.
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY 1")
        .fetch_all(&mut watcher)
        .await
        .unwrap();
    assert_eq!(applied, [1]);
    sqlx::query("COMMIT").execute(&mut long).await.unwrap();
    let mut next = base();
    next.push(migration(
        2,
        "add a column",
        "ALTER TABLE items ADD COLUMN colour text",
    ));
    migrate(&options(&db), migrator(next), lock_timeout)
        .await
        .unwrap();
}

fn with_concurrent_index() -> Vec<Migration> {
    let mut migrations = base();
    migrations.push(migration(
        2,
        "index items by name",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY items_by_name ON items (name)",
    ));
    migrations
}

async fn index_is_valid(db: &TestDatabase) -> Option<bool> {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = 'items_by_name'",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn instances_starting_together_build_an_index_concurrently_without_deadlock() {
    let db = TestDatabase::create("migrations").await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let opts = options(&db);
            tokio::spawn(async move {
                migrate(
                    &opts,
                    migrator(with_concurrent_index()),
                    Duration::from_secs(5),
                )
                .await
            })
        })
        .collect();
    for run in runs {
        tokio::time::timeout(DEADLINE, run)
            .await
            .expect("a migration hung")
            .unwrap()
            .unwrap();
    }
    assert_eq!(index_is_valid(&db).await, Some(true));
}

#[tokio::test]
async fn a_concurrent_build_that_was_cut_off_is_built_again() {
    let db = TestDatabase::create("migrations").await;
    migrate(&options(&db), migrator(base()), Duration::from_secs(5))
        .await
        .unwrap();
    // A transaction with a snapshot makes the build wait; the build's session is then
    // killed (a crash, a deploy that gave up), which leaves an invalid index behind.
    let mut snapshot = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut snapshot)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM items")
        .execute(&mut snapshot)
        .await
        .unwrap();
    let mut builder = PgConnection::connect(db.url()).await.unwrap();
    let builder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut builder)
        .await
        .unwrap();
    let build = tokio::spawn(async move {
        sqlx::query("CREATE INDEX CONCURRENTLY items_by_name ON items (name)")
            .execute(&mut builder)
            .await
    });
    let mut admin = PgConnection::connect(db.url()).await.unwrap();
    let end = tokio::time::Instant::now() + DEADLINE;
    while index_is_valid(&db).await.is_none() {
        assert!(tokio::time::Instant::now() < end, "the build never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(builder_pid)
        .execute(&mut admin)
        .await
        .unwrap();
    assert!(build.await.unwrap().is_err(), "the build was not cut off");
    sqlx::query("COMMIT").execute(&mut snapshot).await.unwrap();
    assert_eq!(
        index_is_valid(&db).await,
        Some(false),
        "no invalid index left"
    );

    migrate(
        &options(&db),
        migrator(with_concurrent_index()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(index_is_valid(&db).await, Some(true));
}

/// During a rolling deploy an old instance restarts after a new one migrated; after a
/// rollback the old version starts on the new schema. Both run on (the rules keep
/// every migration compatible with the release before it).
#[tokio::test]
async fn an_older_version_starts_on_a_database_a_newer_one_migrated() {
    let db = TestDatabase::create("migrations").await;
    migrate(
        &options(&db),
        migrator(with_concurrent_index()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    migrate(&options(&db), migrator(base()), Duration::from_secs(5))
        .await
        .expect("the older version refused the newer schema");
    // A migration changed after it was applied is still refused.
    let changed = vec![migration(CREATE.0, CREATE.1, "CREATE TABLE other (id int)")];
    let refused = migrate(&options(&db), migrator(changed), Duration::from_secs(5)).await;
    assert!(
        matches!(
            refused,
            Err(OpenError::Migrate(
                sqlx::migrate::MigrateError::VersionMismatch(1)
            ))
        ),
        "{refused:?}"
    );
}
