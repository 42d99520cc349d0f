//! The command line: one subcommand per scenario, each parsed into the options of the
//! module that runs it, and [`run`], which runs one.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::db::ServerUrl;
use crate::reference::{PgbenchAlone, ReferenceOptions};
use crate::scenarios::backlog::Backlog;
use crate::scenarios::burst::Burst;
use crate::scenarios::chaos::{self, ChaosOptions};
use crate::scenarios::explain::{Explain, ExplainOptions};
use crate::scenarios::fleet::{DriveOptions, Fleet, FleetOptions, drive};
use crate::scenarios::flow::{Flow, FlowOptions, SmokeOptions};
use crate::scenarios::resume::Resume;
use crate::scenarios::{Size, run as scenario};

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
    Flow(FlowOptions),
    /// N orders at once: time from the last 201 until every page, then every page
    /// paid at once and the time until every outcome is applied.
    Burst(Size),
    /// N orders created while Payments is down: time from Payments' start (and from
    /// the link's connection) until every order has its page.
    Resume(Size),
    /// N unacked outcomes in Payments and N pending orders in Orders when both come
    /// up: time until all 2N are applied / paged, or how far they got by the deadline.
    Backlog(Size),
    /// CI-sized check: 200 closed-loop flows at 8 clients; fails unless every flow is
    /// fulfilled with exactly one invoice and nothing failed.
    Smoke(SmokeOptions),
    /// The plans PostgreSQL uses for every statement of the services (their
    /// .sqlx/query-*.json), generic as prepared statements run, after full flows filled
    /// the tables; with HOT updates and index use over those flows.
    Explain(ExplainOptions),
    /// The services' closed-loop flow and pgbench's full-flow.sql at the same client
    /// count, several runs each, alternating; prints the medians and the ratio.
    Reference(ReferenceOptions),
    /// pgbench alone: bench/reference/full-flow.sql on a fresh database with both schemas.
    Pgbench(PgbenchAlone),
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
    Chaos(ChaosOptions),
    /// The fleet on this host: HAProxy (Debian's package) in front of 2 Orders and 2
    /// Payments, the link over mutual TLS; every instance restarted in turn under an
    /// open-loop load; what clients saw, p99 during the restarts against before, and
    /// each drain's length.
    Fleet(FleetOptions),
    /// The fleet's load against a fleet that runs elsewhere (compose): a number of
    /// customer journeys at a rate, every call once; exits 1 on any error a client saw.
    Drive(DriveOptions),
    /// Drops bench_* databases left by loadgen processes that no longer run, and
    /// chaos_<pid> PostgreSQL clusters of chaos runs that no longer run.
    Cleanup(ServerUrl),
}

/// Runs a command; `Ok(false)` when a check failed.
pub async fn run(command: Command) -> anyhow::Result<bool> {
    let report = match command {
        Command::Flow(o) => scenario(&Flow::new(o)?).await?,
        Command::Smoke(o) => scenario(&Flow::smoke(o)).await?,
        Command::Burst(o) => scenario(&Burst(o)).await?,
        Command::Resume(o) => scenario(&Resume(o)).await?,
        Command::Backlog(o) => scenario(&Backlog(o)).await?,
        Command::Explain(o) => scenario(&Explain::new(o)?).await?,
        Command::Chaos(o) => chaos::run(o).await?,
        Command::Fleet(o) => scenario(&Fleet::new(o)?).await?,
        Command::Drive(o) => drive(o).await?,
        Command::Reference(o) => {
            crate::reference::compare(&o).await?;
            return Ok(true);
        }
        Command::Pgbench(o) => {
            let run = crate::reference::run_pgbench(&o.pgbench, &o.server.database_url).await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
            return Ok(true);
        }
        Command::Summarize { reports } => {
            print!("{}", crate::summary::summarize(&reports)?);
            return Ok(true);
        }
        Command::Cleanup(server) => {
            for name in crate::db::drop_orphans(&server.database_url).await? {
                println!("dropped {name}");
            }
            for name in crate::cluster::drop_orphans().await? {
                println!("dropped PostgreSQL cluster {name}");
            }
            return Ok(true);
        }
    };
    Ok(report.ok())
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
