//! `fleet`: the compose fleet (docker-compose.fleet.yml) as a benchmark on this host.
//! HAProxy (Debian's package) in front of two Orders and two Payments release binaries
//! on the same two databases, the link over mutual TLS through HAProxy (TCP, passed
//! through), the payment page through HAProxy (HTTPS with its client certificate to
//! Payments). An open-loop load of customer journeys ([`journey`]) runs through HAProxy;
//! after `--warmup` every instance is restarted in turn (SIGTERM, wait until it is
//! ready and HAProxy has it UP again, `--pause`, next), then `--tail` more load.
//!
//! It reports what the clients saw (every call is made once: an error is an error),
//! the p99 of a call during the restarts against before them, and how long each
//! instance took from SIGTERM to exit (its drain), to be ready again, and to be back
//! in HAProxy. Then the checks: no error, every journey fulfilled with its invoice,
//! every order in the database fulfilled with exactly one invoice, no event unacked.
//!
//! `drive` is the same load against a fleet that runs elsewhere (compose): a fixed
//! number of journeys at a rate, through the URL given; the caller restarts instances.

mod drive;
mod haproxy;
mod journey;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use super::steps::Poll;
use super::{Common, Run, Scenario, Spec};
use crate::observe::Observer;
use crate::report::{Report, Section};
use crate::stack::{Stack, Which, free_port};
use crate::stats::{Clock, Sample, histogram};
pub use drive::{DriveOptions, drive};
use haproxy::{Haproxy, Layout, Server};
use journey::{CALLS, CALLS_HOW, Journeys, client_checks, tally};

#[derive(Debug, Clone, Args)]
pub struct FleetOptions {
    /// Instances of each service behind HAProxy: 2 (the fleet) or 1.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Capacity instead of restarts: this many clients in a closed loop through
    /// HAProxy for --duration, nothing restarted; journeys fulfilled per second.
    #[arg(long)]
    pub clients: Option<usize>,
    /// With --clients: how long the closed loop runs.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Customer journeys started per second (open loop).
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Load before the first restart (the "before" of the p99).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Pause after an instance is back in HAProxy before the next restart.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Load after the last restart.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub tail: Duration,
    /// DRAIN_PERIOD of every instance: /readyz answers 503 this long after SIGTERM
    /// (HAProxy, checking every second, takes a server out after two failures).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub drain_period: Duration,
    /// How long an order may take to get its page, and then to be fulfilled.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Period of a journey's GET /orders/{id} while it waits.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub poll_order: Duration,
    /// At most this many journeys in flight; one due beyond that is an error.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// The HAProxy executable.
    #[arg(long, env = "HAPROXY", default_value = "haproxy")]
    pub haproxy: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

/// The fleet behind HAProxy, restarted under load or measured for capacity.
pub struct Fleet {
    options: FleetOptions,
    /// The options, with the link over mutual TLS.
    common: Common,
}

impl Fleet {
    pub fn new(options: FleetOptions) -> anyhow::Result<Fleet> {
        anyhow::ensure!(options.rate > 0.0, "--rate must be positive");
        anyhow::ensure!(
            matches!(options.instances, 1 | 2),
            "--instances is 1 or 2 (of each service)"
        );
        let mut common = options.common.clone();
        common.stack.tls = true;
        Ok(Fleet { options, common })
    }
}

impl Scenario for Fleet {
    fn spec(&self) -> Spec<'_> {
        let two_instances = self.options.instances == 2;
        Spec {
            two_instances,
            ..Spec::new("fleet", &self.common, &[CALLS])
        }
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let layout = layout(&run.stack, run.second.as_ref())?;
        let drain = format!("{}ms", self.options.drain_period.as_millis());
        for stack in std::iter::once(&mut run.stack).chain(run.second.as_mut()) {
            stack.orders_env = vec![
                (
                    "PAYMENTS_WS_URL".into(),
                    format!("wss://127.0.0.1:{}/ws", layout.link),
                ),
                ("DRAIN_PERIOD".into(), drain.clone()),
            ];
            stack.payments_env = vec![
                (
                    "PAYMENTS_PUBLIC_URL".into(),
                    format!("http://127.0.0.1:{}", layout.page),
                ),
                ("DRAIN_PERIOD".into(), drain.clone()),
            ];
        }
        let haproxy = self.start(run, &layout).await?;
        run.rec.stage(CALLS, CALLS_HOW);
        let measured = match self.options.clients {
            Some(clients) => self.capacity(run, &layout, clients).await,
            None => self.restarts(run, &layout, &haproxy).await,
        };
        // Orders first: HAProxy going away under their links is not what was measured.
        for stack in std::iter::once(&mut run.stack).chain(run.second.as_mut()) {
            stack.stop(Which::Orders).await;
        }
        haproxy.stop().await;
        measured
    }
}

/// Free ports for HAProxy's four listeners, and the instances behind it.
fn layout(a: &Stack, b: Option<&Stack>) -> anyhow::Result<Layout> {
    let server = |name: &str, port: u16| Server {
        name: name.into(),
        port,
    };
    Ok(Layout {
        api: free_port()?,
        page: free_port()?,
        link: free_port()?,
        stats: free_port()?,
        orders: std::iter::once(server("orders-a", a.orders_port))
            .chain(b.map(|b| server("orders-b", b.orders_port)))
            .collect(),
        payments: std::iter::once(server("payments-a", a.payments_port))
            .chain(b.map(|b| server("payments-b", b.payments_port)))
            .collect(),
    })
}

/// One instance's restart.
struct Restart {
    instance: String,
    /// When SIGTERM was sent, seconds since the load began.
    at: f64,
    /// SIGTERM → exit: the drain period, then what was in flight.
    stop: Duration,
    how: String,
    /// Started again → ready (Orders: its link open).
    ready: Duration,
    /// Ready → `UP` in every HAProxy backend it serves.
    back_in: Duration,
}

impl Fleet {
    /// Both Payments, HAProxy, both Orders (each once its link is open through
    /// HAProxy), and every server UP in HAProxy.
    async fn start(&self, run: &mut Run, layout: &Layout) -> anyhow::Result<Haproxy> {
        run.stack.start_payments().await?;
        if let Some(b) = run.second.as_mut() {
            b.start_payments().await?;
        }
        let dir = run.stack.out_dir().to_path_buf();
        let tls = run.stack.tls().expect("fleet runs with --tls");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy::config(layout, &tls.ca, &tls.haproxy_pem))?;
        let log = dir.join("haproxy.log");
        let haproxy = Haproxy::start(&self.options.haproxy, &cfg, log, layout.stats).await?;
        run.stack.start_orders(true).await?;
        if let Some(b) = run.second.as_mut() {
            b.start_orders(true).await?;
        }
        for s in layout.orders.iter().chain(&layout.payments) {
            haproxy.wait_up(&s.name, Duration::from_secs(30)).await?;
        }
        Ok(haproxy)
    }

    /// The customer journeys through HAProxy's API port, on `clock`.
    fn journeys(&self, run: &Run, layout: &Layout, clock: Clock) -> anyhow::Result<Arc<Journeys>> {
        let o = &self.options;
        let api = run.api()?.at(&format!("http://127.0.0.1:{}", layout.api));
        Ok(Arc::new(Journeys {
            api,
            wait: o.wait,
            poll: o.poll_order,
            clock,
            rec: run.rec.clone(),
            key_prefix: format!("fleet-{}", uuid::Uuid::now_v7()),
        }))
    }

    /// How long the journeys in flight may take to end once the load stops.
    fn last_calls(&self) -> Option<Duration> {
        Some(self.options.wait * 2 + self.common.request_timeout * 4)
    }

    /// The load, the restarts under it, then the checks and figures.
    async fn restarts(
        &self,
        run: &mut Run,
        layout: &Layout,
        haproxy: &Haproxy,
    ) -> anyhow::Result<()> {
        let o = &self.options;
        let obs = run.stack.observer()?;
        let clock = Clock::start();
        let journeys = self.journeys(run, layout, clock)?;
        let load = journeys.open(o.rate, None, o.max_in_flight);
        tokio::time::sleep(o.warmup).await;
        let from = clock.secs(Instant::now());
        eprintln!("loadgen fleet: restarting every instance in turn");
        let restarts = self.restart_each(run, haproxy, &clock).await;
        let to = clock.secs(Instant::now());
        tokio::time::sleep(o.tail).await;
        load.stop();
        let ended = load.join(self.last_calls()).await?;
        let restarts = restarts?;
        let journeys = tally(&ended);
        eprintln!(
            "loadgen fleet: {} journeys; waiting for the last outcomes",
            journeys.0
        );
        let unacked = settle(&obs, o.wait).await;
        let report = &mut run.report;
        let calls = run.rec.stages().into_iter().find(|s| s.name == CALLS);
        let calls = calls.map(|s| s.samples).unwrap_or_default();
        let errors = run.rec.errors().values().sum::<u64>();
        figures(report, &calls, (from, to), journeys, errors);
        client_checks(report, &run.rec, journeys, None);
        database_checks(report, &obs, unacked).await?;
        report.sections.push(restarts_section(&restarts));
        report.parameters = json!({
            "rate": o.rate,
            "warmup_s": o.warmup.as_secs_f64(),
            "pause_s": o.pause.as_secs_f64(),
            "tail_s": o.tail.as_secs_f64(),
            "drain_period_s": o.drain_period.as_secs_f64(),
            "instances": o.instances,
            "behind": "HAProxy, the link over mutual TLS",
        });
        Ok(())
    }

    /// `--clients`: a closed loop through HAProxy for `--duration`, no restart;
    /// journeys fulfilled per second, to compare 1+1 instances with 2+2.
    async fn capacity(&self, run: &mut Run, layout: &Layout, clients: usize) -> anyhow::Result<()> {
        let o = &self.options;
        let obs = run.stack.observer()?;
        let journeys = self.journeys(run, layout, Clock::start())?;
        let started = Instant::now();
        let ended = journeys
            .closed(clients, o.duration)
            .join(self.last_calls())
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let unacked = settle(&obs, o.wait).await;
        let journeys = tally(&ended);
        let report = &mut run.report;
        report.scenario = "fleet-capacity".into();
        let done = journeys.1;
        report.figure(
            "journeys/s",
            done as f64 / seconds,
            "/s",
            &format!("{done} fulfilled with their invoice in {seconds:.1} s, {clients} clients"),
        );
        client_checks(report, &run.rec, journeys, None);
        database_checks(report, &obs, unacked).await?;
        report.parameters = json!({
            "instances": o.instances,
            "clients": clients,
            "duration_s": o.duration.as_secs_f64(),
            "behind": "HAProxy, the link over mutual TLS",
        });
        Ok(())
    }

    /// SIGTERM to each instance in turn; each back (ready, then UP in HAProxy) before
    /// the next, `--pause` between.
    async fn restart_each(
        &self,
        run: &mut Run,
        haproxy: &Haproxy,
        clock: &Clock,
    ) -> anyhow::Result<Vec<Restart>> {
        let plan = [
            (0, Which::Orders, "orders-a"),
            (1, Which::Orders, "orders-b"),
            (0, Which::Payments, "payments-a"),
            (1, Which::Payments, "payments-b"),
        ];
        let mut done = Vec::new();
        for (k, which, name) in plan {
            let stack = match (k, run.second.as_mut()) {
                (0, _) => &mut run.stack,
                (_, Some(b)) => b,
                (_, None) => continue,
            };
            let signalled = Instant::now();
            let how = stack.stop(which).await;
            let stop = signalled.elapsed();
            let starting = Instant::now();
            match which {
                Which::Orders => stack.start_orders(true).await?,
                Which::Payments => stack.start_payments().await?,
            }
            let ready = starting.elapsed();
            let back_in = haproxy.wait_up(name, Duration::from_secs(30)).await?;
            eprintln!(
                "loadgen fleet: {name}: stopped in {:.1} s, ready in {:.1} s, UP in {:.1} s",
                stop.as_secs_f64(),
                ready.as_secs_f64(),
                back_in.as_secs_f64()
            );
            done.push(Restart {
                instance: name.into(),
                at: clock.secs(signalled),
                stop,
                how,
                ready,
                back_in,
            });
            tokio::time::sleep(self.options.pause).await;
        }
        Ok(done)
    }
}

/// Waits at most `within` until no event is unacked: the count at the last look.
async fn settle(obs: &Observer, within: Duration) -> Option<i64> {
    let mut poll = Poll::new(within, Duration::from_millis(500));
    let mut last = None;
    while last != Some(0) && poll.next().await {
        last = obs.unacked().await.ok();
    }
    last
}

fn p99_ms(samples: impl Iterator<Item = Sample>) -> (f64, u64) {
    let mut h = histogram();
    for s in samples {
        h.saturating_record(s.micros.max(1));
    }
    if h.is_empty() {
        return (0.0, 0);
    }
    (h.value_at_quantile(0.99) as f64 / 1000.0, h.len())
}

fn figures(
    report: &mut Report,
    calls: &[Sample],
    (from, to): (f64, f64),
    (all, done): (usize, usize),
    errors: u64,
) {
    let (before, n_before) = p99_ms(calls.iter().copied().filter(|s| s.at < from));
    let (during, n_during) = p99_ms(calls.iter().copied().filter(|s| s.at >= from && s.at <= to));
    report.figure("journeys", all as f64, "", "started through HAProxy");
    report.figure("journeys fulfilled", done as f64, "", "with their invoice");
    report.figure(
        "errors seen by clients",
        errors as f64,
        "",
        "5xx, connection errors, timeouts; every call made once",
    );
    report.figure(
        "p99 before the restarts",
        before,
        "ms",
        &format!("{n_before} calls"),
    );
    report.figure(
        "p99 during the restarts",
        during,
        "ms",
        &format!("{n_during} calls, first SIGTERM to last instance UP"),
    );
    if before > 0.0 {
        report.figure("p99 during ÷ before", during / before, "×", "");
    }
}

/// What the databases say: every order fulfilled with one invoice, nothing unacked.
async fn database_checks(
    report: &mut Report,
    obs: &Observer,
    unacked: Option<i64>,
) -> anyhow::Result<()> {
    let (not_fulfilled,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM orders WHERE status <> 'fulfilled'")
            .fetch_one(&obs.orders)
            .await?;
    let inv = obs.invoice_counts().await?;
    report.check(
        "every order fulfilled with exactly one invoice",
        not_fulfilled == 0 && inv.invoices == inv.fulfilled && inv.orders_invoiced == inv.fulfilled,
        format!(
            "{not_fulfilled} not fulfilled; {} invoices for {} orders ({} fulfilled)",
            inv.invoices, inv.orders_invoiced, inv.fulfilled
        ),
    );
    report.check(
        "no event left unacked",
        unacked == Some(0),
        format!("{unacked:?} unacked at the last look"),
    );
    Ok(())
}

fn restarts_section(restarts: &[Restart]) -> Section {
    let mut md = String::from(
        "| t (s) | instance | SIGTERM → exit (s) | start → ready (s) | ready → UP in HAProxy (s) | how |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in restarts {
        md.push_str(&format!(
            "| {:.1} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.at,
            r.instance,
            r.stop.as_secs_f64(),
            r.ready.as_secs_f64(),
            r.back_in.as_secs_f64(),
            r.how
        ));
    }
    Section {
        title: "Restarts".into(),
        markdown: md,
    }
}
