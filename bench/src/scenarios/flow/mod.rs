//! `flow`: full flows, each create → page → complete → fulfilled with its invoice.
//!
//! Closed loop (`--concurrency C` with `--count N` or `--duration S`): C clients, each
//! running one flow after another, as fast as the services allow. Open loop (`--rate R
//! --duration S`): a flow is due every 1/R s whatever happens to the earlier ones, and
//! every latency is measured from the time its flow was DUE (wrk2's correction for
//! coordinated omission): a stalled service shows as latency, not as fewer samples.
//!
//! A flow learns that its order has its page, or is fulfilled, from the [`Watcher`]:
//! one task that every `--watch` period (5 ms) reads the orders in flight from the
//! Orders database by primary key (`WHERE id = ANY($1)`), one query for all of them,
//! instead of each flow polling `GET /orders/{id}`. The page and fulfilment times are
//! the database's own (`orders.updated_at` of the page, `invoices.issued_at`), so the
//! watcher's period delays the next request of a flow but does not blur its latency.

mod watcher;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    COMPLETE_TO_FULFILLED, CREATE_TO_PAGE, Outputs, POST_COMPLETE, POST_ORDERS, api, run_on_stack,
};
use crate::cli::{Common, FlowArgs};
use crate::report::{Machine, Report};
use crate::stack::Stack;
use crate::stats::{Clock, Recorder, micros_between};
pub use watcher::Watcher;

pub const FLOW: &str = "flow (end to end)";
pub const INVOICE: &str = "GET invoice";

/// Closed or open loop.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Closed {
        concurrency: usize,
        count: Option<u64>,
        duration: Option<Duration>,
    },
    Open {
        rate: f64,
        duration: Duration,
        max_in_flight: usize,
    },
}

impl Mode {
    pub fn from_args(args: &FlowArgs) -> anyhow::Result<Mode> {
        if let Some(rate) = args.rate {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            return Ok(Mode::Open {
                rate,
                duration: args
                    .duration
                    .ok_or_else(|| anyhow::anyhow!("--rate needs --duration"))?,
                max_in_flight: args.max_in_flight,
            });
        }
        anyhow::ensure!(
            args.count.is_some() || args.duration.is_some(),
            "give --count or --duration (closed loop), or --rate with --duration (open loop)"
        );
        Ok(Mode::Closed {
            concurrency: args.concurrency.unwrap_or(32),
            count: args.count,
            duration: args.duration,
        })
    }
}

pub async fn run(args: &FlowArgs) -> anyhow::Result<Report> {
    let mode = Mode::from_args(args)?;
    run_mode("flow", mode, args.watch, &args.common).await
}

/// Runs flows in `mode` on a fresh stack and publishes the report.
pub async fn run_mode(
    scenario: &str,
    mode: Mode,
    watch: Duration,
    common: &Common,
) -> anyhow::Result<Report> {
    let outputs = Outputs::new(common, scenario);
    run_on_stack(
        common,
        &outputs,
        &[CREATE_TO_PAGE, COMPLETE_TO_FULFILLED],
        async |stack, rec| run_flows(stack, scenario, mode, watch, common, rec).await,
    )
    .await
}

struct Ctx {
    api: crate::api::Api,
    watcher: Watcher,
    rec: Arc<Recorder>,
    clock: Clock,
    deadline: Duration,
}

/// One flow, its latencies measured from `due`.
async fn one_flow(ctx: &Ctx, due: Instant) -> bool {
    let rec = &ctx.rec;
    let clock = &ctx.clock;
    let Some(id) = ctx.api.create_order().await else {
        return false;
    };
    let created = Instant::now();
    rec.record(
        POST_ORDERS,
        clock.secs(created),
        (created - due).as_micros() as u64,
    );
    let (url, paged_at) = match ctx.watcher.page(id, ctx.deadline).await {
        Ok(page) => page,
        Err(why) => {
            rec.error(format!("waiting for the page: {why}"));
            return false;
        }
    };
    rec.record(
        CREATE_TO_PAGE,
        clock.secs_wall(paged_at),
        micros_between(clock.wall(due), paged_at),
    );
    // The complete is due now that the page is known.
    let ready = Instant::now();
    if !ctx.api.complete(&url).await {
        return false;
    }
    let paid = Instant::now();
    rec.record(
        POST_COMPLETE,
        clock.secs(paid),
        (paid - ready).as_micros() as u64,
    );
    let issued = match ctx.watcher.fulfilled(id, ctx.deadline).await {
        Ok(at) => at,
        Err(why) => {
            rec.error(format!("waiting for fulfilment: {why}"));
            return false;
        }
    };
    rec.record(
        COMPLETE_TO_FULFILLED,
        clock.secs_wall(issued),
        micros_between(clock.wall(ready), issued),
    );
    let asked = Instant::now();
    if !ctx.api.invoice(id).await {
        return false;
    }
    let done = Instant::now();
    rec.record(INVOICE, clock.secs(done), (done - asked).as_micros() as u64);
    rec.record(FLOW, clock.secs(done), (done - due).as_micros() as u64);
    true
}

/// Starts both services on `stack` and runs flows in `mode`; the report has the
/// flows' figures, stages and checks (`explain` fills its tables with it).
pub async fn run_flows(
    stack: &mut Stack,
    scenario: &str,
    mode: Mode,
    watch: Duration,
    c: &Common,
    rec: &Arc<Recorder>,
) -> anyhow::Result<Report> {
    stack.start_payments().await?;
    stack.start_orders(true).await?;
    let obs = stack.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    let due_note = match mode {
        Mode::Open { .. } => {
            "from the time the flow was due (open loop: coordinated-omission corrected)"
        }
        Mode::Closed { .. } => "from the time the client started the flow",
    };
    rec.stage(
        POST_ORDERS,
        &format!("POST /orders → 201 received, {due_note}"),
    );
    rec.stage(
        CREATE_TO_PAGE,
        &format!("orders.updated_at of the page (database clock), {due_note}"),
    );
    rec.stage(
        POST_COMPLETE,
        "POST {payment_url}/complete → 303, from when loadgen saw the page (before waiting for an HTTP slot)",
    );
    rec.stage(
        COMPLETE_TO_FULFILLED,
        "invoices.issued_at (database clock) − when loadgen saw the page and was ready to pay",
    );
    rec.stage(INVOICE, "GET /orders/{id}/invoice → 200, HTTP round trip");
    rec.stage(
        FLOW,
        &format!(
            "invoice received, {due_note}; includes the watcher's discovery delays (≤ 2 × {watch:?})"
        ),
    );
    let ctx = Arc::new(Ctx {
        api: api(stack, c, rec)?,
        watcher: Watcher::start(obs.clone(), watch, rec.clone()),
        rec: rec.clone(),
        clock: Clock::start(),
        deadline: c.deadline,
    });
    let t0 = ctx.clock.t0;
    let mut max_in_flight_seen = 0usize;
    match mode {
        Mode::Closed {
            concurrency,
            count,
            duration,
        } => {
            let next = Arc::new(AtomicU64::new(0));
            let mut clients = JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let ctx = ctx.clone();
                let next = next.clone();
                clients.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if count.is_some_and(|n| i >= n)
                            || duration.is_some_and(|d| t0.elapsed() >= d)
                        {
                            break;
                        }
                        one_flow(&ctx, Instant::now()).await;
                    }
                });
            }
            while let Some(r) = clients.join_next().await {
                r?;
            }
        }
        Mode::Open {
            rate,
            duration,
            max_in_flight,
        } => {
            let total = (rate * duration.as_secs_f64()).round() as u64;
            let mut flows = JoinSet::new();
            for i in 0..total {
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                while let Some(r) = flows.try_join_next() {
                    r?;
                }
                max_in_flight_seen = max_in_flight_seen.max(flows.len());
                if flows.len() >= max_in_flight {
                    rec.error("generator: too many flows in flight, flow not started");
                    continue;
                }
                let ctx = ctx.clone();
                flows.spawn(async move { one_flow(&ctx, due).await });
            }
            while let Some(r) = flows.join_next().await {
                r?;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let flows = rec.count(FLOW) as u64;
    let created = rec.count(POST_ORDERS) as i64;
    let counts = obs.invoice_counts().await?;

    let mut report = Report::from_recorder(scenario, rec);
    report.figure(
        "flows completed",
        flows as f64,
        "",
        "flows that got their invoice (GET … /invoice 200)",
    );
    report.figure(
        "flows/s",
        flows as f64 / elapsed.max(1e-9),
        "/s",
        "flows completed ÷ time from the first flow's start to the last flow's end",
    );
    if let Mode::Open { rate, .. } = mode {
        report.figure("offered rate", rate, "/s", "flows due per second");
        report.figure(
            "most flows in flight",
            max_in_flight_seen as f64,
            "",
            "flows started and not finished, at the time a new one was due",
        );
    }
    report.check(
        "every flow fulfilled with its invoice, nothing failed",
        flows as i64 == created && rec.error_count() == 0,
        format!(
            "{flows} flows completed of {created} orders created; {} errors",
            rec.error_count()
        ),
    );
    if let Mode::Closed { count: Some(n), .. } = mode {
        report.check(
            "every requested flow ran",
            flows == n,
            format!("{flows} of {n}"),
        );
    }
    report.check(
        "exactly one invoice per fulfilled order",
        counts.invoices == counts.orders_invoiced
            && counts.invoices == counts.fulfilled
            && counts.fulfilled as u64 >= flows,
        format!(
            "{} invoices for {} orders; {} orders fulfilled; {flows} flows completed",
            counts.invoices, counts.orders_invoiced, counts.fulfilled
        ),
    );
    report.parameters = match mode {
        Mode::Closed {
            concurrency,
            count,
            duration,
        } => serde_json::json!({
            "loop": "closed", "concurrency": concurrency, "count": count,
            "duration_s": duration.map(|d| d.as_secs_f64()),
            "watch_ms": watch.as_millis() as u64, "http_concurrency": c.http_concurrency, "tls": c.tls,
            "service_log": c.service_log,
        }),
        Mode::Open {
            rate,
            duration,
            max_in_flight,
        } => serde_json::json!({
            "loop": "open", "rate": rate, "duration_s": duration.as_secs_f64(),
            "max_in_flight": max_in_flight, "watch_ms": watch.as_millis() as u64, "tls": c.tls,
            "http_concurrency": c.http_concurrency, "service_log": c.service_log,
        }),
    };
    report.machine = machine;
    drop(ctx);
    Ok(report)
}
