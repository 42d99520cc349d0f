//! The real Orders against `FakePayments`: the seed article's test and the paths
//! around it (cancel, duplicates, unknown orders), driven through the HTTP API.

mod helpers;

use helpers::TestApp;
use serde_json::Value;
use shared_protocol::{CancelReason, ClientMessage, OrderId, PaymentOutcome, ServerMessage};
use std::time::Duration;
use test_harness::payments::{
    FakePayments, ack, ack_of, cancel_payment, initiate_payment, select_payment_method,
};

#[tokio::test]
async fn an_order_is_fulfilled_when_payments_says_so() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let order = app.create_order(1999, "EUR").await;
    conn.expect(initiate_payment(order.id())).await; // auto-reply: payment_methods
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await; // auto-reply: page

    let awaiting = app.wait_for_status(order.id(), "awaiting_payment").await;
    assert_eq!(awaiting.0["payment_method"], "credit_card");
    let url = awaiting.0["payment_url"].as_str().expect("payment_url");
    assert!(url.contains("/pay/"), "{url}");

    let event = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(event)).await;
    let fulfilled = app.wait_for_status(order.id(), "fulfilled").await;
    assert_eq!(fulfilled.0["cancel_reason"], Value::Null);

    let invoice = app.get(&format!("/orders/{}/invoice", order.id())).await;
    assert_eq!(invoice.status(), 200);
    let invoice: Value = invoice.json().await.unwrap();
    assert!(
        invoice["number"].as_str().unwrap().starts_with("INV-"),
        "{invoice}"
    );
    assert_eq!(invoice["order_id"], order.id().to_string());
    assert_eq!(invoice["amount"], 1999);
    assert_eq!(invoice["currency"], "EUR");
    assert!(invoice["issued_at"].is_string());
}

#[tokio::test]
async fn an_order_is_cancelled_when_payments_says_cancel() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let order = app.order_awaiting_payment(&conn, 500, "USD").await;

    let event = fake
        .cancel(&conn, order.id(), CancelReason::Customer)
        .await
        .unwrap();
    conn.expect(ack_of(event)).await;
    let cancelled = app.wait_for_status(order.id(), "cancelled").await;
    assert_eq!(cancelled.0["cancel_reason"], "customer");
    assert_eq!(
        app.get(&format!("/orders/{}/invoice", order.id()))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn cancelling_an_order_asks_payments_and_completes_when_payments_confirms() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let order = app.order_awaiting_payment(&conn, 800, "EUR").await;

    let response = app.post(&format!("/orders/{}/cancel", order.id())).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["status"], "awaiting_payment",
        "Orders waits for Payments to decide"
    );

    conn.expect(cancel_payment(order.id())).await; // auto-reply: CANCEL, orders_cancelled
    conn.expect(ack()).await;
    let cancelled = app.wait_for_status(order.id(), "cancelled").await;
    assert_eq!(cancelled.0["cancel_reason"], "orders_cancelled");

    let again = app.post(&format!("/orders/{}/cancel", order.id())).await;
    assert_eq!(again.status(), 409);
    let error: Value = again.json().await.unwrap();
    assert_eq!(error["error"]["code"], "conflict");
}

#[tokio::test]
async fn a_duplicate_fulfill_gives_one_invoice_and_both_are_acked() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let order = app.create_order(1200, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await;

    let event = fake.payment_state(order.id(), PaymentOutcome::Fulfill, None);
    let ServerMessage::PaymentState { event_id, .. } = event else {
        unreachable!()
    };
    conn.send(event.clone()).await.unwrap();
    conn.expect(ack_of(event_id)).await;
    conn.send(event).await.unwrap();
    conn.expect(ack_of(event_id)).await;

    app.wait_for_status(order.id(), "fulfilled").await;
    assert_eq!(app.count("SELECT count(*) FROM invoices").await, 1);
}

#[tokio::test]
async fn a_cancel_after_fulfilment_changes_nothing() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;
    let order = app.create_order(1200, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await;
    let event = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(event)).await;

    let contradiction = fake
        .cancel(&conn, order.id(), CancelReason::Expired)
        .await
        .unwrap();
    conn.expect(ack_of(contradiction)).await; // acked, so it is not redelivered forever
    let order = app.wait_for_status(order.id(), "fulfilled").await;
    assert_eq!(order.0["cancel_reason"], Value::Null);
}

#[tokio::test]
async fn an_event_for_an_unknown_order_is_not_acked() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    fake.fulfill(&conn, OrderId::new()).await.unwrap();
    conn.expect_silence(Duration::from_millis(500)).await;

    // The link is still fine: a real order goes through afterwards.
    let order = app.create_order(300, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await;
    let event = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(event)).await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn the_first_offered_method_is_selected() {
    let fake = FakePayments::builder().manual().start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;

    let order = app.create_order(4200, "GBP").await;
    let ClientMessage::InitiatePayment {
        amount, currency, ..
    } = conn.expect(initiate_payment(order.id())).await
    else {
        unreachable!()
    };
    // initiate_payment is idempotent and may come twice when the order races the
    // connect-time resume; only the first needs an answer.
    conn.allow(initiate_payment(order.id()));
    assert_eq!((amount.minor(), currency.as_str()), (4200, "GBP"));
    conn.send(ServerMessage::PaymentMethods {
        order_id: order.id(),
        methods: vec!["paypal".into(), "credit_card".into()],
    })
    .await
    .unwrap();
    conn.expect(select_payment_method(order.id(), "paypal"))
        .await;
    let order = app.wait_for_field(order.id(), "payment_method").await;
    assert_eq!(order.0["payment_method"], "paypal");
    assert_eq!(order.status(), "pending_payment", "no page yet");
}

/// Under actix's own test runtime too: the fake does not care which runtime drives it.
#[actix_web::test]
async fn health_follows_the_payments_link() {
    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let _conn = fake.next_connection().await;
    app.wait_connected().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["payments_link"], "connected");
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["payments_link"], "connected");
}
