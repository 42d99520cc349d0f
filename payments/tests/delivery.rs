//! Outcome delivery: to the connection that last spoke about the order, again to every
//! new connection until acked (and not after), expiry, and two Payments instances on
//! one database.

mod helpers;

use std::time::Duration;

use helpers::{TestApp, page_path};
use shared_protocol::{CancelReason, ClientMessage, OrderId, PaymentOutcome, ServerMessage};
use test_harness::postgres::TestDatabase;

fn event_id(message: &ServerMessage) -> shared_protocol::EventId {
    match message {
        ServerMessage::PaymentState { event_id, .. } => *event_id,
        other => panic!("expected a payment_state, got {other:?}"),
    }
}

#[tokio::test]
async fn an_event_goes_to_the_connection_that_last_spoke_about_the_order() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&a.start_payment(order, 100, "EUR").await);
    // b now speaks about the order: it becomes the one to tell.
    b.send(&helpers::initiate(order, 100, "EUR")).await;
    assert!(matches!(b.recv().await, ServerMessage::PaymentPage { .. }));

    app.post(&format!("{path}/complete")).await;
    let event = b.recv().await;
    assert_eq!(event.order_id_of(), order);
    assert_eq!(
        a.try_recv(Duration::from_millis(400)).await,
        None,
        "sent twice"
    );
}

/// A request Payments answers with `conflict` changes nothing: it does not make its
/// connection the one the order's outcome goes to (whoever holds the link token could
/// otherwise reroute another order's outcome to itself).
#[tokio::test]
async fn a_request_answered_with_conflict_does_not_reroute_the_outcome() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&a.start_payment(order, 100, "EUR").await);
    b.send(&helpers::initiate(order, 999, "EUR")).await;
    assert!(
        matches!(
            b.recv().await,
            ServerMessage::Error {
                code: shared_protocol::ErrorCode::Conflict,
                ..
            }
        ),
        "another amount"
    );
    b.send(&helpers::initiate(order, 100, "USD")).await;
    assert!(matches!(
        b.recv().await,
        ServerMessage::Error {
            code: shared_protocol::ErrorCode::Conflict,
            ..
        }
    ));
    b.send(&ClientMessage::SelectPaymentMethod {
        order_id: order,
        method: "paypal".into(),
    })
    .await;
    assert!(
        matches!(
            b.recv().await,
            ServerMessage::Error {
                code: shared_protocol::ErrorCode::Conflict,
                ..
            }
        ),
        "another method"
    );

    app.post(&format!("{path}/complete")).await;
    let event = a.recv().await;
    assert_eq!(event.order_id_of(), order, "the outcome goes to a");
    assert_eq!(
        b.try_recv(Duration::from_millis(400)).await,
        None,
        "rerouted to b"
    );
}

trait OrderOf {
    fn order_id_of(&self) -> OrderId;
}

impl OrderOf for ServerMessage {
    fn order_id_of(&self) -> OrderId {
        shared_protocol::Message::order_id(self).expect("an order")
    }
}

#[tokio::test]
async fn an_event_is_redelivered_to_each_new_connection_until_acked_and_not_after() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut first = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&first.start_payment(order, 100, "EUR").await);
    app.post(&format!("{path}/complete")).await;
    let event = first.recv().await;
    drop(first); // lost before the ack

    let mut second = app.connect().await;
    assert_eq!(second.recv().await, event, "redelivered on connect");
    drop(second);

    let mut third = app.connect().await;
    assert_eq!(third.recv().await, event, "and again");
    third
        .send(&ClientMessage::Ack {
            event_id: event_id(&event),
        })
        .await;
    // A repeated initiate is still answered with it after the ack.
    third.send(&helpers::initiate(order, 100, "EUR")).await;
    assert_eq!(third.recv().await, event);
    drop(third);

    let mut fourth = app.connect().await;
    assert_eq!(
        fourth.try_recv(Duration::from_millis(500)).await,
        None,
        "redelivered after its ack"
    );
}

#[tokio::test]
async fn an_event_whose_connection_is_gone_goes_to_another_open_one() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut gone = app.connect().await;
    let mut other = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&gone.start_payment(order, 100, "EUR").await);
    gone.ws.close(None).await.unwrap();
    assert_eq!(gone.closed_with().await, None);
    // The server echoes the close after forgetting the connection, so it is gone now.
    app.post(&format!("{path}/complete")).await;
    let event = other.recv().await;
    assert_eq!(event.order_id_of(), order);
}

#[tokio::test]
async fn an_open_session_expires_after_the_ttl() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn_with(&db, |c| c.payment_ttl = Duration::from_millis(300)).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&client.start_payment(order, 100, "EUR").await);
    let event = client.recv().await;
    assert!(
        matches!(
            event,
            ServerMessage::PaymentState {
                state: PaymentOutcome::Cancel,
                reason: Some(CancelReason::Expired),
                ..
            }
        ),
        "{event:?}"
    );
    // Paying an expired session changes nothing.
    assert_eq!(app.post(&format!("{path}/complete")).await.status(), 303);
    assert!(
        app.get(&path)
            .await
            .text()
            .await
            .unwrap()
            .contains("expired")
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("payments_sessions_expired_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_payment_completed_on_one_instance_reaches_orders_on_another() {
    let db = TestDatabase::create("payments").await;
    let a = TestApp::spawn(&db).await;
    let b = TestApp::spawn(&db).await;
    // Orders is connected to instance B only.
    let mut orders = b.connect().await;
    let order = OrderId::new();
    let path = page_path(&orders.start_payment(order, 4200, "EUR").await);
    // The customer pays on instance A.
    assert_eq!(a.post(&format!("{path}/complete")).await.status(), 303);
    let event = orders.recv().await;
    assert!(
        matches!(event, ServerMessage::PaymentState { state: PaymentOutcome::Fulfill, order_id, .. } if order_id == order)
    );
    orders
        .send(&ClientMessage::Ack {
            event_id: event_id(&event),
        })
        .await;
    let metrics = a.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("payments_unacked_events"), "{metrics}");
}

#[tokio::test]
async fn an_unacked_event_is_sent_again_after_redeliver_after_until_acked() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn_with(&db, |c| c.redeliver_after = Duration::from_millis(300)).await;
    let mut orders = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&orders.start_payment(order, 100, "EUR").await);
    app.post(&format!("{path}/complete")).await;
    let event = orders.recv().await;
    // Not acked (as if it died unread in a dying connection's buffers): it comes again
    // on the same, still open connection.
    assert_eq!(orders.recv().await, event, "sent again");
    orders
        .send(&ClientMessage::Ack {
            event_id: event_id(&event),
        })
        .await;
    // A redelivery already claimed when the ack arrived may still be in flight.
    while let Some(again) = orders.try_recv(Duration::from_millis(100)).await {
        assert_eq!(again, event);
    }
    assert_eq!(
        orders.try_recv(Duration::from_secs(1)).await,
        None,
        "sent again after its ack"
    );
}

#[tokio::test]
async fn an_event_whose_connection_closed_goes_to_an_open_connection_on_another_instance() {
    let db = TestDatabase::create("payments").await;
    let a = TestApp::spawn(&db).await;
    let b = TestApp::spawn(&db).await;
    let mut gone = a.connect().await;
    let mut other = b.connect().await;
    let order = OrderId::new();
    let path = page_path(&gone.start_payment(order, 100, "EUR").await);
    gone.ws.close(None).await.unwrap();
    assert_eq!(gone.closed_with().await, None);
    // Instance A has no connection left: B's must get the event.
    assert_eq!(a.post(&format!("{path}/complete")).await.status(), 303);
    let event = other.recv().await;
    assert_eq!(event.order_id_of(), order);
}

#[tokio::test]
async fn an_event_whose_connection_died_with_its_instance_goes_elsewhere_once_its_heartbeat_is_stale()
 {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut orders = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&orders.start_payment(order, 100, "EUR").await);
    // As if another instance had crashed holding the connection that last spoke about
    // the order: its row stays behind, fresh for now, and nobody unregisters it.
    let ghost = uuid::Uuid::new_v4();
    let pool = db.pool().await;
    sqlx::query("INSERT INTO ws_connections (connection_id, instance_id) VALUES ($1, $2)")
        .bind(ghost)
        .bind(uuid::Uuid::new_v4())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE payment_sessions SET last_connection = $1 WHERE order_id = $2")
        .bind(ghost)
        .bind(order.0)
        .execute(&pool)
        .await
        .unwrap();

    app.post(&format!("{path}/complete")).await;
    // Left to its owner while the owner looks alive (its row is fresh for 3 s in the
    // test configuration), then taken over once its heartbeat is stale.
    assert_eq!(
        orders.try_recv(Duration::from_secs(1)).await,
        None,
        "taken from an owner that still looks alive"
    );
    let event = orders
        .try_recv(Duration::from_secs(15))
        .await
        .expect("the event was never delivered to the open connection");
    assert_eq!(event.order_id_of(), order);
}
