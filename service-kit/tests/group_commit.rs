//! The group-commit writer against a real database: requests that wait are applied
//! together, and a batch that fails is retried one request at a time so only the bad
//! request fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use service_kit::group_commit::{Batch, BoxFuture, Error, GroupCommit, Limits};
use sqlx::PgConnection;
use test_harness::postgres::TestDatabase;
use tokio::sync::Semaphore;

/// Inserts values into `t` (which refuses negatives) with one statement per batch, and
/// records each batch's size. A batch waits for a permit of `gate` first, so a test can
/// hold the writer while requests queue up behind it.
struct Values {
    sizes: Arc<Mutex<Vec<usize>>>,
    gate: Arc<Semaphore>,
}

impl Batch for Values {
    type Item = i64;
    type Output = i64;
    type Error = sqlx::Error;

    fn apply<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        items: &'c [i64],
    ) -> BoxFuture<'c, Result<Vec<i64>, sqlx::Error>> {
        Box::pin(async move {
            self.sizes.lock().unwrap().push(items.len());
            drop(self.gate.acquire().await);
            let mut out: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO t (v) SELECT * FROM unnest($1::bigint[]) RETURNING v",
            )
            .bind(items)
            .fetch_all(&mut *conn)
            .await?;
            // One answer per item, in order: RETURNING order is not promised.
            out.sort_unstable_by_key(|v| items.iter().position(|i| i == v));
            Ok(out)
        })
    }
}

async fn setup() -> (TestDatabase, sqlx::PgPool) {
    let db = TestDatabase::create("service_kit").await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE t (v bigint PRIMARY KEY CHECK (v >= 0))")
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

fn writer(
    pool: &sqlx::PgPool,
    gate: &Arc<Semaphore>,
    max_batch: usize,
) -> (GroupCommit<Values>, Arc<Mutex<Vec<usize>>>) {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let values = Values {
        sizes: sizes.clone(),
        gate: gate.clone(),
    };
    let limits = Limits {
        max_batch,
        ..Limits::default()
    };
    (
        GroupCommit::start("test", pool.clone(), values, limits),
        sizes,
    )
}

/// Submits each value from its own task.
fn submit_all(
    writer: &GroupCommit<Values>,
    values: impl IntoIterator<Item = i64>,
) -> Vec<tokio::task::JoinHandle<Result<i64, Error<sqlx::Error>>>> {
    values
        .into_iter()
        .map(|v| {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(v).await })
        })
        .collect()
}

/// Waits, with a deadline, until `check` holds.
async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn requests_that_wait_are_applied_in_one_batch() {
    let (_db, pool) = setup().await;
    let gate = Arc::new(Semaphore::new(0));
    let (writer, sizes) = writer(&pool, &gate, 30);
    // The first request holds the writer; 50 more queue behind it.
    let first = submit_all(&writer, [0]);
    wait_for("the writer holds the first", || {
        sizes.lock().unwrap().len() == 1
    })
    .await;
    let rest = submit_all(&writer, 1..=50);
    wait_for("50 requests queued", || writer.queued() == 50).await;
    gate.add_permits(1_000);
    for (i, task) in first.into_iter().chain(rest).enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), i as i64);
    }
    // 1, then the 50 that waited, in batches of at most 30.
    assert_eq!(*sizes.lock().unwrap(), vec![1, 30, 20]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 51);
}

#[tokio::test]
async fn a_failing_batch_fails_only_its_bad_request() {
    let (_db, pool) = setup().await;
    let gate = Arc::new(Semaphore::new(0));
    let (writer, sizes) = writer(&pool, &gate, 256);
    let first = submit_all(&writer, [100]);
    wait_for("the writer holds the first", || {
        sizes.lock().unwrap().len() == 1
    })
    .await;
    let batch = submit_all(&writer, [1, 2, -3, 4]);
    wait_for("4 requests queued", || writer.queued() == 4).await;
    gate.add_permits(1_000);
    assert_eq!(
        first.into_iter().next().unwrap().await.unwrap().unwrap(),
        100
    );
    let mut results = Vec::new();
    for task in batch {
        results.push(task.await.unwrap());
    }
    assert_eq!(results[0].as_ref().unwrap(), &1);
    assert_eq!(results[1].as_ref().unwrap(), &2);
    assert!(
        matches!(&results[2], Err(Error::Apply(sqlx::Error::Database(e))) if e.is_check_violation()),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap(), &4);
    // The batch of four failed as a whole, then each went alone.
    assert_eq!(*sizes.lock().unwrap(), vec![1, 4, 1, 1, 1, 1]);
    let values: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY v")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(values, vec![1, 2, 4, 100]);
}

#[tokio::test]
async fn a_closed_pool_fails_the_request_without_hanging() {
    let (_db, pool) = setup().await;
    pool.close().await;
    let gate = Arc::new(Semaphore::new(1_000));
    let (writer, _) = writer(&pool, &gate, 256);
    let result = tokio::time::timeout(Duration::from_secs(10), writer.submit(1))
        .await
        .expect("the writer answered");
    assert!(
        matches!(result, Err(Error::Apply(sqlx::Error::PoolClosed))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_batch_that_hangs_is_abandoned_after_the_apply_timeout() {
    let (_db, pool) = setup().await;
    // The gate never opens: every attempt hangs.
    let gate = Arc::new(Semaphore::new(0));
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let values = Values {
        sizes: sizes.clone(),
        gate,
    };
    let limits = Limits {
        apply_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let writer = GroupCommit::start("test", pool, values, limits);
    let result = tokio::time::timeout(Duration::from_secs(10), writer.submit(1))
        .await
        .expect("the writer answered");
    // The batch timed out, and so did the retry of its one request.
    assert!(
        matches!(
            &result,
            Err(Error::Apply(sqlx::Error::Io(e))) if e.kind() == std::io::ErrorKind::TimedOut
        ),
        "{result:?}"
    );
    assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
}

/// A batch that panics: the writer task dies with it.
struct Panics;

impl Batch for Panics {
    type Item = i64;
    type Output = i64;
    type Error = sqlx::Error;

    fn apply<'c>(
        &'c self,
        _conn: &'c mut PgConnection,
        _items: &'c [i64],
    ) -> BoxFuture<'c, Result<Vec<i64>, sqlx::Error>> {
        Box::pin(async { panic!("a bug in a batch") })
    }
}

#[tokio::test]
async fn a_writer_that_died_says_so_and_refuses_requests() {
    let (_db, pool) = setup().await;
    let limits = Limits {
        max_batch: 8,
        queue: 8,
        queue_wait: Duration::from_secs(1),
        apply_timeout: Duration::from_secs(5),
        answer_wait: Duration::from_secs(5),
    };
    let writer = GroupCommit::start("panicking", pool, Panics, limits);
    assert!(writer.is_running());
    let answer = writer.submit(1).await;
    assert!(
        matches!(answer, Err(Error::Stopped("panicking"))),
        "{answer:?}"
    );
    assert!(!writer.is_running(), "a dead writer still says it runs");
    let again = writer.submit(2).await;
    assert!(
        matches!(again, Err(Error::Stopped("panicking"))),
        "{again:?}"
    );
}
