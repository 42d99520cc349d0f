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

use clap::Args;
use sqlx::Connection;

use super::flow::Flow;
use super::steps::{COMPLETE_TO_FULFILLED, CREATE_TO_PAGE, create_many, until_none_in};
use super::{Common, Run, Scenario, Spec};
use crate::report::{Report, Section};
use crate::stack::Which;
use crate::stats::{Clock, Recorder};
use database::{Database, QUIESCE_TIMEOUT};
use markdown::{Explained, Filled, indexes_markdown, plans_markdown, tables_markdown};
use plans::analyze;
use statements::{Db, Statement, database_of, load_statements, one_line, sqlx_dirs};

#[derive(Debug, Clone, Args)]
pub struct ExplainOptions {
    /// Full flows first (closed loop), to fill the tables.
    #[arg(long, default_value_t = 5_000)]
    pub flows: u64,
    /// Clients of those flows.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Orders then created and left unpaid (awaiting payment), so the partial indexes
    /// of open orders and open sessions have rows.
    #[arg(long, default_value_t = 200)]
    pub open: u64,
    /// A directory of the services' query-*.json (repeatable; default: .sqlx,
    /// orders/.sqlx and payments/.sqlx of this workspace, those that exist).
    #[arg(long)]
    pub sqlx_dir: Vec<PathBuf>,
    /// A table with at least this many rows (after ANALYZE) is big: a Seq Scan on it
    /// fails a check.
    #[arg(long, default_value_t = 1_000)]
    pub big_table: u64,
    #[command(flatten)]
    pub common: Common,
}

pub struct Explain {
    options: ExplainOptions,
    dirs: Vec<PathBuf>,
    statements: Vec<Statement>,
    /// Its Markdown goes to `<out>/explain.md` unless `--markdown` says.
    common: Common,
}

impl Explain {
    /// Reads the statements first: bad input is an error before anything starts.
    pub fn new(options: ExplainOptions) -> anyhow::Result<Explain> {
        let dirs = sqlx_dirs(&options.sqlx_dir)?;
        let statements = load_statements(&dirs)?;
        let mut common = options.common.clone();
        let out = common.out_dir("explain");
        common.markdown.get_or_insert(out.join("explain.md"));
        common.out = Some(out);
        Ok(Explain {
            options,
            dirs,
            statements,
            common,
        })
    }
}

impl Scenario for Explain {
    fn spec(&self) -> Spec<'_> {
        let plotted = &[CREATE_TO_PAGE, COMPLETE_TO_FULFILLED];
        Spec::new("explain", &self.common, plotted)
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let o = &self.options;
        let flows = (Some(o.flows), None);
        let fill = Flow::closed("explain", o.concurrency, flows, self.common.clone());
        fill.measure(run).await?;
        self.leave_open(run).await?;
        // Stopped services have flushed their statistics.
        run.stack.observer()?.close().await;
        run.stack.stop(Which::Orders).await;
        run.stack.stop(Which::Payments).await;
        let mut dbs = [
            Database::open(Db::Orders, &run.stack.database_url(Which::Orders)).await?,
            Database::open(Db::Payments, &run.stack.database_url(Which::Payments)).await?,
        ];
        for d in dbs.iter().filter(|d| d.lingering > 0) {
            run.report.notes.push(format!(
                "{}: {} other connection(s) still open after {QUIESCE_TIMEOUT:?}; their latest statistics may be missing",
                d.db.name(),
                d.lingering
            ));
        }
        let explained = self.explain_all(&mut dbs).await;
        self.report(&mut run.report, &explained, &dbs);
        for d in dbs {
            let _ = d.conn.close().await;
        }
        Ok(())
    }
}

impl Explain {
    /// Orders left unpaid: they and their sessions stay open. Their calls are not
    /// the flows' (a recorder of their own).
    async fn leave_open(&self, run: &mut Run) -> anyhow::Result<()> {
        let (c, open) = (&run.common, self.options.open);
        let obs = run.stack.observer()?;
        let rec = Arc::new(Recorder::default());
        let api = run.api_recording(rec.clone())?;
        let created = create_many(&api, open, c.http_concurrency, &rec, &Clock::start()).await;
        let paged = until_none_in(&obs, "pending_payment", c.deadline, c.poll).await?;
        let all = if paged {
            "all paged"
        } else {
            "not all paged by the deadline"
        };
        run.report.check(
            "orders left open, each with its page",
            created.ids.len() as u64 == open && paged,
            format!("{} of {open} created; {all}", created.ids.len()),
        );
        Ok(())
    }

    /// Every statement, in the database whose tables it names, with its findings.
    async fn explain_all(&self, dbs: &mut [Database; 2]) -> Vec<Explained<'_>> {
        // A table name of one database only says where a statement runs.
        let mut owner: HashMap<String, Db> = HashMap::new();
        let mut shared = BTreeSet::new();
        for d in dbs.iter() {
            for table in d.catalog.tables.keys() {
                if owner.insert(table.clone(), d.db).is_some() {
                    shared.insert(table.clone());
                }
            }
        }
        owner.retain(|t, _| !shared.contains(t));
        let big = self.options.big_table;
        let mut explained = Vec::new();
        for statement in &self.statements {
            let db = database_of(statement, &owner);
            let mut findings = Vec::new();
            let plan = match &db {
                Err(why) => Err(format!("not explained: the statement {why}")),
                Ok(db) => {
                    let d = &mut dbs[*db as usize];
                    d.explain(statement).await.map(|(text, json)| {
                        let analysis = analyze(&json, &d.catalog);
                        for table in analysis.big_seq_scans(&d.catalog, big) {
                            let rows = d.catalog.rows(&table);
                            findings.push(format!("Seq Scan on {table} ({rows:.0} rows)"));
                        }
                        findings.extend(analysis.writes_off_the_key(&d.catalog, big));
                        (text, analysis)
                    })
                }
            };
            let db = db.ok();
            explained.push(Explained {
                statement,
                db,
                plan,
                findings,
            });
        }
        explained.sort_by_key(|e| (e.db, one_line(&e.statement.query, usize::MAX)));
        explained
    }

    /// The checks on the plans, the HOT ratios, and the plans and statistics as
    /// sections.
    fn report(&self, report: &mut Report, explained: &[Explained], dbs: &[Database; 2]) {
        let o = &self.options;
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
                failed.iter().map(|f| format!("; {f}")).collect::<String>()
            ),
        );
        let numbered = explained.iter().enumerate().flat_map(|(i, e)| {
            e.findings
                .iter()
                .map(move |f| (f.starts_with("Seq Scan"), format!("#{} {f}", i + 1)))
        });
        let (seq, notes): (Vec<_>, Vec<_>) = numbered.partition(|(seq, _)| *seq);
        let seq: Vec<String> = seq.into_iter().map(|(_, f)| f).collect();
        report.check(
            &format!("no Seq Scan on a table of ≥ {} rows", o.big_table),
            seq.is_empty(),
            match seq.is_empty() {
                true => "none in any plan".to_owned(),
                false => seq.join("; "),
            },
        );
        report.notes.extend(notes.into_iter().map(|(_, f)| f));
        hot_figures(report, dbs);
        let filled = Filled {
            flows: o.flows,
            open: o.open,
            big_table: o.big_table,
        };
        report.sections = vec![
            Section {
                title: "Plans".into(),
                markdown: plans_markdown(explained, &filled),
            },
            Section {
                title: "Tables (pg_stat_user_tables, over the flows)".into(),
                markdown: tables_markdown(dbs),
            },
            Section {
                title: "Indexes (pg_stat_user_indexes, over the flows)".into(),
                markdown: indexes_markdown(dbs),
            },
        ];
        report.parameters = serde_json::json!({
            "flows": o.flows, "concurrency": o.concurrency, "open": o.open,
            "big_table": o.big_table, "sqlx_dirs": self.dirs, "statements": self.statements.len(),
        });
    }
}

/// The HOT ratio of every updated table.
fn hot_figures(report: &mut Report, dbs: &[Database; 2]) {
    for d in dbs {
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
}
