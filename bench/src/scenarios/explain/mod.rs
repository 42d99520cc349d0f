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
//!
//! The pieces: `statements.rs` collects the statements, `database.rs` reads each
//! database's statistics and runs EXPLAIN, `plans.rs` classifies the plans, `markdown.rs`
//! renders them; this file runs them in order and makes the checks.

mod database;
mod markdown;
mod plans;
mod statements;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;

use super::{
    COMPLETE_TO_FULFILLED, CREATE_TO_PAGE, Outputs, api, create_many, flow, run_on_stack,
    until_none_in,
};
use crate::cli::ExplainArgs;
use crate::report::{Report, Section};
use crate::stack::{Stack, Which};
use crate::stats::{Clock, Recorder};
use database::{Database, QUIESCE_TIMEOUT};
use markdown::{indexes_markdown, plans_markdown, tables_markdown};
pub use plans::{Access, Analysis, Catalog, Index, Write, analyze};
pub use statements::{
    Statement, database_of, load_statements, one_line, parse_statement, pg_type, sqlx_dirs,
};

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
