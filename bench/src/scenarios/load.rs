//! The load: jobs (a flow, a customer journey, an order and its action) started in an
//! open loop, job i due at `t0 + i/rate` whatever the earlier ones do, or in a closed
//! loop, clients each running one job after another. It runs in a task of its own
//! while the scenario does something else (restarts, faults) or just waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::stats::Recorder;

/// An open loop: job i is due at `t0 + i/rate`, `count` of them (or until stopped).
pub struct Open {
    pub rate: f64,
    pub count: Option<u64>,
    pub max_in_flight: usize,
    /// What becomes of a job due while `max_in_flight` run.
    pub when_full: Full,
}

pub enum Full {
    /// It is not started, and counted as this error.
    Skip(&'static str, Arc<Recorder>),
    /// It starts once one ends (late, when that is over 1 s after it was due).
    Wait,
}

/// What the jobs returned, and how the loop went.
pub struct Ended<T> {
    /// What every job that ran returned (one that panicked is counted instead).
    pub done: Vec<T>,
    pub panicked: usize,
    /// Jobs not started: `max_in_flight` were running ([`Full::Skip`]).
    pub skipped: u64,
    /// Jobs started over 1 s after they were due ([`Full::Wait`]).
    pub late: u64,
    /// The most jobs in flight when one was due.
    pub most_in_flight: usize,
}

/// The load, running.
pub struct Load<T> {
    pub t0: Instant,
    stop: Arc<AtomicBool>,
    /// Set once the open loop has started (or skipped) its last job.
    pub all_due: Arc<AtomicBool>,
    task: JoinHandle<Ended<T>>,
}

impl<T: Send + 'static> Load<T> {
    /// Starts an open loop of `job(i, due)`.
    pub fn open<F, Fut>(plan: Open, job: F) -> Load<T>
    where
        F: Fn(u64, Instant) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (t0, stop, all_due) = (Instant::now(), Arc::default(), Arc::default());
        let task = tokio::spawn(open_loop(
            (t0, Arc::clone(&stop), Arc::clone(&all_due)),
            plan,
            job,
        ));
        Load {
            t0,
            stop,
            all_due,
            task,
        }
    }

    /// Starts a closed loop: `clients` tasks, each running `job(i, now)` one after
    /// another until `count` jobs have started, `duration` has passed, or
    /// [`Load::stop`].
    pub fn closed<F, Fut>(
        clients: usize,
        (count, duration): (Option<u64>, Option<Duration>),
        job: F,
    ) -> Load<T>
    where
        F: Fn(u64, Instant) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (t0, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
        let (job, next) = (Arc::new(job), Arc::new(AtomicU64::new(0)));
        let mut set = JoinSet::new();
        for _ in 0..clients.max(1) {
            let (job, next, stop) = (job.clone(), next.clone(), stop.clone());
            set.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed)
                        || count.is_some_and(|n| i >= n)
                        || duration.is_some_and(|d| t0.elapsed() >= d)
                    {
                        return done;
                    }
                    done.push(job(i, Instant::now()).await);
                }
            });
        }
        let task = tokio::spawn(async move {
            let mut ended = Ended::new();
            while let Some(client) = set.join_next().await {
                match client {
                    Ok(done) => ended.done.extend(done),
                    Err(_) => ended.panicked += 1,
                }
            }
            ended
        });
        let all_due = Arc::new(AtomicBool::new(true));
        Load {
            t0,
            stop,
            all_due,
            task,
        }
    }

    /// Starts no more jobs.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for every job to end, at most `bound`.
    pub async fn join(self, bound: Option<Duration>) -> anyhow::Result<Ended<T>> {
        let joined = match bound {
            Some(bound) => tokio::time::timeout(bound, self.task).await.map_err(|_| {
                anyhow::anyhow!("the load's jobs in flight did not end within {bound:?}")
            })?,
            None => self.task.await,
        };
        Ok(joined?)
    }
}

impl<T> Ended<T> {
    fn new() -> Ended<T> {
        Ended {
            done: Vec::new(),
            panicked: 0,
            skipped: 0,
            late: 0,
            most_in_flight: 0,
        }
    }

    fn reap(&mut self, joined: Option<Result<T, tokio::task::JoinError>>) -> bool {
        match joined {
            Some(Ok(done)) => self.done.push(done),
            Some(Err(_)) => self.panicked += 1,
            None => return false,
        }
        true
    }
}

async fn open_loop<T, F, Fut>(
    (t0, stop, all_due): (Instant, Arc<AtomicBool>, Arc<AtomicBool>),
    plan: Open,
    job: F,
) -> Ended<T>
where
    T: Send + 'static,
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let mut ended = Ended::new();
    let mut set = JoinSet::new();
    for i in 0..plan.count.unwrap_or(u64::MAX) {
        let due = t0 + Duration::from_secs_f64(i as f64 / plan.rate);
        tokio::time::sleep_until(due).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while ended.reap(set.try_join_next()) {}
        let in_flight = plan.max_in_flight.max(1) - permits.available_permits();
        ended.most_in_flight = ended.most_in_flight.max(in_flight);
        let Some(permit) = permit(&permits, &plan.when_full, due, &mut ended).await else {
            continue;
        };
        let job = job(i, due);
        set.spawn(async move {
            let done = job.await;
            drop(permit);
            done
        });
    }
    all_due.store(true, Ordering::Relaxed);
    while ended.reap(set.join_next().await) {}
    ended
}

/// A place in flight for a job due at `due`, or `None` (it is skipped).
async fn permit<T>(
    permits: &Arc<Semaphore>,
    when_full: &Full,
    due: Instant,
    ended: &mut Ended<T>,
) -> Option<OwnedSemaphorePermit> {
    match when_full {
        Full::Skip(error, rec) => {
            let permit = permits.clone().try_acquire_owned().ok();
            if permit.is_none() {
                rec.error(*error);
                ended.skipped += 1;
            }
            permit
        }
        Full::Wait => {
            let permit = permits.clone().acquire_owned().await.ok();
            if Instant::now() > due + Duration::from_secs(1) {
                ended.late += 1;
            }
            permit
        }
    }
}
