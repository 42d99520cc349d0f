//! The scenarios, and the one way every one of them runs: [`run`] takes a
//! [`Scenario`], starts a [`Stack`] on fresh databases (and a second instance of each
//! service when it asks), lets it [`measure`](Scenario::measure) into a [`Run`], stops
//! the stack whatever happened, adds what the services left (memory, exits, panics) and
//! [`publish`]es the report: JSON, Markdown, the SVG plot.
//!
//! A new scenario is a struct of its options with `impl Scenario`; `resume.rs` is the
//! shortest example. What scenarios share besides: [`steps`] (the stages, creating and
//! paying orders in bulk, waiting on the database) and [`load`] (open and closed loops).

pub mod backlog;
pub mod burst;
pub mod chaos;
pub mod explain;
pub mod fleet;
pub mod flow;
pub mod load;
pub mod options;
pub mod resume;
pub mod steps;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::time::Instant;

use crate::api::Api;
use crate::observe::Observer;
use crate::report::{Machine, Report};
use crate::stack::Stack;
use crate::stats::Recorder;
pub use options::{Common, Size};

/// A scenario: what the skeleton needs to know of it, and its measurement.
pub trait Scenario: Sync {
    /// Its name, options and plot.
    fn spec(&self) -> Spec<'_>;
    /// The measurement, on `run.stack` where nothing runs yet: stages and errors go
    /// to `run.rec`, figures, checks and parameters to `run.report`.
    fn measure(&self, run: &mut Run) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What the skeleton needs to know of a scenario.
pub struct Spec<'a> {
    /// The name of its report and of its default output directory.
    pub name: &'static str,
    /// The options every scenario shares.
    pub common: &'a Common,
    /// The stages whose latency percentiles the plot draws (each stage gets a
    /// throughput line).
    pub plotted: &'static [&'static str],
    /// Whether it runs a second instance of each service, on the same databases
    /// ([`Run::second`]).
    pub two_instances: bool,
}

impl<'a> Spec<'a> {
    /// One instance of each service.
    pub fn new(name: &'static str, common: &'a Common, plotted: &'static [&'static str]) -> Self {
        let two_instances = false;
        Spec {
            name,
            common,
            plotted,
            two_instances,
        }
    }
}

/// What a scenario measures on, and into.
pub struct Run {
    pub common: Common,
    pub stack: Stack,
    /// The second instance of each service, when the scenario asks for it.
    pub second: Option<Stack>,
    pub rec: Arc<Recorder>,
    pub report: Report,
}

impl Run {
    /// The API client of Orders (with loadgen's client certificate under `--tls`).
    pub fn api(&self) -> anyhow::Result<Api> {
        self.api_recording(self.rec.clone())
    }

    /// The same, its calls and errors recorded in `rec`.
    pub fn api_recording(&self, rec: Arc<Recorder>) -> anyhow::Result<Api> {
        let (c, url) = (&self.common, self.stack.orders_url());
        let tls = self.stack.tls();
        Api::new(&url, c.http_concurrency, c.request_timeout, rec, tls)
    }

    /// Starts Payments, then Orders with its link open; the observer of their databases.
    pub async fn start(&mut self) -> anyhow::Result<Observer> {
        self.stack.start_payments().await?;
        self.stack.start_orders(true).await?;
        self.stack.observer()
    }
}

/// Runs `scenario` on a fresh stack, then publishes its report.
pub async fn run(scenario: &impl Scenario) -> anyhow::Result<Report> {
    let spec = scenario.spec();
    let common = spec.common;
    let dir = common.out_dir(spec.name);
    let outputs = Outputs {
        json: Some(common.json.clone().unwrap_or(dir.join("report.json"))),
        markdown: common.markdown.clone(),
        svg: Some(common.svg.clone().unwrap_or(dir.join("report.svg"))),
        dir: Some(dir.clone()),
    };
    let started = Instant::now();
    let mut stack = Stack::new(&common.stack, dir).await?;
    let second = match spec.two_instances {
        true => Some(stack.sibling("-b").await?),
        false => None,
    };
    let machine = Machine::describe(&stack.observer()?.orders).await;
    let mut run = Run {
        common: common.clone(),
        stack,
        second,
        rec: Arc::default(),
        report: Report::new(spec.name),
    };
    let measured = scenario.measure(&mut run).await;
    let mut report = finish(run, measured).await?;
    report.machine = Machine {
        load_at_end: crate::report::loadavg(),
        ..machine
    };
    report.commit = common.commit_label();
    report.wall_seconds = started.elapsed().as_secs_f64();
    publish(&report, &outputs, spec.plotted)?;
    Ok(report)
}

/// Stops the stacks (always), and adds to the report its stages and errors and what
/// the services left.
async fn finish(run: Run, measured: anyhow::Result<()>) -> anyhow::Result<Report> {
    let Run {
        stack,
        second,
        rec,
        mut report,
        ..
    } = run;
    let mut seconds = match second {
        Some(b) => b.shutdown().await,
        None => Vec::new(),
    };
    seconds.retain(|s| s.starts > 0);
    let mut services = stack.shutdown().await;
    services.append(&mut seconds);
    if let Err(e) = measured {
        for s in &services {
            for log in &s.logs {
                eprintln!("loadgen: {} log: {}", s.name, log.display());
            }
        }
        return Err(e);
    }
    for s in services.iter().filter(|s| s.starts > 0) {
        let detail = format!("{} panic line(s) before it was asked to stop", s.panics);
        let name = format!("{}: no panic while running", s.name);
        report.check(&name, s.panics == 0, detail);
    }
    for s in services.iter().filter(|s| s.panics_at_shutdown > 0) {
        // A finding, not a failed run: the measurement was over (issue 8, item 6).
        report.notes.push(format!(
            "{} panicked {} time(s) after SIGTERM (see its log)",
            s.name, s.panics_at_shutdown
        ));
    }
    report.record(&rec);
    report.services = services;
    Ok(report)
}

/// Where a report goes, each when given: JSON, Markdown (it always goes to stdout too),
/// the SVG plot; and the directory of the run's logs.
pub struct Outputs {
    pub dir: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

/// Writes the report where `outputs` say, prints it, and says whether every check
/// passed. `plotted`: see [`Spec::plotted`].
pub fn publish(report: &Report, outputs: &Outputs, plotted: &[&str]) -> anyhow::Result<()> {
    let files = [&outputs.json, &outputs.markdown, &outputs.svg];
    for path in files.into_iter().flatten() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    if let Some(path) = &outputs.json {
        report.write_json(path)?;
    }
    let md = report.markdown();
    print!("{md}");
    if let Some(path) = &outputs.markdown {
        std::fs::write(path, &md)?;
    }
    if let Some(path) = &outputs.svg
        && let Err(e) = crate::plot::draw(report, plotted, path)
    {
        eprintln!("loadgen: could not draw {}: {e:#}", path.display());
    }
    let written = [("JSON", &outputs.json), ("SVG", &outputs.svg)];
    for (what, path) in written.into_iter().chain([("logs", &outputs.dir)]) {
        if let Some(path) = path {
            println!("{what}: {}", path.display());
        }
    }
    let verdict = if report.ok() {
        "ok"
    } else {
        "FAILED (see the checks)"
    };
    println!("{}: {verdict}", report.scenario);
    Ok(())
}
