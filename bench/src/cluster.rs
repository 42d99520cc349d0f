//! A PostgreSQL cluster of loadgen's own (Debian's `pg_createcluster`), for `chaos`:
//! it restarts PostgreSQL, which must not disturb anything else on the machine.
//!
//! `chaos_<pid>` is created on a free port with trust authentication, started,
//! restarted with `pg_ctlcluster … restart -m fast|immediate`, and removed with
//! `pg_dropcluster --stop`. Its name is registered so that `main` drops it after any
//! exit (an error, Ctrl-C, a panic); `loadgen cleanup` drops `chaos_<pid>` clusters
//! whose loadgen is gone (one that was SIGKILLed).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};

/// Clusters to drop when the process ends: (version, name).
fn registry() -> &'static Mutex<Vec<(String, String)>> {
    static CLUSTERS: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    CLUSTERS.get_or_init(Mutex::default)
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    registry().lock().unwrap_or_else(|e| e.into_inner())
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

/// Runs a pg_* tool with a timeout; its output in the error.
async fn tool(program: &str, args: &[&str], timeout: Duration) -> anyhow::Result<()> {
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
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_default();
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
        lock().push((version.clone(), name.clone()));
        let port_s = port.to_string();
        tool(
            "pg_createcluster",
            &[
                &version,
                &name,
                "--port",
                &port_s,
                "--start",
                "--",
                "--auth-host=trust",
                "--auth-local=trust",
            ],
            Duration::from_secs(120),
        )
        .await?;
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
        tool(
            "pg_ctlcluster",
            &[&self.version, &self.name, "restart", "-m", m],
            Duration::from_secs(120),
        )
        .await
    }

    /// `pg_dropcluster --stop`.
    pub async fn drop_cluster(self) -> anyhow::Result<()> {
        let r = tool(
            "pg_dropcluster",
            &["--stop", &self.version, &self.name],
            Duration::from_secs(120),
        )
        .await;
        lock().retain(|(_, n)| n != &self.name);
        r
    }
}

/// Drops every cluster still registered (main, after any exit).
pub async fn sweep() {
    let clusters: Vec<(String, String)> = std::mem::take(&mut *lock());
    for (version, name) in clusters {
        if let Err(e) = tool(
            "pg_dropcluster",
            &["--stop", &version, &name],
            Duration::from_secs(120),
        )
        .await
        {
            eprintln!("loadgen: could not drop PostgreSQL cluster {version}/{name}: {e:#}");
        }
    }
}

/// Drops `chaos_<pid>` clusters whose loadgen process is gone; returns their names.
pub async fn drop_orphans() -> anyhow::Result<Vec<String>> {
    let Ok(out) = tokio::process::Command::new("pg_lsclusters")
        .arg("-h")
        .output()
        .await
    else {
        return Ok(Vec::new());
    };
    let mut dropped = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(version), Some(name)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("chaos_")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        tool(
            "pg_dropcluster",
            &["--stop", version, name],
            Duration::from_secs(120),
        )
        .await?;
        dropped.push(format!("{version}/{name}"));
    }
    Ok(dropped)
}
