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
//! The pieces: `options.rs`, `load.rs` (the orders and their actions), `faults.rs`
//! (the deck of faults and the loop that injects them), `verdict.rs` (settling, the
//! checks on both databases, the figures); this file runs them in order.

mod faults;
mod load;
mod options;
mod verdict;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;

use super::flow::Watcher;
use super::steps::{POST_COMPLETE, POST_ORDERS};
use super::{Common, Run, Scenario, Spec};
use crate::cluster::PgCluster;
use crate::observe::Observer;
use crate::report::Report;
use crate::stats::Clock;
use load::{Ctx, Rng};
pub use options::ChaosOptions;
use verdict::Ran;

/// Runs `chaos` on a PostgreSQL cluster of its own, removed at the end.
pub async fn run(options: ChaosOptions) -> anyhow::Result<Report> {
    let mix = options.mix()?;
    let cluster = PgCluster::create(options.pg_version.as_deref()).await?;
    eprintln!(
        "loadgen chaos: PostgreSQL cluster {}/{} on port {}",
        cluster.version, cluster.name, cluster.port
    );
    let mut common = options.common.clone();
    common.stack.server.database_url = cluster.database_url();
    let chaos = Chaos {
        options: &options,
        common,
        cluster: &cluster,
        mix,
    };
    let result = super::run(&chaos).await;
    if let Err(e) = cluster.drop_cluster().await {
        eprintln!("loadgen: {e:#}");
    }
    result
}

struct Chaos<'a> {
    options: &'a ChaosOptions,
    /// The options, on the run's own cluster.
    common: Common,
    cluster: &'a PgCluster,
    mix: [u64; 3],
}

impl Scenario for Chaos<'_> {
    fn spec(&self) -> Spec<'_> {
        let two_instances = true;
        Spec {
            two_instances,
            ..Spec::new("chaos", &self.common, &[POST_ORDERS])
        }
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let o = self.options;
        let seed = o.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        run.rec.stage(
            POST_ORDERS,
            "POST /orders, first attempt sent → 201/200 of the attempt that got one (retries included)",
        );
        run.rec.stage(
            POST_COMPLETE,
            "page Pay or Cancel, first attempt sent → 303 (retries included)",
        );
        let obs = run.start().await?;
        let ctx = Arc::new(self.context(run, obs.clone(), seed)?);
        let load = load::start(ctx.clone(), o);
        let (a, b) = (&mut run.stack, run.second.as_mut().expect("two instances"));
        let mut rng = Rng::new(seed);
        let (injected, two_started) = faults::inject_while_loading(
            (&mut *a, &mut *b),
            self.cluster,
            o,
            &mut rng,
            &ctx,
            &load,
        )
        .await?;
        let faults_end = Instant::now();
        eprintln!("loadgen chaos: faults stopped; waiting for the last calls");
        // Every service up again, then the load's last calls (each bounded by --retry-for).
        let mut final_start_errors = Vec::new();
        for (s, on) in [(a, true), (b, two_started.is_some())] {
            if on && let Some(e) = faults::ensure_up(s).await {
                final_start_errors.push(e);
            }
        }
        let t0 = load.t0;
        let bound = o.retry_for * 3 + o.page_wait + Duration::from_secs(30);
        let ended = load.join(Some(bound)).await?;
        let load_end = Instant::now();
        let settled = verdict::settle(&obs, &ended.done, o.settle).await;
        let ran = Ran {
            options: o,
            seed,
            cluster: format!("{}/{}", self.cluster.version, self.cluster.name),
            outcomes: ended.done,
            late: ended.late,
            injected,
            final_start_errors,
            two_started,
            t0,
            faults_end,
            load_end,
            settled,
        };
        verdict::report(&mut run.report, &obs, &ran).await
    }
}

impl Chaos<'_> {
    /// What every order shares: the APIs of both Orders instances, the watcher, the
    /// bases of both Payments instances.
    fn context(&self, run: &Run, obs: Observer, seed: u64) -> anyhow::Result<Ctx> {
        let o = self.options;
        let (a, b) = (&run.stack, run.second.as_ref().expect("two instances"));
        let api = run.api()?;
        let api_b = api.at(&b.orders_url());
        Ok(Ctx {
            apis: [api, api_b],
            watcher: Watcher::start(obs, o.watch, run.rec.clone()),
            payments: [a.payments_url(), b.payments_url()],
            retry_for: o.retry_for,
            page_wait: o.page_wait,
            mix: self.mix,
            seed,
            two: AtomicBool::new(false),
            clock: Clock::start(),
            rec: run.rec.clone(),
        })
    }
}
