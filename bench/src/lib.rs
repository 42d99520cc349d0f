//! `loadgen`: load scenarios against the real Orders and Payments release binaries, each
//! run on fresh databases, and the pgbench reference that replays the services' own SQL.
//!
//! The pieces, one file each: [`stack`] starts and stops the two services as child
//! processes on free ports and fresh databases; [`api`] is the bounded HTTP client of
//! the Orders API and the payment page; [`observe`] reads progress and timestamps from
//! the services' databases (cheap aggregates while a scenario runs, per-order timestamps
//! once it is over), so that waiting for thousands of orders never polls the service
//! being measured; [`stats`] turns samples into HdrHistogram percentiles and
//! per-second bins; [`report`] writes JSON and Markdown, [`plot`] the SVG; the
//! [`scenarios`] are `flow`, `burst`, `resume`, `backlog`, `smoke`, `explain`, `chaos`
//! (on a PostgreSQL cluster of its own, [`cluster`]), and [`reference`]
//! runs pgbench next to the services.

pub mod api;
pub mod cli;
pub mod cluster;
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
