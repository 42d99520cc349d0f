//! Group commit for the hot HTTP writes (`POST /orders`, the payment page's Pay and
//! Cancel): many concurrent requests, one statement, one commit.
//!
//! A [`GroupCommit`] is a cloneable handle on one writer task. The task owns ONE pooled
//! connection, waits for a request, takes every request already queued up to
//! [`Limits::max_batch`] (`recv_many`), applies them together with [`Batch::apply`]
//! (one multi-row statement or one transaction: the implementor decides) and answers each
//! caller. Under load a batch fills while the previous one commits, so throughput grows
//! with the batch while latency stays about one commit; alone, a request is applied at
//! once. Holding the connection also saves the two pings sqlx's pool spends on every
//! checkout and return. A request whose caller has gone (its HTTP request was dropped)
//! is skipped.
//!
//! When a batch fails, its requests are applied again one at a time on a fresh
//! connection, so one bad request fails alone and a broken connection costs one retry;
//! [`Batch::apply`] must therefore be safe to repeat for a request whose first attempt
//! may have committed (its answer lost with the connection). Everything is bounded: the
//! queue ([`Limits::queue`]), how long a caller waits for room in it
//! ([`Limits::queue_wait`]), each attempt ([`Limits::apply_timeout`], after which the
//! connection is dropped), the one-at-a-time retries of a failed batch (one
//! `apply_timeout` in all), and how long a caller waits for its answer
//! ([`Limits::answer_wait`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};

/// A boxed `Send` future borrowing from `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a [`GroupCommit`] writes: how to apply a batch of items in one go.
pub trait Batch: Send + Sync + 'static {
    /// One request.
    type Item: Send + Sync + 'static;
    /// The answer to one request.
    type Output: Send + 'static;
    /// Why a batch failed.
    type Error: From<sqlx::Error> + std::error::Error + Send + Sync + 'static;

    /// Applies `items` atomically (one statement, or one transaction on `conn`) and
    /// returns exactly one output per item, in the same order. Applying an item again
    /// after an attempt that committed must give the same answer.
    fn apply<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Result<Vec<Self::Output>, Self::Error>>;
}

/// The bounds of a [`GroupCommit`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most requests applied together.
    pub max_batch: usize,
    /// The most requests waiting for the writer.
    pub queue: usize,
    /// How long a caller waits for room in a full queue before it gets [`Error::Busy`].
    pub queue_wait: Duration,
    /// How long one attempt at a batch may take; then its connection is dropped.
    pub apply_timeout: Duration,
    /// How long a caller waits for its answer once queued, before [`Error::Timeout`]
    /// (its request may still be applied after that).
    pub answer_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 256,
            queue: 4096,
            queue_wait: Duration::from_secs(5),
            apply_timeout: Duration::from_secs(10),
            answer_wait: Duration::from_secs(30),
        }
    }
}

/// Why a request submitted to a [`GroupCommit`] was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// Applying it failed (alone, after its batch had failed).
    #[error("the write failed")]
    Apply(#[source] E),
    /// The queue stayed full for [`Limits::queue_wait`].
    #[error("the {writer} writer's queue stayed full for {waited:?}")]
    Busy {
        writer: &'static str,
        waited: Duration,
    },
    /// The writer task is gone (the service is stopping).
    #[error("the {0} writer has stopped")]
    Stopped(&'static str),
    /// No answer in time: the request may or may not have been applied.
    #[error("the {writer} writer did not answer within {waited:?}")]
    Timeout {
        writer: &'static str,
        waited: Duration,
    },
}

type Answer<B> = Result<<B as Batch>::Output, Error<<B as Batch>::Error>>;
type Request<B> = (<B as Batch>::Item, oneshot::Sender<Answer<B>>);

/// A cloneable handle on a group-commit writer task. The task ends when the last handle
/// is dropped, after answering what was queued.
pub struct GroupCommit<B: Batch> {
    name: &'static str,
    queue: mpsc::Sender<Request<B>>,
    limits: Limits,
}

impl<B: Batch> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        GroupCommit {
            name: self.name,
            queue: self.queue.clone(),
            limits: self.limits,
        }
    }
}

impl<B: Batch> std::fmt::Debug for GroupCommit<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("name", &self.name)
            .field("queued", &self.queued())
            .finish()
    }
}

impl<B: Batch> GroupCommit<B> {
    /// Spawns the writer task on the current tokio runtime. `name` appears in logs and
    /// errors.
    pub fn start(name: &'static str, pool: PgPool, batch: B, limits: Limits) -> GroupCommit<B> {
        let (queue, rx) = mpsc::channel(limits.queue.max(1));
        tokio::spawn(run(name, pool, Arc::new(batch), rx, limits));
        GroupCommit {
            name,
            queue,
            limits,
        }
    }

    /// Whether the writer task still runs: false once it ended (it panicked, or the
    /// service is stopping), when every request would be refused. For readiness checks.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// How many requests wait for the writer now (not counting the batch being applied).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues `item` and waits for its batch to be applied.
    pub async fn submit(&self, item: B::Item) -> Result<B::Output, Error<B::Error>> {
        let (tx, rx) = oneshot::channel();
        let queue_wait = self.limits.queue_wait;
        match self.queue.send_timeout((item, tx), queue_wait).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(Error::Busy {
                    writer: self.name,
                    waited: queue_wait,
                });
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(Error::Stopped(self.name)),
        }
        match tokio::time::timeout(self.limits.answer_wait, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::Stopped(self.name)),
            Err(_) => Err(Error::Timeout {
                writer: self.name,
                waited: self.limits.answer_wait,
            }),
        }
    }
}

async fn run<B: Batch>(
    name: &'static str,
    pool: PgPool,
    batch: Arc<B>,
    mut rx: mpsc::Receiver<Request<B>>,
    limits: Limits,
) {
    let max_batch = limits.max_batch.max(1);
    let mut conn: Option<PoolConnection<Postgres>> = None;
    let mut requests = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut requests, max_batch).await > 0 {
        // A caller that gave up (its HTTP request was dropped) asked for nothing.
        requests.retain(|(_, reply)| !reply.is_closed());
        if requests.is_empty() {
            continue;
        }
        let (items, replies): (Vec<_>, Vec<_>) = requests.drain(..).unzip();
        match attempt(&pool, &mut conn, &*batch, &items, limits.apply_timeout).await {
            Ok(outputs) if outputs.len() == items.len() => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
                continue;
            }
            Ok(outputs) => tracing::error!(
                writer = name,
                items = items.len(),
                outputs = outputs.len(),
                "a batch returned the wrong number of answers; applying one at a time"
            ),
            Err(e) => tracing::warn!(
                writer = name,
                items = items.len(),
                error = %crate::error_chain(&e),
                "a batch failed; applying its requests one at a time"
            ),
        }
        // The connection may be what failed: the next attempt takes another. The
        // retries share one `apply_timeout`; those left when it runs out time out.
        conn = None;
        let deadline = tokio::time::Instant::now() + limits.apply_timeout;
        for (item, reply) in items.iter().zip(replies) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = if left.is_zero() {
                Err(Error::Timeout {
                    writer: name,
                    waited: limits.apply_timeout,
                })
            } else {
                alone(&pool, &mut conn, &*batch, item, left, name).await
            };
            if result.is_err() {
                conn = None;
            }
            let _ = reply.send(result);
        }
    }
    tracing::debug!(writer = name, "group-commit writer stopped");
}

/// Applies one item on its own.
async fn alone<B: Batch>(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    batch: &B,
    item: &B::Item,
    timeout: Duration,
    name: &'static str,
) -> Answer<B> {
    let mut outputs = attempt(pool, conn, batch, std::slice::from_ref(item), timeout)
        .await
        .map_err(Error::Apply)?;
    match (outputs.pop(), outputs.is_empty()) {
        (Some(output), true) => Ok(output),
        _ => Err(Error::Apply(
            sqlx::Error::Protocol(format!(
                "the {name} writer did not return one answer for one request"
            ))
            .into(),
        )),
    }
}

/// One attempt at `items` on the held connection (taking one from the pool when there
/// is none), within `timeout`; a timed-out attempt drops the connection.
async fn attempt<B: Batch>(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    batch: &B,
    items: &[B::Item],
    timeout: Duration,
) -> Result<Vec<B::Output>, B::Error> {
    let work = async {
        let held = match conn {
            Some(held) => held,
            None => conn.insert(pool.acquire().await?),
        };
        batch.apply(held, items).await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => {
            // The statement may still run in PostgreSQL: the connection is not used
            // again (sqlx checks it when it goes back to the pool).
            *conn = None;
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from the database within {timeout:?}"),
            ))
            .into())
        }
    }
}
