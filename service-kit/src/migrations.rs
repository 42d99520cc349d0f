//! Running a service's migrations at start-up so that a rolling deploy keeps serving
//! while they run (see [`migrate`]), and the rules a migration must follow for that
//! (see [`check`]), which each service's tests apply to its own migrations.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::durations::millis;
use crate::open_error::OpenError;

/// How long a starting instance waits for another one's migrations before it gives up.
pub const MIGRATION_WAIT: Duration = Duration::from_secs(600);
/// The advisory lock that lets one instance at a time migrate a database (advisory
/// locks are per database, so one key serves every service).
const MIGRATION_LOCK_KEY: i64 = 0x6d69_6772_6174_6500; // "migrate\0"

/// Runs `migrator`'s pending migrations on a connection of their own, fit for a
/// rolling deploy:
///
/// - a migration in a transaction waits at most `lock_timeout` for a lock: one that
///   queues for a table's ACCESS EXCLUSIVE lock behind a long transaction queues all
///   traffic on that table behind itself, so it gives up instead
///   ([`OpenError::MigrationLockTimeout`] names it and says what to do);
/// - a migration whose first line is `-- no-transaction` (`CREATE INDEX CONCURRENTLY`,
///   which holds a lock that lets reads and writes through) may wait up to
///   [`MIGRATION_WAIT`] for the transactions it must outlive; PostgreSQL runs the
///   statements of one query string as one transaction, so such a file holds one
///   statement (a test checks it). An invalid index a crashed or refused build left
///   behind, named in the migration about to run, is dropped first, so the build can
///   be tried again;
/// - no statement is cut short by `statement_timeout` (an index on a large table takes
///   time);
/// - one instance migrates at a time, by an advisory lock taken with
///   `pg_try_advisory_lock` and polled, never waited on: an instance blocked in
///   `pg_advisory_lock` holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the
///   instance that migrates waits for every snapshot to go, a deadlock (sqlx's own lock
///   blocks, so it is off).
pub async fn migrate(
    options: &PgConnectOptions,
    mut migrator: sqlx::migrate::Migrator,
    lock_timeout: Duration,
) -> Result<(), OpenError> {
    let options = options.clone().options([
        ("statement_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
    ]);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(OpenError::Connect)?;
    take_migration_lock(&mut conn).await?;
    migrator.set_locking(false);
    let result = run_pending(&mut conn, &migrator, lock_timeout).await;
    // Closing the session releases the advisory lock too; this says so sooner.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result
}

/// sqlx's table of applied migrations.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Applies the migrations not applied yet, one at a time, each with its lock timeout,
/// after sqlx's own checks: no migration left half-applied (dirty), none changed since
/// it was applied. Migrations this version does not know (a newer one applied them) are
/// logged, not refused: an old instance must restart during a rolling deploy, and a
/// rollback must start.
async fn run_pending(
    conn: &mut PgConnection,
    migrator: &sqlx::migrate::Migrator,
    lock_timeout: Duration,
) -> Result<(), OpenError> {
    use sqlx::migrate::{Migrate, MigrateError};
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    if let Some(version) = conn.dirty_version(MIGRATIONS_TABLE).await? {
        return Err(MigrateError::Dirty(version).into());
    }
    let applied: std::collections::HashMap<i64, Vec<u8>> = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await?
        .into_iter()
        .map(|m| (m.version, m.checksum.into_owned()))
        .collect();
    let ups: Vec<_> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    // A newer version migrated this database (a rolling deploy, or a rollback): its
    // migrations keep this version working (the rules of `check`), so run on.
    let mut newer: Vec<i64> = applied
        .keys()
        .filter(|version| !ups.iter().any(|m| m.version == **version))
        .copied()
        .collect();
    if !newer.is_empty() {
        newer.sort_unstable();
        tracing::warn!(
            ?newer,
            "the database has migrations this version does not know: a newer version applied them; running on, as every migration keeps the previous release working"
        );
    }
    for migration in ups {
        match applied.get(&migration.version) {
            Some(checksum) if *checksum != *migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version).into());
            }
            Some(_) => {}
            None => apply(conn, migration, lock_timeout).await?,
        }
    }
    Ok(())
}

/// Applies one migration with the lock timeout that fits it (see [`migrate`]).
async fn apply(
    conn: &mut PgConnection,
    migration: &sqlx::migrate::Migration,
    lock_timeout: Duration,
) -> Result<(), OpenError> {
    use sqlx::migrate::Migrate;
    let wait = if migration.no_tx {
        drop_invalid_indexes_named_in(conn, migration).await?;
        MIGRATION_WAIT
    } else {
        lock_timeout
    };
    sqlx::query(AssertSqlSafe(format!(
        "SET lock_timeout = '{}'",
        millis(wait)
    )))
    .execute(&mut *conn)
    .await
    .map_err(OpenError::Connect)?;
    tracing::info!(version = migration.version, description = %migration.description, "applying a migration");
    conn.apply(MIGRATIONS_TABLE, migration)
        .await
        .map_err(|e| explain_migration_error(e, migration, wait))?;
    Ok(())
}

/// Drops the invalid indexes (left by a `CREATE INDEX CONCURRENTLY` that was refused or
/// cut off) whose names `migration` mentions: it is about to build them again.
async fn drop_invalid_indexes_named_in(
    conn: &mut PgConnection,
    migration: &sqlx::migrate::Migration,
) -> Result<(), OpenError> {
    let invalid: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(OpenError::Connect)?;
    let sql = migration.sql.as_str();
    let named = |name: &str| {
        sql.match_indices(name).any(|(at, _)| {
            let before = sql[..at].chars().next_back();
            let after = sql[at + name.len()..].chars().next();
            let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !part(before) && !part(after)
        })
    };
    for name in invalid.iter().filter(|name| named(name)) {
        tracing::warn!(index = %name, version = migration.version, "dropping an invalid index an interrupted build left, to build it again");
        let quoted = name.replace('"', "\"\"");
        sqlx::query(AssertSqlSafe(format!(
            r#"DROP INDEX CONCURRENTLY IF EXISTS "{quoted}""#
        )))
        .execute(&mut *conn)
        .await
        .map_err(OpenError::Connect)?;
    }
    Ok(())
}

/// Takes the migration lock, polling, for at most [`MIGRATION_WAIT`].
async fn take_migration_lock(conn: &mut PgConnection) -> Result<(), OpenError> {
    let started = std::time::Instant::now();
    let mut logged = started;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await
            .map_err(OpenError::Connect)?;
        if taken {
            return Ok(());
        }
        if started.elapsed() >= MIGRATION_WAIT {
            return Err(OpenError::MigrationsBusy {
                waited: started.elapsed(),
            });
        }
        if logged.elapsed() >= Duration::from_secs(10) {
            tracing::info!(waited = ?started.elapsed(), "waiting for another instance's migrations");
            logged = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A migration that gave up on a lock (SQLSTATE 55P03) becomes
/// [`OpenError::MigrationLockTimeout`]; anything else stays as sqlx said it.
fn explain_migration_error(
    e: sqlx::migrate::MigrateError,
    migration: &sqlx::migrate::Migration,
    waited: Duration,
) -> OpenError {
    match e {
        sqlx::migrate::MigrateError::ExecuteMigration(source, version) if matches!(&source, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03")) => {
            OpenError::MigrationLockTimeout {
                version,
                description: migration.description.to_string(),
                waited,
                source,
            }
        }
        e => OpenError::Migrate(e),
    }
}

/// The first migration version the rules of [`check`] apply to: those before it were
/// written before the rules and have run on every database since (a migration cannot
/// change once applied: sqlx refuses a changed checksum).
pub const RULES_SINCE: i64 = 20261204000000;

/// What in `migration` would hold a lock on a table in use for longer than a moment,
/// or cannot run as written, each as a sentence; empty when it follows the rules:
///
/// - an index on a table that exists already is built `CONCURRENTLY`, in a
///   `-- no-transaction` migration of that one statement (PostgreSQL runs the
///   statements of one query string in one transaction, where it cannot build
///   concurrently);
/// - a `CHECK` or `FOREIGN KEY` constraint on such a table is added `NOT VALID` (no
///   scan under the lock), and validated by a later migration (`VALIDATE CONSTRAINT`
///   scans under a lock that lets reads and writes through, but not in the
///   transaction that took the table's exclusive lock to add it);
/// - no `UNIQUE` or `PRIMARY KEY` constraint is added but `USING INDEX` one built
///   concurrently;
/// - no column changes type, gets `SET NOT NULL` (a scan: use a `CHECK (… IS NOT
///   NULL) NOT VALID`), or is added `GENERATED … STORED` or with a `CHECK` (a rewrite,
///   a scan).
///
/// Tables created by the same migration are new and empty: anything goes for them.
pub fn check(migration: &sqlx::migrate::Migration) -> Vec<String> {
    let statements = statements(migration.sql.as_str());
    let mut problems = Vec::new();
    if migration.no_tx && statements.len() != 1 {
        problems.push(format!(
            "a -- no-transaction migration must hold exactly one statement, not {}",
            statements.len()
        ));
    }
    let created: Vec<String> = statements
        .iter()
        .filter_map(|words| created_table(words))
        .collect();
    let existing = |table: &str| !created.iter().any(|c| c == table);
    let mut added_not_valid = Vec::new();
    for words in &statements {
        problems.extend(check_statement(
            words,
            migration.no_tx,
            &existing,
            &mut added_not_valid,
        ));
    }
    problems
}

/// One statement's problems (see [`check`]); notes the constraints it adds `NOT VALID`.
fn check_statement(
    words: &[String],
    no_tx: bool,
    existing: &dyn Fn(&str) -> bool,
    added_not_valid: &mut Vec<String>,
) -> Vec<String> {
    let text = words.join(" ");
    let mut problems = Vec::new();
    if let Some(table) = indexed_table(words) {
        let concurrently = words.iter().any(|w| w == "CONCURRENTLY");
        if existing(&table) && !concurrently {
            problems.push(format!("`{text}`: build an index on {table} CONCURRENTLY"));
        }
        if concurrently && !no_tx {
            problems.push(format!(
                "`{text}`: CONCURRENTLY needs a -- no-transaction migration of its own"
            ));
        }
    }
    let Some(table) = altered_table(words) else {
        return problems;
    };
    if !existing(&table) {
        return problems;
    }
    for (i, word) in words.iter().enumerate() {
        let next = |n: usize| words.get(i + n).map(String::as_str);
        match word.as_str() {
            "CONSTRAINT" if words.get(i.wrapping_sub(1)).is_some_and(|w| w == "ADD") => {
                let name = next(1).unwrap_or_default().to_owned();
                let kind = next(2).unwrap_or_default();
                let not_valid = text.contains("NOT VALID");
                if matches!(kind, "CHECK" | "FOREIGN") && !not_valid {
                    problems.push(format!("`{text}`: add {name} NOT VALID, validate it later"));
                }
                if matches!(kind, "UNIQUE" | "PRIMARY") && !text.contains("USING INDEX") {
                    problems.push(format!(
                        "`{text}`: add {name} USING INDEX, an index built concurrently"
                    ));
                }
                if not_valid {
                    added_not_valid.push(name);
                }
            }
            "VALIDATE" if next(1) == Some("CONSTRAINT") => {
                let name = next(2).unwrap_or_default();
                if !no_tx && added_not_valid.iter().any(|n| n == name) {
                    problems.push(format!(
                        "`{text}`: validate {name} in a later migration than the one that adds it"
                    ));
                }
            }
            // ALTER TABLE t ALTER [COLUMN] c [SET DATA] TYPE …
            "TYPE" if words.iter().filter(|w| *w == "ALTER").count() >= 2 => {
                problems.push(format!(
                    "`{text}`: changing a column's type rewrites {table}"
                ));
            }
            "NOT"
                if next(1) == Some("NULL")
                    && words.get(i.wrapping_sub(1)).is_some_and(|w| w == "SET") =>
            {
                problems.push(format!(
                    "`{text}`: SET NOT NULL scans {table}: add CHECK (… IS NOT NULL) NOT VALID"
                ));
            }
            "STORED" if text.contains("ADD COLUMN") => {
                problems.push(format!(
                    "`{text}`: a stored generated column rewrites {table}"
                ));
            }
            "CHECK" if text.contains("ADD COLUMN") && !text.contains("ADD CONSTRAINT") => {
                problems.push(format!(
                    "`{text}`: a CHECK on a new column scans {table}: add it as a constraint NOT VALID"
                ));
            }
            _ => {}
        }
    }
    problems
}

/// The table a `CREATE TABLE` statement creates.
fn created_table(words: &[String]) -> Option<String> {
    let rest = words.strip_prefix(&["CREATE".to_owned(), "TABLE".to_owned()])?;
    let rest = rest
        .strip_prefix(&["IF".to_owned(), "NOT".to_owned(), "EXISTS".to_owned()])
        .unwrap_or(rest);
    rest.first().map(|name| name.to_lowercase())
}

/// The table a `CREATE [UNIQUE] INDEX` statement indexes.
fn indexed_table(words: &[String]) -> Option<String> {
    let create = words.first().is_some_and(|w| w == "CREATE");
    let index = words.iter().take(3).any(|w| w == "INDEX");
    if !(create && index) {
        return None;
    }
    let on = words.iter().position(|w| w == "ON")?;
    let name = words[on + 1..].iter().find(|w| *w != "ONLY")?;
    Some(name.to_lowercase())
}

/// The table an `ALTER TABLE` statement alters.
fn altered_table(words: &[String]) -> Option<String> {
    let rest = words.strip_prefix(&["ALTER".to_owned(), "TABLE".to_owned()])?;
    let rest = rest
        .strip_prefix(&["IF".to_owned(), "EXISTS".to_owned()])
        .unwrap_or(rest);
    let rest = rest.strip_prefix(&["ONLY".to_owned()]).unwrap_or(rest);
    rest.first().map(|name| name.to_lowercase())
}

/// The statements of `sql` as words: comments, string literals and dollar-quoted
/// bodies left out, keywords upper case, punctuation apart.
fn statements(sql: &str) -> Vec<Vec<String>> {
    let mut statements = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut chars = sql.chars().peekable();
    let flush = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(std::mem::take(word).to_uppercase());
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                flush(&mut word, &mut words);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
                words.push("'…'".to_owned());
            }
            '$' => {
                flush(&mut word, &mut words);
                let mut tag = String::from("$");
                for c in chars.by_ref() {
                    tag.push(c);
                    if c == '$' {
                        break;
                    }
                }
                let mut body = String::new();
                for c in chars.by_ref() {
                    body.push(c);
                    if body.ends_with(&tag) {
                        break;
                    }
                }
                words.push("$…$".to_owned());
            }
            ';' => {
                flush(&mut word, &mut words);
                if !words.is_empty() {
                    statements.push(std::mem::take(&mut words));
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' => word.push(c),
            c if c.is_whitespace() => flush(&mut word, &mut words),
            c => {
                flush(&mut word, &mut words);
                words.push(c.to_string());
            }
        }
    }
    flush(&mut word, &mut words);
    if !words.is_empty() {
        statements.push(words);
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};

    fn migration(sql: &'static str) -> Migration {
        Migration::new(
            RULES_SINCE,
            "test".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(sql).into_sql_str(),
            sql.starts_with("-- no-transaction"),
        )
    }

    fn problems(sql: &'static str) -> Vec<String> {
        check(&migration(sql))
    }

    #[test]
    fn what_a_rolling_deploy_can_run_passes() {
        for sql in [
            "-- no-transaction\nCREATE INDEX CONCURRENTLY orders_x ON orders (x)",
            "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON ONLY t (a);",
            "ALTER TABLE orders ADD CONSTRAINT c CHECK (char_length(u) <= 10) NOT VALID",
            "ALTER TABLE orders VALIDATE CONSTRAINT c",
            "ALTER TABLE orders ADD COLUMN n int, ADD COLUMN m text DEFAULT 'x'",
            "CREATE TABLE counter (id int PRIMARY KEY CHECK (id = 1), last bigint NOT NULL);
             CREATE INDEX counter_last ON counter (last);
             ALTER TABLE counter ADD CONSTRAINT positive CHECK (last >= 0);",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; SELECT 2; $$;
             -- a comment; with a semicolon
             ALTER TABLE t ALTER COLUMN c SET DEFAULT f()",
        ] {
            assert_eq!(problems(sql), Vec::<String>::new(), "{sql}");
        }
    }

    #[test]
    fn what_would_hold_a_table_is_named() {
        for (sql, expected) in [
            (
                "CREATE INDEX i ON orders (x)",
                "build an index on orders CONCURRENTLY",
            ),
            (
                "CREATE INDEX CONCURRENTLY i ON orders (x)",
                "needs a -- no-transaction migration",
            ),
            (
                "-- no-transaction\nSET lock_timeout = '1s'; CREATE INDEX CONCURRENTLY i ON t (x)",
                "exactly one statement, not 2",
            ),
            (
                "ALTER TABLE orders ADD CONSTRAINT c CHECK (x > 0)",
                "add C NOT VALID",
            ),
            (
                "ALTER TABLE orders ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES b (id)",
                "add F NOT VALID",
            ),
            (
                "ALTER TABLE orders ADD CONSTRAINT u UNIQUE (a)",
                "USING INDEX",
            ),
            (
                "ALTER TABLE t ADD CONSTRAINT c CHECK (x) NOT VALID; ALTER TABLE t VALIDATE CONSTRAINT c",
                "in a later migration",
            ),
            (
                "ALTER TABLE orders ALTER COLUMN amount TYPE numeric",
                "rewrites orders",
            ),
            (
                "ALTER TABLE orders ALTER amount SET DATA TYPE numeric",
                "rewrites orders",
            ),
            (
                "ALTER TABLE orders ALTER COLUMN amount SET NOT NULL",
                "SET NOT NULL scans orders",
            ),
            (
                "ALTER TABLE s ADD COLUMN o boolean GENERATED ALWAYS AS (a) STORED",
                "stored generated column rewrites s",
            ),
            (
                "ALTER TABLE s ADD COLUMN n int CHECK (n > 0)",
                "a CHECK on a new column scans s",
            ),
        ] {
            let found = problems(sql);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{sql}: {expected:?} not in {found:?}"
            );
        }
    }

    /// The migration that made the method selection a HOT update (before these rules)
    /// rewrote payment_sessions under its exclusive lock and built an index under a
    /// lock that stops writes: both are named.
    #[test]
    fn the_last_migration_before_the_rules_would_not_pass_them() {
        let found = problems(
            "ALTER TABLE payment_sessions
                 ADD COLUMN is_open boolean NOT NULL
                 GENERATED ALWAYS AS (state IN ('initiated', 'method_selected')) STORED;
             DROP INDEX payment_sessions_open_by_expiry;
             CREATE INDEX payment_sessions_open_by_expiry ON payment_sessions (expires_at) WHERE is_open;",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
    }
}
