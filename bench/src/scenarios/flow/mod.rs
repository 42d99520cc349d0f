//! `flow`: full flows, each create → page → complete → fulfilled with its invoice.
//!
//! Closed loop (`--concurrency C` with `--count N` or `--duration S`): C clients, each
//! running one flow after another, as fast as the services allow. Open loop (`--rate R
//! --duration S`): a flow is due every 1/R s whatever happens to the earlier ones, and
//! every latency is measured from the time its flow was DUE (wrk2's correction for
//! coordinated omission): a stalled service shows as latency, not as fewer samples.
//! `smoke` is a small closed loop of it.
//!
//! A flow learns that its order has its page, or is fulfilled, from the [`Watcher`]:
//! one task that every `--watch` period (5 ms) reads the orders in flight from the
//! Orders database by primary key (`WHERE id = ANY($1)`), one query for all of them,
//! instead of each flow polling `GET /orders/{id}`. The page and fulfilment times are
//! the database's own (`orders.updated_at` of the page, `invoices.issued_at`), so the
//! watcher's period delays the next request of a flow but does not blur its latency.

mod watcher;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use super::load::{Full, Load, Open};
use super::steps::{COMPLETE_TO_FULFILLED, CREATE_TO_PAGE, POST_COMPLETE, POST_ORDERS};
use super::{Common, Run, Scenario, Spec};
use crate::api::{Api, Attempt};
use crate::observe::Observer;
use crate::stats::{Clock, Recorder};
pub use watcher::Watcher;

pub const FLOW: &str = "flow (end to end)";
pub const INVOICE: &str = "GET invoice";

#[derive(Debug, Clone, Args)]
pub struct FlowOptions {
    /// Open loop: start this many flows per second.
    #[arg(long, conflicts_with = "concurrency", requires = "duration")]
    pub rate: Option<f64>,
    /// Closed loop: this many clients, each running one flow after another.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Closed loop: stop after this many flows.
    #[arg(long, conflicts_with = "rate")]
    pub count: Option<u64>,
    /// How long to start flows for.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Period of the per-order progress query of the flow watcher (a primary-key
    /// lookup of the orders in flight, one query per period).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub watch: Duration,
    /// Open loop: at most this many flows in flight; a flow due beyond that is
    /// counted as an error ("generator: too many flows in flight") and not started.
    #[arg(long, default_value_t = 50_000)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct SmokeOptions {
    #[arg(long, default_value_t = 200)]
    pub count: u64,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub common: Common,
}

/// Flows in a closed or an open loop (`rate`), on both services.
pub struct Flow {
    name: &'static str,
    /// With `concurrency` set for a closed loop.
    o: FlowOptions,
}

impl Flow {
    pub fn new(mut o: FlowOptions) -> anyhow::Result<Flow> {
        match o.rate {
            Some(rate) => {
                anyhow::ensure!(rate > 0.0, "--rate must be positive");
                anyhow::ensure!(o.duration.is_some(), "--rate needs --duration");
            }
            None => anyhow::ensure!(
                o.count.is_some() || o.duration.is_some(),
                "give --count or --duration (closed loop), or --rate with --duration (open loop)"
            ),
        }
        o.concurrency.get_or_insert(32);
        Ok(Flow { name: "flow", o })
    }

    /// `smoke`: fails unless every flow completed with one invoice and nothing failed.
    pub fn smoke(o: SmokeOptions) -> Flow {
        Flow::closed("smoke", o.concurrency, (Some(o.count), None), o.common)
    }

    /// A closed loop of `concurrency` clients, `count` flows or for `duration`.
    pub fn closed(
        name: &'static str,
        concurrency: usize,
        (count, duration): (Option<u64>, Option<Duration>),
        common: Common,
    ) -> Flow {
        let o = FlowOptions {
            rate: None,
            concurrency: Some(concurrency),
            count,
            duration,
            watch: Duration::from_millis(5),
            max_in_flight: 50_000,
            common,
        };
        Flow { name, o }
    }
}

impl Scenario for Flow {
    fn spec(&self) -> Spec<'_> {
        let plotted = &[CREATE_TO_PAGE, COMPLETE_TO_FULFILLED];
        Spec::new(self.name, &self.o.common, plotted)
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let o = &self.o;
        let obs = run.start().await?;
        self.declare_stages(&run.rec);
        let ctx = Arc::new(Ctx {
            api: run.api()?,
            watcher: Watcher::start(obs.clone(), o.watch, run.rec.clone()),
            rec: run.rec.clone(),
            clock: Clock::start(),
            deadline: run.common.deadline,
        });
        let job = {
            let ctx = ctx.clone();
            move |_, due| {
                let ctx = ctx.clone();
                async move { ctx.one(due).await }
            }
        };
        let load = match (o.rate, o.duration) {
            (Some(rate), Some(duration)) => {
                let skip = "generator: too many flows in flight, flow not started";
                let plan = Open {
                    rate,
                    count: Some((rate * duration.as_secs_f64()).round() as u64),
                    max_in_flight: o.max_in_flight,
                    when_full: Full::Skip(skip, run.rec.clone()),
                };
                Load::open(plan, job)
            }
            _ => Load::closed(o.concurrency.unwrap_or(32), (o.count, o.duration), job),
        };
        let ended = load.join(None).await?;
        anyhow::ensure!(ended.panicked == 0, "a flow panicked");
        let elapsed = ctx.clock.t0.elapsed().as_secs_f64();
        self.report(run, &obs, elapsed, ended.most_in_flight).await
    }
}

impl Flow {
    fn declare_stages(&self, rec: &Recorder) {
        let due_note = match self.o.rate {
            Some(_) => "from the time the flow was due (open loop: coordinated-omission corrected)",
            None => "from the time the client started the flow",
        };
        let watch = self.o.watch;
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
    }

    /// The flows' figures and checks.
    async fn report(
        &self,
        run: &mut Run,
        obs: &Observer,
        elapsed: f64,
        most_in_flight: usize,
    ) -> anyhow::Result<()> {
        let (o, rec, report) = (&self.o, &run.rec, &mut run.report);
        let flows = rec.count(FLOW) as u64;
        let created = rec.count(POST_ORDERS) as i64;
        let counts = obs.invoice_counts().await?;
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
        if let Some(rate) = o.rate {
            report.figure("offered rate", rate, "/s", "flows due per second");
            report.figure(
                "most flows in flight",
                most_in_flight as f64,
                "",
                "flows started and not finished, at the time a new one was due",
            );
        }
        let errors = rec.error_count();
        report.check(
            "every flow fulfilled with its invoice, nothing failed",
            flows as i64 == created && errors == 0,
            format!("{flows} flows completed of {created} orders created; {errors} errors"),
        );
        if let (None, Some(n)) = (o.rate, o.count) {
            let detail = format!("{flows} of {n}");
            report.check("every requested flow ran", flows == n, detail);
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
        report.parameters = self.parameters(&run.common);
        Ok(())
    }

    fn parameters(&self, c: &Common) -> serde_json::Value {
        let o = &self.o;
        let watch_ms = o.watch.as_millis() as u64;
        let duration_s = o.duration.map(|d| d.as_secs_f64());
        match o.rate {
            None => json!({
                "loop": "closed", "concurrency": o.concurrency, "count": o.count,
                "duration_s": duration_s,
                "watch_ms": watch_ms, "http_concurrency": c.http_concurrency, "tls": c.stack.tls,
                "service_log": c.stack.service_log,
            }),
            Some(rate) => json!({
                "loop": "open", "rate": rate, "duration_s": duration_s,
                "max_in_flight": o.max_in_flight, "watch_ms": watch_ms, "tls": c.stack.tls,
                "http_concurrency": c.http_concurrency, "service_log": c.stack.service_log,
            }),
        }
    }
}

/// What every flow of a run shares.
struct Ctx {
    api: Api,
    watcher: Watcher,
    rec: Arc<Recorder>,
    clock: Clock,
    deadline: Duration,
}

impl Ctx {
    /// One flow, its latencies measured from `due`.
    async fn one(&self, due: Instant) -> bool {
        let (rec, clock) = (&self.rec, &self.clock);
        let Attempt::Done(id) = self.api.create(None).await else {
            return false;
        };
        rec.record_until_now(POST_ORDERS, clock, due);
        let (url, paged_at) = match self.watcher.page(id, self.deadline).await {
            Ok(page) => page,
            Err(why) => {
                rec.error(format!("waiting for the page: {why}"));
                return false;
            }
        };
        rec.record_wall(CREATE_TO_PAGE, clock, clock.wall(due), paged_at);
        // The complete is due now that the page is known.
        let ready = Instant::now();
        if self.api.page(&url, "complete").await != Attempt::Done(()) {
            return false;
        }
        rec.record_until_now(POST_COMPLETE, clock, ready);
        let issued = match self.watcher.fulfilled(id, self.deadline).await {
            Ok(at) => at,
            Err(why) => {
                rec.error(format!("waiting for fulfilment: {why}"));
                return false;
            }
        };
        rec.record_wall(COMPLETE_TO_FULFILLED, clock, clock.wall(ready), issued);
        let asked = Instant::now();
        if self.api.invoice(id).await != Attempt::Done(()) {
            return false;
        }
        rec.record_until_now(INVOICE, clock, asked);
        rec.record_until_now(FLOW, clock, due);
        true
    }
}
