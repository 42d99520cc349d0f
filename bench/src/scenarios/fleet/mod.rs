//! `fleet`: the compose fleet (docker-compose.fleet.yml) as a benchmark on this host.
//! HAProxy (Debian's package) in front of two Orders and two Payments release binaries
//! on the same two databases, the link over mutual TLS through HAProxy (TCP, passed
//! through), the payment page through HAProxy (HTTPS with its client certificate to
//! Payments). An open-loop load of customer journeys ([`load`]) runs through HAProxy;
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

mod haproxy;
mod load;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{Outputs, Poll, finish};
use crate::api::Api;
use crate::cli::{DriveArgs, FleetArgs};
use crate::report::{Machine, Report, Section};
use crate::stack::{Stack, Which, free_port};
use crate::stats::{Clock, Recorder, Sample, histogram};
use haproxy::{Haproxy, Layout, Server};
use load::{CALLS, Journey, Journeys, Load};

pub use haproxy::parse_states;

const CALLS_HOW: &str = "each call made once, through HAProxy: sent → answer (or error)";

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

pub async fn run(args: &FleetArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let mut common = args.common.clone();
    common.tls = true;
    let outputs = Outputs::new(&common, "fleet");
    std::fs::create_dir_all(&outputs.out_dir)?;
    let started = Instant::now();
    anyhow::ensure!(
        matches!(args.instances, 1 | 2),
        "--instances is 1 or 2 (of each service)"
    );
    let mut a = Stack::new(common.stack_config(outputs.out_dir.clone())?).await?;
    let mut b = match args.instances {
        2 => Some(a.sibling("-b").await?),
        _ => None,
    };
    let layout = layout(&a, b.as_ref())?;
    for stack in std::iter::once(&mut a).chain(b.as_mut()) {
        let drain = crate::stack::humantime_str(args.drain_period);
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
            ("DRAIN_PERIOD".into(), drain),
        ];
    }
    let rec = Arc::new(Recorder::default());
    let fleet = Fleet {
        layout: &layout,
        args,
        rec: &rec,
    };
    let mut result = body(&mut a, b.as_mut(), &fleet, &outputs).await;
    if let Some(b) = b {
        let services = b.shutdown().await;
        if let Ok(report) = &mut result {
            report.services.extend(services);
        }
    }
    finish(a, result, &common, &outputs, &[CALLS], started).await
}

/// Free ports for HAProxy's four listeners, none of the instances' own.
fn layout(a: &Stack, b: Option<&Stack>) -> anyhow::Result<Layout> {
    let mut taken = vec![a.orders_port, a.payments_port];
    taken.extend(b.iter().flat_map(|b| [b.orders_port, b.payments_port]));
    let mut port = || -> anyhow::Result<u16> {
        loop {
            let p = free_port()?;
            if !taken.contains(&p) {
                taken.push(p);
                return Ok(p);
            }
        }
    };
    let server = |name: &str, port: u16| Server {
        name: name.into(),
        port,
    };
    Ok(Layout {
        api: port()?,
        page: port()?,
        link: port()?,
        stats: port()?,
        orders: std::iter::once(server("orders-a", a.orders_port))
            .chain(b.map(|b| server("orders-b", b.orders_port)))
            .collect(),
        payments: std::iter::once(server("payments-a", a.payments_port))
            .chain(b.map(|b| server("payments-b", b.payments_port)))
            .collect(),
    })
}

/// What every part of a run shares: where HAProxy listens, the options, the recorder.
struct Fleet<'a> {
    layout: &'a Layout,
    args: &'a FleetArgs,
    rec: &'a Arc<Recorder>,
}

impl Fleet<'_> {
    /// The customer journeys through HAProxy's API port, on `clock`.
    fn journeys(&self, a: &Stack, clock: Clock) -> anyhow::Result<Arc<Journeys>> {
        let (args, c) = (self.args, &self.args.common);
        let front = format!("http://127.0.0.1:{}", self.layout.api);
        let api = Api::new(
            &front,
            c.http_concurrency,
            c.request_timeout,
            self.rec.clone(),
            a.tls(),
        )?;
        Ok(Arc::new(Journeys {
            api,
            orders: front,
            wait: args.wait,
            poll: args.poll_order,
            clock,
            rec: self.rec.clone(),
            key_prefix: format!("fleet-{}", uuid::Uuid::now_v7()),
        }))
    }

    /// How long the journeys in flight may take to end once the load stops.
    fn last_calls(&self) -> Duration {
        self.args.wait * 2 + self.args.common.request_timeout * 4
    }
}

async fn body(
    a: &mut Stack,
    mut b: Option<&mut Stack>,
    fleet: &Fleet<'_>,
    outputs: &Outputs,
) -> anyhow::Result<Report> {
    let haproxy = start_fleet(a, b.as_deref_mut(), fleet, outputs).await?;
    let result = match fleet.args.clients {
        Some(clients) => capacity(a, fleet, clients).await,
        None => measure(a, b.as_deref_mut(), fleet, &haproxy).await,
    };
    // Orders first: HAProxy going away under their links is not what was measured.
    a.stop(Which::Orders).await;
    if let Some(b) = b {
        b.stop(Which::Orders).await;
    }
    haproxy.stop().await;
    result
}

/// Both Payments, HAProxy, both Orders (each once its link is open through HAProxy),
/// and every server UP in HAProxy.
async fn start_fleet(
    a: &mut Stack,
    mut b: Option<&mut Stack>,
    fleet: &Fleet<'_>,
    outputs: &Outputs,
) -> anyhow::Result<Haproxy> {
    let layout = fleet.layout;
    a.start_payments().await?;
    if let Some(b) = b.as_deref_mut() {
        b.start_payments().await?;
    }
    let tls = a.tls().expect("fleet runs with --tls");
    let cfg = outputs.out_dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy::config(layout, &tls.ca, &tls.haproxy_pem))?;
    let haproxy = Haproxy::start(
        &fleet.args.haproxy,
        &cfg,
        outputs.out_dir.join("haproxy.log"),
        layout.stats,
    )
    .await?;
    a.start_orders(true).await?;
    if let Some(b) = b {
        b.start_orders(true).await?;
    }
    for s in layout.orders.iter().chain(&layout.payments) {
        haproxy.wait_up(&s.name, Duration::from_secs(30)).await?;
    }
    Ok(haproxy)
}

/// The load, the restarts under it, then the checks and figures.
async fn measure(
    a: &mut Stack,
    b: Option<&mut Stack>,
    fleet: &Fleet<'_>,
    haproxy: &Haproxy,
) -> anyhow::Result<Report> {
    let (args, rec) = (fleet.args, fleet.rec);
    let obs = a.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    rec.stage(CALLS, CALLS_HOW);
    let clock = Clock::start();
    let load = Load::start(
        fleet.journeys(a, clock)?,
        args.rate,
        None,
        args.max_in_flight,
    );
    tokio::time::sleep(args.warmup).await;
    let from = clock.secs(Instant::now());
    eprintln!("loadgen fleet: restarting every instance in turn");
    let restarts = restart_each(a, b, haproxy, args, &clock).await;
    let to = clock.secs(Instant::now());
    tokio::time::sleep(args.tail).await;
    let started = load.started.load(std::sync::atomic::Ordering::Relaxed);
    let ended = load.finish(fleet.last_calls()).await?;
    let restarts = restarts?;
    eprintln!("loadgen fleet: {started} journeys; waiting for the last outcomes");
    let unacked = settle(&obs, args.wait).await;

    let mut report = Report::from_recorder("fleet", rec);
    report.machine = machine;
    let calls = rec
        .stages()
        .into_iter()
        .find(|s| s.name == CALLS)
        .map(|s| s.samples)
        .unwrap_or_default();
    figures(&mut report, &calls, (from, to), &ended);
    checks(&mut report, &obs, rec, &ended, unacked).await?;
    report.sections.push(restarts_section(&restarts));
    report.parameters = json!({
        "rate": args.rate,
        "warmup_s": args.warmup.as_secs_f64(),
        "pause_s": args.pause.as_secs_f64(),
        "tail_s": args.tail.as_secs_f64(),
        "drain_period_s": args.drain_period.as_secs_f64(),
        "instances": args.instances,
        "behind": "HAProxy, the link over mutual TLS",
    });
    Ok(report)
}

/// `--clients`: a closed loop through HAProxy for `--duration`, no restart; journeys
/// fulfilled per second, to compare 1+1 instances with 2+2 on the same machine.
async fn capacity(a: &mut Stack, fleet: &Fleet<'_>, clients: usize) -> anyhow::Result<Report> {
    let (args, rec) = (fleet.args, fleet.rec);
    let obs = a.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    rec.stage(CALLS, CALLS_HOW);
    let journeys = fleet.journeys(a, Clock::start())?;
    let load = Load::closed(journeys, clients);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    let ended = load.finish(fleet.last_calls()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let unacked = settle(&obs, args.wait).await;
    let mut report = Report::from_recorder("fleet-capacity", rec);
    report.machine = machine;
    let done = ended.iter().filter(|j| **j == Journey::Done).count();
    report.figure(
        "journeys/s",
        done as f64 / seconds,
        "/s",
        &format!("{done} fulfilled with their invoice in {seconds:.1} s, {clients} clients"),
    );
    checks(&mut report, &obs, rec, &ended, unacked).await?;
    report.parameters = json!({
        "instances": args.instances,
        "clients": clients,
        "duration_s": args.duration.as_secs_f64(),
        "behind": "HAProxy, the link over mutual TLS",
    });
    Ok(report)
}

/// SIGTERM to each instance in turn; each back (ready, then UP in HAProxy) before the
/// next, `--pause` between.
async fn restart_each(
    a: &mut Stack,
    mut b: Option<&mut Stack>,
    haproxy: &Haproxy,
    args: &FleetArgs,
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
        let stack = match (k, b.as_deref_mut()) {
            (0, _) => &mut *a,
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
        tokio::time::sleep(args.pause).await;
    }
    Ok(done)
}

/// Waits at most `within` until no event is unacked: the count at the last look.
async fn settle(obs: &crate::observe::Observer, within: Duration) -> Option<i64> {
    let mut poll = Poll::new(within, Duration::from_millis(500));
    let mut last = None;
    while poll.next().await {
        last = obs.unacked().await.ok();
        if last == Some(0) {
            break;
        }
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

fn figures(report: &mut Report, calls: &[Sample], (from, to): (f64, f64), ended: &[Journey]) {
    let (before, n_before) = p99_ms(calls.iter().copied().filter(|s| s.at < from));
    let (during, n_during) = p99_ms(calls.iter().copied().filter(|s| s.at >= from && s.at <= to));
    let done = ended.iter().filter(|j| **j == Journey::Done).count();
    report.figure(
        "journeys",
        ended.len() as f64,
        "",
        "started through HAProxy",
    );
    report.figure("journeys fulfilled", done as f64, "", "with their invoice");
    report.figure(
        "errors seen by clients",
        report.errors.values().sum::<u64>() as f64,
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

async fn checks(
    report: &mut Report,
    obs: &crate::observe::Observer,
    rec: &Recorder,
    ended: &[Journey],
    unacked: Option<i64>,
) -> anyhow::Result<()> {
    let errors = rec.errors();
    report.check(
        "no error seen by a client",
        errors.is_empty(),
        format!("{errors:?}"),
    );
    let done = ended.iter().filter(|j| **j == Journey::Done).count();
    report.check(
        "every journey fulfilled, with its invoice",
        done == ended.len() && done > 0,
        format!("{done} of {}", ended.len()),
    );
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

/// `drive`: the journeys against a fleet that runs elsewhere.
pub async fn drive(args: &DriveArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let rec = Arc::new(Recorder::default());
    rec.stage(CALLS, CALLS_HOW);
    let front = args.orders_url.trim_end_matches('/').to_owned();
    let journeys = Arc::new(Journeys {
        api: Api::new(
            &front,
            args.http_concurrency,
            args.request_timeout,
            rec.clone(),
            None,
        )?,
        orders: front,
        wait: args.wait,
        poll: args.poll_order,
        clock: Clock::start(),
        rec: rec.clone(),
        key_prefix: format!("drive-{}", uuid::Uuid::now_v7()),
    });
    let started = Instant::now();
    let load = Load::start(journeys, args.rate, Some(args.orders), args.max_in_flight);
    let due = Duration::from_secs_f64(args.orders as f64 / args.rate);
    let ended = load
        .join(due + args.wait * 2 + args.request_timeout * 4)
        .await?;
    let mut report = Report::from_recorder("drive", &rec);
    let done = ended.iter().filter(|j| **j == Journey::Done).count();
    report.figure("journeys", ended.len() as f64, "", "");
    report.figure("journeys fulfilled", done as f64, "", "with their invoice");
    let errors = rec.errors();
    report.check(
        "no error seen by a client",
        errors.is_empty(),
        format!("{errors:?}"),
    );
    report.check(
        "every journey fulfilled, with its invoice",
        done == ended.len() && done as u64 == args.orders,
        format!("{done} of {}", args.orders),
    );
    report.wall_seconds = started.elapsed().as_secs_f64();
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report)
}
