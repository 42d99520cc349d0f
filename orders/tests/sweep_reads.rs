//! The sweeper reads what it sends, not every open order (issue 18). Its filter on
//! staleness used to be no condition of any index: each sweep walked every order open
//! (in the index of open orders) to find the few unanswered ones, every RESEND_AFTER,
//! and an order awaiting its customer for 15 minutes was read 30 times for nothing.
//! Measured on real PostgreSQL with the statistics of the sweep's own transaction.

use std::time::Duration;

use orders::store::{OpenOrder, Store};
use sqlx::Connection;
use test_harness::postgres::TestDatabase;

const STALE: Duration = Duration::from_secs(30);

/// Rows of `orders` read by index scans and by sequential scans in the current
/// transaction (exact: the transaction's own counters).
async fn reads(conn: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(idx_tup_fetch, 0), coalesce(seq_tup_read, 0) \
         FROM pg_stat_xact_user_tables WHERE relname = 'orders'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// A database with many open orders nobody needs to resend, and a few the sweep must.
async fn seeded() -> TestDatabase {
    let db = TestDatabase::create("orders_sweep").await;
    Store::connect(db.url()).await.unwrap();
    let pool = db.pool().await;
    for sql in [
        // 2,000 awaiting their customer, pages valid for 15 more minutes.
        "INSERT INTO orders (id, amount, currency, status, payment_url, payment_id,
             payment_expires_at, created_at, updated_at)
         SELECT gen_random_uuid(), 100, 'EUR', 'awaiting_payment', 'http://pay.example/pay/x',
             gen_random_uuid(), now() + interval '15 minutes',
             now() - interval '10 minutes', now() - interval '10 minutes'
         FROM generate_series(1, 2000)",
        // 1,000 just created, their requests on the way.
        "INSERT INTO orders (id, amount, currency) SELECT gen_random_uuid(), 100, 'EUR'
         FROM generate_series(1, 1000)",
        // 5 unanswered for an hour.
        "INSERT INTO orders (id, amount, currency, created_at, updated_at)
         SELECT gen_random_uuid(), 100, 'EUR', now() - interval '1 hour',
             now() - interval '1 hour'
         FROM generate_series(1, 5)",
        // 2 awaiting with a cancel Payments never confirmed.
        "INSERT INTO orders (id, amount, currency, status, payment_url, payment_id,
             payment_expires_at, cancel_requested_at, created_at, updated_at)
         SELECT gen_random_uuid(), 100, 'EUR', 'awaiting_payment', 'http://pay.example/pay/x',
             gen_random_uuid(), now() + interval '10 minutes', now() - interval '1 hour',
             now() - interval '2 hours', now() - interval '1 hour'
         FROM generate_series(1, 2)",
        // 3 whose page expired an hour ago: the outcome may have been lost.
        "INSERT INTO orders (id, amount, currency, status, payment_url, payment_id,
             payment_expires_at, created_at, updated_at)
         SELECT gen_random_uuid(), 100, 'EUR', 'awaiting_payment', 'http://pay.example/pay/x',
             gen_random_uuid(), now() - interval '1 hour',
             now() - interval '2 hours', now() - interval '2 hours'
         FROM generate_series(1, 3)",
        "ANALYZE orders",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    db
}

fn count(orders: &[OpenOrder], status: &str, cancel: bool) -> usize {
    orders
        .iter()
        .filter(|o| o.status.as_str() == status && o.cancel_requested == cancel)
        .count()
}

#[tokio::test]
async fn a_sweep_reads_the_orders_it_sends_and_few_others() {
    let db = seeded().await;
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let unanswered = Store::open_orders_in(&mut tx, Some(STALE), None, 256)
        .await
        .unwrap();
    let expired = Store::expired_pages_in(&mut tx, STALE, None, 256)
        .await
        .unwrap();
    let (by_index, by_scan) = reads(&mut tx).await;
    tx.rollback().await.unwrap();

    assert_eq!(unanswered.len(), 7, "{unanswered:#?}");
    assert_eq!(count(&unanswered, "pending_payment", false), 5);
    assert_eq!(count(&unanswered, "awaiting_payment", true), 2);
    assert_eq!(expired.len(), 3, "{expired:#?}");
    assert_eq!(count(&expired, "awaiting_payment", false), 3);
    // 10 orders sent; the 3,000 open ones that need nothing are not read.
    assert_eq!(by_scan, 0, "a sequential scan of orders");
    assert!(by_index <= 10 + 5, "{by_index} rows read for 10 sent");
}

#[tokio::test]
async fn a_walk_on_connect_pages_through_every_open_request_once() {
    let db = seeded().await;
    let store = Store::connect(db.url()).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.open_orders(None, after, 256).await.unwrap();
        after = page.last().map(|o| o.key);
        let full = page.len() == 256;
        seen.extend(page.into_iter().map(|o| o.key));
        if !full {
            break;
        }
    }
    // Every pending order and every unconfirmed cancel, once, oldest first.
    assert_eq!(seen.len(), 1000 + 5 + 2);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // The expired pages page by their own key too.
    let first = store.expired_pages(STALE, None, 2).await.unwrap();
    let rest = store
        .expired_pages(STALE, first.last().and_then(OpenOrder::expiry_key), 2)
        .await
        .unwrap();
    assert_eq!((first.len(), rest.len()), (2, 1));
}
