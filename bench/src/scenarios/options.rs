//! The options every scenario shares ([`Common`]), and what they make: the output
//! directory, the [`StackConfig`], the label of what was measured.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::db::ServerUrl;
use crate::stack::StackConfig;

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The Orders binary (default: <target>/release/orders of this workspace).
    #[arg(long, env = "LOADGEN_ORDERS_BIN")]
    pub orders_bin: Option<PathBuf>,
    /// The Payments binary (default: <target>/release/payments of this workspace).
    #[arg(long, env = "LOADGEN_PAYMENTS_BIN")]
    pub payments_bin: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerUrl,
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
            target_dir()
                .join("bench")
                .join(format!("{scenario}-{stamp}-{}", std::process::id()))
        })
    }

    /// The stack of a run whose logs go to `out_dir` (with `--tls`, its CA and
    /// certificates are made here).
    pub fn stack_config(&self, out_dir: PathBuf) -> anyhow::Result<StackConfig> {
        let release = target_dir().join("release");
        let bin = |given: &Option<PathBuf>, name| given.clone().unwrap_or(release.join(name));
        Ok(StackConfig {
            orders_bin: bin(&self.orders_bin, "orders"),
            payments_bin: bin(&self.payments_bin, "payments"),
            database_url: self.server.database_url.clone(),
            service_log: self.service_log.clone(),
            reconnect_cap: self.reconnect_cap,
            ready_timeout: self.ready_timeout,
            stop_timeout: self.stop_timeout,
            out_dir,
            tls: self.tls.then(crate::tls::BenchTls::generate).transpose()?,
        })
    }

    /// What was measured: the given label, or the workspace's commit.
    pub fn commit_label(&self) -> String {
        self.commit.clone().unwrap_or_else(commit_of_workspace)
    }
}

/// The cargo target directory of this workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
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
