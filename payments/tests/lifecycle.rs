//! The service's life: it creates its database when missing, reports readiness by
//! whether the database answers, and stops (closing WebSockets with 1001) so that it
//! can start again on the same port with everything it stored.

mod helpers;

use std::time::Duration;

use helpers::{DEADLINE, TestApp, page_path};
use shared_protocol::{ClientMessage, OrderId, PaymentOutcome, ServerMessage};
use test_harness::postgres::TestDatabase;

#[tokio::test]
async fn the_database_is_created_when_it_does_not_exist() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let mut client = app.connect().await;
    client.start_payment(OrderId::new(), 100, "EUR").await;
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(app.get("/healthz").await.status(), 200);

    drop(db); // DROP DATABASE … WITH (FORCE): every connection of the pool dies

    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = app.get("/readyz").await.status();
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "/readyz still answers {status} without a database"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.get("/healthz").await.status(), 200, "the process is up");
}

#[tokio::test]
async fn stopping_closes_websockets_with_1001_and_a_restart_on_the_same_port_keeps_unacked_events()
{
    let db = TestDatabase::create("payments").await;
    let first = TestApp::spawn(&db).await;
    let port = first.port;
    let mut client = first.connect().await;
    let order = OrderId::new();
    let path = page_path(&client.start_payment(order, 1999, "EUR").await);
    assert_eq!(first.post(&format!("{path}/complete")).await.status(), 303);
    let event = client.recv().await;
    assert!(matches!(
        event,
        ServerMessage::PaymentState {
            state: PaymentOutcome::Fulfill,
            ..
        }
    ));

    // Stopped before Orders acked.
    tokio::time::timeout(DEADLINE, first.stop())
        .await
        .expect("a graceful stop within the deadline");
    assert_eq!(client.closed_with().await, Some(1001), "going away");

    let second = TestApp::spawn_with(&db, |c| c.payments_addr = format!("127.0.0.1:{port}")).await;
    assert_eq!(second.port, port);
    let mut client = second.connect().await;
    assert_eq!(client.recv().await, event, "redelivered after the restart");
    let ServerMessage::PaymentState { event_id, .. } = event else {
        unreachable!()
    };
    client.send(&ClientMessage::Ack { event_id }).await;
    // The page still shows the outcome.
    let html = second.get(&path).await.text().await.unwrap();
    assert!(html.contains("Paid"), "{html}");
}
