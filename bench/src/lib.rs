//! `loadgen`: load scenarios against the real Orders and Payments release binaries, each
//! run on fresh databases, and the pgbench reference that replays the services' own SQL.
//!
//! From the top down: [`cli`] parses a command into the options of the module that
//! runs it; the [`scenarios`] (`flow`, `smoke`, `burst`, `resume`, `backlog`,
//! `explain`, `chaos`, `fleet`, `drive`) each implement one trait and run in one
//! skeleton, [`scenarios::run`]; [`reference`] runs the `flow` scenario next to
//! pgbench, [`summary`] the medians of reports. Below them: [`stack`] starts and stops
//! the two services as child processes on free ports and fresh databases ([`db`]: the
//! PostgreSQL server; [`cluster`]: one of chaos' own); [`api`] is the bounded HTTP
//! client of the Orders API and the payment page; [`observe`] reads progress and
//! timestamps from the services' databases, so that waiting for thousands of orders
//! never polls the service being measured; [`stats`] turns samples into HdrHistogram
//! percentiles and per-second bins; [`report`] writes JSON and Markdown, [`plot`] the
//! SVG. Every arrow points down: no module imports one above it.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod observe;
pub mod plot;
pub mod reference;
pub mod report;
pub mod scenarios;
pub mod stack;
pub mod stats;
pub mod summary;
pub mod tls;

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory of this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
