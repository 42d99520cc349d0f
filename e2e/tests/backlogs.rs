//! Both backlogs at once: when the link comes up, Orders has thousands of orders to
//! request and Payments thousands of outcomes to deliver, far more than the socket
//! buffers hold. If either side wrote its whole backlog before reading, both would
//! block writing; both must drain, and nothing may be lost or applied twice.

use std::time::Duration;

use e2e::Stack;
use shared_protocol::{OrderId, PaymentId};

/// Orders with an undelivered outcome in Payments, and as many pending orders.
const BACKLOG: usize = 4000;
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn thousands_of_outcomes_and_thousands_of_requests_drain_at_once() {
    let mut stack = Stack::spawn().await;
    stack.stop_orders().await;
    stack.stop_payments().await;

    // Written straight into both databases, as two services that were down would find
    // them: paid orders whose outcome Orders never got, and orders never requested.
    let paid: Vec<(OrderId, PaymentId)> = (0..BACKLOG)
        .map(|_| (OrderId::new(), PaymentId::new()))
        .collect();
    let order_ids: Vec<_> = paid.iter().map(|(o, _)| o.0).collect();
    let payment_ids: Vec<_> = paid.iter().map(|(_, p)| p.0).collect();
    let pending: Vec<_> = (0..BACKLOG).map(|_| OrderId::new().0).collect();
    let orders = stack.orders_db.pool().await;
    sqlx::query(
        "INSERT INTO orders (id, amount, currency, status, payment_method, payment_id, \
             payment_url, payment_expires_at) \
         SELECT o, 1999, 'EUR', 'awaiting_payment', 'credit_card', p, \
             'http://127.0.0.1:9/pay/' || p, now() + interval '15 minutes' \
         FROM unnest($1::uuid[], $2::uuid[]) AS u(o, p)",
    )
    .bind(&order_ids)
    .bind(&payment_ids)
    .execute(&orders)
    .await
    .expect("paid orders");
    sqlx::query(
        "INSERT INTO orders (id, amount, currency) SELECT o, 500, 'EUR' FROM unnest($1::uuid[]) AS o",
    )
    .bind(&pending)
    .execute(&orders)
    .await
    .expect("pending orders");
    let payments = stack.payments_db.pool().await;
    sqlx::query(
        "INSERT INTO payment_sessions (payment_id, order_id, amount, currency, state, method, \
             expires_at) \
         SELECT p, o, 1999, 'EUR', 'fulfilled', 'credit_card', now() + interval '15 minutes' \
         FROM unnest($1::uuid[], $2::uuid[]) AS u(o, p)",
    )
    .bind(&order_ids)
    .bind(&payment_ids)
    .execute(&payments)
    .await
    .expect("paid sessions");
    sqlx::query(
        "INSERT INTO payment_events (payment_id, order_id, state) \
         SELECT p, o, 'FULFILL' FROM unnest($1::uuid[], $2::uuid[]) AS u(o, p)",
    )
    .bind(&order_ids)
    .bind(&payment_ids)
    .execute(&payments)
    .await
    .expect("undelivered outcomes");

    stack.start_payments().await;
    stack.start_orders().await;

    let end = tokio::time::Instant::now() + DRAIN_DEADLINE;
    let progress = loop {
        let progress = (
            count(
                &orders,
                "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
            )
            .await,
            count(
                &orders,
                "SELECT count(*) FROM orders WHERE status = 'awaiting_payment'",
            )
            .await,
            count(
                &payments,
                "SELECT count(*) FROM payment_events WHERE acked_at IS NULL",
            )
            .await,
        );
        if progress == (BACKLOG as i64, BACKLOG as i64, 0) || tokio::time::Instant::now() >= end {
            break progress;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        progress,
        (BACKLOG as i64, BACKLOG as i64, 0),
        "(fulfilled, awaiting_payment, unacked events) after {DRAIN_DEADLINE:?}"
    );
    // Exactly once: one invoice per paid order, one session per requested one.
    assert_eq!(
        count(&orders, "SELECT count(*) FROM invoices").await,
        BACKLOG as i64
    );
    assert_eq!(
        count(&payments, "SELECT count(*) FROM payment_sessions").await,
        2 * BACKLOG as i64
    );
    assert_eq!(
        count(
            &orders,
            "SELECT count(*) FROM orders WHERE status = 'pending_payment'"
        )
        .await,
        0
    );
    // And on ONE connection: a side that stopped reading would have been dropped after
    // its peer timeout and drained over reconnects instead.
    let metrics = stack
        .http
        .get(stack.orders_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let connects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("orders_payments_link_connects_total "))
        .unwrap_or_else(|| panic!("no connects counter in {metrics}"));
    assert_eq!(connects.trim(), "1", "the link reconnected while draining");
    orders.close().await;
    payments.close().await;
}
