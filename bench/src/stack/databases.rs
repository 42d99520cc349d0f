//! The services' databases: the process-wide [`Janitor`] that drops any left behind,
//! the admin pool for CREATE/DROP DATABASE, URLs of a database on the same server,
//! unique names, and free ports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

/// Database names to drop when the process ends, whatever happened to the stacks.
#[derive(Debug, Default)]
pub struct Janitor {
    names: Mutex<Vec<String>>,
}

impl Janitor {
    pub fn global() -> &'static Janitor {
        static JANITOR: OnceLock<Janitor> = OnceLock::new();
        JANITOR.get_or_init(Janitor::default)
    }

    pub fn add(&self, name: &str) {
        self.lock().push(name.to_owned());
    }

    pub fn forget(&self, name: &str) {
        self.lock().retain(|n| n != name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every database still registered.
    pub async fn sweep(&self, database_url: &str) {
        let names: Vec<String> = std::mem::take(&mut *self.lock());
        if names.is_empty() {
            return;
        }
        match admin_pool(database_url).await {
            Ok(admin) => {
                for name in names {
                    if let Err(e) = drop_database(&admin, &name).await {
                        eprintln!("loadgen: could not drop database {name}: {e:#}");
                    }
                }
                admin.close().await;
            }
            Err(e) => eprintln!("loadgen: could not drop databases {names:?}: {e:#}"),
        }
    }
}

/// A pool on the server's `postgres` database, for CREATE/DROP DATABASE.
pub async fn admin_pool(database_url: &str) -> anyhow::Result<PgPool> {
    let options = connect_options(database_url)?.database("postgres");
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL (is it running? see --database-url)")
}

pub fn connect_options(database_url: &str) -> anyhow::Result<PgConnectOptions> {
    use std::str::FromStr;
    PgConnectOptions::from_str(database_url).with_context(|| format!("bad URL {database_url}"))
}

/// The URL of database `name` on the same server as `database_url`.
pub fn database_url_for(database_url: &str, name: &str) -> String {
    // postgres://user@host:port/db?params → replace the path.
    let (base, query) = match database_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (database_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

pub async fn create_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    Janitor::global().add(name);
    sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(admin)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    Ok(())
}

pub async fn drop_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    sqlx::query(AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
    )))
    .execute(admin)
    .await
    .with_context(|| format!("DROP DATABASE {name}"))?;
    Janitor::global().forget(name);
    Ok(())
}

/// A unique database name for this process: `bench_<what>_<pid>_<n>`.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "bench_{what}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nobody listens on right now (bound and released; the service binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_server_and_parameters() {
        assert_eq!(
            database_url_for("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url_for("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(database_url_for("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
