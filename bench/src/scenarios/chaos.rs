//! `chaos`: a soak under faults (issue 9). Orders are created at a steady rate; each
//! is paid or cancelled on its page, or cancelled through the API, at random. Every 2–5 s
//! (`--fault-min`/`--fault-max`) one fault, drawn from a shuffled deck of all kinds so
//! that every kind comes up: `kill -9` of Orders or of Payments, SIGTERM of either, a
//! PostgreSQL restart (`-m fast`) or crash-restart (`-m immediate`). A killed or stopped
//! service is started again at once, on the same database and port.
//!
//! PostgreSQL is a cluster of this run's own ([`crate::cluster`]), so its restarts touch
//! nothing else on the machine. After `--single-phase` of the load, a second instance
//! of each service starts on the same two databases (Orders B → Payments B); from then
//! on orders are created on A and B in turn, every API cancel goes to the OTHER Orders
//! instance and every page action to the OTHER Payments instance (the page URL's base
//! replaced), so every outcome crosses instances; faults hit one instance at a time.
//!
//! Calls are retried for `--retry-for` with backoff: a POST /orders carries an
//! `Idempotency-Key`, so its retry is safe, and only a 201 (or the retry's 200) counts
//! as created. When the faults stop, every service is up again and the checks run:
//! within `--settle` (60 s) no order is `pending_payment`, every order with a definitive
//! answer to its action is final, and no event is unacked; then SQL on both databases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::flow::Watcher;
use super::*;
use crate::api::{Api, Attempt};
use crate::cli::ChaosArgs;
use crate::cluster::{PgCluster, StopMode};
use crate::report::{Machine, Report, Section};
use crate::stack::{Stack, Which};
use crate::stats::{Clock, Recorder};

/// A small, seedable generator (SplitMix64): the run is described by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillOrders,
    KillPayments,
    TermOrders,
    TermPayments,
    PgRestart,
    PgCrash,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::KillOrders,
        Fault::KillPayments,
        Fault::TermOrders,
        Fault::TermPayments,
        Fault::PgRestart,
        Fault::PgCrash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillOrders => "kill -9 Orders",
            Fault::KillPayments => "kill -9 Payments",
            Fault::TermOrders => "SIGTERM Orders",
            Fault::TermPayments => "SIGTERM Payments",
            Fault::PgRestart => "PostgreSQL restart (-m fast)",
            Fault::PgCrash => "PostgreSQL crash-restart (-m immediate)",
        }
    }
}

/// Every kind once, in random order; drawn until empty, then shuffled again.
pub struct Deck {
    cards: Vec<Fault>,
}

impl Deck {
    pub fn draw(&mut self, rng: &mut Rng) -> Fault {
        if self.cards.is_empty() {
            self.cards = Fault::ALL.to_vec();
            for i in (1..self.cards.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.cards.swap(i, j);
            }
        }
        self.cards.pop().expect("refilled above")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pay,
    PageCancel,
    ApiCancel,
}

/// What the final state of an order must be, from the answers loadgen got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 303 to Pay.
    Fulfilled,
    /// 303 to the page's Cancel, 202 (or 409) to POST /orders/{id}/cancel.
    Cancelled,
    /// No definitive answer: final, or `awaiting_payment`.
    FinalOrAwaiting,
}

struct Outcome {
    id: Option<Uuid>,
    action: Action,
    expect: Expect,
    /// Created while two instances ran: its action went to the other instance.
    crossed: bool,
    /// Why there is no definitive answer.
    why_open: Option<&'static str>,
}

struct Ctx {
    api: Api,
    watcher: Watcher,
    orders: [String; 2],
    payments: [String; 2],
    retry_for: Duration,
    page_wait: Duration,
    mix: [u64; 3],
    seed: u64,
    two: AtomicBool,
    clock: Clock,
    rec: Arc<Recorder>,
}

/// Retries `call` (attempt number given) with backoff for at most `retry_for`.
async fn retry<T, F, Fut>(retry_for: Duration, mut call: F) -> Result<T, Option<u16>>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let until = Instant::now() + retry_for;
    let mut pause = Duration::from_millis(200);
    for attempt in 0.. {
        match call(attempt).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Refused(code) => return Err(Some(code)),
            Attempt::Retry => {}
        }
        if Instant::now() + pause >= until {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    Err(None)
}

async fn one_order(ctx: Arc<Ctx>, i: u64) -> Outcome {
    let mut rng = Rng::new(ctx.seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    let two = ctx.two.load(Ordering::Relaxed);
    let first = if two { (i % 2) as usize } else { 0 };
    let key = format!("chaos-{i}");
    let pick = rng.below(ctx.mix.iter().sum::<u64>().max(1));
    let action = if pick < ctx.mix[0] {
        Action::Pay
    } else if pick < ctx.mix[0] + ctx.mix[1] {
        Action::PageCancel
    } else {
        Action::ApiCancel
    };
    let mut outcome = Outcome {
        id: None,
        action,
        expect: Expect::FinalOrAwaiting,
        crossed: two,
        why_open: None,
    };
    let sent = Instant::now();
    let created = retry(ctx.retry_for, |attempt| {
        // With two instances, a retry goes to the other one.
        let at = if two {
            (first + attempt as usize) % 2
        } else {
            0
        };
        let ctx = &ctx;
        let key = &key;
        async move { ctx.api.create_keyed(&ctx.orders[at], key).await }
    })
    .await;
    let id = match created {
        Ok(id) => id,
        Err(_) => {
            outcome.why_open = Some("POST /orders: no 201/200 within --retry-for");
            return outcome;
        }
    };
    let done = Instant::now();
    ctx.rec.record(
        POST_ORDERS,
        ctx.clock.secs(done),
        (done - sent).as_micros() as u64,
    );
    outcome.id = Some(id);
    let other = if two { 1 - first } else { 0 };
    match action {
        Action::ApiCancel => {
            // Some while pending, some once paged.
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_secs(2))).await;
            let base = &ctx.orders[other];
            match retry(ctx.retry_for, |_| ctx.api.cancel_order(base, id)).await {
                Ok(_) => outcome.expect = Expect::Cancelled,
                Err(_) => outcome.why_open = Some("POST /orders/{id}/cancel: no 202/409"),
            }
        }
        Action::Pay | Action::PageCancel => {
            let url = match ctx.watcher.page(id, ctx.page_wait).await {
                Ok((url, _)) => url,
                Err(why) => {
                    outcome.why_open = Some(if why == "timeout" {
                        "no page within --page-wait"
                    } else {
                        "cancelled before its page (nobody asked)"
                    });
                    return outcome;
                }
            };
            // Two instances: the page of the other Payments instance.
            let url = if two {
                let from = ctx
                    .payments
                    .iter()
                    .position(|p| url.starts_with(p.as_str()));
                match from {
                    Some(k) => url.replacen(&ctx.payments[k], &ctx.payments[1 - k], 1),
                    None => url,
                }
            } else {
                url
            };
            let verb = if action == Action::Pay {
                "complete"
            } else {
                "cancel"
            };
            let sent = Instant::now();
            match retry(ctx.retry_for, |_| ctx.api.page_action(&url, verb)).await {
                Ok(()) => {
                    let done = Instant::now();
                    ctx.rec.record(
                        POST_COMPLETE,
                        ctx.clock.secs(done),
                        (done - sent).as_micros() as u64,
                    );
                    outcome.expect = if action == Action::Pay {
                        Expect::Fulfilled
                    } else {
                        Expect::Cancelled
                    };
                }
                Err(_) => outcome.why_open = Some("page POST: no 303 within --retry-for"),
            }
        }
    }
    outcome
}

/// One injected fault, for the report.
struct Injected {
    at_s: f64,
    fault: Fault,
    target: &'static str,
    how: String,
    restart_s: f64,
    restart_error: Option<String>,
}

/// Starts whatever is not running on `s` (Payments first). Errors are returned, not
/// raised: a restart that fails is a finding, and the next round tries again.
async fn ensure_up(s: &mut Stack) -> Option<String> {
    let mut errors = Vec::new();
    if !s.is_running(Which::Payments)
        && let Err(e) = s.start_payments().await
    {
        errors.push(format!("payments: {e:#}"));
    }
    if !s.is_running(Which::Orders)
        && let Err(e) = s.start_orders(false).await
    {
        errors.push(format!("orders: {e:#}"));
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

async fn inject(
    fault: Fault,
    s: &mut Stack,
    label: &'static str,
    cluster: &PgCluster,
) -> (&'static str, String, Option<String>) {
    match fault {
        Fault::PgRestart | Fault::PgCrash => {
            let mode = if fault == Fault::PgRestart {
                StopMode::Fast
            } else {
                StopMode::Immediate
            };
            match cluster.restart(mode).await {
                Ok(()) => ("postgresql", "restarted".into(), None),
                Err(e) => (
                    "postgresql",
                    "restart failed".into(),
                    Some(format!("{e:#}")),
                ),
            }
        }
        _ => {
            let which = match fault {
                Fault::KillOrders | Fault::TermOrders => Which::Orders,
                _ => Which::Payments,
            };
            let how = match fault {
                Fault::KillOrders | Fault::KillPayments => s.kill(which).await,
                _ => s.stop(which).await,
            };
            let target = match (which, label) {
                (Which::Orders, "A") => "orders A",
                (Which::Orders, _) => "orders B",
                (Which::Payments, "A") => "payments A",
                (Which::Payments, _) => "payments B",
            };
            (target, how, ensure_up(s).await)
        }
    }
}

pub async fn run(args: &ChaosArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.fault_min <= args.fault_max && !args.fault_max.is_zero(),
        "--fault-min must not exceed --fault-max"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.single_phase),
        "--single-phase is a fraction of the load, 0 to 1"
    );
    let mix = parse_mix(&args.mix)?;
    let outputs = Outputs::new(&args.common, "chaos");
    std::fs::create_dir_all(&outputs.out_dir)?;
    let cluster = PgCluster::create(args.pg_version.as_deref()).await?;
    eprintln!(
        "loadgen chaos: PostgreSQL cluster {}/{} on port {}",
        cluster.version, cluster.name, cluster.port
    );
    let mut common = args.common.clone();
    common.database_url = cluster.database_url();
    let started = Instant::now();
    let result = async {
        let mut a = Stack::new(common.stack_config(outputs.out_dir.clone())).await?;
        let mut b = a.sibling("-b").await?;
        let rec = Arc::new(Recorder::default());
        let mut result = body(&mut a, &mut b, &cluster, args, mix, &rec).await;
        let services = b.shutdown().await;
        if let Ok(report) = &mut result {
            report
                .services
                .extend(services.into_iter().filter(|s| s.starts > 0));
        }
        finish(a, result, &common, &outputs, &[POST_ORDERS], started).await
    }
    .await;
    if let Err(e) = cluster.drop_cluster().await {
        eprintln!("loadgen: {e:#}");
    }
    result
}

fn parse_mix(mix: &str) -> anyhow::Result<[u64; 3]> {
    let parts: Vec<u64> = mix
        .split(',')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--mix is three integers: pay,page-cancel,api-cancel"))?;
    anyhow::ensure!(
        parts.len() == 3 && parts.iter().sum::<u64>() > 0,
        "--mix is three integers (pay,page-cancel,api-cancel), not all zero"
    );
    Ok([parts[0], parts[1], parts[2]])
}

async fn body(
    a: &mut Stack,
    b: &mut Stack,
    cluster: &PgCluster,
    args: &ChaosArgs,
    mix: [u64; 3],
    rec: &Arc<Recorder>,
) -> anyhow::Result<Report> {
    let c = &args.common;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    rec.stage(
        POST_ORDERS,
        "POST /orders, first attempt sent → 201/200 of the attempt that got one (retries included)",
    );
    rec.stage(
        POST_COMPLETE,
        "page Pay or Cancel, first attempt sent → 303 (retries included)",
    );
    a.start_payments().await?;
    a.start_orders(true).await?;
    let obs = a.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    let clock = Clock::start();
    let ctx = Arc::new(Ctx {
        api: Api::new(
            &a.orders_url(),
            c.http_concurrency,
            c.request_timeout,
            rec.clone(),
        )?,
        watcher: Watcher::start(obs.clone(), args.watch, rec.clone()),
        orders: [a.orders_url(), b.orders_url()],
        payments: [a.payments_url(), b.payments_url()],
        retry_for: args.retry_for,
        page_wait: args.page_wait,
        mix,
        seed,
        two: AtomicBool::new(false),
        clock,
        rec: rec.clone(),
    });

    // The load: order i is due at t0 + i/rate.
    let n = args.orders;
    let load_for = Duration::from_secs_f64(n as f64 / args.rate);
    let all_due = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let load = {
        let ctx = ctx.clone();
        let all_due = all_due.clone();
        let rate = args.rate;
        let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            let mut outcomes = Vec::with_capacity(n as usize);
            let mut late = 0u64;
            for i in 0..n {
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                if Instant::now() > due + Duration::from_secs(1) {
                    late += 1;
                }
                let ctx = ctx.clone();
                set.spawn(async move {
                    let o = one_order(ctx, i).await;
                    drop(permit);
                    o
                });
                while let Some(done) = set.try_join_next() {
                    outcomes.push(done);
                }
            }
            all_due.store(true, Ordering::Relaxed);
            while let Some(done) = set.join_next().await {
                outcomes.push(done);
            }
            (outcomes, late)
        })
    };

    // The faults, until every order was due.
    let two_at = t0 + load_for.mul_f64(args.single_phase);
    let mut deck = Deck { cards: Vec::new() };
    let mut injected: Vec<Injected> = Vec::new();
    let mut two_started: Option<f64> = None;
    let mut next = t0 + rng.between(args.fault_min, args.fault_max);
    while !all_due.load(Ordering::Relaxed) {
        if two_started.is_none() && args.single_phase < 1.0 && Instant::now() >= two_at {
            b.start_payments().await?;
            b.start_orders(true).await?;
            ctx.two.store(true, Ordering::Relaxed);
            two_started = Some(clock.secs(Instant::now()));
            eprintln!("loadgen chaos: second instances up");
        }
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let fault = deck.draw(&mut rng);
        let on_b = two_started.is_some() && rng.below(2) == 1;
        let at = Instant::now();
        let (target, how, restart_error) = if on_b {
            inject(fault, b, "B", cluster).await
        } else {
            inject(fault, a, "A", cluster).await
        };
        let restart_s = at.elapsed().as_secs_f64();
        eprintln!(
            "loadgen chaos: {:>6.1} s {} on {target}: {how} ({restart_s:.1} s){}",
            clock.secs(at),
            fault.name(),
            restart_error
                .as_deref()
                .map(|e| format!(" RESTART FAILED: {e}"))
                .unwrap_or_default()
        );
        injected.push(Injected {
            at_s: clock.secs(at),
            fault,
            target,
            how,
            restart_s,
            restart_error,
        });
        next = Instant::now() + rng.between(args.fault_min, args.fault_max);
    }
    let faults_end = Instant::now();
    eprintln!("loadgen chaos: faults stopped; waiting for the last calls");

    // Every service up again, then the load's last calls (each bounded by --retry-for).
    let mut final_start_errors = Vec::new();
    for (s, on) in [(&mut *a, true), (&mut *b, two_started.is_some())] {
        if on && let Some(e) = ensure_up(s).await {
            final_start_errors.push(e);
        }
    }
    let bound = args.retry_for * 3 + args.page_wait + Duration::from_secs(30);
    let (outcomes, late) = match tokio::time::timeout(bound, load).await {
        Ok(joined) => joined?,
        Err(_) => anyhow::bail!("the load's calls did not end within {bound:?}"),
    };
    let outcomes: Vec<Outcome> = outcomes.into_iter().filter_map(Result::ok).collect();
    let load_end = Instant::now();

    // Settle: no order pending, every definitive answer final, nothing unacked.
    let expect: HashMap<Uuid, Expect> = outcomes
        .iter()
        .filter_map(|o| Some((o.id?, o.expect)))
        .collect();
    let settle_start = Instant::now();
    let mut poll = Poll::new(args.settle, Duration::from_secs(1));
    let mut settled_after = None;
    let mut last_unsettled = String::from("never read");
    while poll.next().await {
        match unsettled(&obs, &expect).await {
            Ok((0, _)) => {
                settled_after = Some(settle_start.elapsed().as_secs_f64());
                break;
            }
            Ok((_, why)) => last_unsettled = why,
            Err(e) => last_unsettled = format!("database error: {e}"),
        }
    }
    eprintln!("loadgen chaos: settled: {settled_after:?}; checking");

    let mut report = Report::from_recorder("chaos", rec);
    let mut violations = 0u64;
    let mut check = |report: &mut Report, name: &str, bad: u64, detail: String| {
        violations += bad;
        report.check(name, bad == 0, detail);
    };

    check(
        &mut report,
        "settled within --settle after the faults stopped",
        u64::from(settled_after.is_none()),
        match settled_after {
            Some(s) => format!(
                "in {s:.1} s: nothing pending, every answered action final, nothing unacked"
            ),
            None => format!("after {:?}: {last_unsettled}", args.settle),
        },
    );

    let rows: Vec<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>, i32)> = sqlx::query_as(
        "SELECT o.id, o.status, o.parked_at, \
                (SELECT count(*)::int FROM invoices i WHERE i.order_id = o.id) \
         FROM orders o",
    )
    .fetch_all(&obs.orders)
    .await?;
    let status: HashMap<Uuid, (&str, bool, i32)> = rows
        .iter()
        .map(|(id, s, parked, inv)| (*id, (s.as_str(), parked.is_some(), *inv)))
        .collect();
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, _, _) in status.values() {
        *by_state.entry(s).or_default() += 1;
    }

    let created: Vec<Uuid> = outcomes.iter().filter_map(|o| o.id).collect();
    let created_set: HashSet<Uuid> = created.iter().copied().collect();
    let lost: Vec<&Uuid> = created
        .iter()
        .filter(|id| !status.contains_key(id))
        .collect();
    check(
        &mut report,
        "no order lost: every 201/200 has its row",
        lost.len() as u64,
        format!(
            "{} of {} created orders missing{}",
            lost.len(),
            created.len(),
            examples(lost.iter().map(|id| id.to_string()))
        ),
    );

    let not_final: Vec<String> = status
        .iter()
        .filter(|(_, (s, _, _))| !matches!(*s, "fulfilled" | "cancelled" | "awaiting_payment"))
        .map(|(id, (s, _, _))| format!("{id} {s}"))
        .collect();
    check(
        &mut report,
        "every order final or awaiting_payment",
        not_final.len() as u64,
        format!("{} not{}", not_final.len(), examples(not_final.into_iter())),
    );

    let mut wrong = Vec::new();
    for o in &outcomes {
        let Some(id) = o.id else { continue };
        let Some((s, _, _)) = status.get(&id) else {
            continue;
        };
        let bad = match o.expect {
            Expect::Fulfilled => *s != "fulfilled",
            Expect::Cancelled => *s != "cancelled",
            // Nobody cancelled an order whose action was Pay.
            Expect::FinalOrAwaiting => o.action == Action::Pay && *s == "cancelled",
        };
        if bad {
            wrong.push(format!("{id} {:?}/{:?} is {s}", o.action, o.expect));
        }
    }
    check(
        &mut report,
        "every answered action took effect (303 Pay → fulfilled, 303 Cancel/202 → cancelled; Pay never cancelled)",
        wrong.len() as u64,
        format!("{} wrong{}", wrong.len(), examples(wrong.into_iter())),
    );

    let two_invoices: Vec<String> = status
        .iter()
        .filter(|(_, (_, _, n))| *n > 1)
        .map(|(id, (_, _, n))| format!("{id} ({n})"))
        .collect();
    check(
        &mut report,
        "no order has two invoices",
        two_invoices.len() as u64,
        format!(
            "{}{}",
            two_invoices.len(),
            examples(two_invoices.into_iter())
        ),
    );
    let invoice_mismatch: Vec<String> = status
        .iter()
        .filter(|(_, (s, _, n))| (*s == "cancelled" && *n > 0) || (*s == "fulfilled" && *n != 1))
        .map(|(id, (s, _, n))| format!("{id} {s} with {n} invoice(s)"))
        .collect();
    check(
        &mut report,
        "no invoice of a cancelled order; every fulfilled order has one",
        invoice_mismatch.len() as u64,
        format!(
            "{}{}",
            invoice_mismatch.len(),
            examples(invoice_mismatch.into_iter())
        ),
    );

    let sessions: HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT order_id, state FROM payment_sessions")
            .fetch_all(&obs.payments)
            .await?
            .into_iter()
            .collect();
    let mut session_mismatch = Vec::new();
    for (id, (s, _, _)) in &status {
        let want = match *s {
            "fulfilled" => "fulfilled",
            "cancelled" => "cancelled",
            _ => continue,
        };
        let has = sessions.get(id).map_or("no session", String::as_str);
        if has != want {
            session_mismatch.push(format!("{id} {s}, session {has}"));
        }
    }
    check(
        &mut report,
        "every fulfilled order's session is fulfilled, every cancelled order's cancelled",
        session_mismatch.len() as u64,
        format!(
            "{}{}",
            session_mismatch.len(),
            examples(session_mismatch.into_iter())
        ),
    );

    let (unacked, dead): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE acked_at IS NULL), \
                count(*) FILTER (WHERE dead_at IS NOT NULL AND acked_at IS NULL) \
         FROM payment_events",
    )
    .fetch_one(&obs.payments)
    .await?;
    check(
        &mut report,
        "no unacked event left",
        unacked as u64,
        format!("{unacked} unacked ({dead} of them dead-lettered)"),
    );
    let parked = status.values().filter(|(_, p, _)| *p).count() as u64;
    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM order_incidents")
        .fetch_one(&obs.orders)
        .await?;
    check(
        &mut report,
        "no parked order, no order incident",
        parked + incidents as u64,
        format!("{parked} parked, {incidents} incident(s)"),
    );

    let restart_failures: Vec<String> = injected
        .iter()
        .filter_map(|f| {
            f.restart_error
                .as_ref()
                .map(|e| format!("{:.1} s {} on {}: {e}", f.at_s, f.fault.name(), f.target))
        })
        .chain(final_start_errors.iter().cloned())
        .collect();
    check(
        &mut report,
        "every service came back after every fault",
        restart_failures.len() as u64,
        format!(
            "{} failed restart(s){}",
            restart_failures.len(),
            examples(restart_failures.into_iter())
        ),
    );

    // The run itself: the faults it promised.
    let mut by_fault: BTreeMap<Fault, u64> = BTreeMap::new();
    for f in &injected {
        *by_fault.entry(f.fault).or_default() += 1;
    }
    let pg = by_fault.get(&Fault::PgRestart).copied().unwrap_or(0)
        + by_fault.get(&Fault::PgCrash).copied().unwrap_or(0);
    report.check(
        "the run injected every kind of fault, PostgreSQL restarts included",
        Fault::ALL.iter().all(|f| by_fault.contains_key(f)) && pg > 0,
        format!("{} fault(s), {pg} PostgreSQL restart(s)", injected.len()),
    );
    let crossed_final = outcomes
        .iter()
        .filter(|o| o.crossed && o.expect != Expect::FinalOrAwaiting)
        .filter(|o| {
            o.id.and_then(|id| status.get(&id))
                .is_some_and(|(s, _, _)| matches!(*s, "fulfilled" | "cancelled"))
        })
        .count();
    if args.single_phase < 1.0 {
        report.check(
            "two-instance phase: outcomes acted on the other instance took effect",
            two_started.is_some() && crossed_final > 0,
            format!("{crossed_final} order(s) created on one instance, paid/cancelled on the other, final"),
        );
    }

    // Figures.
    report.figure(
        "violations",
        violations as f64,
        "",
        "orders (or events, restarts) breaking a check; 0 expected",
    );
    for f in Fault::ALL {
        report.figure(
            &format!("faults: {}", f.name()),
            by_fault.get(&f).copied().unwrap_or(0) as f64,
            "",
            "injected",
        );
    }
    report.figure("orders due", n as f64, "", "POST /orders sequences started");
    report.figure(
        "orders created",
        created_set.len() as f64,
        "",
        "a 201 (or the 200 of a retry with the same Idempotency-Key)",
    );
    report.figure(
        "orders without an answer",
        (n as usize - created.len()) as f64,
        "",
        "no 201/200 within --retry-for (they may exist: see rows)",
    );
    report.figure(
        "rows without a 201",
        status.keys().filter(|id| !created_set.contains(id)).count() as f64,
        "",
        "orders in the database whose creation loadgen never saw answered",
    );
    for (s, k) in &by_state {
        report.figure(
            &format!("orders {s}"),
            *k as f64,
            "",
            "final state, all rows",
        );
    }
    for (name, action) in [
        ("action: pay on the page", Action::Pay),
        ("action: cancel on the page", Action::PageCancel),
        ("action: cancel through the API", Action::ApiCancel),
    ] {
        let all = outcomes
            .iter()
            .filter(|o| o.id.is_some() && o.action == action);
        let answered = all
            .clone()
            .filter(|o| o.expect != Expect::FinalOrAwaiting)
            .count();
        report.figure(
            name,
            all.count() as f64,
            "",
            &format!("created orders given this action; {answered} got a definitive answer"),
        );
    }
    let mut open_why: BTreeMap<&str, u64> = BTreeMap::new();
    for o in &outcomes {
        if let Some(w) = o.why_open {
            *open_why.entry(w).or_default() += 1;
        }
    }
    for (w, k) in &open_why {
        report.figure(&format!("no definitive answer: {w}"), *k as f64, "", "");
    }
    report.figure(
        "orders crossing instances",
        outcomes
            .iter()
            .filter(|o| o.crossed && o.id.is_some())
            .count() as f64,
        "",
        "created while two instances ran; action sent to the other instance",
    );
    if let Some(s) = two_started {
        report.figure(
            "second instances started at",
            s,
            "s",
            "since the load began",
        );
    }
    report.figure(
        "load and faults",
        (faults_end - t0).as_secs_f64(),
        "s",
        "first order due → faults stopped",
    );
    report.figure(
        "last calls after the faults",
        (load_end - faults_end).as_secs_f64(),
        "s",
        "",
    );
    if let Some(s) = settled_after {
        report.figure("settle", s, "s", "until nothing pending or unacked");
    }
    report.figure(
        "orders started late",
        late as f64,
        "",
        "started > 1 s after due (--max-in-flight reached)",
    );

    let mut md =
        String::from("| t (s) | fault | target | how | took (s) |\n|---|---|---|---|---|\n");
    for f in &injected {
        md.push_str(&format!(
            "| {:.1} | {} | {} | {}{} | {:.1} |\n",
            f.at_s,
            f.fault.name(),
            f.target,
            f.how,
            f.restart_error
                .as_deref()
                .map(|e| format!("; restart FAILED: {e}"))
                .unwrap_or_default(),
            f.restart_s
        ));
    }
    report.sections.push(Section {
        title: "Faults".into(),
        markdown: md,
    });
    report.parameters = serde_json::json!({
        "orders": n,
        "rate": args.rate,
        "fault_min_ms": args.fault_min.as_millis() as u64,
        "fault_max_ms": args.fault_max.as_millis() as u64,
        "single_phase": args.single_phase,
        "mix": args.mix,
        "settle_s": args.settle.as_secs_f64(),
        "retry_for_s": args.retry_for.as_secs_f64(),
        "page_wait_s": args.page_wait.as_secs_f64(),
        "seed": seed,
        "postgres_cluster": format!("{}/{}", cluster.version, cluster.name),
        "http_concurrency": c.http_concurrency,
        "request_timeout_ms": c.request_timeout.as_millis() as u64,
    });
    report.machine = machine;
    Ok(report)
}

/// How many orders are not settled yet, and why (for the report if it never happens).
async fn unsettled(
    obs: &crate::observe::Observer,
    expect: &HashMap<Uuid, Expect>,
) -> sqlx::Result<(u64, String)> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM orders WHERE status IN ('pending_payment', 'awaiting_payment')",
    )
    .fetch_all(&obs.orders)
    .await?;
    let pending = rows.iter().filter(|(_, s)| s == "pending_payment").count() as u64;
    let answered_open = rows
        .iter()
        .filter(|(id, _)| {
            expect
                .get(id)
                .is_some_and(|e| *e != Expect::FinalOrAwaiting)
        })
        .count() as u64;
    let unacked = obs.unacked().await? as u64;
    Ok((
        pending + answered_open + unacked,
        format!(
            "{pending} pending_payment, {answered_open} answered but not final, {unacked} unacked events"
        ),
    ))
}

/// Up to five examples, for a check's detail.
fn examples(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.take(5).collect();
    if items.is_empty() {
        String::new()
    } else {
        format!(": {}", items.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deck_deals_every_fault_once_per_round() {
        let mut rng = Rng::new(7);
        let mut deck = Deck { cards: Vec::new() };
        for _ in 0..3 {
            let mut round: Vec<Fault> =
                (0..Fault::ALL.len()).map(|_| deck.draw(&mut rng)).collect();
            round.sort();
            assert_eq!(round, Fault::ALL.to_vec());
        }
    }

    #[test]
    fn mix_is_three_integers() {
        assert_eq!(parse_mix("50,25,25").unwrap(), [50, 25, 25]);
        assert!(parse_mix("1,2").is_err());
        assert!(parse_mix("0,0,0").is_err());
    }

    #[test]
    fn between_stays_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let d = rng.between(Duration::from_secs(2), Duration::from_secs(5));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(5));
        }
    }
}
