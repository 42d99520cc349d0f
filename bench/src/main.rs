//! `loadgen`: see bench/README.md.
//!
//! The scenario runs in a task of its own; Ctrl-C, SIGTERM or a panic drop it, which
//! kills the services (their `Child`ren are `kill_on_drop`), and then the janitor drops
//! every database the run created. Exit code: 0 when every check passed, 1 when one
//! failed (the report is written all the same), 2 on an error.

use std::process::ExitCode;

use bench::cli::{Cli, Command};
use bench::scenarios::{backlog, burst, flow};
use bench::stack::Janitor;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // With `tls`, reqwest has no rustls provider of its own: every client (plain HTTP
    // ones too) takes the process default, the one the services use.
    #[cfg(feature = "tls")]
    let _ =
        rustls::crypto::CryptoProvider::install_default((*service_kit::tls::provider()).clone());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    let database_url = match &cli.command {
        Command::Flow(a) => a.common.database_url.clone(),
        Command::Burst(a) | Command::Resume(a) | Command::Backlog(a) => {
            a.common.database_url.clone()
        }
        Command::Smoke(a) => a.common.database_url.clone(),
        Command::Explain(a) => a.common.database_url.clone(),
        Command::Chaos(a) => a.common.database_url.clone(),
        Command::Fleet(a) => a.common.database_url.clone(),
        Command::Drive(_) => String::new(),
        Command::Reference(a) => a.common.database_url.clone(),
        Command::Pgbench(a) => a.database_url.clone(),
        Command::Cleanup(a) => a.database_url.clone(),
        Command::Summarize { .. } => String::new(),
    };
    let mut task = tokio::spawn(run(cli.command));
    let outcome = tokio::select! {
        joined = &mut task => match joined {
            Ok(Ok(all_checks_passed)) => {
                if all_checks_passed { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            Ok(Err(e)) => {
                eprintln!("loadgen: {e:#}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("loadgen: the scenario panicked: {e}");
                ExitCode::from(2)
            }
        },
        why = interrupted() => {
            eprintln!("loadgen: {why}: stopping the services and dropping the databases");
            task.abort();
            // Resolves once the task's future is dropped: its children are killed.
            let _ = task.await;
            ExitCode::from(2)
        }
    };
    Janitor::global().sweep(&database_url).await;
    bench::cluster::sweep().await;
    outcome
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
        _ = hup.recv() => "hung up",
    }
}

/// Runs a command; `Ok(false)` when a check failed.
async fn run(command: Command) -> anyhow::Result<bool> {
    Ok(match command {
        Command::Flow(args) => flow::run(&args).await?.ok(),
        Command::Burst(args) => burst::run(&args).await?.ok(),
        Command::Resume(args) => bench::scenarios::resume::run(&args).await?.ok(),
        Command::Backlog(args) => backlog::run(&args).await?.ok(),
        Command::Smoke(args) => {
            let report = flow::run_mode(
                "smoke",
                flow::Mode::Closed {
                    concurrency: args.concurrency,
                    count: Some(args.count),
                    duration: None,
                },
                std::time::Duration::from_millis(5),
                &args.common,
            )
            .await?;
            let ok = report.ok();
            println!("smoke: {}", if ok { "ok" } else { "FAILED" });
            ok
        }
        Command::Explain(args) => bench::scenarios::explain::run(&args).await?.ok(),
        Command::Chaos(args) => {
            let report = bench::scenarios::chaos::run(&args).await?;
            let ok = report.ok();
            println!(
                "chaos: {}",
                if ok {
                    "ok"
                } else {
                    "VIOLATIONS (see the checks)"
                }
            );
            ok
        }
        Command::Fleet(args) => {
            let report = bench::scenarios::fleet::run(&args).await?;
            let ok = report.ok();
            println!(
                "fleet: {}",
                if ok { "ok" } else { "FAILED (see the checks)" }
            );
            ok
        }
        Command::Drive(args) => {
            let ok = bench::scenarios::fleet::drive(&args).await?.ok();
            println!(
                "drive: {}",
                if ok { "ok" } else { "FAILED (see the checks)" }
            );
            ok
        }
        Command::Reference(args) => {
            bench::reference::compare(&args).await?;
            true
        }
        Command::Pgbench(args) => {
            let run = bench::reference::run_pgbench(
                &args.pgbench,
                &args.migrations,
                &args.database_url,
                args.clients,
                args.threads,
                args.duration,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
            true
        }
        Command::Summarize { reports } => {
            print!("{}", bench::summary::summarize(&reports)?);
            true
        }
        Command::Cleanup(args) => {
            cleanup(&args.database_url).await?;
            true
        }
    })
}

/// Drops `bench_*_<pid>_<n>` databases whose loadgen process is gone.
async fn cleanup(database_url: &str) -> anyhow::Result<()> {
    let admin = bench::stack::admin_pool(database_url).await?;
    let names: Vec<String> =
        sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 'bench\_%'")
            .fetch_all(&admin)
            .await?;
    for name in names {
        let pid = name.rsplit('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if pid.is_some() && !alive {
            bench::stack::drop_database(&admin, &name).await?;
            println!("dropped {name}");
        }
    }
    admin.close().await;
    for name in bench::cluster::drop_orphans().await? {
        println!("dropped PostgreSQL cluster {name}");
    }
    Ok(())
}
