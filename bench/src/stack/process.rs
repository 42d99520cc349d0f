//! One service process: what became of it ([`ServiceReport`]), its memory (RSS)
//! sampled from `/proc`, the WARN/ERROR records and panics found in its log, and the
//! [`Stack`] methods that stop, kill and account for each of its two processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::process::Child;
use tokio::time::Instant;

use super::Stack;

/// What became of one service over a scenario (all its starts).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServiceReport {
    pub name: String,
    pub starts: u32,
    /// The largest VmHWM (peak resident set) of any of its processes, MiB.
    pub peak_rss_mib: f64,
    /// The largest VmRSS seen by sampling every 100 ms, MiB.
    pub max_sampled_rss_mib: f64,
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

/// One running service process.
pub(super) struct Process {
    pub(super) child: Child,
    pub(super) pid: u32,
    pub(super) log: PathBuf,
    pub(super) max_rss_kib: Arc<AtomicU64>,
    pub(super) hwm_kib: Arc<AtomicU64>,
    pub(super) sampler: tokio::task::JoinHandle<()>,
}

impl Process {
    /// Keeps the kernel's peak RSS (VmHWM) of the process before it goes.
    pub(super) fn record_peak(&self) {
        if let Some(kib) = read_status_kib(self.pid, "VmHWM:") {
            self.hwm_kib.fetch_max(kib, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Orders,
    Payments,
}

impl Which {
    pub(super) fn name(self) -> &'static str {
        match self {
            Which::Orders => "orders",
            Which::Payments => "payments",
        }
    }
}

pub fn humantime_str(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Samples VmRSS every 100 ms (and VmHWM, which the kernel keeps as the peak).
pub(super) async fn sample_rss(pid: u32, max_rss: Arc<AtomicU64>, hwm: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match read_status_kib(pid, "VmRSS:") {
            Some(kib) => {
                max_rss.fetch_max(kib, Ordering::Relaxed);
            }
            None => return,
        }
        if let Some(kib) = read_status_kib(pid, "VmHWM:") {
            hwm.fetch_max(kib, Ordering::Relaxed);
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Counts lines, WARN/ERROR records and panics in a service log (JSON lines, with
/// panics as plain text on stderr); panics past `stop_offset` happened at shutdown.
pub(super) fn scan_log(path: &Path, report: &mut ServiceReport, stop_offset: Option<u64>) {
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

/// Each service's process within a [`Stack`]: its pid, SIGTERM or SIGKILL, and what it
/// left when it ended.
impl Stack {
    /// The running process of `which`, if any.
    pub(super) fn process(&self, which: Which) -> Option<&Process> {
        match which {
            Which::Orders => self.orders.as_ref(),
            Which::Payments => self.payments.as_ref(),
        }
    }

    pub(super) fn process_mut(&mut self, which: Which) -> Option<&mut Process> {
        match which {
            Which::Orders => self.orders.as_mut(),
            Which::Payments => self.payments.as_mut(),
        }
    }

    pub fn pid(&self, which: Which) -> Option<u32> {
        self.process(which).map(|p| p.pid)
    }

    /// SIGTERM, then SIGKILL after the stop timeout. Returns how it ended.
    pub async fn stop(&mut self, which: Which) -> String {
        let stop_timeout = self.config.stop_timeout;
        let Some(process) = self.process_mut(which) else {
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
        let how = match tokio::time::timeout(stop_timeout, process.child.wait()).await {
            Ok(Ok(status)) => format!(
                "SIGTERM: exited after {:.1} s ({status})",
                asked.elapsed().as_secs_f64()
            ),
            Ok(Err(e)) => format!("SIGTERM: wait failed: {e}"),
            Err(_) => {
                let _ = process.child.start_kill();
                let _ = process.child.wait().await;
                format!(
                    "SIGTERM: still running after {:?}, killed (SIGKILL)",
                    stop_timeout
                )
            }
        };
        self.finish(which, how.clone(), Some(before_stop)).await;
        how
    }

    /// SIGKILL (`kill -9`): no shutdown at all. Returns how it ended.
    pub async fn kill(&mut self, which: Which) -> String {
        let stop_timeout = self.config.stop_timeout;
        let Some(process) = self.process_mut(which) else {
            return "not running".into();
        };
        process.record_peak();
        let _ = process.child.start_kill();
        let how = match tokio::time::timeout(stop_timeout, process.child.wait()).await {
            Ok(Ok(status)) => format!("SIGKILL: {status}"),
            Ok(Err(e)) => format!("SIGKILL: wait failed: {e}"),
            Err(_) => "SIGKILL: still not reaped".to_owned(),
        };
        // Everything in its log was written before the kill: no shutdown to tell apart.
        self.finish(which, how.clone(), None).await;
        how
    }

    /// Whether the service's process is running (started and not stopped or killed).
    pub fn is_running(&self, which: Which) -> bool {
        self.process(which).is_some()
    }

    /// Records what the process left: memory, exit, log findings.
    pub(super) async fn finish(&mut self, which: Which, how: String, stop_offset: Option<u64>) {
        let process = match which {
            Which::Orders => self.orders.take(),
            Which::Payments => self.payments.take(),
        };
        let Some(process) = process else { return };
        process.sampler.abort();
        let report = &mut self.reports[which as usize];
        let mib = |kib: u64| kib as f64 / 1024.0;
        report.peak_rss_mib = report
            .peak_rss_mib
            .max(mib(process.hwm_kib.load(Ordering::Relaxed)));
        report.max_sampled_rss_mib = report
            .max_sampled_rss_mib
            .max(mib(process.max_rss_kib.load(Ordering::Relaxed)));
        report.exits.push(how);
        scan_log(&process.log, report, stop_offset);
    }

    /// The reports so far (memory of running processes included).
    pub fn running_rss_mib(&self, which: Which) -> Option<f64> {
        let p = self.process(which)?;
        Some(p.max_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_status_is_readable() {
        assert!(read_status_kib(std::process::id(), "VmRSS:").unwrap() > 0);
    }
}
