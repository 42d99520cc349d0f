//! The link pipelines: requests for many orders are in flight at once, answers for
//! different orders are applied together (batched) while each order's own messages
//! keep their order, and requests the link could not queue go out from the database
//! without waiting for the sweeper.

mod helpers;

use std::time::Duration;

use chrono::Utc;
use helpers::{TestApp, wait_until};
use shared_protocol::{OrderId, PaymentOutcome, ServerMessage};
use test_harness::payments::{FakePayments, ack_of, initiate_payment, select_payment_method};

fn methods(order_id: OrderId) -> ServerMessage {
    ServerMessage::PaymentMethods {
        order_id,
        methods: vec!["credit_card".into(), "paypal".into()],
    }
}

fn page(fake: &FakePayments, order_id: OrderId) -> ServerMessage {
    let payment_id = fake.payment_id(order_id);
    ServerMessage::PaymentPage {
        order_id,
        payment_id,
        url: format!("http://payments.test/pay/{payment_id}"),
        expires_at: Utc::now() + chrono::Duration::minutes(15),
    }
}

#[tokio::test]
async fn the_second_order_is_requested_before_payments_answered_the_first() {
    let fake = FakePayments::builder().manual().start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let a = app.create_order(100, "EUR").await.id();
    let b = app.create_order(200, "EUR").await.id();
    // Neither is answered yet, and both requests are out.
    conn.expect(initiate_payment(a)).await;
    conn.expect(initiate_payment(b)).await;
    // An order created while the link resumes may be requested twice (idempotent).
    conn.allow(initiate_payment(a));
    conn.allow(initiate_payment(b));

    // Answers may come in any order; each is applied as it comes.
    conn.send(methods(b)).await.unwrap();
    conn.expect(select_payment_method(b, "credit_card")).await;
    conn.send(methods(a)).await.unwrap();
    conn.expect(select_payment_method(a, "credit_card")).await;
}

#[tokio::test]
async fn each_orders_messages_apply_in_order_while_orders_interleave() {
    const ORDERS: usize = 24;
    let fake = FakePayments::builder().manual().start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let mut orders = Vec::new();
    for i in 0..ORDERS {
        orders.push(app.create_order(100 + i as i64, "EUR").await.id());
    }
    for &order in &orders {
        conn.expect(initiate_payment(order)).await;
        // An order created while the link resumes may be requested twice (idempotent).
        conn.allow(initiate_payment(order));
    }
    // For every order, back to back: methods, page, outcome. Applied out of order, a
    // page before its methods would leave the order unable to select a method, and an
    // outcome before its page would be the one final state a late page cannot undo.
    let mut events = Vec::new();
    for &order in &orders {
        conn.send(methods(order)).await.unwrap();
        conn.send(page(&fake, order)).await.unwrap();
        let outcome = fake.payment_state(order, PaymentOutcome::Fulfill, None);
        if let ServerMessage::PaymentState { event_id, .. } = &outcome {
            events.push(*event_id);
        }
        conn.send(outcome).await.unwrap();
    }
    for &order in &orders {
        conn.expect(select_payment_method(order, "credit_card"))
            .await;
    }
    for event in events {
        conn.expect(ack_of(event)).await;
    }
    for &order in &orders {
        let fulfilled = app.wait_for_status(order, "fulfilled").await;
        assert_eq!(
            fulfilled.0["payment_method"], "credit_card",
            "{}",
            fulfilled.0
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM invoices").await,
        ORDERS as i64
    );
}

#[tokio::test]
async fn requests_the_link_could_not_queue_go_out_from_the_database_at_once() {
    const ORDERS: usize = 40;
    let fake = FakePayments::start().await; // auto-replies: methods, then the page
    // A one-request outbox, and a sweeper that never runs within the test: every order
    // that reaches its page without waiting went through the queue or the catch-up walk.
    let app = TestApp::spawn_with(&fake.url(), |c| {
        c.link_outbox = 1;
        c.resend_after = Duration::from_secs(3600);
    })
    .await;
    let conn = fake.next_connection().await;
    app.wait_connected().await;

    let created = futures_util::future::join_all(
        (0..ORDERS).map(|i| app.create_order(100 + i as i64, "EUR")),
    )
    .await;
    let paged = wait_until(Duration::from_secs(20), || async {
        let n = app
            .count("SELECT count(*) FROM orders WHERE status = 'awaiting_payment'")
            .await;
        (n == ORDERS as i64).then_some(n)
    })
    .await;
    assert_eq!(
        paged,
        Some(ORDERS as i64),
        "orders stuck in pending_payment: requests dropped from the outbox waited for the sweeper"
    );
    // Re-sent requests are idempotent; the fake answered all of them.
    for order in created {
        conn.allow(initiate_payment(order.id()));
        conn.allow(select_payment_method(order.id(), "credit_card"));
    }
}

#[tokio::test]
async fn a_message_the_database_refuses_does_not_hold_back_the_others() {
    let fake = FakePayments::builder().manual().start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let orders = [
        app.create_order(100, "EUR").await.id(),
        app.create_order(200, "EUR").await.id(),
        app.create_order(300, "EUR").await.id(),
    ];
    for order in orders {
        conn.expect(initiate_payment(order)).await;
        conn.allow(initiate_payment(order));
    }
    // A method name over the 200 characters the orders table allows: the protocol
    // accepts it, the database refuses it. Sent back to back with the others, it may
    // share their batch; the batch then falls back to one message at a time.
    let poison = orders[1];
    conn.send(methods(orders[0])).await.unwrap();
    conn.send(ServerMessage::PaymentMethods {
        order_id: poison,
        methods: vec!["x".repeat(201)],
    })
    .await
    .unwrap();
    conn.send(methods(orders[2])).await.unwrap();
    conn.expect(select_payment_method(orders[0], "credit_card"))
        .await;
    conn.expect(select_payment_method(orders[2], "credit_card"))
        .await;
    // The link is still up, and the refused order is still waiting for a method.
    conn.expect_silence(Duration::from_millis(300)).await;
    assert!(conn.is_open());
    assert_eq!(app.order(poison).await.status(), "pending_payment");
}
