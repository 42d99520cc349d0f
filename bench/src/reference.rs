//! The reference: PostgreSQL alone running the services' own statements for one flow
//! (`bench/reference/full-flow.sql`, with the same transaction boundaries), next to
//! the services' closed-loop flow at the same client count, on the same machine.
//!
//! pgbench runs one script against one database, so the reference database holds both
//! schemas, from the services' own migrations (`migrations/orders` and
//! `migrations/payments`; their tables, sequence and function have distinct names).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sqlx::{AssertSqlSafe, Executor};

use crate::db::{Server, ServerUrl};
use crate::report::{Machine, Report, fmt_num};
use crate::scenarios::flow::Flow;
use crate::scenarios::steps::{COMPLETE_TO_FULFILLED, CREATE_TO_PAGE};
use crate::scenarios::{Common, run};
use crate::stats::median;

/// pgbench on `bench/reference/full-flow.sql`, and the schemas it runs on.
#[derive(Debug, Clone, Args)]
pub struct PgbenchOptions {
    /// Client count: pgbench -c (and, for the reference, flow --concurrency).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// pgbench threads (-j); at most the client count.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The pgbench executable.
    #[arg(long, env = "PGBENCH", default_value = "pgbench")]
    pub pgbench: PathBuf,
    /// The services' migrations (orders/ and payments/) for the reference database:
    /// those of the commit the binaries were built from.
    #[arg(long, env = "LOADGEN_MIGRATIONS", default_value_os_t = default_migrations())]
    pub migrations: PathBuf,
}

/// `loadgen pgbench`: pgbench alone.
#[derive(Debug, Clone, Args)]
pub struct PgbenchAlone {
    #[command(flatten)]
    pub pgbench: PgbenchOptions,
    #[command(flatten)]
    pub server: ServerUrl,
}

#[derive(Debug, Clone, Args)]
pub struct ReferenceOptions {
    #[command(flatten)]
    pub pgbench: PgbenchOptions,
    /// Runs of each (alternating); the medians are compared.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub common: Common,
}

/// The script, from this crate's directory.
pub fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/full-flow.sql")
}

/// This workspace's `migrations/`.
pub fn default_migrations() -> PathBuf {
    crate::workspace_root().join("migrations")
}

/// Every `.sql` file of the services' migrations under `root` (`orders/`, then
/// `payments/`), each in name order.
pub fn migration_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for service in ["orders", "payments"] {
        let dir = root.join(service);
        let mut these: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        these.sort();
        files.extend(these);
    }
    Ok(files)
}

/// What one pgbench run gave.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub clients: usize,
    pub seconds: f64,
    /// Flows (script runs) per second, without the initial connection time.
    pub tps: f64,
    pub latency_avg_ms: Option<f64>,
    pub failed: Option<u64>,
}

/// Creates a database with both schemas (from `--migrations`), runs pgbench on
/// `full-flow.sql`, drops it.
pub async fn run_pgbench(o: &PgbenchOptions, database_url: &str) -> anyhow::Result<PgbenchRun> {
    let server = Server::connect(database_url).await?;
    let name = server.create_database("ref").await?;
    let url = server.url_of(&name);
    let result = async {
        let options = crate::db::connect_options(&url)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for file in migration_files(&o.migrations)? {
            let sql = std::fs::read_to_string(&file)?;
            pool.execute(sqlx::raw_sql(AssertSqlSafe(sql)))
                .await
                .with_context(|| format!("applying {}", file.display()))?;
        }
        pool.close().await;
        pgbench(o, &url).await
    }
    .await;
    server.drop_database(&name).await?;
    server.close().await;
    result
}

async fn pgbench(o: &PgbenchOptions, url: &str) -> anyhow::Result<PgbenchRun> {
    let threads = o.threads.clamp(1, o.clients.max(1));
    let output = tokio::process::Command::new(&o.pgbench)
        .args(["-n", "-M", "prepared"])
        .arg(format!("-c{}", o.clients))
        .arg(format!("-j{threads}"))
        .arg(format!("-T{}", o.duration.as_secs().max(1)))
        .arg("-f")
        .arg(script_path())
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| {
            format!(
                "running {} (install postgresql-contrib, or pass --pgbench)",
                o.pgbench.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("pgbench failed ({}):\n{stdout}\n{stderr}", output.status);
    }
    parse_pgbench(&stdout, o.clients, o.duration)
        .with_context(|| format!("reading pgbench's output:\n{stdout}\n{stderr}"))
}

fn parse_pgbench(out: &str, clients: usize, duration: Duration) -> anyhow::Result<PgbenchRun> {
    let number_after = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let tps = number_after("tps = ").context("no `tps = ` line")?;
    Ok(PgbenchRun {
        clients,
        seconds: duration.as_secs_f64(),
        tps,
        latency_avg_ms: number_after("latency average = "),
        failed: number_after("number of failed transactions: ").map(|v| v as u64),
    })
}

/// One services run of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ServicesRun {
    pub flows_per_s: f64,
    pub errors: u64,
    pub create_to_page_p99_ms: f64,
    pub complete_to_fulfilled_p99_ms: f64,
    pub orders_peak_rss_mib: f64,
    pub payments_peak_rss_mib: f64,
}

impl ServicesRun {
    fn of(report: &Report) -> ServicesRun {
        let p99 = |name: &str| {
            let stage = report.stages.iter().find(|s| s.name == name);
            stage.map_or(f64::NAN, |s| s.p99_ms)
        };
        let rss = |name: &str| {
            let service = report.services.iter().find(|s| s.name == name);
            service.map_or(f64::NAN, |s| s.peak_rss_mib)
        };
        ServicesRun {
            flows_per_s: report.figure_value("flows/s").unwrap_or(f64::NAN),
            errors: report.errors.values().sum(),
            create_to_page_p99_ms: p99(CREATE_TO_PAGE),
            complete_to_fulfilled_p99_ms: p99(COMPLETE_TO_FULFILLED),
            orders_peak_rss_mib: rss("orders"),
            payments_peak_rss_mib: rss("payments"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub commit: String,
    pub machine: Machine,
    pub clients: usize,
    pub seconds: f64,
    pub services: Vec<ServicesRun>,
    pub pgbench: Vec<PgbenchRun>,
    pub services_median: f64,
    pub pgbench_median: f64,
    pub ratio: f64,
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## loadgen reference — commit {}, {} clients, {} s per run\n\n\
             {} cores ({}), PostgreSQL {}\n\n\
             | run | services flows/s | pgbench full-flow.sql flows/s |\n|---:|---:|---:|\n",
            self.commit,
            self.clients,
            self.seconds,
            self.machine.cores,
            self.machine.cpu,
            self.machine.postgres
        );
        for i in 0..self.services.len().max(self.pgbench.len()) {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                i + 1,
                self.services
                    .get(i)
                    .map_or("–".into(), |r| fmt_num(r.flows_per_s)),
                self.pgbench.get(i).map_or("–".into(), |r| fmt_num(r.tps)),
            ));
        }
        md.push_str(&format!(
            "| **median** | **{}** | **{}** |\n\nratio services / pgbench: **{:.2}**\n",
            fmt_num(self.services_median),
            fmt_num(self.pgbench_median),
            self.ratio
        ));
        md
    }
}

/// Runs the services' closed loop and pgbench alternately, `--runs` times each.
pub async fn compare(o: &ReferenceOptions) -> anyhow::Result<Comparison> {
    let (mut services, mut pgbench) = (Vec::new(), Vec::new());
    let base_out = o.common.out_dir("reference");
    let database_url = &o.common.stack.server.database_url;
    for i in 1..=o.runs {
        let mut common: Common = o.common.clone();
        common.out = Some(base_out.join(format!("flow-{i}")));
        (common.json, common.markdown, common.svg) = (None, None, None);
        eprintln!("loadgen reference: run {i}/{}: services", o.runs);
        let flows = (None, Some(o.pgbench.duration));
        let report = run(&Flow::closed("flow", o.pgbench.clients, flows, common)).await?;
        services.push(ServicesRun::of(&report));
        eprintln!("loadgen reference: run {i}/{}: pgbench", o.runs);
        pgbench.push(run_pgbench(&o.pgbench, database_url).await?);
    }
    let server = Server::connect(database_url).await?;
    let machine = Machine::describe(server.pool()).await;
    server.close().await;
    let services_median = median(&services.iter().map(|r| r.flows_per_s).collect::<Vec<_>>());
    let pgbench_median = median(&pgbench.iter().map(|r| r.tps).collect::<Vec<_>>());
    let comparison = Comparison {
        commit: o.common.commit_label(),
        machine,
        clients: o.pgbench.clients,
        seconds: o.pgbench.duration.as_secs_f64(),
        services,
        pgbench,
        services_median,
        pgbench_median,
        ratio: services_median / pgbench_median,
    };
    std::fs::create_dir_all(&base_out)?;
    let json = o.common.json.clone();
    let json = json.unwrap_or_else(|| base_out.join("reference.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(&comparison)?)?;
    let md = comparison.markdown();
    println!("{md}\nJSON: {}", json.display());
    if let Some(path) = &o.common.markdown {
        std::fs::write(path, &md)?;
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_15_output() {
        let out = "transaction type: bench/reference/full-flow.sql\n\
                   number of clients: 32\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 41.210 ms\n\
                   initial connection time = 30.118 ms\n\
                   tps = 776.512345 (without initial connection time)\n";
        let run = parse_pgbench(out, 32, Duration::from_secs(30)).unwrap();
        assert!((run.tps - 776.512345).abs() < 1e-9);
        assert_eq!(run.latency_avg_ms, Some(41.21));
        assert_eq!(run.failed, Some(0));
    }

    #[test]
    fn migrations_are_found_orders_first() {
        let files = migration_files(&default_migrations()).unwrap();
        assert!(files.len() >= 2);
        assert!(files[0].to_string_lossy().contains("migrations/orders"));
        assert!(
            files
                .last()
                .unwrap()
                .to_string_lossy()
                .contains("migrations/payments")
        );
    }
}
