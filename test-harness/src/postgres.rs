//! Throwaway PostgreSQL databases: one fresh database per test, dropped afterwards.
//!
//! Tests talk to a real server. When `DATABASE_URL` is set it names the server (its
//! database part is ignored: a new database is created beside it); otherwise the local
//! server at [`DEFAULT_SERVER_URL`] is used. When no server answers, the test fails
//! with a message that says how to point it at one.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// The server the tests use when `DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a new empty database named `{prefix}_test_{random}`.
    ///
    /// Panics, with instructions, when no PostgreSQL server answers.
    pub async fn create(prefix: &str) -> TestDatabase {
        let admin_url = admin_url();
        let name = format!(
            "{prefix}_test_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..16)
                .unwrap_or_default()
        );
        let mut conn = connect(&admin_url).await;
        // The name is ours (a prefix and hex digits), never input: safe to splice.
        conn.execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .unwrap_or_else(|e| panic!("could not create test database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        TestDatabase {
            name,
            url,
            admin_url,
        }
    }

    /// A name for a database that does not exist yet, for testing that a service
    /// creates its database at start-up. It is dropped (if created) with this value.
    pub fn unborn(prefix: &str) -> TestDatabase {
        let admin_url = admin_url();
        let name = format!(
            "{prefix}_test_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..16)
                .unwrap_or_default()
        );
        TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool on this database, for a test that looks at rows directly.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("could not connect to {}: {e}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside an async runtime, where blocking on another one panics:
        // do the async work on a thread of its own and wait for it.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                conn.execute(AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

fn admin_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => with_database(url.trim(), "postgres"),
        _ => DEFAULT_SERVER_URL.to_owned(),
    }
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // The path starts at the first '/' after "scheme://authority".
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

async fn connect(url: &str) -> PgConnection {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}", no_server(url, &e.to_string())),
        Err(_) => panic!("{}", no_server(url, "no answer within 10 s")),
    }
}

fn no_server(url: &str, cause: &str) -> String {
    format!(
        "the tests need a PostgreSQL server, and none answered at {url} ({cause}).\n\
         Start the local one (e.g. `pg_ctlcluster 15 main start`), or point the tests at \
         another server with DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/postgres \
         (the user must be allowed to create databases)."
    )
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/orders", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
