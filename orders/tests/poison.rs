//! Issue 9: poison and contradictions never loop forever and never hide. Against
//! `FakePayments`: an order Payments keeps refusing (or whose answer cannot be stored)
//! is parked after `MAX_PAYMENT_ATTEMPTS` and no longer re-sent, until an operator
//! retries it; an outcome that contradicts the order, or names another payment, is
//! acked, leaves the order as it was, and is recorded for a person.

mod helpers;

use std::time::Duration;

use helpers::{Order, TestApp};
use serde_json::Value;
use shared_protocol::Message as _;
use shared_protocol::{
    CancelReason, ClientMessage, ErrorCode, EventId, PaymentId, PaymentOutcome, ServerMessage,
};
use test_harness::Matcher;
use test_harness::payments::{FakePayments, ack_of, initiate_payment, select_payment_method};

/// The sweeper re-sends unanswered requests this often here.
const RESEND: Duration = Duration::from_millis(300);
const MAX_ATTEMPTS: u32 = 3;

fn any_initiate() -> Matcher<ClientMessage> {
    Matcher::new("any initiate_payment", |m| {
        matches!(m, ClientMessage::InitiatePayment { .. })
    })
}

async fn spawn(fake: &FakePayments) -> TestApp {
    TestApp::spawn_with(&fake.url(), |config| {
        config.resend_after = RESEND;
        config.max_payment_attempts = MAX_ATTEMPTS;
    })
    .await
}

fn attention(order: &Order) -> &Value {
    &order.0["attention"]
}

/// Waits until the order is parked; returns it.
async fn wait_parked(app: &TestApp, id: shared_protocol::OrderId) -> Order {
    helpers::wait_until(helpers::DEADLINE, || async {
        let order = app.order(id).await;
        attention(&order)["parked_at"].is_string().then_some(order)
    })
    .await
    .expect("the order is parked within the deadline")
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

#[tokio::test]
async fn an_order_payments_keeps_refusing_is_parked_then_retried_by_an_operator() {
    let fake = FakePayments::builder()
        .on(any_initiate(), |m| {
            vec![ServerMessage::Error {
                order_id: m.order_id(),
                code: ErrorCode::Conflict,
                message: "this order exists with another amount".into(),
            }]
        })
        .start()
        .await;
    let app = spawn(&fake).await;
    let conn = fake.next_connection().await;
    let order = app.create_order(1999, "EUR").await;
    assert_eq!(attention(&order), &Value::Null, "a new order needs no one");

    // The first request, then the sweeper's re-sends, until the last attempt.
    for _ in 0..MAX_ATTEMPTS {
        conn.expect(initiate_payment(order.id())).await;
    }
    let parked = wait_parked(&app, order.id()).await;
    assert_eq!(
        parked.0["status"], "pending_payment",
        "parking changes no status"
    );
    assert_eq!(attention(&parked)["payment_attempts"], MAX_ATTEMPTS);
    let error = attention(&parked)["last_payment_error"].as_str().unwrap();
    assert!(error.starts_with("conflict: this order exists"), "{error}");

    // Parked: the sweeper (every 300 ms) sends it no more.
    conn.expect_silence(RESEND * 5).await;
    let text = metrics(&app).await;
    assert!(text.contains("orders_parked_total 1"), "{text}");
    assert!(
        text.contains(&format!("orders_refusals_total {MAX_ATTEMPTS}")),
        "{text}"
    );

    // An operator retries it: sent again at once, attempts from zero.
    let retried = app.post(&format!("/orders/{}/retry", order.id())).await;
    assert_eq!(retried.status(), 202);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["attention"]["parked_at"], Value::Null, "{retried}");
    conn.expect(initiate_payment(order.id())).await;
    // It is being handled again, not parked: a second retry is a conflict.
    let again = app.post(&format!("/orders/{}/retry", order.id())).await;
    assert_eq!(again.status(), 409);
    // Still refused: parked again after its attempts.
    for _ in 1..MAX_ATTEMPTS {
        conn.expect(initiate_payment(order.id())).await;
    }
    wait_parked(&app, order.id()).await;

    let unknown = app
        .post(&format!("/orders/{}/retry", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn an_answer_that_cannot_be_stored_parks_the_order_instead_of_looping() {
    // The orders table holds a method of at most 200 characters: this offer can never
    // be stored, however often it comes.
    let fake = FakePayments::builder()
        .on(any_initiate(), |m| {
            vec![ServerMessage::PaymentMethods {
                order_id: m.order_id().expect("an order"),
                methods: vec!["m".repeat(300)],
            }]
        })
        .start()
        .await;
    let app = spawn(&fake).await;
    let conn = fake.next_connection().await;
    let order = app.create_order(500, "EUR").await;
    for _ in 0..MAX_ATTEMPTS {
        conn.expect(initiate_payment(order.id())).await;
    }
    let parked = wait_parked(&app, order.id()).await;
    let error = attention(&parked)["last_payment_error"].as_str().unwrap();
    assert!(
        error.starts_with("could not store payment_methods"),
        "{error}"
    );
    assert_eq!(parked.0["payment_method"], Value::Null);
    conn.expect_silence(RESEND * 5).await;
    assert!(conn.is_open(), "the link stays up");
}

#[tokio::test]
async fn an_outcome_contradicting_a_final_order_is_acked_once_recorded_and_changes_nothing() {
    let fake = FakePayments::start().await;
    let app = spawn(&fake).await;
    let conn = fake.next_connection().await;
    let order = app.create_order(1200, "EUR").await;
    conn.expect(initiate_payment(order.id())).await;
    conn.expect(select_payment_method(order.id(), "credit_card"))
        .await;
    let fulfilled = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(fulfilled)).await;

    let contradiction = fake.payment_state(
        order.id(),
        PaymentOutcome::Cancel,
        Some(CancelReason::Expired),
    );
    let ServerMessage::PaymentState { event_id, .. } = contradiction else {
        unreachable!()
    };
    // Sent twice (a redelivery): acked both times, recorded once.
    conn.send(contradiction.clone()).await.unwrap();
    conn.expect(ack_of(event_id)).await;
    conn.send(contradiction).await.unwrap();
    conn.expect(ack_of(event_id)).await;

    let order = app.wait_for_status(order.id(), "fulfilled").await;
    assert_eq!(order.0["cancel_reason"], Value::Null);
    assert_eq!(attention(&order)["incidents"], 1, "{}", order.0);
    let incidents: Value = app
        .get(&format!("/orders/{}/incidents", order.id()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
    assert_eq!(incidents[0]["kind"], "contradicting_outcome");
    assert_eq!(incidents[0]["event_id"], event_id.0);
    let detail = incidents[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("CANCEL") && detail.contains("fulfilled"),
        "{detail}"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"orders_incidents_total{kind="contradicting_outcome"} 1"#),
        "{text}"
    );
    // An invoice, one, as before.
    assert_eq!(app.count("SELECT count(*) FROM invoices").await, 1);
}

#[tokio::test]
async fn an_outcome_for_another_payment_is_acked_recorded_and_changes_nothing() {
    let fake = FakePayments::start().await;
    let app = spawn(&fake).await;
    let conn = fake.next_connection().await;
    let order = app.order_awaiting_payment(&conn, 700, "EUR").await;

    let stranger = PaymentId::new();
    assert_ne!(stranger, fake.payment_id(order.id()));
    let event_id = EventId(987_654);
    conn.send(ServerMessage::PaymentState {
        event_id,
        order_id: order.id(),
        payment_id: stranger,
        state: PaymentOutcome::Fulfill,
        reason: None,
    })
    .await
    .unwrap();
    conn.expect(ack_of(event_id)).await;
    let unchanged = app.order(order.id()).await;
    assert_eq!(unchanged.0["status"], "awaiting_payment");
    assert_eq!(attention(&unchanged)["incidents"], 1, "{}", unchanged.0);
    let incidents: Value = app
        .get(&format!("/orders/{}/incidents", order.id()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(incidents[0]["kind"], "payment_id_mismatch", "{incidents}");
    // Neither payment id is told: each is the capability of a payment page.
    let detail = incidents[0]["detail"].as_str().unwrap();
    for id in [stranger, fake.payment_id(order.id())] {
        assert!(!detail.contains(&id.to_string()), "{detail}");
    }
    assert!(
        detail.contains(&format!("event {}", event_id.0)),
        "{detail}"
    );
    assert_eq!(app.count("SELECT count(*) FROM invoices").await, 0);

    // The order's own payment still completes it.
    let fulfilled = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(fulfilled)).await;
    app.wait_for_status(order.id(), "fulfilled").await;
    assert_eq!(app.count("SELECT count(*) FROM invoices").await, 1);
}

#[tokio::test]
async fn incidents_of_an_unknown_order_are_a_404() {
    let fake = FakePayments::start().await;
    let app = spawn(&fake).await;
    let response = app
        .get(&format!("/orders/{}/incidents", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(response.status(), 404);
}
