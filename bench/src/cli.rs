//! The command line: one subcommand per scenario, and the options they share.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::stack::StackConfig;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load scenarios against the real Orders and Payments binaries (see bench/README.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Full flows: create → page → complete → fulfilled with its invoice. Open loop
    /// with --rate and --duration; closed loop with --concurrency and --count or --duration.
    Flow(FlowArgs),
    /// N orders at once: time from the last 201 until every page, then every page
    /// paid at once and the time until every outcome is applied.
    Burst(SizeArgs),
    /// N orders created while Payments is down: time from Payments' start (and from
    /// the link's connection) until every order has its page.
    Resume(SizeArgs),
    /// N unacked outcomes in Payments and N pending orders in Orders when both come
    /// up: time until all 2N are applied / paged, or how far they got by the deadline.
    Backlog(SizeArgs),
    /// CI-sized check: 200 closed-loop flows at 8 clients; fails unless every flow is
    /// fulfilled with exactly one invoice and nothing failed.
    Smoke(SmokeArgs),
    /// The plans PostgreSQL uses for every statement of the services (their
    /// .sqlx/query-*.json), generic as prepared statements run, after full flows filled
    /// the tables; with HOT updates and index use over those flows.
    Explain(ExplainArgs),
    /// The services' closed-loop flow and pgbench's full-flow.sql at the same client
    /// count, several runs each, alternating; prints the medians and the ratio.
    Reference(ReferenceArgs),
    /// pgbench alone: bench/reference/full-flow.sql on a fresh database with both schemas.
    Pgbench(PgbenchArgs),
    /// The medians of several runs: reads JSON reports, groups them by scenario and
    /// parameters, prints Markdown.
    Summarize {
        /// JSON reports written by loadgen.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
    /// A soak under faults (issue 9): orders at a steady rate, each paid or cancelled
    /// at random, while Orders, Payments (kill -9, SIGTERM) and PostgreSQL (restart)
    /// fail every 2–5 s, one then two instances of each; then the invariants, by SQL.
    /// Runs on a PostgreSQL cluster of its own (pg_createcluster; needs root).
    Chaos(ChaosArgs),
    /// The fleet on this host: HAProxy (Debian's package) in front of 2 Orders and 2
    /// Payments, the link over mutual TLS; every instance restarted in turn under an
    /// open-loop load; what clients saw, p99 during the restarts against before, and
    /// each drain's length.
    Fleet(FleetArgs),
    /// The fleet's load against a fleet that runs elsewhere (compose): a number of
    /// customer journeys at a rate, every call once; exits 1 on any error a client saw.
    Drive(DriveArgs),
    /// Drops bench_* databases left by loadgen processes that no longer run, and
    /// chaos_<pid> PostgreSQL clusters of chaos runs that no longer run.
    Cleanup(CleanupArgs),
}

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The Orders binary (default: <target>/release/orders of this workspace).
    #[arg(long, env = "LOADGEN_ORDERS_BIN")]
    pub orders_bin: Option<PathBuf>,
    /// The Payments binary (default: <target>/release/payments of this workspace).
    #[arg(long, env = "LOADGEN_PAYMENTS_BIN")]
    pub payments_bin: Option<PathBuf>,
    /// The PostgreSQL server; each run creates (and drops) its own databases on it.
    #[arg(
        long,
        env = "LOADGEN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Directory for service logs and default report files
    /// (default: <target>/bench/<scenario>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the report as JSON here (default: <out>/report.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the Markdown summary here too (it always goes to stdout).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write the SVG plot here (default: <out>/report.svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// RUST_LOG of the services (their logs go to <out>/<service>-<n>.log, as JSON).
    #[arg(long, default_value = "info")]
    pub service_log: String,
    /// RECONNECT_CAP of Orders, so a link that failed while Payments was down retries
    /// within this long of Payments coming up (the default 10 s would dominate resume).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub reconnect_cap: Duration,
    /// At most this many HTTP requests in flight.
    #[arg(long, default_value_t = 64)]
    pub http_concurrency: usize,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Period of the progress query on the Orders database (a `count(*)` that reads the
    /// orders still waiting: with 100,000 waiting it costs PostgreSQL 15 to 55 ms, which
    /// at 25 ms took half a core from the services being measured, and at 200 ms still a
    /// quarter). The figures come from the services' own timestamps, so the period only
    /// delays the end of a run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Deadline of every wait (for pages, outcomes, a drain).
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// How long a service may take to become ready.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// How long a service may take to exit after SIGTERM before it is killed.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
    /// The link over mutual TLS: Payments serves HTTPS/WSS and requires client
    /// certificates, Orders connects with wss://, loadgen pays the pages with a client
    /// certificate; the CA and certificates are made for the run.
    #[arg(long)]
    pub tls: bool,
    /// What the binaries were built from, for the report (default: `git rev-parse`
    /// of this workspace, `-dirty` when the services' sources have local changes).
    #[arg(long)]
    pub commit: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct FlowArgs {
    /// Open loop: start this many flows per second.
    #[arg(long, conflicts_with = "concurrency", requires = "duration")]
    pub rate: Option<f64>,
    /// Closed loop: this many clients, each running one flow after another.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Closed loop: stop after this many flows.
    #[arg(long, conflicts_with = "rate")]
    pub count: Option<u64>,
    /// How long to start flows for.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Period of the per-order progress query of the flow watcher (a primary-key
    /// lookup of the orders in flight, one query per period).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub watch: Duration,
    /// Open loop: at most this many flows in flight; a flow due beyond that is
    /// counted as an error ("generator: too many flows in flight") and not started.
    #[arg(long, default_value_t = 50_000)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct SizeArgs {
    /// How many orders.
    pub n: u64,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct SmokeArgs {
    #[arg(long, default_value_t = 200)]
    pub count: u64,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
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

#[derive(Debug, Clone, Args)]
pub struct ReferenceArgs {
    /// Client count of both: flow --concurrency and pgbench -c.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each run of each.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Runs of each (alternating); the medians are compared.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// pgbench threads (-j); at most the client count.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The pgbench executable.
    #[arg(long, env = "PGBENCH", default_value = "pgbench")]
    pub pgbench: PathBuf,
    /// The services' migrations (orders/ and payments/) for the reference database:
    /// those of the commit the binaries were built from.
    #[arg(long, env = "LOADGEN_MIGRATIONS", default_value_os_t = crate::reference::default_migrations())]
    pub migrations: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct PgbenchArgs {
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, env = "PGBENCH", default_value = "pgbench")]
    pub pgbench: PathBuf,
    /// The services' migrations (orders/ and payments/) for the reference database.
    #[arg(long, env = "LOADGEN_MIGRATIONS", default_value_os_t = crate::reference::default_migrations())]
    pub migrations: PathBuf,
    #[arg(
        long,
        env = "LOADGEN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Orders to create, at a steady rate.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Orders created per second (the load lasts orders ÷ rate).
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Shortest pause between two faults.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub fault_min: Duration,
    /// Longest pause between two faults.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub fault_max: Duration,
    /// The share of the load run with one instance of each service; then a second
    /// instance of each starts on the same databases (1: never).
    #[arg(long, default_value_t = 0.5)]
    pub single_phase: f64,
    /// Weights of the actions: pay on the page, cancel on the page, cancel through
    /// the API.
    #[arg(long, default_value = "50,25,25")]
    pub mix: String,
    /// After the faults stop: how long every order may take to settle (nothing
    /// pending_payment, every answered action final, no unacked event).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// How long one call (create, cancel, a page button) is retried while its service
    /// is down.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,
    /// How long an order to pay or cancel on its page waits for the page.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub page_wait: Duration,
    /// Seed of every random choice (default: the time); it is in the report.
    #[arg(long)]
    pub seed: Option<u64>,
    /// PostgreSQL major version of the run's own cluster (default: the newest installed).
    #[arg(long)]
    pub pg_version: Option<String>,
    /// Period of the query that finds the orders' pages.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub watch: Duration,
    /// At most this many orders in flight (created, not yet acted on).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// (`--database-url` is not used: chaos runs on a PostgreSQL cluster of its own.)
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    #[arg(
        long,
        env = "LOADGEN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
}

/// The cargo target directory of this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

impl Common {
    pub fn out_dir(&self, scenario: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
            target_dir()
                .join("bench")
                .join(format!("{scenario}-{stamp}-{}", std::process::id()))
        })
    }

    pub fn stack_config(&self, out_dir: PathBuf) -> anyhow::Result<StackConfig> {
        let release = target_dir().join("release");
        let tls = if self.tls {
            Some(crate::tls::BenchTls::generate()?)
        } else {
            None
        };
        Ok(StackConfig {
            orders_bin: self
                .orders_bin
                .clone()
                .unwrap_or_else(|| release.join("orders")),
            payments_bin: self
                .payments_bin
                .clone()
                .unwrap_or_else(|| release.join("payments")),
            database_url: self.database_url.clone(),
            service_log: self.service_log.clone(),
            reconnect_cap: self.reconnect_cap,
            ready_timeout: self.ready_timeout,
            stop_timeout: self.stop_timeout,
            out_dir,
            tls,
        })
    }

    /// What was measured: the given label, or the workspace's commit.
    pub fn commit_label(&self) -> String {
        if let Some(c) = &self.commit {
            return c.clone();
        }
        commit_of_workspace()
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when the services' sources differ from it.
pub fn commit_of_workspace() -> String {
    let root = crate::workspace_root();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "orders",
        "payments",
        "service-kit",
        "shared-protocol",
        "migrations",
        "Cargo.lock",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn open_loop_needs_a_duration() {
        assert!(Cli::try_parse_from(["loadgen", "flow", "--rate", "100"]).is_err());
        assert!(
            Cli::try_parse_from(["loadgen", "flow", "--rate", "100", "--duration", "10s"]).is_ok()
        );
    }
}

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Instances of each service behind HAProxy: 2 (the fleet) or 1.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Capacity instead of restarts: this many clients in a closed loop through
    /// HAProxy for --duration, nothing restarted; journeys fulfilled per second.
    #[arg(long)]
    pub clients: Option<usize>,
    /// With --clients: how long the closed loop runs.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Customer journeys started per second (open loop).
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Load before the first restart (the "before" of the p99).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Pause after an instance is back in HAProxy before the next restart.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Load after the last restart.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub tail: Duration,
    /// DRAIN_PERIOD of every instance: /readyz answers 503 this long after SIGTERM
    /// (HAProxy, checking every second, takes a server out after two failures).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub drain_period: Duration,
    /// How long an order may take to get its page, and then to be fulfilled.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Period of a journey's GET /orders/{id} while it waits.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub poll_order: Duration,
    /// At most this many journeys in flight; one due beyond that is an error.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// The HAProxy executable.
    #[arg(long, env = "HAPROXY", default_value = "haproxy")]
    pub haproxy: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct DriveArgs {
    /// The fleet's Orders API (its load balancer).
    #[arg(long)]
    pub orders_url: String,
    /// Customer journeys to run.
    #[arg(long, default_value_t = 300)]
    pub orders: u64,
    /// Journeys started per second (open loop).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// How long an order may take to get its page, and then to be fulfilled.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Period of a journey's GET /orders/{id} while it waits.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub poll_order: Duration,
    /// At most this many journeys in flight; one due beyond that is an error.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,
    /// At most this many HTTP requests in flight.
    #[arg(long, default_value_t = 64)]
    pub http_concurrency: usize,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
