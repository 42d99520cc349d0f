//! The load of `fleet` and `drive`: open loop, one customer journey per order, every
//! call through the load balancer and made ONCE (no retry by loadgen: what HAProxy
//! does not hide, the client sees and the run counts).
//!
//! A journey: `POST /orders` with an `Idempotency-Key` → `GET /orders/{id}` every
//! `--poll` until it has its payment page → the page's Pay (`POST …/complete`, 303) →
//! `GET /orders/{id}` until `fulfilled` → `GET /orders/{id}/invoice` (200). Every call's
//! latency goes to one stage, [`CALLS`], stamped with when it ended, so the p99 of a
//! window (before the restarts, during them) can be read off afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::{Api, Attempt, OrderView};
use crate::stats::{Clock, Recorder};

/// The stage every call through the load balancer is recorded in.
pub const CALLS: &str = "HTTP call through the load balancer";

/// What a journey needs.
pub struct Journeys {
    pub api: Api,
    /// The load balancer's Orders API (`http://host:port`).
    pub orders: String,
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
    /// Times one call into [`CALLS`].
    async fn timed<T>(&self, call: impl std::future::Future<Output = Attempt<T>>) -> Attempt<T> {
        let sent = Instant::now();
        let answer = call.await;
        let done = Instant::now();
        self.rec.record(
            CALLS,
            self.clock.secs(done),
            (done - sent).as_micros() as u64,
        );
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
            match self.timed(self.api.order(&self.orders, id)).await {
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
    pub async fn one(&self, i: u64) -> Journey {
        let key = format!("{}-{i}", self.key_prefix);
        let id = match self.timed(self.api.create_keyed(&self.orders, &key)).await {
            Attempt::Done(id) => id,
            _ => return Journey::Failed("POST /orders failed"),
        };
        let page = match self.until(id, |o| o.payment_url.is_some()).await {
            Ok(view) => view.payment_url.unwrap_or_default(),
            Err(why) => return Journey::Failed(why),
        };
        if !matches!(
            self.timed(self.api.page_action(&page, "complete")).await,
            Attempt::Done(())
        ) {
            return Journey::Failed("page Pay failed");
        }
        if let Err(why) = self.until(id, |o| o.status == "fulfilled").await {
            return Journey::Failed(why);
        }
        // `Api::invoice` reads from the API's own base, which is `self.orders`.
        let invoice = async {
            match self.api.invoice(id).await {
                true => Attempt::Done(()),
                false => Attempt::Retry,
            }
        };
        match self.timed(invoice).await {
            Attempt::Done(()) => Journey::Done,
            _ => Journey::Failed("GET invoice failed"),
        }
    }
}

/// The load, running: journey i starts at `t0` + i/rate until [`Load::stop`] (or
/// `limit` journeys), at most `max_in_flight` at once; one due beyond that is not
/// started and counted as an error.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub started: Arc<AtomicU64>,
    task: JoinHandle<Vec<Journey>>,
}

impl Load {
    pub fn start(
        journeys: Arc<Journeys>,
        rate: f64,
        limit: Option<u64>,
        max_in_flight: usize,
    ) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(generate(
            journeys,
            (t0, rate, limit),
            Arc::new(Semaphore::new(max_in_flight.max(1))),
            stop.clone(),
            started.clone(),
        ));
        Load {
            stop,
            started,
            task,
        }
    }

    /// Closed loop: `clients` tasks, each running one journey after another until
    /// [`Load::stop`].
    pub fn closed(journeys: Arc<Journeys>, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, started) = (stop.clone(), started.clone());
            tokio::spawn(async move {
                let mut set = JoinSet::new();
                for c in 0..clients as u64 {
                    let (journeys, stop, started) =
                        (journeys.clone(), stop.clone(), started.clone());
                    set.spawn(async move {
                        let mut ended = Vec::new();
                        for n in 0.. {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            started.fetch_add(1, Ordering::Relaxed);
                            ended.push(journeys.one(n * clients as u64 + c).await);
                        }
                        ended
                    });
                }
                let mut all = Vec::new();
                while let Some(done) = set.join_next().await {
                    all.extend(done.unwrap_or_else(|_| vec![Journey::Failed("client panicked")]));
                }
                all
            })
        };
        Load {
            stop,
            started,
            task,
        }
    }

    /// Starts no more journeys.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the load and waits at most `bound` for the journeys in flight.
    pub async fn finish(self, bound: Duration) -> anyhow::Result<Vec<Journey>> {
        self.stop();
        self.join(bound).await
    }

    /// Waits at most `bound` for every journey (`limit` of them) to end.
    pub async fn join(self, bound: Duration) -> anyhow::Result<Vec<Journey>> {
        match tokio::time::timeout(bound, self.task).await {
            Ok(joined) => Ok(joined?),
            Err(_) => anyhow::bail!("the journeys in flight did not end within {bound:?}"),
        }
    }
}

async fn generate(
    journeys: Arc<Journeys>,
    (t0, rate, limit): (Instant, f64, Option<u64>),
    in_flight: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
) -> Vec<Journey> {
    let mut set = JoinSet::new();
    let mut ended = Vec::new();
    for i in 0..limit.unwrap_or(u64::MAX) {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            journeys.rec.error("generator: too many journeys in flight");
            ended.push(Journey::Failed("not started: too many in flight"));
            continue;
        };
        started.fetch_add(1, Ordering::Relaxed);
        let journeys = journeys.clone();
        set.spawn(async move {
            let ended = journeys.one(i).await;
            drop(permit);
            ended
        });
        while let Some(done) = set.try_join_next() {
            ended.push(done.unwrap_or(Journey::Failed("journey panicked")));
        }
    }
    while let Some(done) = set.join_next().await {
        ended.push(done.unwrap_or(Journey::Failed("journey panicked")));
    }
    ended
}
