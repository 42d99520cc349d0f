//! `explain`: the plan PostgreSQL uses for every statement of the services (issue 8:
//! primary-key plans for single-row updates, HOT-friendly updates, bounded scans).
//!
//! Full flows fill the tables (the closed loop of [`flow`](super::flow)), then orders
//! are created and left unpaid, so the partial indexes of open orders and open sessions
//! have rows. Both services are stopped (their backends flush their statistics when
//! they exit), `pg_stat_user_tables` and `pg_stat_user_indexes` are read, both databases
//! are `ANALYZE`d, and every statement of the services' `.sqlx/query-*.json` is
//! explained in its own database as sqlx runs it, a prepared statement, with the plan
//! cache forced to the generic plan (the one a prepared statement keeps once the cache
//! switches to it): `PREPARE s(<types>) AS <query>; EXPLAIN (COSTS OFF) EXECUTE
//! s(NULL, …)`. EXPLAIN without ANALYZE executes nothing, writes included.
//!
//! Each plan is checked for a Seq Scan on a big table (a failed check) and for an
//! UPDATE or DELETE whose rows are not found through the table's primary key (a note).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::*;
use crate::cli::ExplainArgs;
use crate::report::{Report, Section};
use crate::stack::{Stack, Which};
use crate::stats::{Clock, Recorder};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the services' backends may take to exit once the services have.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Db {
    Orders,
    Payments,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Db::Orders => "orders",
            Db::Payments => "payments",
        }
    }
}

/// One statement of a service, from its `query-<hash>.json`.
#[derive(Debug, Clone)]
pub struct Statement {
    pub hash: String,
    pub query: String,
    /// PostgreSQL types of $1, $2, …, when sqlx recorded them.
    pub types: Option<Vec<String>>,
    pub params: usize,
    /// The database its directory belongs to (`orders/.sqlx`), when that tells.
    pub db: Option<Db>,
}

/// The directories to read: those given, or the workspace's that exist.
pub fn sqlx_dirs(given: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if !given.is_empty() {
        if let Some(d) = given.iter().find(|d| !d.is_dir()) {
            bail!("--sqlx-dir {}: not a directory", d.display());
        }
        return Ok(given.to_vec());
    }
    let root = crate::workspace_root();
    let found: Vec<PathBuf> = [".sqlx", "orders/.sqlx", "payments/.sqlx"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect();
    if found.is_empty() {
        bail!(
            "no .sqlx, orders/.sqlx or payments/.sqlx under {}; pass --sqlx-dir",
            root.display()
        );
    }
    Ok(found)
}

/// Every `query-*.json` of `dirs` (one per hash), sorted by hash.
pub fn load_statements(dirs: &[PathBuf]) -> anyhow::Result<Vec<Statement>> {
    let mut by_hash = BTreeMap::new();
    for dir in dirs {
        let db = match dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
        {
            Some("orders") => Some(Db::Orders),
            Some("payments") => Some(Db::Payments),
            _ => None,
        };
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(hash) = name
                .strip_prefix("query-")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let json =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let statement =
                parse_statement(hash, &json, db).with_context(|| format!("{}", path.display()))?;
            by_hash.entry(hash.to_owned()).or_insert(statement);
        }
    }
    if by_hash.is_empty() {
        bail!("no query-*.json in {dirs:?}");
    }
    Ok(by_hash.into_values().collect())
}

pub fn parse_statement(hash: &str, json: &[u8], db: Option<Db>) -> anyhow::Result<Statement> {
    let v: Value = serde_json::from_slice(json).context("not JSON")?;
    let query = v["query"]
        .as_str()
        .context("no \"query\" text")?
        .trim()
        .trim_end_matches(';')
        .to_owned();
    let parameters = &v["describe"]["parameters"];
    let (types, params) = if let Some(left) = parameters["Left"].as_array() {
        let types = left
            .iter()
            .map(|t| pg_type(t.as_str().unwrap_or("")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let n = types.len();
        (Some(types), n)
    } else if let Some(n) = parameters["Right"].as_u64() {
        (None, n as usize)
    } else {
        bail!("no describe.parameters");
    };
    Ok(Statement {
        hash: hash.to_owned(),
        query,
        types,
        params,
        db,
    })
}

/// sqlx's name of a PostgreSQL type (`Int8Array`, `Uuid`) as SQL (`int8[]`, `uuid`).
pub fn pg_type(sqlx_name: &str) -> anyhow::Result<String> {
    let (base, array) = match sqlx_name
        .strip_suffix("Array")
        .or_else(|| sqlx_name.strip_suffix("[]"))
    {
        Some(base) => (base, "[]"),
        None => (sqlx_name, ""),
    };
    if base.is_empty() || !base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("unknown parameter type {sqlx_name:?}");
    }
    Ok(format!("{}{array}", base.to_ascii_lowercase()))
}

/// The query on one line, at most `max` characters.
pub fn one_line(sql: &str, max: usize) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut short: String = line.chars().take(max).collect();
    short.push('…');
    short
}

/// Tables and indexes of one database.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Table → rows (`pg_class.reltuples` after ANALYZE).
    pub tables: HashMap<String, f64>,
    pub indexes: HashMap<String, Index>,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub table: String,
    /// The primary key, or an index on the same columns (a partial one, say).
    pub primary_columns: bool,
    pub unique: bool,
}

impl Catalog {
    async fn read(conn: &mut PgConnection) -> sqlx::Result<Catalog> {
        let tables: Vec<(String, f64)> = sqlx::query_as(
            "SELECT c.relname::text, c.reltuples::float8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        )
        .fetch_all(&mut *conn)
        .await?;
        let indexes: Vec<(String, String, bool, bool)> = sqlx::query_as(
            "SELECT i.relname::text, c.relname::text, coalesce(x.indkey::text = (SELECT \
             p.indkey::text FROM pg_index p WHERE p.indrelid = x.indrelid AND p.indisprimary), \
             false), x.indisunique FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class c ON c.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Catalog {
            tables: tables.into_iter().collect(),
            indexes: indexes
                .into_iter()
                .map(|(name, table, primary_columns, unique)| {
                    (
                        name,
                        Index {
                            table,
                            primary_columns,
                            unique,
                        },
                    )
                })
                .collect(),
        })
    }

    fn rows(&self, table: &str) -> f64 {
        self.tables.get(table).copied().unwrap_or(0.0)
    }
}

/// The database whose tables the statement names (its directory's, when that tells).
pub fn database_of(statement: &Statement, tables: &HashMap<String, Db>) -> Result<Db, String> {
    if let Some(db) = statement.db {
        return Ok(db);
    }
    let named: BTreeSet<Db> = statement
        .query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|word| tables.get(&word.to_ascii_lowercase()).copied())
        .collect();
    match named.len() {
        1 => Ok(named.into_iter().next().expect("one")),
        0 => Err("names no table of either database".into()),
        _ => Err("names tables of both databases".into()),
    }
}

/// How a plan reaches one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub table: String,
    pub alias: String,
    pub node: String,
    pub index: Option<String>,
}

impl Access {
    fn describe(&self) -> String {
        match &self.index {
            Some(index) => format!("{index} ({})", self.node),
            None => format!("{} on {}", self.node, self.table),
        }
    }
}

/// An UPDATE or DELETE in a plan and how it finds its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub op: String,
    pub table: String,
    pub by: Vec<Access>,
}

/// What one plan does with the tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    pub accesses: Vec<Access>,
    pub writes: Vec<Write>,
    pub limit: bool,
}

fn is_subplan(node: &Value) -> bool {
    matches!(
        node["Parent Relationship"].as_str(),
        Some("InitPlan" | "SubPlan")
    )
}

/// Every table access under `node` (index scans named by their index, bitmap scans by
/// theirs); `with_subplans: false` leaves out InitPlans and SubPlans (CTEs among them).
fn accesses(
    node: &Value,
    parent_alias: Option<&str>,
    catalog: &Catalog,
    with_subplans: bool,
    out: &mut Vec<Access>,
) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    let alias = node["Alias"].as_str().or(parent_alias);
    if kind != "ModifyTable" && kind != "Bitmap Heap Scan" {
        let index = node["Index Name"].as_str();
        let table = node["Relation Name"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                index
                    .and_then(|i| catalog.indexes.get(i))
                    .map(|i| i.table.clone())
            });
        if let Some(table) = table {
            out.push(Access {
                alias: alias.unwrap_or(&table).to_owned(),
                table,
                node: kind.to_owned(),
                index: index.map(str::to_owned),
            });
        }
    }
    // A bitmap heap scan's index scans (under BitmapAnd/Or too) scan its table.
    let child_alias = if kind.starts_with("Bitmap") {
        alias
    } else {
        None
    };
    for child in node["Plans"].as_array().into_iter().flatten() {
        if with_subplans || !is_subplan(child) {
            accesses(child, child_alias, catalog, with_subplans, out);
        }
    }
}

fn writes(node: &Value, catalog: &Catalog, out: &mut Vec<Write>) {
    let op = node["Operation"].as_str().unwrap_or("");
    if node["Node Type"] == "ModifyTable"
        && matches!(op, "Update" | "Delete")
        && let Some(table) = node["Relation Name"].as_str()
    {
        let alias = node["Alias"].as_str().unwrap_or(table);
        let mut found = Vec::new();
        for child in node["Plans"].as_array().into_iter().flatten() {
            if !is_subplan(child) {
                accesses(child, None, catalog, false, &mut found);
            }
        }
        found.retain(|a| a.table == table && a.alias == alias);
        out.push(Write {
            op: op.to_uppercase(),
            table: table.to_owned(),
            by: found,
        });
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        writes(child, catalog, out);
    }
}

fn has_limit(node: &Value) -> bool {
    node["Node Type"] == "Limit"
        || node["Plans"]
            .as_array()
            .into_iter()
            .flatten()
            .any(has_limit)
}

/// Reads the output of `EXPLAIN (FORMAT JSON)`.
pub fn analyze(json: &Value, catalog: &Catalog) -> Analysis {
    let plan = &json[0]["Plan"];
    let mut analysis = Analysis {
        limit: has_limit(plan),
        ..Default::default()
    };
    accesses(plan, None, catalog, true, &mut analysis.accesses);
    writes(plan, catalog, &mut analysis.writes);
    analysis
}

impl Analysis {
    /// Seq Scans on tables of at least `big` rows.
    pub fn big_seq_scans(&self, catalog: &Catalog, big: u64) -> Vec<String> {
        let mut tables: Vec<String> = self
            .accesses
            .iter()
            .filter(|a| a.node == "Seq Scan" && catalog.rows(&a.table) >= big as f64)
            .map(|a| a.table.clone())
            .collect();
        tables.dedup();
        tables
    }

    /// The UPDATEs and DELETEs of tables of at least `big` rows whose rows are not
    /// found through an index on the primary key's columns alone, and why.
    pub fn writes_off_the_key(&self, catalog: &Catalog, big: u64) -> Vec<String> {
        let index = |a: &Access| a.index.as_ref().and_then(|i| catalog.indexes.get(i));
        self.writes
            .iter()
            .filter_map(|w| {
                let keyed =
                    w.by.iter()
                        .all(|a| index(a).is_some_and(|i| i.primary_columns));
                if (!w.by.is_empty() && keyed) || catalog.rows(&w.table) < big as f64 {
                    return None;
                }
                if w.by.is_empty() {
                    return Some(format!(
                        "{} of {}: no scan of it in the plan",
                        w.op, w.table
                    ));
                }
                let by: Vec<String> = w.by.iter().map(Access::describe).collect();
                let unique = w.by.iter().all(|a| index(a).is_some_and(|i| i.unique));
                Some(format!(
                    "{} of {} finds its rows by {}, not by its primary key{}",
                    w.op,
                    w.table,
                    by.join(", "),
                    if unique {
                        " (a unique key: one row)"
                    } else {
                        ""
                    }
                ))
            })
            .collect()
    }
}

/// One database of the stack, on a connection of loadgen's own (prepared statements
/// live in a session).
struct Database {
    db: Db,
    conn: PgConnection,
    catalog: Catalog,
    tables: Vec<TableStats>,
    indexes: Vec<IndexStats>,
    /// Other client backends still connected after the wait (their statistics may
    /// be missing).
    lingering: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct TableStats {
    relname: String,
    n_live_tup: i64,
    n_tup_ins: i64,
    n_tup_upd: i64,
    n_tup_hot_upd: i64,
    n_tup_del: i64,
    n_dead_tup: i64,
    seq_scan: i64,
    seq_tup_read: i64,
    idx_scan: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct IndexStats {
    relname: String,
    indexrelname: String,
    idx_scan: i64,
    idx_tup_read: i64,
    bytes: i64,
}

impl Database {
    /// Connects, waits (bounded) until no other client is connected, reads the
    /// statistics, then ANALYZEs and reads the catalog.
    async fn open(db: Db, url: &str) -> anyhow::Result<Database> {
        let options = crate::stack::connect_options(url)?;
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

    /// The generic plan of `s`, as text and as JSON.
    async fn explain(&mut self, s: &Statement) -> Result<(String, Value), String> {
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

pub async fn run(args: &ExplainArgs) -> anyhow::Result<Report> {
    // Bad input is an error before anything starts.
    let dirs = sqlx_dirs(&args.sqlx_dir)?;
    let statements = load_statements(&dirs)?;
    let mut outputs = Outputs::new(&args.common, "explain");
    if outputs.markdown.is_none() {
        outputs.markdown = Some(outputs.out_dir.join("explain.md"));
    }
    run_on_stack(
        &args.common,
        &outputs,
        &[CREATE_TO_PAGE, COMPLETE_TO_FULFILLED],
        async |stack, rec| body(stack, args, &dirs, &statements, rec).await,
    )
    .await
}

/// One explained statement.
struct Explained<'a> {
    statement: &'a Statement,
    db: Option<Db>,
    plan: Result<(String, Analysis), String>,
    findings: Vec<String>,
}

async fn body(
    stack: &mut Stack,
    args: &ExplainArgs,
    dirs: &[PathBuf],
    statements: &[Statement],
    rec: &Arc<Recorder>,
) -> anyhow::Result<Report> {
    let c = &args.common;
    let mode = flow::Mode::Closed {
        concurrency: args.concurrency,
        count: Some(args.flows),
        duration: None,
    };
    let mut report =
        flow::run_flows(stack, "explain", mode, Duration::from_millis(5), c, rec).await?;

    // Orders left unpaid: they and their sessions stay open.
    let obs = stack.observer()?;
    let open_rec = Arc::new(Recorder::default());
    let open_api = api(stack, c, &open_rec)?;
    let created = create_many(
        &open_api,
        args.open,
        c.http_concurrency,
        &open_rec,
        &Clock::start(),
    )
    .await;
    let paged = until_none_in(&obs, "pending_payment", c.deadline, c.poll).await?;
    report.check(
        "orders left open, each with its page",
        created.ids.len() as u64 == args.open && paged,
        format!(
            "{} of {} created; {}",
            created.ids.len(),
            args.open,
            if paged {
                "all paged"
            } else {
                "not all paged by the deadline"
            }
        ),
    );

    // Stopped services have flushed their statistics.
    obs.close().await;
    stack.stop(Which::Orders).await;
    stack.stop(Which::Payments).await;
    let mut dbs = [
        Database::open(Db::Orders, &stack.orders_database_url()).await?,
        Database::open(Db::Payments, &stack.payments_database_url()).await?,
    ];
    for d in dbs.iter().filter(|d| d.lingering > 0) {
        report.notes.push(format!(
            "{}: {} other connection(s) still open after {QUIESCE_TIMEOUT:?}; their latest statistics may be missing",
            d.db.name(),
            d.lingering
        ));
    }
    // A table name of one database only says where a statement runs.
    let mut owner: HashMap<String, Db> = HashMap::new();
    let mut shared = BTreeSet::new();
    for d in &dbs {
        for table in d.catalog.tables.keys() {
            if owner.insert(table.clone(), d.db).is_some() {
                shared.insert(table.clone());
            }
        }
    }
    owner.retain(|t, _| !shared.contains(t));

    let mut explained = Vec::new();
    for statement in statements {
        let db = database_of(statement, &owner);
        let mut findings = Vec::new();
        let plan = match &db {
            Err(why) => Err(format!("not explained: the statement {why}")),
            Ok(db) => {
                let d = &mut dbs[*db as usize];
                d.explain(statement).await.map(|(text, json)| {
                    let analysis = analyze(&json, &d.catalog);
                    for table in analysis.big_seq_scans(&d.catalog, args.big_table) {
                        findings.push(format!(
                            "Seq Scan on {table} ({:.0} rows)",
                            d.catalog.rows(&table)
                        ));
                    }
                    findings.extend(analysis.writes_off_the_key(&d.catalog, args.big_table));
                    (text, analysis)
                })
            }
        };
        explained.push(Explained {
            statement,
            db: db.ok(),
            plan,
            findings,
        });
    }
    explained.sort_by_key(|e| (e.db, one_line(&e.statement.query, usize::MAX)));

    let failed: Vec<String> = explained
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.plan.as_ref().err().map(|why| format!("#{} {why}", i + 1)))
        .collect();
    report.check(
        "every statement explained in its database",
        failed.is_empty(),
        format!(
            "{} of {} statements{}",
            explained.len() - failed.len(),
            explained.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; {}", failed.join("; "))
            }
        ),
    );
    let seq: Vec<String> = explained
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            e.findings
                .iter()
                .filter(|f| f.starts_with("Seq Scan"))
                .map(move |f| format!("#{} {f}", i + 1))
        })
        .collect();
    report.check(
        &format!("no Seq Scan on a table of ≥ {} rows", args.big_table),
        seq.is_empty(),
        if seq.is_empty() {
            "none in any plan".to_owned()
        } else {
            seq.join("; ")
        },
    );
    for (i, e) in explained.iter().enumerate() {
        for f in e.findings.iter().filter(|f| !f.starts_with("Seq Scan")) {
            report.notes.push(format!("#{} {f}", i + 1));
        }
    }
    for d in &dbs {
        for t in d.tables.iter().filter(|t| t.n_tup_upd > 0) {
            report.figure(
                &format!("HOT updates, {}", t.relname),
                100.0 * t.n_tup_hot_upd as f64 / t.n_tup_upd as f64,
                "%",
                &format!(
                    "n_tup_hot_upd ÷ n_tup_upd of {}.{} ({} of {})",
                    d.db.name(),
                    t.relname,
                    t.n_tup_hot_upd,
                    t.n_tup_upd
                ),
            );
        }
    }
    report.sections = vec![
        Section {
            title: "Plans".into(),
            markdown: plans_markdown(&explained, args),
        },
        Section {
            title: "Tables (pg_stat_user_tables, over the flows)".into(),
            markdown: tables_markdown(&dbs),
        },
        Section {
            title: "Indexes (pg_stat_user_indexes, over the flows)".into(),
            markdown: indexes_markdown(&dbs),
        },
    ];
    report.parameters = serde_json::json!({
        "flows": args.flows, "concurrency": args.concurrency, "open": args.open,
        "big_table": args.big_table, "sqlx_dirs": dirs, "statements": statements.len(),
    });
    for d in dbs {
        let _ = d.conn.close().await;
    }
    Ok(report)
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('`', "'")
}

fn plans_markdown(explained: &[Explained], args: &ExplainArgs) -> String {
    let mut md = format!(
        "Every statement of the services' `query-*.json` ({n}), in its database after {flows} \
         full flows and {open} orders left awaiting payment, then `ANALYZE`: \
         `PREPARE s(<types>) AS <query>; SET plan_cache_mode = force_generic_plan; \
         EXPLAIN (COSTS OFF) EXECUTE s(NULL, …)`. That is the generic plan, which a \
         prepared statement (sqlx prepares every statement) keeps once the plan cache \
         switches to it, after five executions, when it costs no more than the custom \
         plans. Where the generic plan looks costlier (a batch of `unnest($1)`, whose \
         length the generic plan guesses), PostgreSQL keeps planning each execution with \
         its parameters, and that custom plan may differ: the index scans below are the \
         witness of what ran. EXPLAIN without ANALYZE executes nothing. \"Finds rows by\" is the scan of \
         each UPDATE's or DELETE's target table; ⚠ marks a Seq Scan on a table of ≥ \
         {big} rows, or an UPDATE/DELETE of such a table whose rows are not found through \
         an index on its primary key's columns. Smaller tables (`ws_connections`: a row \
         per open connection) are read as the planner likes.\n\n\
         | # | database | statement | reads | UPDATE/DELETE finds rows by | LIMIT | ⚠ |\n\
         |---:|---|---|---|---|---|---:|\n",
        n = explained.len(),
        flows = args.flows,
        open = args.open,
        big = args.big_table,
    );
    for (i, e) in explained.iter().enumerate() {
        let db = e.db.map_or("?", Db::name);
        let sql = cell(&one_line(&e.statement.query, 70));
        let (reads, writes, limit) = match &e.plan {
            Ok((_, a)) => {
                let mut reads: Vec<String> = Vec::new();
                for access in &a.accesses {
                    let d = access.describe();
                    if !reads.contains(&d) {
                        reads.push(d);
                    }
                }
                let writes: Vec<String> = a
                    .writes
                    .iter()
                    .map(|w| {
                        let by: Vec<String> = w.by.iter().map(Access::describe).collect();
                        format!("{} {}: {}", w.op, w.table, by.join(", "))
                    })
                    .collect();
                (
                    reads.join(", "),
                    writes.join("; "),
                    if a.limit { "yes" } else { "" },
                )
            }
            Err(_) => ("not explained".into(), String::new(), ""),
        };
        let _ = writeln!(
            md,
            "| {} | {db} | `{sql}` | {} | {} | {limit} | {} |",
            i + 1,
            cell(&reads),
            cell(&writes),
            if e.findings.is_empty() {
                String::new()
            } else {
                e.findings.len().to_string()
            }
        );
    }
    for (i, e) in explained.iter().enumerate() {
        let _ = write!(
            md,
            "\n#### {}. {} · `{}`\n\n```sql\n{}\n```\n\n```\n{}\n```\n",
            i + 1,
            e.db.map_or("?", Db::name),
            &e.statement.hash[..e.statement.hash.len().min(12)],
            one_line(&e.statement.query, 2_000),
            match &e.plan {
                Ok((text, _)) => text.as_str(),
                Err(why) => why.as_str(),
            }
        );
        for f in &e.findings {
            let _ = writeln!(md, "\n⚠ {f}");
        }
    }
    md
}

fn tables_markdown(dbs: &[Database]) -> String {
    let mut md = String::from(
        "HOT % = updates that wrote no index entry (`n_tup_hot_upd`) ÷ updates. The counts \
         include loadgen's own reads: its watcher reads the orders in flight every 5 ms \
         (`orders LEFT JOIN invoices … WHERE o.id = ANY($1)`, whose generic plan may read \
         invoices by Seq Scan), and its progress polls count orders by status. Seq scans \
         also come from plans made while the tables were small (fresh databases: the plan \
         for a few hundred rows is not the plan for thousands).\n\n\
         | database | table | live rows | inserted | updated | HOT updated | HOT % | deleted | dead rows | seq scans | rows read by seq scans | index scans |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for d in dbs {
        for t in &d.tables {
            let hot = if t.n_tup_upd > 0 {
                format!("{:.1}", 100.0 * t.n_tup_hot_upd as f64 / t.n_tup_upd as f64)
            } else {
                "–".into()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {hot} | {} | {} | {} | {} | {} |",
                d.db.name(),
                t.relname,
                t.n_live_tup,
                t.n_tup_ins,
                t.n_tup_upd,
                t.n_tup_hot_upd,
                t.n_tup_del,
                t.n_dead_tup,
                t.seq_scan,
                t.seq_tup_read,
                t.idx_scan
            );
        }
    }
    md
}

fn indexes_markdown(dbs: &[Database]) -> String {
    let mut md = String::from(
        "| database | table | index | scans | entries read | size |\n|---|---|---|---:|---:|---:|\n",
    );
    for d in dbs {
        for i in &d.indexes {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} KiB |",
                d.db.name(),
                i.relname,
                i.indexrelname,
                i.idx_scan,
                i.idx_tup_read,
                i.bytes / 1024
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_types_become_sql_types() {
        assert_eq!(pg_type("Int8Array").unwrap(), "int8[]");
        assert_eq!(pg_type("Uuid").unwrap(), "uuid");
        assert_eq!(pg_type("TimestamptzArray").unwrap(), "timestamptz[]");
        assert!(pg_type("int8); DROP TABLE orders; --").is_err());
        assert!(pg_type("").is_err());
    }

    #[test]
    fn statements_parse_and_bad_ones_are_errors() {
        let json =
            br#"{"db_name": "PostgreSQL", "query": "SELECT id\n   FROM orders WHERE id = $1;",
            "describe": {"parameters": {"Left": ["Uuid"]}}, "hash": "ab"}"#;
        let s = parse_statement("ab", json, None).unwrap();
        assert_eq!(s.query, "SELECT id\n   FROM orders WHERE id = $1");
        assert_eq!(s.types, Some(vec!["uuid".to_owned()]));
        assert_eq!(s.params, 1);
        assert!(parse_statement("ab", b"{", None).is_err());
        assert!(parse_statement("ab", br#"{"query": "SELECT 1"}"#, None).is_err());
        assert!(sqlx_dirs(&[PathBuf::from("/nonexistent/.sqlx")]).is_err());
        assert_eq!(one_line("SELECT  a,\n  b", 100), "SELECT a, b");
        assert_eq!(one_line("SELECT a, b", 6), "SELECT…");
    }

    #[test]
    fn the_database_is_the_one_whose_tables_are_named() {
        let tables: HashMap<String, Db> = [
            ("orders".to_owned(), Db::Orders),
            ("payment_events".to_owned(), Db::Payments),
        ]
        .into();
        let s = |q: &str| Statement {
            hash: "h".into(),
            query: q.into(),
            types: None,
            params: 0,
            db: None,
        };
        assert_eq!(
            database_of(&s("UPDATE orders o SET x = 1"), &tables),
            Ok(Db::Orders)
        );
        // `orders_cancelled` is not `orders`.
        assert_eq!(
            database_of(
                &s("SELECT 1 FROM payment_events WHERE reason = 'orders_cancelled'"),
                &tables
            ),
            Ok(Db::Payments)
        );
        assert!(database_of(&s("SELECT 1"), &tables).is_err());
    }

    #[test]
    fn writes_are_checked_against_the_primary_key() {
        let catalog = Catalog {
            tables: [("orders".to_owned(), 5000.0), ("ws".to_owned(), 2.0)].into(),
            indexes: [
                (
                    "orders_pkey".to_owned(),
                    Index {
                        table: "orders".into(),
                        primary_columns: true,
                        unique: true,
                    },
                ),
                (
                    "orders_key".to_owned(),
                    Index {
                        table: "orders".into(),
                        primary_columns: false,
                        unique: true,
                    },
                ),
            ]
            .into(),
        };
        // UPDATE orders o … FROM unnest(…) u WHERE o.id = u.id
        let by_pk: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Update",
                "Relation Name": "orders", "Alias": "o", "Plans": [
                {"Node Type": "Nested Loop", "Plans": [
                    {"Node Type": "Function Scan", "Alias": "u"},
                    {"Node Type": "Index Scan", "Index Name": "orders_pkey",
                     "Relation Name": "orders", "Alias": "o"}]}]}}]"#,
        )
        .unwrap();
        let a = analyze(&by_pk, &catalog);
        assert!(a.writes_off_the_key(&catalog, 1000).is_empty());
        assert!(a.big_seq_scans(&catalog, 1000).is_empty());
        assert!(!a.limit);
        // A bitmap scan of a unique key, and a Seq Scan of the same table in a CTE.
        let by_key: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete",
                "Relation Name": "orders", "Alias": "orders", "Plans": [
                {"Node Type": "Limit", "Parent Relationship": "InitPlan", "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "orders", "Alias": "orders_1"}]},
                {"Node Type": "Bitmap Heap Scan", "Relation Name": "orders", "Alias": "orders",
                 "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "orders_key"}]}]}}]"#,
        )
        .unwrap();
        let a = analyze(&by_key, &catalog);
        assert_eq!(
            a.writes_off_the_key(&catalog, 1000),
            vec![
                "DELETE of orders finds its rows by orders_key (Bitmap Index Scan), not by its \
                 primary key (a unique key: one row)"
            ]
        );
        // Small tables are read as the planner likes.
        assert!(a.writes_off_the_key(&catalog, 10_000).is_empty());
        assert_eq!(a.big_seq_scans(&catalog, 1000), vec!["orders"]);
        assert!(a.big_seq_scans(&catalog, 10_000).is_empty());
        assert!(a.limit);
    }
}
