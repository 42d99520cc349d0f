//! Steps the scenarios share: the stages they name alike, creating and paying many
//! orders (at most `--http-concurrency` at once), waiting on a database condition with a
//! deadline, and Payments coming back while work waits for it (`resume`, `backlog`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::{Api, Attempt};
use crate::observe::Observer;
use crate::stack::Stack;
use crate::stats::{Clock, Recorder, micros_between};

pub const POST_ORDERS: &str = "POST /orders";
pub const POST_COMPLETE: &str = "POST complete";
pub const CREATE_TO_INITIATE: &str = "create → initiate stored";
pub const CREATE_TO_PAGE: &str = "create → page";
pub const COMPLETE_TO_DISPATCHED: &str = "complete → dispatched";
pub const COMPLETE_TO_FULFILLED: &str = "complete → fulfilled";
pub const FULFILLED_TO_ACKED: &str = "fulfilled → acked";

/// What creating many orders gave.
pub struct Created {
    pub ids: Vec<Uuid>,
    pub first_sent: Instant,
    pub last_answer: Instant,
}

/// `POST /orders` n times, at most `concurrency` at once.
pub async fn create_many(
    api: &Api,
    n: u64,
    concurrency: usize,
    rec: &Recorder,
    clock: &Clock,
) -> Created {
    let first_sent = Instant::now();
    let ids: Vec<Option<Uuid>> = futures_util::stream::iter(0..n)
        .map(|_| async {
            let sent = Instant::now();
            let id = api.create(None).await.ok();
            if id.is_some() {
                rec.record_until_now(POST_ORDERS, clock, sent);
            }
            id
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    Created {
        ids: ids.into_iter().flatten().collect(),
        first_sent,
        last_answer: Instant::now(),
    }
}

/// Pays every page, at most `concurrency` at once; returns how many answered 303.
pub async fn complete_many(
    api: &Api,
    urls: &[String],
    concurrency: usize,
    rec: &Recorder,
    clock: &Clock,
) -> usize {
    let ok: Vec<bool> = futures_util::stream::iter(urls.iter().cloned())
        .map(|url: String| async move {
            let sent = Instant::now();
            let ok = api.page(&url, "complete").await == Attempt::Done(());
            if ok {
                rec.record_until_now(POST_COMPLETE, clock, sent);
            }
            ok
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    ok.into_iter().filter(|ok| *ok).count()
}

/// A poll period with a deadline: `while poll.next().await { … }` waits one period
/// per round and ends once the deadline has passed.
pub struct Poll {
    deadline: Instant,
    tick: tokio::time::Interval,
}

impl Poll {
    pub fn new(deadline: Duration, period: Duration) -> Poll {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Poll {
            deadline: Instant::now() + deadline,
            tick,
        }
    }

    /// Waits one period; `false` once the deadline has passed.
    pub async fn next(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        self.tick.tick().await;
        true
    }
}

/// Waits until no order is in `status` (`true`), or the deadline (`false`).
pub async fn until_none_in(
    obs: &Observer,
    status: &str,
    deadline: Duration,
    period: Duration,
) -> anyhow::Result<bool> {
    let mut poll = Poll::new(deadline, period);
    while poll.next().await {
        if obs.count_status(status).await? == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Payments started again while work waited for it ([`payments_back`]).
pub struct Back {
    /// When loadgen spawned Payments, as the database's clock has it.
    pub start: DateTime<Utc>,
    /// Spawn → its `/readyz` answered 200.
    pub ready: Duration,
    /// The first `ws_connections.opened_at` after it started.
    pub link_opened: Option<DateTime<Utc>>,
    /// Whether every count reached its target by the deadline.
    pub done: bool,
    /// The counts at the last look.
    pub counts: Vec<i64>,
}

/// Starts Payments, then polls every `period` until the orders in each status number
/// its target (`until`), or `deadline`. The link's first connection is read during
/// the wait, not after: its row stays while it is open, and a later one (after
/// Payments dropped a silent peer) is not the first.
pub async fn payments_back(
    stack: &mut Stack,
    obs: &Observer,
    clock: &Clock,
    (deadline, period): (Duration, Duration),
    until: &[(&str, i64)],
) -> anyhow::Result<Back> {
    let spawned = Instant::now();
    stack.start_payments().await?;
    let mut back = Back {
        start: clock.wall(spawned),
        ready: spawned.elapsed(),
        link_opened: None,
        done: false,
        counts: Vec::new(),
    };
    let mut poll = Poll::new(deadline, period);
    while !back.done && poll.next().await {
        if back.link_opened.is_none() {
            back.link_opened = obs.link_opened_at().await?;
        }
        back.counts.clear();
        for (status, _) in until {
            back.counts.push(obs.count_status(status).await?);
        }
        back.done = until
            .iter()
            .zip(&back.counts)
            .all(|((_, n), count)| count == n);
    }
    Ok(back)
}

/// Seconds from `from` to `to`.
pub fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    micros_between(from, to) as f64 / 1e6
}

/// The latest of some database times.
pub fn latest<'a>(times: impl IntoIterator<Item = &'a DateTime<Utc>>) -> Option<DateTime<Utc>> {
    times.into_iter().copied().max()
}
