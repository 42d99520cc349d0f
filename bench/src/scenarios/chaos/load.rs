//! The load: orders created at a steady rate, each paid or cancelled on its page, or
//! cancelled through the API, at random; every call retried with backoff for
//! `--retry-for`, and what loadgen must then find in the database, from the answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use uuid::Uuid;

use super::Rng;
use crate::api::{Api, Attempt};
use crate::cli::ChaosArgs;
use crate::scenarios::flow::Watcher;
use crate::scenarios::{POST_COMPLETE, POST_ORDERS};
use crate::stats::{Clock, Recorder};

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

pub(super) struct Ctx {
    pub(super) api: Api,
    pub(super) watcher: Watcher,
    pub(super) orders: [String; 2],
    pub(super) payments: [String; 2],
    pub(super) retry_for: Duration,
    pub(super) page_wait: Duration,
    pub(super) mix: [u64; 3],
    pub(super) seed: u64,
    pub(super) two: AtomicBool,
    pub(super) clock: Clock,
    pub(super) rec: Arc<Recorder>,
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

/// The load, running: order i is due at `t0` + i/rate; `all_due` once every order was.
pub(super) struct Load {
    pub(super) t0: Instant,
    pub(super) all_due: Arc<AtomicBool>,
    /// Every order's outcome, and how many orders started late.
    pub(super) task: JoinHandle<(Vec<Result<Outcome, JoinError>>, u64)>,
}

/// Starts the load: order i is due at t0 + i/rate, at most `--max-in-flight` at once.
pub(super) fn start(ctx: Arc<Ctx>, args: &ChaosArgs) -> Load {
    let n = args.orders;
    let all_due = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let task = {
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
    Load { t0, all_due, task }
}

pub(super) fn parse_mix(mix: &str) -> anyhow::Result<[u64; 3]> {
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

#[cfg(test)]
mod tests {
    use super::parse_mix;

    #[test]
    fn mix_is_three_integers() {
        assert_eq!(parse_mix("50,25,25").unwrap(), [50, 25, 25]);
        assert!(parse_mix("1,2").is_err());
        assert!(parse_mix("0,0,0").is_err());
    }
}
