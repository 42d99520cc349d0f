//! Invoice numbers without gaps or duplicates (issue 18), on real PostgreSQL: a batch
//! that does not commit, a crash in the middle of one, two instances applying batches
//! at once, and an instance of the previous release inserting through the column's
//! default all leave the numbers 1, 2, 3, … in commit order. And one message whose
//! values the table cannot hold no longer fails the batch (and its invoices) it is in.

use std::collections::BTreeSet;

use orders::domain::NewOrder;
use orders::metrics::Metrics;
use orders::store::{Applied, Inserted, Store};
use shared_protocol::{
    Amount, ClientMessage, Currency, EventId, OrderId, PaymentId, PaymentOutcome, ServerMessage,
};
use sqlx::Connection;
use test_harness::postgres::TestDatabase;

async fn new_order(store: &Store) -> OrderId {
    let new = NewOrder {
        amount: Amount::new(1999).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        description: None,
    };
    let Inserted::Created(order) = store.insert_order(&new, None).await.unwrap() else {
        panic!("a new order");
    };
    order.id
}

async fn new_orders(store: &Store, n: usize) -> Vec<OrderId> {
    let mut orders = Vec::with_capacity(n);
    for _ in 0..n {
        orders.push(new_order(store).await);
    }
    orders
}

fn fulfilled(
    orders: &[OrderId],
) -> Vec<(
    OrderId,
    PaymentId,
    PaymentOutcome,
    Option<shared_protocol::CancelReason>,
)> {
    orders
        .iter()
        .map(|id| (*id, PaymentId::new(), PaymentOutcome::Fulfill, None))
        .collect()
}

/// Fulfils `orders` in one committed batch; their invoice numbers, in order.
async fn fulfil(store: &Store, orders: &[OrderId]) -> Vec<i64> {
    let mut tx = store.begin().await.unwrap();
    let applied = Store::apply_outcomes(&mut tx, &fulfilled(orders))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    applied
        .into_iter()
        .map(|a| match a {
            Applied::Transitioned {
                invoice: Some(number),
                ..
            } => number.trim_start_matches("INV-").parse().unwrap(),
            other => panic!("not invoiced: {other:?}"),
        })
        .collect()
}

async fn all_numbers(db: &TestDatabase) -> Vec<i64> {
    sqlx::query_scalar("SELECT number FROM invoices ORDER BY number")
        .fetch_all(&db.pool().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_that_does_not_commit_gives_its_numbers_back() {
    let db = TestDatabase::create("orders_invoices").await;
    let store = Store::connect(db.url()).await.unwrap();
    let orders = new_orders(&store, 3).await;
    let mut tx = store.begin().await.unwrap();
    Store::apply_outcomes(&mut tx, &fulfilled(&orders))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(fulfil(&store, &orders).await, [1, 2, 3]);
    let more = new_orders(&store, 2).await;
    assert_eq!(fulfil(&store, &more).await, [4, 5]);
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_batch_leaves_no_gap() {
    let db = TestDatabase::create("orders_invoices").await;
    let store = Store::connect(db.url()).await.unwrap();
    let orders = new_orders(&store, 4).await;
    assert_eq!(fulfil(&store, &orders[..1]).await, [1]);
    // The batch's connection dies after it took its numbers, before its commit.
    let mut doomed = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut doomed)
        .await
        .unwrap();
    let mut tx = doomed.begin().await.unwrap();
    Store::apply_outcomes(&mut tx, &fulfilled(&orders[1..3]))
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .unwrap();
    assert!(tx.commit().await.is_err(), "the crashed batch committed");
    assert_eq!(fulfil(&store, &orders[1..]).await, [2, 3, 4]);
    assert_eq!(all_numbers(&db).await, [1, 2, 3, 4]);
}

/// Two instances (two stores, two pools) apply batches at once, and a third session
/// inserts invoices as the previous release did (through the column's default, one at a
/// time): every number from 1 to the count, once, each batch's numbers in one run, and
/// numbers in commit order: a reader never sees a number before a smaller one.
#[tokio::test]
async fn two_instances_and_the_previous_release_number_without_gap_or_duplicate() {
    let db = TestDatabase::create("orders_invoices").await;
    let a = Store::connect(db.url()).await.unwrap();
    let b = Store::connect(db.url()).await.unwrap();
    let orders_a = new_orders(&a, 100).await;
    let orders_b = new_orders(&b, 100).await;
    let old = new_orders(&a, 30).await;
    let run = |store: Store, orders: Vec<OrderId>| {
        tokio::spawn(async move {
            let mut numbers = Vec::new();
            for batch in orders.chunks(7) {
                let taken = fulfil(&store, batch).await;
                // One batch, one run of consecutive numbers.
                assert!(taken.windows(2).all(|w| w[1] == w[0] + 1), "{taken:?}");
                numbers.extend(taken);
            }
            numbers
        })
    };
    let pool = db.pool().await;
    let previous_release = tokio::spawn(async move {
        for id in old {
            sqlx::query(
                "WITH moved AS (UPDATE orders SET status = 'fulfilled' WHERE id = $1 \
                 RETURNING id, amount, currency) \
                 INSERT INTO invoices (order_id, amount, currency) SELECT * FROM moved",
            )
            .bind(id.0)
            .execute(&pool)
            .await
            .unwrap();
        }
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn({
        let pool = db.pool().await;
        let done = done.clone();
        async move {
            let mut looks = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let (count, max): (i64, i64) =
                    sqlx::query_as("SELECT count(*), coalesce(max(number), 0) FROM invoices")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(
                    count, max,
                    "invoice {max} committed before a smaller number"
                );
                looks += 1;
            }
            looks
        }
    });
    let (from_a, from_b) = tokio::join!(run(a, orders_a), run(b, orders_b));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    previous_release.await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    assert!(watcher.await.unwrap() > 0);
    let numbers = all_numbers(&db).await;
    assert_eq!(numbers, (1..=230).collect::<Vec<i64>>());
    let taken: BTreeSet<i64> = from_a.iter().chain(&from_b).copied().collect();
    assert_eq!(taken.len(), 200, "a number was handed out twice");
}

/// One `payment_methods` whose first method the table cannot hold (over 200
/// characters) used to fail its whole batch, a FULFILL in it included, and burn the
/// batch's invoice numbers; it is now a refusal of its own order, and the rest applies.
#[tokio::test]
async fn a_value_the_table_cannot_hold_fails_only_its_own_message() {
    let db = TestDatabase::create("orders_invoices").await;
    let store = Store::connect(db.url()).await.unwrap();
    let metrics = Metrics::new();
    let offered = new_order(&store).await;
    let paged = new_order(&store).await;
    let paid = new_order(&store).await;
    let messages = vec![
        ServerMessage::PaymentMethods {
            order_id: offered,
            methods: vec!["m".repeat(201), "paypal".into()],
        },
        ServerMessage::PaymentPage {
            order_id: paged,
            payment_id: PaymentId::new(),
            url: "javascript:alert(1)".into(),
            expires_at: chrono::Utc::now(),
        },
        ServerMessage::PaymentState {
            event_id: EventId(7),
            order_id: paid,
            payment_id: PaymentId::new(),
            state: PaymentOutcome::Fulfill,
            reason: None,
        },
    ];
    let replies = orders::flow::handle_batch(&store, &metrics, messages)
        .await
        .expect("the batch failed");
    assert_eq!(
        replies,
        [
            None,
            None,
            Some(ClientMessage::Ack {
                event_id: EventId(7)
            })
        ]
    );
    assert_eq!(all_numbers(&db).await, [1]);
    for (order, what) in [(offered, "payment_methods"), (paged, "payment_page")] {
        let row = store.order(order).await.unwrap().unwrap();
        assert_eq!(row.status.as_str(), "pending_payment");
        assert_eq!(row.payment_url, None);
        let attention = row.attention.expect("the refusal is on the order");
        assert_eq!(attention.payment_attempts, 1);
        let error = attention.last_payment_error.unwrap_or_default();
        assert!(
            error.starts_with(&format!("could not store {what}: ")),
            "{error}"
        );
    }
}
