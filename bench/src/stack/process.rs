//! One service of a stack: its process while it runs (its output to a log file, its
//! memory (RSS) sampled from `/proc`), SIGTERM or SIGKILL, and what it left over all its
//! starts ([`ServiceReport`]: exits, peak RSS, WARN/ERROR records and panics in its logs).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// What became of one service over a scenario (all its starts).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServiceReport {
    pub name: String,
    pub starts: u32,
    /// The largest VmHWM (peak resident set) of any of its processes, MiB.
    pub peak_rss_mib: f64,
    /// The largest VmRSS seen by sampling every 100 ms, MiB.
    pub max_sampled_rss_mib: f64,
    /// User and system CPU time of its processes, each read just before it was stopped
    /// or killed, summed over its starts, seconds: what its work cost, whatever else
    /// the machine was doing.
    pub cpu_seconds: f64,
    /// How each process ended.
    pub exits: Vec<String>,
    pub log_lines: u64,
    pub warn_lines: u64,
    pub error_lines: u64,
    pub panics: u64,
    /// Panic lines written after SIGTERM (a shutdown that panics).
    pub panics_at_shutdown: u64,
    /// A few distinct ERROR/WARN messages and panic lines, for the reader.
    pub samples: Vec<String>,
    pub logs: Vec<PathBuf>,
}

/// One running process of a service.
struct Process {
    child: Child,
    pid: u32,
    log: PathBuf,
    max_rss_kib: Arc<AtomicU64>,
    hwm_kib: Arc<AtomicU64>,
    /// utime + stime in clock ticks, as last read by `record_peak`.
    cpu_ticks: AtomicU64,
    sampler: tokio::task::JoinHandle<()>,
}

/// One service: its process while it runs, and its report.
pub(super) struct Service {
    pub(super) report: ServiceReport,
    process: Option<Process>,
}

impl Service {
    pub(super) fn new(name: String) -> Service {
        Service {
            report: ServiceReport {
                name,
                ..Default::default()
            },
            process: None,
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Spawns `cmd` (killed if dropped) with its output to `<dir>/<name>-<start>.log`.
    pub(super) fn spawn(&mut self, mut cmd: Command, dir: &Path) -> anyhow::Result<()> {
        let name = &self.report.name;
        if self.process.is_some() {
            bail!("{name} is already running");
        }
        self.report.starts += 1;
        let log = dir.join(format!("{name}-{}.log", self.report.starts));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("child has no pid")?;
        let max_rss_kib = Arc::new(AtomicU64::new(0));
        let hwm_kib = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn(sample_rss(pid, max_rss_kib.clone(), hwm_kib.clone()));
        self.report.logs.push(log.clone());
        self.process = Some(Process {
            child,
            pid,
            log,
            max_rss_kib,
            hwm_kib,
            cpu_ticks: AtomicU64::new(0),
            sampler,
        });
        Ok(())
    }

    /// An error if the process has exited (it is then accounted for).
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(process) = self.process.as_mut() else {
            bail!("{} is not running", self.report.name);
        };
        if let Some(status) = process.child.try_wait()? {
            let log = process.log.clone();
            self.finish(format!("exited at start-up: {status}"), None);
            bail!(
                "{} exited at start-up ({status}); see {}",
                self.report.name,
                log.display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout`. Returns how it ended.
    pub(super) async fn stop(&mut self, timeout: Duration) -> String {
        let Some(process) = self.process.as_mut() else {
            return "not running".into();
        };
        process.record_peak();
        // What the log holds up to here was written before the stop was asked for.
        let before_stop = std::fs::metadata(&process.log).map_or(0, |m| m.len());
        let asked = Instant::now();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(process.pid.to_string())
            .status();
        let how = match process.wait(timeout).await {
            Some(Ok(status)) => format!(
                "SIGTERM: exited after {:.1} s ({status})",
                asked.elapsed().as_secs_f64()
            ),
            Some(Err(e)) => format!("SIGTERM: wait failed: {e}"),
            None => {
                let _ = process.child.start_kill();
                let _ = process.child.wait().await;
                format!("SIGTERM: still running after {timeout:?}, killed (SIGKILL)")
            }
        };
        self.finish(how.clone(), Some(before_stop));
        how
    }

    /// SIGKILL (`kill -9`): no shutdown at all. Returns how it ended.
    pub(super) async fn kill(&mut self, timeout: Duration) -> String {
        let Some(process) = self.process.as_mut() else {
            return "not running".into();
        };
        process.record_peak();
        let _ = process.child.start_kill();
        let how = match process.wait(timeout).await {
            Some(Ok(status)) => format!("SIGKILL: {status}"),
            Some(Err(e)) => format!("SIGKILL: wait failed: {e}"),
            None => "SIGKILL: still not reaped".to_owned(),
        };
        // Everything in its log was written before the kill: no shutdown to tell apart.
        self.finish(how.clone(), None);
        how
    }

    /// Records what the process left: memory, exit, log findings.
    fn finish(&mut self, how: String, stop_offset: Option<u64>) {
        let Some(process) = self.process.take() else {
            return;
        };
        process.sampler.abort();
        let report = &mut self.report;
        let mib = |kib: &AtomicU64| kib.load(Ordering::Relaxed) as f64 / 1024.0;
        report.peak_rss_mib = report.peak_rss_mib.max(mib(&process.hwm_kib));
        report.max_sampled_rss_mib = report.max_sampled_rss_mib.max(mib(&process.max_rss_kib));
        report.cpu_seconds += process.cpu_ticks.load(Ordering::Relaxed) as f64 / USER_HZ;
        report.exits.push(how);
        scan_log(&process.log, report, stop_offset);
    }
}

impl Process {
    /// Keeps the kernel's peak RSS (VmHWM) and the CPU time of the process before it
    /// goes.
    fn record_peak(&self) {
        if let Some(kib) = read_status_kib(self.pid, "VmHWM:") {
            self.hwm_kib.fetch_max(kib, Ordering::Relaxed);
        }
        if let Some(ticks) = read_cpu_ticks(self.pid) {
            self.cpu_ticks.fetch_max(ticks, Ordering::Relaxed);
        }
    }

    /// Its exit, or `None` when it is still running after `timeout`.
    async fn wait(&mut self, timeout: Duration) -> Option<std::io::Result<ExitStatus>> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok()
    }
}

/// Samples VmRSS every 100 ms (and VmHWM, which the kernel keeps as the peak).
async fn sample_rss(pid: u32, max_rss: Arc<AtomicU64>, hwm: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match read_status_kib(pid, "VmRSS:") {
            Some(kib) => max_rss.fetch_max(kib, Ordering::Relaxed),
            None => return,
        };
        if let Some(kib) = read_status_kib(pid, "VmHWM:") {
            hwm.fetch_max(kib, Ordering::Relaxed);
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The unit of `/proc/<pid>/stat`'s times: USER_HZ, which Linux fixes at 100 for
/// user space whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15), in clock ticks.
fn read_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from
    // after it, where field 3 (the state) is the first.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Counts lines, WARN/ERROR records and panics in a service log (JSON lines, with
/// panics as plain text on stderr); panics past `stop_offset` happened at shutdown.
fn scan_log(path: &Path, report: &mut ServiceReport, stop_offset: Option<u64>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let mut offset = 0u64;
    for line in text.lines() {
        let at_shutdown = stop_offset.is_some_and(|stop| offset >= stop);
        offset += line.len() as u64 + 1;
        report.log_lines += 1;
        let warn = line.contains(r#""level":"WARN""#);
        let error = line.contains(r#""level":"ERROR""#);
        let panic = line.contains("panicked at");
        report.warn_lines += u64::from(warn);
        report.error_lines += u64::from(error);
        if at_shutdown {
            report.panics_at_shutdown += u64::from(panic);
        } else {
            report.panics += u64::from(panic);
        }
        if (warn || error || panic) && report.samples.len() < 8 {
            let text = message_of(line);
            if !report.samples.iter().any(|s| s == &text) {
                report.samples.push(text);
            }
        }
    }
}

/// The level and message (and error field) of a JSON log line, or the line itself.
fn message_of(line: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.chars().take(300).collect();
    };
    let level = value["level"].as_str().unwrap_or("?");
    // Fields are flattened into the object, or nested under "fields".
    let field = |name: &str| {
        value[name]
            .as_str()
            .or(value["fields"][name].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let message = field("message");
    let mut error = field("error");
    if error.is_empty() {
        error = field("reason");
    }
    let mut text = format!("{level}: {message}");
    if !error.is_empty() {
        text.push_str(&format!(" ({error})"));
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_status_is_readable() {
        assert!(read_status_kib(std::process::id(), "VmRSS:").unwrap() > 0);
    }
}
