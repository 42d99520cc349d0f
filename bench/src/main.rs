//! `loadgen`: see bench/README.md.
//!
//! The scenario runs in a task of its own; Ctrl-C, SIGTERM or a panic drop it, which
//! kills the services (their `Child`ren are `kill_on_drop`), and then every database
//! and PostgreSQL cluster the run created is dropped. Exit code: 0 when every check
//! passed, 1 when one failed (the report is written all the same), 2 on an error.

use std::process::ExitCode;

use bench::cli::Cli;
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
    let mut task = tokio::spawn(bench::cli::run(cli.command));
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
    bench::db::sweep().await;
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
