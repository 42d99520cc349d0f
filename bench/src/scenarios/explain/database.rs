//! Running EXPLAIN: one database of the stack on a connection of loadgen's own, its
//! statistics (`pg_stat_user_tables`, `pg_stat_user_indexes`) read once the services'
//! backends are gone, then `ANALYZE`, its catalog, and the generic plan of a statement.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::plans::Catalog;
use super::statements::{Db, Statement};
use crate::scenarios::steps::Poll;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the services' backends may take to exit once the services have.
pub(super) const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// One database of the stack, on a connection of loadgen's own (prepared statements
/// live in a session).
pub(super) struct Database {
    pub(super) db: Db,
    pub(super) conn: PgConnection,
    pub(super) catalog: Catalog,
    pub(super) tables: Vec<TableStats>,
    pub(super) indexes: Vec<IndexStats>,
    /// Other client backends still connected after the wait (their statistics may
    /// be missing).
    pub(super) lingering: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct TableStats {
    pub(super) relname: String,
    pub(super) n_live_tup: i64,
    pub(super) n_tup_ins: i64,
    pub(super) n_tup_upd: i64,
    pub(super) n_tup_hot_upd: i64,
    pub(super) n_tup_del: i64,
    pub(super) n_dead_tup: i64,
    pub(super) seq_scan: i64,
    pub(super) seq_tup_read: i64,
    pub(super) idx_scan: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct IndexStats {
    pub(super) relname: String,
    pub(super) indexrelname: String,
    pub(super) idx_scan: i64,
    pub(super) idx_tup_read: i64,
    pub(super) bytes: i64,
}

impl Database {
    /// Connects, waits (bounded) until no other client is connected, reads the
    /// statistics, then ANALYZEs and reads the catalog.
    pub(super) async fn open(db: Db, url: &str) -> anyhow::Result<Database> {
        let options = crate::db::connect_options(url)?;
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {}: timed out", db.name()))?
            .with_context(|| format!("connecting to {}", db.name()))?;
        sqlx::raw_sql("SET statement_timeout = '60s'; SET plan_cache_mode = force_generic_plan")
            .execute(&mut conn)
            .await?;
        let mut poll = Poll::new(QUIESCE_TIMEOUT, Duration::from_millis(50));
        let mut lingering = i64::MAX;
        while lingering > 0 && poll.next().await {
            lingering = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await?;
        }
        let tables = sqlx::query_as(
            "SELECT relname::text AS relname, n_live_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, \
             n_tup_del, n_dead_tup, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan \
             FROM pg_stat_user_tables WHERE relname <> '_sqlx_migrations' ORDER BY relname",
        )
        .fetch_all(&mut conn)
        .await?;
        let indexes = sqlx::query_as(
            "SELECT relname::text AS relname, indexrelname::text AS indexrelname, idx_scan, \
             idx_tup_read, pg_relation_size(indexrelid) AS bytes FROM pg_stat_user_indexes \
             WHERE relname <> '_sqlx_migrations' ORDER BY relname, indexrelname",
        )
        .fetch_all(&mut conn)
        .await?;
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
        let catalog = Catalog::read(&mut conn).await?;
        Ok(Database {
            db,
            conn,
            catalog,
            tables,
            indexes,
            lingering: lingering.max(0),
        })
    }

    /// The generic plan of `s`, as text and as JSON. A batch statement (over
    /// `unnest(…)`) is explained as the services run it, in a transaction begun with
    /// `service_kit::database::BATCH_BEGIN` (`enable_seqscan = off`).
    pub(super) async fn explain(&mut self, s: &Statement) -> Result<(String, Value), String> {
        let batch = s.is_batch();
        if batch {
            sqlx::raw_sql("SET enable_seqscan = off")
                .execute(&mut self.conn)
                .await
                .map_err(|e| format!("SET: {e}"))?;
        }
        let explained = self.explain_prepared(s).await;
        if batch {
            sqlx::raw_sql("RESET enable_seqscan")
                .execute(&mut self.conn)
                .await
                .map_err(|e| format!("RESET: {e}"))?;
        }
        explained
    }

    async fn explain_prepared(&mut self, s: &Statement) -> Result<(String, Value), String> {
        let types = match &s.types {
            Some(t) if !t.is_empty() => format!("({})", t.join(", ")),
            _ => String::new(),
        };
        let args = if s.params == 0 {
            String::new()
        } else {
            format!("({})", vec!["NULL"; s.params].join(", "))
        };
        let conn = &mut self.conn;
        let prepare = format!("PREPARE loadgen_explain{types} AS {}", s.query);
        sqlx::raw_sql(AssertSqlSafe(prepare))
            .execute(&mut *conn)
            .await
            .map_err(|e| format!("PREPARE: {e}"))?;
        let mut plans = Vec::new();
        for options in ["COSTS OFF", "COSTS OFF, FORMAT JSON"] {
            let sql = format!("EXPLAIN ({options}) EXECUTE loadgen_explain{args}");
            let rows = sqlx::raw_sql(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await;
            match rows {
                Ok(rows) => plans.push(
                    rows.iter()
                        .map(|r| r.try_get_unchecked::<String, _>(0).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                Err(e) => plans.push(format!("EXPLAIN: {e}")),
            }
        }
        let _ = sqlx::raw_sql("DEALLOCATE loadgen_explain")
            .execute(&mut *conn)
            .await;
        let json = plans.pop().unwrap_or_default();
        let text = plans.pop().unwrap_or_default();
        let json = serde_json::from_str(&json).map_err(|_| json.clone())?;
        Ok((text, json))
    }
}
