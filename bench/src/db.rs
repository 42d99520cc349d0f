//! The PostgreSQL server the services' databases live on: a [`Server`] creates and
//! drops them (`bench_<what>_<pid>_<n>`) and gives their URLs; every database it
//! creates is registered until it is dropped, so that [`sweep`] (which `main` runs after
//! any exit) drops what a run left behind, and [`drop_orphans`] (`loadgen cleanup`)
//! what a SIGKILLed loadgen left.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

/// `--database-url`: the PostgreSQL server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerUrl {
    /// The PostgreSQL server; each run creates (and drops) its own databases on it.
    #[arg(
        long,
        env = "LOADGEN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
}

/// Databases to drop when the process ends, whatever happened to the stacks: (server
/// URL, name).
static LEFT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn left() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    LEFT.lock().unwrap_or_else(|e| e.into_inner())
}

/// A PostgreSQL server, through a pool on its `postgres` database.
pub struct Server {
    url: String,
    admin: PgPool,
}

impl Server {
    /// Connects to the server of `url` (any database of it).
    pub async fn connect(url: &str) -> anyhow::Result<Server> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect_options(url)?.database("postgres"))
            .await
            .context("connecting to PostgreSQL (is it running? see --database-url)")?;
        Ok(Server {
            url: url.to_owned(),
            admin,
        })
    }

    /// The pool on the `postgres` database.
    pub fn pool(&self) -> &PgPool {
        &self.admin
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        database_url_for(&self.url, name)
    }

    /// Creates `bench_<what>_<pid>_<n>`, a name unique to this process.
    pub async fn create_database(&self, what: &str) -> anyhow::Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("bench_{what}_{}_{n}", std::process::id());
        left().push((self.url.clone(), name.clone()));
        sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&self.admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&self.admin)
        .await
        .with_context(|| format!("DROP DATABASE {name}"))?;
        left().retain(|(_, n)| n != name);
        Ok(())
    }

    pub async fn close(self) {
        self.admin.close().await;
    }
}

/// Drops every database still registered.
pub async fn sweep() {
    let all: Vec<(String, String)> = std::mem::take(&mut *left());
    for (url, name) in all {
        let dropped = match Server::connect(&url).await {
            Ok(server) => {
                let dropped = server.drop_database(&name).await;
                server.close().await;
                dropped
            }
            Err(e) => Err(e),
        };
        if let Err(e) = dropped {
            eprintln!("loadgen: could not drop database {name}: {e:#}");
        }
    }
}

/// Drops the `bench_*_<pid>_<n>` databases of `url`'s server whose loadgen process is
/// gone; returns their names.
pub async fn drop_orphans(url: &str) -> anyhow::Result<Vec<String>> {
    let server = Server::connect(url).await?;
    let names: Vec<String> =
        sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 'bench\_%'")
            .fetch_all(server.pool())
            .await?;
    let mut dropped = Vec::new();
    for name in names {
        let pid = name.rsplit('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            server.drop_database(&name).await?;
            dropped.push(name);
        }
    }
    server.close().await;
    Ok(dropped)
}

pub fn connect_options(database_url: &str) -> anyhow::Result<PgConnectOptions> {
    use std::str::FromStr;
    PgConnectOptions::from_str(database_url).with_context(|| format!("bad URL {database_url}"))
}

/// The URL of database `name` on the same server as `database_url`.
fn database_url_for(database_url: &str, name: &str) -> String {
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
