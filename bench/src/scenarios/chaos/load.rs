//! The load: orders created at a steady rate, each paid or cancelled on its page, or
//! cancelled through the API, at random; every call retried with backoff for
//! `--retry-for`, and what loadgen must then find in the database, from the answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::options::ChaosOptions;
use crate::api::{Api, Attempt};
use crate::scenarios::flow::Watcher;
use crate::scenarios::load::{Full, Load, Open};
use crate::scenarios::steps::{POST_COMPLETE, POST_ORDERS};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Pay,
    PageCancel,
    ApiCancel,
}

/// What the final state of an order must be, from the answers loadgen got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// 303 to Pay.
    Fulfilled,
    /// 303 to the page's Cancel, 202 (or 409) to POST /orders/{id}/cancel.
    Cancelled,
    /// No definitive answer: final, or `awaiting_payment`.
    FinalOrAwaiting,
}

pub(super) struct Outcome {
    pub(super) id: Option<Uuid>,
    pub(super) action: Action,
    pub(super) expect: Expect,
    /// Created while two instances ran: its action went to the other instance.
    pub(super) crossed: bool,
    /// Why there is no definitive answer.
    pub(super) why_open: Option<&'static str>,
}

/// What every order of the load shares.
pub(super) struct Ctx {
    /// The API of Orders A and of Orders B (within one bound).
    pub(super) apis: [Api; 2],
    pub(super) watcher: Watcher,
    /// The base URLs of Payments A and B, whose pages an order may cross to.
    pub(super) payments: [String; 2],
    pub(super) retry_for: Duration,
    pub(super) page_wait: Duration,
    pub(super) mix: [u64; 3],
    pub(super) seed: u64,
    /// Whether the second instances run.
    pub(super) two: AtomicBool,
    pub(super) clock: Clock,
    pub(super) rec: Arc<Recorder>,
}

/// Starts the load: order i is due at t0 + i/rate, at most `--max-in-flight` at once.
pub(super) fn start(ctx: Arc<Ctx>, o: &ChaosOptions) -> Load<Outcome> {
    let plan = Open {
        rate: o.rate,
        count: Some(o.orders),
        max_in_flight: o.max_in_flight,
        when_full: Full::Wait,
    };
    Load::open(plan, move |i, _| ctx.clone().order(i))
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

impl Ctx {
    /// Order i: created, then its action, each retried; what it must have become.
    async fn order(self: Arc<Self>, i: u64) -> Outcome {
        let mut rng = Rng::new(self.seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
        let two = self.two.load(Ordering::Relaxed);
        let first = if two { (i % 2) as usize } else { 0 };
        let pick = rng.below(self.mix.iter().sum::<u64>().max(1));
        let action = if pick < self.mix[0] {
            Action::Pay
        } else if pick < self.mix[0] + self.mix[1] {
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
        let Some(id) = self.create(i, two, first).await else {
            outcome.why_open = Some("POST /orders: no 201/200 within --retry-for");
            return outcome;
        };
        outcome.id = Some(id);
        let answer = match action {
            Action::ApiCancel => {
                // Some while pending, some once paged; on the other Orders instance.
                tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_secs(2))).await;
                let api = &self.apis[if two { 1 - first } else { 0 }];
                match retry(self.retry_for, |_| api.cancel(id)).await {
                    Ok(()) => Ok(Expect::Cancelled),
                    Err(_) => Err("POST /orders/{id}/cancel: no 202/409"),
                }
            }
            Action::Pay | Action::PageCancel => self.on_page(id, action, two).await,
        };
        match answer {
            Ok(expect) => outcome.expect = expect,
            Err(why) => outcome.why_open = Some(why),
        }
        outcome
    }

    /// `POST /orders` with an `Idempotency-Key`; with two instances, a retry goes to
    /// the other one.
    async fn create(&self, i: u64, two: bool, first: usize) -> Option<Uuid> {
        let key = format!("chaos-{i}");
        let sent = Instant::now();
        let created = retry(self.retry_for, |attempt| {
            let at = if two {
                (first + attempt as usize) % 2
            } else {
                0
            };
            self.apis[at].create(Some(&key))
        })
        .await;
        let id = created.ok()?;
        self.rec.record_until_now(POST_ORDERS, &self.clock, sent);
        Some(id)
    }

    /// Pay or Cancel on the order's page, once the watcher has seen it; with two
    /// instances, on the page of the other Payments instance.
    async fn on_page(&self, id: Uuid, action: Action, two: bool) -> Result<Expect, &'static str> {
        let url = match self.watcher.page(id, self.page_wait).await {
            Ok((url, _)) => url,
            Err("timeout") => return Err("no page within --page-wait"),
            Err(_) => return Err("cancelled before its page (nobody asked)"),
        };
        let from = self
            .payments
            .iter()
            .position(|p| url.starts_with(p.as_str()));
        let url = match from.filter(|_| two) {
            Some(k) => url.replacen(&self.payments[k], &self.payments[1 - k], 1),
            None => url,
        };
        let (verb, expect) = match action {
            Action::Pay => ("complete", Expect::Fulfilled),
            _ => ("cancel", Expect::Cancelled),
        };
        let sent = Instant::now();
        match retry(self.retry_for, |_| self.apis[0].page(&url, verb)).await {
            Ok(()) => {
                self.rec.record_until_now(POST_COMPLETE, &self.clock, sent);
                Ok(expect)
            }
            Err(_) => Err("page POST: no 303 within --retry-for"),
        }
    }
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
