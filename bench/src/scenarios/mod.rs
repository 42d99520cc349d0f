//! The scenarios, and what they share: bounded creation and payment of many orders,
//! waiting on a database condition with a deadline, and publishing the report.

pub mod backlog;
pub mod burst;
pub mod chaos;
pub mod explain;
pub mod fleet;
pub mod flow;
pub mod resume;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::Api;
use crate::cli::Common;
use crate::observe::OrderRow;
use crate::report::Report;
use crate::stack::Stack;
use crate::stats::{Clock, Recorder, micros_between};

pub const POST_ORDERS: &str = "POST /orders";
pub const POST_COMPLETE: &str = "POST complete";
pub const CREATE_TO_INITIATE: &str = "create → initiate stored";
pub const CREATE_TO_PAGE: &str = "create → page";
pub const COMPLETE_TO_DISPATCHED: &str = "complete → dispatched";
pub const COMPLETE_TO_FULFILLED: &str = "complete → fulfilled";
pub const FULFILLED_TO_ACKED: &str = "fulfilled → acked";

/// Declares the stages measured from database timestamps after the fact.
pub fn declare_db_stages(rec: &Recorder) {
    rec.stage(
        POST_ORDERS,
        "HTTP round trip of POST /orders, request sent → 201 received",
    );
    rec.stage(
        CREATE_TO_INITIATE,
        "payment_sessions.created_at − orders.created_at: Payments stored the initiate_payment",
    );
    rec.stage(
        CREATE_TO_PAGE,
        "orders.updated_at while awaiting_payment (the page recorded) − orders.created_at",
    );
    rec.stage(
        POST_COMPLETE,
        "HTTP round trip of POST {payment_url}/complete, request sent → 303 received",
    );
    rec.stage(
        COMPLETE_TO_DISPATCHED,
        "payment_events.dispatched_at − payment_events.created_at (the payment's commit)",
    );
    rec.stage(
        COMPLETE_TO_FULFILLED,
        "invoices.issued_at − payment_events.created_at: the outcome applied in Orders",
    );
    rec.stage(
        FULFILLED_TO_ACKED,
        "payment_events.acked_at − invoices.issued_at: Payments stored Orders' ack",
    );
}

/// What creating many orders gave.
pub struct Created {
    pub ids: Vec<Uuid>,
    pub first_sent: Instant,
    pub last_answer: Instant,
}

/// `POST /orders` n times, at most `concurrency` at once.
pub async fn create_many(
    api: &Api,
    n: u64,
    concurrency: usize,
    rec: &Recorder,
    clock: &Clock,
) -> Created {
    let first_sent = Instant::now();
    let ids: Vec<Option<Uuid>> = futures_util::stream::iter(0..n)
        .map(|_| async {
            let sent = Instant::now();
            let id = api.create_order().await;
            if id.is_some() {
                let done = Instant::now();
                rec.record(
                    POST_ORDERS,
                    clock.secs(done),
                    (done - sent).as_micros() as u64,
                );
            }
            id
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    Created {
        ids: ids.into_iter().flatten().collect(),
        first_sent,
        last_answer: Instant::now(),
    }
}

/// Pays every page, at most `concurrency` at once; returns how many answered 303.
pub async fn complete_many(
    api: &Api,
    urls: &[String],
    concurrency: usize,
    rec: &Recorder,
    clock: &Clock,
) -> usize {
    let ok: Vec<bool> = futures_util::stream::iter(urls.iter().cloned())
        .map(|url: String| async move {
            let sent = Instant::now();
            let ok = api.complete(&url).await;
            if ok {
                let done = Instant::now();
                rec.record(
                    POST_COMPLETE,
                    clock.secs(done),
                    (done - sent).as_micros() as u64,
                );
            }
            ok
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    ok.into_iter().filter(|ok| *ok).count()
}

/// A poll period with a deadline: `while poll.next().await { … }` waits one period
/// per round and ends once the deadline has passed.
pub struct Poll {
    deadline: Instant,
    tick: tokio::time::Interval,
}

impl Poll {
    pub fn new(deadline: Duration, period: Duration) -> Poll {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Poll {
            deadline: Instant::now() + deadline,
            tick,
        }
    }

    /// Waits one period; `false` once the deadline has passed.
    pub async fn next(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        self.tick.tick().await;
        true
    }
}

/// Waits until no order is in `status` (`true`), or the deadline (`false`).
pub async fn until_none_in(
    obs: &crate::observe::Observer,
    status: &str,
    deadline: Duration,
    period: Duration,
) -> anyhow::Result<bool> {
    let mut poll = Poll::new(deadline, period);
    while poll.next().await {
        if obs.count_status(status).await? == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Records the per-order stages of page and outcome from the database rows.
pub fn record_db_stages(
    rec: &Recorder,
    clock: &Clock,
    orders: &[OrderRow],
    sessions: &std::collections::HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
    events: &std::collections::HashMap<Uuid, crate::observe::EventRow>,
    pages: bool,
) {
    for o in orders {
        if let Some(initiated) = sessions.get(&o.id) {
            rec.record(
                CREATE_TO_INITIATE,
                clock.secs_wall(*initiated),
                micros_between(o.created_at, *initiated),
            );
        }
        if pages && o.status == "awaiting_payment" {
            rec.record(
                CREATE_TO_PAGE,
                clock.secs_wall(o.updated_at),
                micros_between(o.created_at, o.updated_at),
            );
        }
        if let Some(e) = events.get(&o.id) {
            if let Some(d) = e.dispatched_at {
                rec.record(
                    COMPLETE_TO_DISPATCHED,
                    clock.secs_wall(d),
                    micros_between(e.created_at, d),
                );
            }
            if let Some(issued) = o.issued_at {
                rec.record(
                    COMPLETE_TO_FULFILLED,
                    clock.secs_wall(issued),
                    micros_between(e.created_at, issued),
                );
                if let Some(acked) = e.acked_at {
                    rec.record(
                        FULFILLED_TO_ACKED,
                        clock.secs_wall(acked),
                        micros_between(issued, acked),
                    );
                }
            }
        }
    }
}

/// Where a scenario's files go.
pub struct Outputs {
    pub out_dir: PathBuf,
    pub json: PathBuf,
    pub markdown: Option<PathBuf>,
    pub svg: PathBuf,
}

impl Outputs {
    pub fn new(common: &Common, scenario: &str) -> Outputs {
        let out_dir = common.out_dir(scenario);
        Outputs {
            json: common
                .json
                .clone()
                .unwrap_or_else(|| out_dir.join("report.json")),
            markdown: common.markdown.clone(),
            svg: common
                .svg
                .clone()
                .unwrap_or_else(|| out_dir.join("report.svg")),
            out_dir,
        }
    }
}

/// Runs a scenario sized by `args` on a fresh stack (see [`run_on_stack`]).
pub async fn run_sized(
    args: &crate::cli::SizeArgs,
    name: &str,
    latency_stages: &[&str],
    body: impl AsyncFnOnce(&mut Stack, &crate::cli::SizeArgs, &Arc<Recorder>) -> anyhow::Result<Report>,
) -> anyhow::Result<Report> {
    let outputs = Outputs::new(&args.common, name);
    run_on_stack(
        &args.common,
        &outputs,
        latency_stages,
        async |stack, rec| body(stack, args, rec).await,
    )
    .await
}

/// Runs `body` on a fresh stack with a recorder of its own, then [`finish`] (which
/// stops the stack whatever `body` did).
pub async fn run_on_stack(
    common: &Common,
    outputs: &Outputs,
    latency_stages: &[&str],
    body: impl AsyncFnOnce(&mut Stack, &Arc<Recorder>) -> anyhow::Result<Report>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut stack = Stack::new(common.stack_config(outputs.out_dir.clone())?).await?;
    let rec = Arc::new(Recorder::default());
    let result = body(&mut stack, &rec).await;
    finish(stack, result, common, outputs, latency_stages, started).await
}

/// Stops the stack (always), adds what the services left to the report, and writes
/// JSON, Markdown (stdout too) and the SVG plot.
pub async fn finish(
    stack: Stack,
    result: anyhow::Result<Report>,
    common: &Common,
    outputs: &Outputs,
    latency_stages: &[&str],
    started: Instant,
) -> anyhow::Result<Report> {
    let mut services = stack.shutdown().await;
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            for s in &services {
                for log in &s.logs {
                    eprintln!("loadgen: {} log: {}", s.name, log.display());
                }
            }
            return Err(e);
        }
    };
    // A scenario with more instances put theirs in the report already.
    services.append(&mut report.services);
    for s in &services {
        if s.starts > 0 {
            report.check(
                &format!("{}: no panic while running", s.name),
                s.panics == 0,
                format!("{} panic line(s) before it was asked to stop", s.panics),
            );
        }
        if s.panics_at_shutdown > 0 {
            // A finding, not a failed run: the measurement was over (issue 8, item 6).
            report.notes.push(format!(
                "{} panicked {} time(s) after SIGTERM (see its log)",
                s.name, s.panics_at_shutdown
            ));
        }
    }
    report.services = services;
    report.machine.load_at_end = crate::report::loadavg();
    report.commit = common.commit_label();
    report.wall_seconds = started.elapsed().as_secs_f64();
    publish(&report, outputs, latency_stages)?;
    Ok(report)
}

pub fn publish(report: &Report, outputs: &Outputs, latency_stages: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&outputs.out_dir)?;
    for path in [
        Some(&outputs.json),
        outputs.markdown.as_ref(),
        Some(&outputs.svg),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    report.write_json(&outputs.json)?;
    let md = report.markdown();
    print!("{md}");
    if let Some(path) = &outputs.markdown {
        std::fs::write(path, &md)?;
    }
    if let Err(e) = crate::plot::draw(report, latency_stages, &outputs.svg) {
        eprintln!("loadgen: could not draw {}: {e:#}", outputs.svg.display());
    }
    println!(
        "JSON: {}\nSVG: {}\nlogs: {}",
        outputs.json.display(),
        outputs.svg.display(),
        outputs.out_dir.display()
    );
    Ok(())
}

/// The API client of a scenario (with loadgen's client certificate under `--tls`).
pub fn api(stack: &Stack, common: &Common, rec: &Arc<Recorder>) -> anyhow::Result<Api> {
    Api::new(
        &stack.orders_url(),
        common.http_concurrency,
        common.request_timeout,
        rec.clone(),
        stack.tls(),
    )
}

/// Seconds from an instant (as wall time) to a database time.
pub fn secs_from(clock: &Clock, from: Instant, to: chrono::DateTime<chrono::Utc>) -> f64 {
    micros_between(clock.wall(from), to) as f64 / 1e6
}

/// The latest of some database times.
pub fn latest<'a>(
    times: impl Iterator<Item = &'a chrono::DateTime<chrono::Utc>>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    times.copied().max()
}
