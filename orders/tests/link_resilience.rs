//! The link survives what a real network and a real Payments do to it: Payments down
//! when an order is created, restarted mid-flow, silent (no pongs), refusing the
//! handshake, and sending frames that are not the protocol.

mod helpers;

use std::time::Duration;

use helpers::TestApp;
use shared_protocol::SUBPROTOCOL;
use test_harness::payments::{FakePayments, ack_of, initiate_payment, select_payment_method};

#[tokio::test]
async fn an_order_created_while_payments_is_down_progresses_once_it_is_up() {
    let fake = FakePayments::start().await;
    let url = fake.url();
    fake.stop().await;
    let app = TestApp::spawn(&url).await;

    let order = app.create_order(1999, "EUR").await;
    assert_eq!(order.status(), "pending_payment");

    fake.restart().await;
    let conn = fake.next_connection().await;
    conn.expect(initiate_payment(order.id())).await;
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await;
    let event = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(event)).await;
    app.wait_for_status(order.id(), "fulfilled").await;
}

#[tokio::test]
async fn orders_reconnects_and_resumes_when_payments_restarts_mid_flow() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    // One order reaches its page, the other is still waiting for methods.
    let paged = app.order_awaiting_payment(&conn, 100, "EUR").await;

    fake.stop().await;
    let waiting = app.create_order(200, "EUR").await;
    fake.restart().await;

    let conn = fake.next_connection().await;
    // On connect, Orders re-sends initiate_payment for every pending order.
    conn.expect(initiate_payment(waiting.id())).await;
    conn.expect(select_payment_method(waiting.id(), "credit_card"))
        .await;
    app.wait_for_status(waiting.id(), "awaiting_payment").await;

    let first = fake.fulfill(&conn, paged.id()).await.unwrap();
    conn.expect(ack_of(first)).await;
    let second = fake.fulfill(&conn, waiting.id()).await.unwrap();
    conn.expect(ack_of(second)).await;
    app.wait_for_status(paged.id(), "fulfilled").await;
    app.wait_for_status(waiting.id(), "fulfilled").await;
    assert_eq!(app.count("SELECT count(*) FROM invoices").await, 2);
}

#[tokio::test]
async fn a_dropped_connection_is_reopened_and_pending_orders_are_resent() {
    let fake = FakePayments::builder().manual().start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;
    let order = app.create_order(100, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    // Idempotent, so it may come twice when the order races the connect-time resume.
    conn.allow(initiate_payment(order.id()));

    conn.abort().await; // TCP reset, no close frame
    let conn = fake.next_connection().await;
    conn.expect(initiate_payment(order.id())).await;
}

#[tokio::test]
async fn a_silent_payments_is_detected_and_the_link_reconnects() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;
    app.wait_connected().await;

    conn.stop_answering_pings();
    // peer_timeout is 3 s in tests: Orders gives up on the silent connection and dials again.
    let again = fake.next_connection_within(Duration::from_secs(15)).await;
    assert!(again.is_open());

    let order = app.create_order(100, "EUR").await;
    again.expect(initiate_payment(order.id())).await;
}

#[tokio::test]
async fn malformed_and_binary_frames_do_not_break_the_link() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    conn.send_text("this is not JSON").await.unwrap();
    conn.send_text("[1, 2, 3]").await.unwrap();
    conn.send_text(r#"{"type": "refund", "order_id": "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f"}"#)
        .await
        .unwrap();
    conn.send_text(r#"{"type": "payment_state", "event_id": "seven"}"#)
        .await
        .unwrap();
    conn.send_text(r#"{"type": "payment_methods", "order_id": "not-a-uuid", "methods": ["x"]}"#)
        .await
        .unwrap();
    conn.send_binary(vec![0, 159, 146, 150]).await.unwrap();

    let order = app.create_order(100, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await;
    let event = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(event)).await;
    app.wait_for_status(order.id(), "fulfilled").await;
    assert!(conn.is_open());
    assert_eq!(fake.attempts().len(), 1, "the link never reconnected");
}

#[tokio::test]
async fn the_handshake_carries_the_token_and_the_subprotocol() {
    let fake = FakePayments::start().await;
    let _app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;
    let request = conn.request();
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", helpers::TOKEN).as_str())
    );
    assert!(request.subprotocols().iter().any(|p| p == SUBPROTOCOL));
}

#[tokio::test]
async fn a_refused_handshake_is_retried_with_growing_backoff() {
    let fake = FakePayments::start().await;
    fake.reject_next_handshakes(4, 401);
    let base = Duration::from_millis(100);
    let _app = TestApp::spawn_with(&fake.url(), |c| {
        c.reconnect_base = base;
        c.reconnect_cap = Duration::from_secs(10);
    })
    .await;
    let conn = fake.next_connection_within(Duration::from_secs(15)).await;
    assert!(conn.is_open());

    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    for attempt in &attempts[..4] {
        assert_eq!(attempt.rejected_with(), Some(401), "{attempt:?}");
    }
    // After the n-th consecutive failure the delay is drawn from [0, base · 2^n]: the
    // gaps stay under a ceiling that doubles (plus generous slack for the handshake
    // itself on a loaded machine; the distribution is unit-tested in payments_link).
    let slack = Duration::from_secs(1);
    for (n, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].at() - pair[0].at();
        let ceiling = base * 2u32.pow(n as u32 + 1) + slack;
        assert!(gap <= ceiling, "gap {n} was {gap:?}, over {ceiling:?}");
    }
}

#[tokio::test]
async fn an_unanswered_initiate_is_sent_again_by_the_sweeper() {
    let fake = FakePayments::builder().manual().start().await;
    let app =
        TestApp::spawn_with(&fake.url(), |c| c.resend_after = Duration::from_millis(300)).await;
    let conn = fake.next_connection().await;
    let order = app.create_order(100, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    conn.allow(initiate_payment(order.id())); // the sweeper goes on until Payments answers
    conn.expect(initiate_payment(order.id())).await;
}
