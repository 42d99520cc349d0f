//! A PostgreSQL cluster of loadgen's own (Debian's `pg_createcluster`), for `chaos`:
//! it restarts PostgreSQL, which must not disturb anything else on the machine.
//!
//! `chaos_<pid>` is created on a free port with trust authentication, started,
//! restarted with `pg_ctlcluster … restart -m fast|immediate`, and removed with
//! `pg_dropcluster --stop`. Its name is registered so that `main` drops it after any
//! exit (an error, Ctrl-C, a panic); `loadgen cleanup` drops `chaos_<pid>` clusters
//! whose loadgen is gone (one that was SIGKILLed).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};

/// Clusters to drop when the process ends: (version, name).
static LEFT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn left() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    LEFT.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a restart stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `-m fast`: clients disconnected, a clean shutdown checkpoint.
    Fast,
    /// `-m immediate`: no checkpoint; crash recovery at the next start.
    Immediate,
}

#[derive(Debug)]
pub struct PgCluster {
    pub version: String,
    pub name: String,
    pub port: u16,
}

/// Runs a pg_* tool (for 120 s at most); its output in the error.
async fn tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(120);
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, run)
        .await
        .with_context(|| format!("{program} {} took over {timeout:?}", args.join(" ")))?
        .with_context(|| format!("running {program} (is postgresql-common installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `pg_dropcluster --stop`, and the cluster is no longer registered.
async fn remove(version: &str, name: &str) -> anyhow::Result<()> {
    let dropped = tool("pg_dropcluster", &["--stop", version, name]).await;
    left().retain(|(_, n)| n != name);
    dropped
}

/// The newest PostgreSQL major version installed (`/usr/lib/postgresql/<v>/bin/initdb`).
pub fn installed_version() -> Option<String> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("bin/initdb").is_file())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    versions.last().map(|v| v.to_string())
}

impl PgCluster {
    /// Creates and starts `chaos_<pid>` on a free port, trust authentication.
    pub async fn create(version: Option<&str>) -> anyhow::Result<PgCluster> {
        // The Debian tools need root to act as user postgres.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
        let uid = uid.and_then(|l| l.split_whitespace().next()).unwrap_or("");
        if uid != "0" {
            bail!(
                "chaos creates its own PostgreSQL cluster with pg_createcluster and must run as root (uid {uid})"
            );
        }
        for t in ["pg_createcluster", "pg_ctlcluster", "pg_dropcluster"] {
            if !std::path::Path::new("/usr/bin").join(t).is_file() {
                bail!("{t} not found: chaos needs Debian's postgresql-common (pg_createcluster …)");
            }
        }
        let version = match version {
            Some(v) => v.to_owned(),
            None => installed_version()
                .context("no PostgreSQL server under /usr/lib/postgresql (give --pg-version)")?,
        };
        let name = format!("chaos_{}", std::process::id());
        let port = crate::stack::free_port()?;
        left().push((version.clone(), name.clone()));
        let (v, n, p) = (version.as_str(), name.as_str(), &port.to_string());
        let trust = ["--auth-host=trust", "--auth-local=trust"];
        let args = [&[v, n, "--port", p, "--start", "--"][..], &trust].concat();
        tool("pg_createcluster", &args).await?;
        Ok(PgCluster {
            version,
            name,
            port,
        })
    }

    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctlcluster <v> <name> restart -m fast|immediate`; returns once it is up.
    pub async fn restart(&self, mode: StopMode) -> anyhow::Result<()> {
        let m = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let (v, n) = (self.version.as_str(), self.name.as_str());
        tool("pg_ctlcluster", &[v, n, "restart", "-m", m]).await
    }

    /// `pg_dropcluster --stop`.
    pub async fn drop_cluster(self) -> anyhow::Result<()> {
        remove(&self.version, &self.name).await
    }
}

/// Drops every cluster still registered (main, after any exit).
pub async fn sweep() {
    let clusters: Vec<(String, String)> = left().clone();
    for (version, name) in clusters {
        if let Err(e) = remove(&version, &name).await {
            eprintln!("loadgen: could not drop PostgreSQL cluster {version}/{name}: {e:#}");
        }
    }
}

/// Drops `chaos_<pid>` clusters whose loadgen process is gone; returns their names.
pub async fn drop_orphans() -> anyhow::Result<Vec<String>> {
    let mut lsclusters = tokio::process::Command::new("pg_lsclusters");
    let Ok(out) = lsclusters.arg("-h").output().await else {
        return Ok(Vec::new());
    };
    let mut dropped = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(version), Some(name)) = (f.next(), f.next()) else {
            continue;
        };
        let pid = name
            .strip_prefix("chaos_")
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            remove(version, name).await?;
            dropped.push(format!("{version}/{name}"));
        }
    }
    Ok(dropped)
}
