//! The faults: their kinds, the deck that deals every kind once a round, one injection
//! and the restart after it, and the loop that injects one every `--fault-min` to
//! `--fault-max` while the load runs, starting the second instances on the way.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::load::{Ctx, Outcome, Rng};
use super::options::ChaosOptions;
use crate::cluster::{PgCluster, StopMode};
use crate::scenarios::load::Load;
use crate::stack::{Stack, Which};
use crate::stats::Clock;

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

/// One injected fault, for the report.
pub(super) struct Injected {
    pub(super) at_s: f64,
    pub(super) fault: Fault,
    pub(super) target: &'static str,
    pub(super) how: String,
    pub(super) restart_s: f64,
    pub(super) restart_error: Option<String>,
}

/// Starts whatever is not running on `s` (Payments first). Errors are returned, not
/// raised: a restart that fails is a finding, and the next round tries again.
pub(super) async fn ensure_up(s: &mut Stack) -> Option<String> {
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

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failed = self.restart_error.as_deref();
        write!(
            f,
            "{:>6.1} s {} on {}: {} ({:.1} s){}",
            self.at_s,
            self.fault.name(),
            self.target,
            self.how,
            self.restart_s,
            failed
                .map(|e| format!(" RESTART FAILED: {e}"))
                .unwrap_or_default()
        )
    }
}

/// Injects `fault` (on instance `label` of the services, or on PostgreSQL), and
/// starts again what it stopped.
async fn inject(
    fault: Fault,
    (s, label): (&mut Stack, &'static str),
    cluster: &PgCluster,
    clock: &Clock,
) -> Injected {
    let at = Instant::now();
    let (target, how, restart_error) = match fault {
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
    };
    let injected = Injected {
        at_s: clock.secs(at),
        fault,
        target,
        how,
        restart_s: at.elapsed().as_secs_f64(),
        restart_error,
    };
    eprintln!("loadgen chaos: {injected}");
    injected
}

/// Injects one fault every `--fault-min` to `--fault-max` until every order of `load`
/// was due, on A or (once they run) on B; starts the second instances after
/// `--single-phase` of the load. Returns the faults, and when B started.
pub(super) async fn inject_while_loading(
    (a, b): (&mut Stack, &mut Stack),
    cluster: &PgCluster,
    o: &ChaosOptions,
    rng: &mut Rng,
    ctx: &Ctx,
    load: &Load<Outcome>,
) -> anyhow::Result<(Vec<Injected>, Option<f64>)> {
    let clock = ctx.clock;
    let two_at = load.t0 + o.load_for().mul_f64(o.single_phase);
    let mut deck = Deck { cards: Vec::new() };
    let mut injected: Vec<Injected> = Vec::new();
    let mut two_started: Option<f64> = None;
    let mut next = load.t0 + rng.between(o.fault_min, o.fault_max);
    while !load.all_due.load(Ordering::Relaxed) {
        if two_started.is_none() && o.single_phase < 1.0 && Instant::now() >= two_at {
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
        let fault = deck.draw(rng);
        let on = match two_started.is_some() && rng.below(2) == 1 {
            true => (&mut *b, "B"),
            false => (&mut *a, "A"),
        };
        injected.push(inject(fault, on, cluster, &clock).await);
        next = Instant::now() + rng.between(o.fault_min, o.fault_max);
    }
    Ok((injected, two_started))
}

#[cfg(test)]
mod tests {
    use super::{Deck, Fault, Rng};

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
}
