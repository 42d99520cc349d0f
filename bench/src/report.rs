//! The result of one scenario: JSON for machines, Markdown for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::stack::ServiceReport;
use crate::stats::{Recorder, Series, StageStats, series, summarize};

/// A headline number: a throughput, or the time until something was done.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// How it is measured.
    pub how: String,
}

/// A correctness check of the run (an invariant that must hold whatever the speed).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The machine a run was made on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub postgres: String,
    /// `/proc/loadavg` when the scenario started and when it ended: the machine is
    /// shared, and a load above the core count means the figures are pessimistic.
    pub load_at_start: String,
    pub load_at_end: String,
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub async fn describe(pool: &sqlx::PgPool) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let postgres = sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel,
            postgres,
            load_at_start: loadavg(),
            load_at_end: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub parameters: serde_json::Value,
    pub commit: String,
    pub machine: Machine,
    pub started_at: String,
    pub wall_seconds: f64,
    pub figures: Vec<Figure>,
    pub stages: Vec<StageStats>,
    pub errors: BTreeMap<String, u64>,
    pub services: Vec<ServiceReport>,
    pub checks: Vec<Check>,
    /// Per-second throughput and latency of every stage, by completion time.
    pub timeline: Vec<Series>,
    pub notes: Vec<String>,
    /// Further Markdown, after the rest (`explain`: the plans and the statistics).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<Section>,
}

/// A titled part of the Markdown report.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    pub markdown: String,
}

impl Report {
    /// An empty report of `scenario`, started now.
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            started_at: chrono::Utc::now().to_rfc3339(),
            ..Default::default()
        }
    }

    /// Fills stages, errors and timeline from the recorder.
    pub fn record(&mut self, recorder: &Recorder) {
        let stages = recorder.stages();
        self.stages = stages.iter().map(summarize).collect();
        self.errors = recorder.errors();
        self.timeline = stages.iter().map(|s| series(s, 1.0)).collect();
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str, how: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            how: how.into(),
        });
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn figure_value(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "## loadgen {} — commit {}\n\n\
             {} cores ({}), Linux {}, PostgreSQL {}, load average {} at the start and {} at the end; started {}, {:.1} s wall; parameters `{}`\n",
            self.scenario,
            self.commit,
            m.cores,
            m.cpu,
            m.kernel,
            m.postgres,
            m.load_at_start,
            m.load_at_end,
            self.started_at,
            self.wall_seconds,
            self.parameters
        );
        self.figures_md(&mut md);
        self.stages_md(&mut md);
        self.errors_md(&mut md);
        self.services_md(&mut md);
        for c in &self.checks {
            let box_ = if c.ok { "x" } else { " " };
            let _ = writeln!(md, "- [{box_}] {}: {}", c.name, c.detail);
        }
        if !self.checks.is_empty() {
            md.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(md, "> {n}");
        }
        for s in &self.sections {
            let _ = write!(md, "\n### {}\n\n{}", s.title, s.markdown);
        }
        md
    }

    fn figures_md(&self, md: &mut String) {
        if self.figures.is_empty() {
            return;
        }
        md.push_str("| figure | value | measured as |\n|---|---:|---|\n");
        for f in &self.figures {
            let value = fmt_num(f.value);
            let _ = writeln!(md, "| {} | {value} {} | {} |", f.name, f.unit, f.how);
        }
        md.push('\n');
    }

    fn stages_md(&self, md: &mut String) {
        if self.stages.is_empty() {
            return;
        }
        md.push_str(
            "| stage (ms) | n | p50 | p90 | p99 | p99.9 | max | measured as |\n\
             |---|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for s in &self.stages {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                s.count,
                fmt_num(s.p50_ms),
                fmt_num(s.p90_ms),
                fmt_num(s.p99_ms),
                fmt_num(s.p999_ms),
                fmt_num(s.max_ms),
                s.how
            );
        }
        md.push('\n');
    }

    fn errors_md(&self, md: &mut String) {
        if self.errors.is_empty() {
            md.push_str("Errors: none.\n\n");
            return;
        }
        md.push_str("| error | count |\n|---|---:|\n");
        for (kind, n) in &self.errors {
            let _ = writeln!(md, "| {kind} | {n} |");
        }
        md.push('\n');
    }

    fn services_md(&self, md: &mut String) {
        if self.services.is_empty() {
            return;
        }
        md.push_str(
            "| service | starts | peak RSS (VmHWM) | max sampled RSS | log lines | WARN | ERROR | panics (running / at shutdown) | exits |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for s in &self.services {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} MiB | {:.1} MiB | {} | {} | {} | {} / {} | {} |",
                s.name,
                s.starts,
                s.peak_rss_mib,
                s.max_sampled_rss_mib,
                s.log_lines,
                s.warn_lines,
                s.error_lines,
                s.panics,
                s.panics_at_shutdown,
                s.exits.join("; ")
            );
        }
        md.push('\n');
        for s in &self.services {
            for line in &s.samples {
                let _ = writeln!(md, "- {}: `{}`", s.name, line.replace('`', "'"));
            }
        }
        if self.services.iter().any(|s| !s.samples.is_empty()) {
            md.push('\n');
        }
    }
}

/// A number with as many decimals as it deserves.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
