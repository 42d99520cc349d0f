//! Rendering the report's sections in Markdown: the plans (a table of every statement,
//! then each statement with its plan and findings), the tables' and the indexes'
//! statistics.

use std::fmt::Write as _;

use super::database::Database;
use super::plans::{Access, Analysis};
use super::statements::{Db, Statement, one_line};

/// One explained statement.
pub(super) struct Explained<'a> {
    pub(super) statement: &'a Statement,
    pub(super) db: Option<Db>,
    pub(super) plan: Result<(String, Analysis), String>,
    pub(super) findings: Vec<String>,
}

/// What filled the tables, for the plans' introduction.
pub(super) struct Filled {
    pub(super) flows: u64,
    pub(super) open: u64,
    pub(super) big_table: u64,
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('`', "'")
}

pub(super) fn plans_markdown(explained: &[Explained], args: &Filled) -> String {
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
         witness of what ran. A batch statement (over `unnest(…)`) is explained with \
         `enable_seqscan = off`, as the services begin their batch transactions \
         (`service_kit::database::BATCH_BEGIN`); Payments' outbox page, claim and attempt \
         count run in batch transactions too but are shown with the default settings. \
         EXPLAIN without ANALYZE executes nothing. \
         \"Finds rows by\" is the scan of \
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
        table_row(&mut md, i + 1, e);
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

/// Statement `number`'s row of the plans' table.
fn table_row(md: &mut String, number: usize, e: &Explained) {
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
            let limit = if a.limit { "yes" } else { "" };
            (reads.join(", "), writes.join("; "), limit)
        }
        Err(_) => ("not explained".into(), String::new(), ""),
    };
    let findings = match e.findings.len() {
        0 => String::new(),
        n => n.to_string(),
    };
    let (reads, writes) = (cell(&reads), cell(&writes));
    let _ = writeln!(
        md,
        "| {number} | {db} | `{sql}` | {reads} | {writes} | {limit} | {findings} |"
    );
}

pub(super) fn tables_markdown(dbs: &[Database]) -> String {
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

pub(super) fn indexes_markdown(dbs: &[Database]) -> String {
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
