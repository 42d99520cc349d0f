//! The options every scenario shares ([`Common`]): the stack's, where the report goes,
//! the HTTP client's bounds, the waits; and the label of what was measured.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::stack::StackOptions;

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    #[command(flatten)]
    pub stack: StackOptions,
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
    /// What the binaries were built from, for the report (default: `git rev-parse`
    /// of this workspace, `-dirty` when the services' sources have local changes).
    #[arg(long)]
    pub commit: Option<String>,
}

/// The options of a scenario sized by a number of orders (`burst`, `resume`, `backlog`).
#[derive(Debug, Clone, Args)]
pub struct Size {
    /// How many orders.
    pub n: u64,
    #[command(flatten)]
    pub common: Common,
}

impl Common {
    /// `--out`, or `<target>/bench/<scenario>-<time>-<pid>`.
    pub fn out_dir(&self, scenario: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
            crate::target_dir()
                .join("bench")
                .join(format!("{scenario}-{stamp}-{}", std::process::id()))
        })
    }

    /// What was measured: the given label, or the workspace's commit.
    pub fn commit_label(&self) -> String {
        self.commit.clone().unwrap_or_else(commit_of_workspace)
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when the services' sources differ from it.
fn commit_of_workspace() -> String {
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
    let sources = [
        "orders",
        "payments",
        "service-kit",
        "shared-protocol",
        "migrations",
        "Cargo.lock",
    ];
    let dirty = git(&[&["status", "--porcelain", "--"][..], &sources].concat())
        .is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}
