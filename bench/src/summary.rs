//! `loadgen summarize`: the median of several runs, from their JSON reports.
//!
//! Reports are grouped by scenario and parameters; each figure, each stage percentile
//! and each service's peak RSS is the median over the group's runs. Errors are summed
//! and failed checks listed, so a median never hides a run that went wrong.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use crate::report::fmt_num;
use crate::stats::median;

pub fn summarize(paths: &[PathBuf]) -> anyhow::Result<String> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for path in paths {
        let report: Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let key = format!(
            "{} {}",
            report["scenario"].as_str().unwrap_or("?"),
            report["parameters"]
        );
        groups.entry(key).or_default().push(report);
    }
    let mut md = String::new();
    for (key, runs) in &groups {
        group(&mut md, key, runs);
    }
    Ok(md)
}

/// The medians of one group of runs.
fn group(md: &mut String, key: &str, runs: &[Value]) {
    let commits: Vec<&str> = runs.iter().filter_map(|r| r["commit"].as_str()).collect();
    let loads: Vec<String> = runs
        .iter()
        .map(|r| {
            let load = |at: &str| r["machine"][at].as_str().unwrap_or("?").to_owned();
            format!("{} → {}", load("load_at_start"), load("load_at_end"))
        })
        .collect();
    let _ = writeln!(
        md,
        "### {key}\n\n{} run(s), commit {}; medians. Load average (1/5/15 min) per run, start → end: {}\n",
        runs.len(),
        dedup(&commits).join(", "),
        loads.join("; ")
    );
    md.push_str("| figure | median | runs |\n|---|---:|---|\n");
    for name in names(runs, "figures") {
        let found = || runs.iter().filter_map(|r| find(&r["figures"], &name));
        let values: Vec<f64> = found().filter_map(|f| f["value"].as_f64()).collect();
        let unit = found().find_map(|f| f["unit"].as_str()).unwrap_or("");
        let each: Vec<String> = values.iter().map(|v| fmt_num(*v)).collect();
        let median = fmt_num(median(&values));
        let _ = writeln!(md, "| {name} | {median} {unit} | {} |", each.join(" · "));
    }
    md.push_str(
        "\n| stage (ms, medians) | n | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for name in names(runs, "stages") {
        let col = |field: &str| {
            let stages = runs.iter().filter_map(|r| find(&r["stages"], &name));
            fmt_num(median(
                &stages.filter_map(|s| s[field].as_f64()).collect::<Vec<_>>(),
            ))
        };
        let cols = ["count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"].map(col);
        let _ = writeln!(md, "| {name} | {} |", cols.join(" | "));
    }
    md.push('\n');
    for service in ["orders", "payments"] {
        services(md, runs, service);
    }
    errors_and_checks(md, runs);
    md.push('\n');
}

/// One service over the runs: its peak RSS, its CPU time, what it logged.
fn services(md: &mut String, runs: &[Value], service: &str) {
    let found = || runs.iter().filter_map(|r| find(&r["services"], service));
    let rss: Vec<f64> = found().filter_map(|s| s["peak_rss_mib"].as_f64()).collect();
    let cpu: Vec<f64> = found().filter_map(|s| s["cpu_seconds"].as_f64()).collect();
    let sum = |field: &str| -> u64 { found().filter_map(|s| s[field].as_u64()).sum() };
    if !rss.is_empty() {
        let _ = writeln!(
            md,
            "- {service}: peak RSS (VmHWM) median {} MiB (max {}); CPU time median {} s; over all runs {} ERROR and {} WARN log lines, {} panics while running, {} at shutdown",
            fmt_num(median(&rss)),
            fmt_num(rss.iter().copied().fold(0.0, f64::max)),
            if cpu.is_empty() {
                "?".to_owned()
            } else {
                fmt_num(median(&cpu))
            },
            sum("error_lines"),
            sum("warn_lines"),
            sum("panics"),
            sum("panics_at_shutdown"),
        );
    }
}

/// The errors of all runs, summed, and every failed check.
fn errors_and_checks(md: &mut String, runs: &[Value]) {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for map in runs.iter().filter_map(|r| r["errors"].as_object()) {
        for (k, v) in map {
            *errors.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    if errors.is_empty() {
        md.push_str("- errors: none\n");
    }
    for (k, v) in &errors {
        let _ = writeln!(md, "- error, all runs: {k}: {v}");
    }
    for r in runs {
        for c in r["checks"].as_array().into_iter().flatten() {
            if c["ok"] != true {
                let _ = writeln!(
                    md,
                    "- failed check ({}): {}: {}",
                    r["started_at"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?"),
                    c["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|x| x["name"] == name)
}

/// The names in `field` over all runs, in first-seen order.
fn names(runs: &[Value], field: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        for x in r[field].as_array().into_iter().flatten() {
            if let Some(n) = x["name"].as_str()
                && !out.iter().any(|o| o == n)
            {
                out.push(n.to_owned());
            }
        }
    }
    out
}

fn dedup<'a>(v: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x);
        }
    }
    out
}
