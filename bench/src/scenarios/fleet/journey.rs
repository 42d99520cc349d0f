//! The customer journeys of `fleet` and `drive`: every call through the load balancer
//! and made ONCE (no retry by loadgen: what HAProxy does not hide, the client sees and
//! the run counts).
//!
//! A journey: `POST /orders` with an `Idempotency-Key` → `GET /orders/{id}` every
//! `--poll-order` until it has its payment page → the page's Pay (`POST …/complete`,
//! 303) → `GET /orders/{id}` until `fulfilled` → `GET /orders/{id}/invoice` (200). Every
//! call's latency goes to one stage, [`CALLS`], stamped with when it ended, so the p99
//! of a window (before the restarts, during them) can be read off afterwards.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::api::{Api, Attempt, OrderView};
use crate::report::Report;
use crate::scenarios::load::{Ended, Full, Load, Open};
use crate::stats::{Clock, Recorder};

/// The stage every call through the load balancer is recorded in.
pub const CALLS: &str = "HTTP call through the load balancer";
pub const CALLS_HOW: &str = "each call made once, through HAProxy: sent → answer (or error)";

/// What a journey needs.
pub struct Journeys {
    /// The API through the load balancer.
    pub api: Api,
    /// How long an order may take to get its page, and then to be fulfilled.
    pub wait: Duration,
    /// Period of `GET /orders/{id}` while waiting.
    pub poll: Duration,
    pub clock: Clock,
    pub rec: Arc<Recorder>,
    /// Prefix of the `Idempotency-Key`s, unique per run.
    pub key_prefix: String,
}

/// How a journey ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journey {
    /// Fulfilled, with its invoice.
    Done,
    /// A call failed (counted as an error by kind), or a wait ran out.
    Failed(&'static str),
}

impl Journeys {
    /// Journey i starts at `t0 + i/rate`, `count` of them (or until stopped), at most
    /// `max_in_flight` at once: one due beyond that is not started, and is an error.
    pub fn open(
        self: Arc<Self>,
        rate: f64,
        count: Option<u64>,
        max_in_flight: usize,
    ) -> Load<Journey> {
        let skip = Full::Skip("generator: too many journeys in flight", self.rec.clone());
        let plan = Open {
            rate,
            count,
            max_in_flight,
            when_full: skip,
        };
        Load::open(plan, move |i, _| self.clone().one(i))
    }

    /// `clients` running one journey after another for `duration`.
    pub fn closed(self: Arc<Self>, clients: usize, duration: Duration) -> Load<Journey> {
        Load::closed(clients, (None, Some(duration)), move |i, _| {
            self.clone().one(i)
        })
    }

    /// Times one call into [`CALLS`].
    async fn timed<T>(&self, call: impl Future<Output = Attempt<T>>) -> Attempt<T> {
        let sent = Instant::now();
        let answer = call.await;
        self.rec.record_until_now(CALLS, &self.clock, sent);
        answer
    }

    /// `GET /orders/{id}` every `poll` until `want` holds, `wait` at most.
    async fn until(
        &self,
        id: Uuid,
        want: impl Fn(&OrderView) -> bool,
    ) -> Result<OrderView, &'static str> {
        let deadline = Instant::now() + self.wait;
        loop {
            match self.timed(self.api.order(id)).await {
                Attempt::Done(view) if want(&view) => return Ok(view),
                Attempt::Done(view) if view.status == "cancelled" => {
                    self.rec.error("order cancelled (nobody asked)");
                    return Err("cancelled");
                }
                Attempt::Done(_) => {}
                Attempt::Retry | Attempt::Refused(_) => return Err("GET /orders/{id} failed"),
            }
            if Instant::now() + self.poll > deadline {
                self.rec.error("order: wait ran out");
                return Err("wait ran out");
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One order, from `POST /orders` to its invoice.
    async fn one(self: Arc<Self>, i: u64) -> Journey {
        let key = format!("{}-{i}", self.key_prefix);
        let Attempt::Done(id) = self.timed(self.api.create(Some(&key))).await else {
            return Journey::Failed("POST /orders failed");
        };
        let page = match self.until(id, |o| o.payment_url.is_some()).await {
            Ok(view) => view.payment_url.unwrap_or_default(),
            Err(why) => return Journey::Failed(why),
        };
        if self.timed(self.api.page(&page, "complete")).await != Attempt::Done(()) {
            return Journey::Failed("page Pay failed");
        }
        if let Err(why) = self.until(id, |o| o.status == "fulfilled").await {
            return Journey::Failed(why);
        }
        match self.timed(self.api.invoice(id)).await {
            Attempt::Done(()) => Journey::Done,
            _ => Journey::Failed("GET invoice failed"),
        }
    }
}

/// How many journeys there were (started or not), and how many were fulfilled.
pub fn tally(ended: &Ended<Journey>) -> (usize, usize) {
    let done = ended.done.iter().filter(|j| **j == Journey::Done).count();
    let all = ended.done.len() + ended.panicked + ended.skipped as usize;
    (all, done)
}

/// What clients saw: no error, and every journey (`expected` of them, when known)
/// fulfilled with its invoice.
pub fn client_checks(
    report: &mut Report,
    rec: &Recorder,
    (all, done): (usize, usize),
    expected: Option<u64>,
) {
    let errors = rec.errors();
    report.check(
        "no error seen by a client",
        errors.is_empty(),
        format!("{errors:?}"),
    );
    let ok = done == all && expected.map_or(done > 0, |n| done as u64 == n);
    let of = expected.map_or(all as u64, |n| n);
    report.check(
        "every journey fulfilled, with its invoice",
        ok,
        format!("{done} of {of}"),
    );
}
