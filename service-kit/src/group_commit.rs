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
//! checkout and return.
//!
//! When a batch fails, its requests are applied again one at a time on a fresh
//! connection, so one bad request fails alone and a broken connection costs one retry.
//! Everything is bounded: the queue ([`Limits::queue`]), how long a caller waits for room
//! in it ([`Limits::queue_wait`]), the batch, and the pool's acquire timeout.

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
    /// returns exactly one output per item, in the same order.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 256,
            queue: 4096,
            queue_wait: Duration::from_secs(5),
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
}

type Request<B> = (
    <B as Batch>::Item,
    oneshot::Sender<Result<<B as Batch>::Output, <B as Batch>::Error>>,
);

/// A cloneable handle on a group-commit writer task. The task ends when the last handle
/// is dropped, after answering what was queued.
pub struct GroupCommit<B: Batch> {
    name: &'static str,
    queue: mpsc::Sender<Request<B>>,
    queue_wait: Duration,
}

impl<B: Batch> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        GroupCommit {
            name: self.name,
            queue: self.queue.clone(),
            queue_wait: self.queue_wait,
        }
    }
}

impl<B: Batch> std::fmt::Debug for GroupCommit<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("name", &self.name)
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl<B: Batch> GroupCommit<B> {
    /// Spawns the writer task on the current tokio runtime. `name` appears in logs and
    /// errors.
    pub fn start(name: &'static str, pool: PgPool, batch: B, limits: Limits) -> GroupCommit<B> {
        let (queue, rx) = mpsc::channel(limits.queue.max(1));
        tokio::spawn(run(
            name,
            pool,
            Arc::new(batch),
            rx,
            limits.max_batch.max(1),
        ));
        GroupCommit {
            name,
            queue,
            queue_wait: limits.queue_wait,
        }
    }

    /// How many requests wait for the writer now (not counting the batch being applied).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues `item` and waits for its batch to be applied.
    pub async fn submit(&self, item: B::Item) -> Result<B::Output, Error<B::Error>> {
        let (tx, rx) = oneshot::channel();
        match self.queue.send_timeout((item, tx), self.queue_wait).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(Error::Busy {
                    writer: self.name,
                    waited: self.queue_wait,
                });
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(Error::Stopped(self.name)),
        }
        match rx.await {
            Ok(result) => result.map_err(Error::Apply),
            Err(_) => Err(Error::Stopped(self.name)),
        }
    }
}

async fn run<B: Batch>(
    name: &'static str,
    pool: PgPool,
    batch: Arc<B>,
    mut rx: mpsc::Receiver<Request<B>>,
    max_batch: usize,
) {
    let mut conn: Option<PoolConnection<Postgres>> = None;
    let mut requests = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut requests, max_batch).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = requests.drain(..).unzip();
        match apply(&pool, &mut conn, &*batch, &items).await {
            Ok(outputs) if outputs.len() == items.len() => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            outcome => {
                match outcome {
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
                // The connection may be what failed: the next attempt takes another.
                conn = None;
                for (item, reply) in items.iter().zip(replies) {
                    let result = apply(&pool, &mut conn, &*batch, std::slice::from_ref(item))
                        .await
                        .and_then(|mut out| match out.pop() {
                            Some(output) if out.is_empty() => Ok(output),
                            _ => Err(sqlx::Error::Protocol(format!(
                                "the {name} writer did not return one answer for one request"
                            ))
                            .into()),
                        });
                    if result.is_err() {
                        conn = None;
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }
    tracing::debug!(writer = name, "group-commit writer stopped");
}

/// Applies `items` on the held connection, taking one from the pool when there is none.
async fn apply<B: Batch>(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    batch: &B,
    items: &[B::Item],
) -> Result<Vec<B::Output>, B::Error> {
    let held = match conn {
        Some(held) => held,
        None => conn.insert(pool.acquire().await?),
    };
    batch.apply(held, items).await
}
