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
//!
//! The pieces: `load.rs` (the orders and their actions), `faults.rs` (the deck of faults
//! and the loop that injects them), `checks.rs` (settling, then the checks on both
//! databases), `figures.rs` (the report's figures, the faults' table and the parameters);
//! this file runs them in order.

mod checks;
mod faults;
mod figures;
mod load;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::flow::Watcher;
use super::{Outputs, POST_COMPLETE, POST_ORDERS, finish};
use crate::api::Api;
use crate::cli::ChaosArgs;
use crate::cluster::PgCluster;
use crate::report::{Machine, Report};
use crate::stack::Stack;
use crate::stats::{Clock, Recorder};
use faults::Injected;
pub use faults::{Deck, Fault};
use load::{Ctx, Outcome, parse_mix};

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
        let mut a = Stack::new(common.stack_config(outputs.out_dir.clone())?).await?;
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

/// What the run left, for the checks and the figures: the answers, the faults, the
/// timings, and every order's row.
struct Ran<'a> {
    args: &'a ChaosArgs,
    seed: u64,
    cluster: &'a PgCluster,
    outcomes: Vec<Outcome>,
    /// Orders started > 1 s after due.
    late: u64,
    injected: Vec<Injected>,
    by_fault: BTreeMap<Fault, u64>,
    /// Services that would not start again once the faults stopped.
    final_start_errors: Vec<String>,
    /// When the second instances started, since the load began.
    two_started: Option<f64>,
    /// When the first order was due.
    t0: Instant,
    faults_end: Instant,
    load_end: Instant,
    settled_after: Option<f64>,
    last_unsettled: String,
    /// Each order's status, whether it is parked, and its invoices.
    status: HashMap<Uuid, (&'a str, bool, i32)>,
    created: Vec<Uuid>,
    created_set: HashSet<Uuid>,
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
            a.tls(),
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
    let load = load::start(ctx.clone(), args);

    // The faults, until every order was due.
    let (injected, two_started) =
        faults::inject_while_loading(a, b, cluster, args, &mut rng, &ctx, &load).await?;
    let faults_end = Instant::now();
    eprintln!("loadgen chaos: faults stopped; waiting for the last calls");

    // Every service up again, then the load's last calls (each bounded by --retry-for).
    let mut final_start_errors = Vec::new();
    for (s, on) in [(&mut *a, true), (&mut *b, two_started.is_some())] {
        if on && let Some(e) = faults::ensure_up(s).await {
            final_start_errors.push(e);
        }
    }
    let bound = args.retry_for * 3 + args.page_wait + Duration::from_secs(30);
    let (outcomes, late) = match tokio::time::timeout(bound, load.task).await {
        Ok(joined) => joined?,
        Err(_) => anyhow::bail!("the load's calls did not end within {bound:?}"),
    };
    let outcomes: Vec<Outcome> = outcomes.into_iter().filter_map(Result::ok).collect();
    let load_end = Instant::now();

    // Settle: no order pending, every definitive answer final, nothing unacked.
    let (settled_after, last_unsettled) = checks::settle(&obs, &outcomes, args.settle).await;

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
    let created: Vec<Uuid> = outcomes.iter().filter_map(|o| o.id).collect();
    let created_set: HashSet<Uuid> = created.iter().copied().collect();
    let mut by_fault: BTreeMap<Fault, u64> = BTreeMap::new();
    for f in &injected {
        *by_fault.entry(f.fault).or_default() += 1;
    }
    let ran = Ran {
        args,
        seed,
        cluster,
        outcomes,
        late,
        injected,
        by_fault,
        final_start_errors,
        two_started,
        t0: load.t0,
        faults_end,
        load_end,
        settled_after,
        last_unsettled,
        status,
        created,
        created_set,
    };

    let mut report = Report::from_recorder("chaos", rec);
    let violations = checks::check(&mut report, &obs, &ran).await?;
    figures::figures(&mut report, &ran, violations);
    report.sections.push(figures::faults_section(&ran.injected));
    report.parameters = figures::parameters(&ran);
    report.machine = machine;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Rng;

    #[test]
    fn between_stays_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let d = rng.between(Duration::from_secs(2), Duration::from_secs(5));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(5));
        }
    }
}
