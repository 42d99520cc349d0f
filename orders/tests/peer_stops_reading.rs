//! Issue 8, Orders' side: "A peer that stops reading is dropped after PEER_TIMEOUT, on
//! both sides" (Payments' side: `payments/tests/backpressure.rs`).
//!
//! The fake Payments accepts the link, then stops reading its socket, with small TCP
//! buffers, while it keeps pinging Orders. Orders' writes to it block once the buffers
//! are full; the writer's PEER_TIMEOUT on every write must end that connection, and the
//! link must reconnect and send every open order's `initiate_payment` again.
//!
//! What makes this the write timeout and not the other way Orders drops a peer (no
//! frame heard for PEER_TIMEOUT): the fake pings every 100 ms throughout, so Orders
//! hears from it all the time, and Orders' log names the reason (this binary's only
//! test, since the subscriber that captures it is process-global). Without the timeout
//! on writes, the writer waits forever, nothing else ends the connection, and no second
//! connection comes.

mod helpers;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use helpers::{DEADLINE, TestApp};
use shared_protocol::OrderId;
use shared_protocol::{ClientMessage, ServerMessage};
use test_harness::Matcher;
use test_harness::logs::CapturedLogs;
use test_harness::payments::FakePayments;

/// PEER_TIMEOUT of this test: short, so the test is quick, and still 20 pings long.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the fake pings while it reads nothing: Orders always hears from it.
const PING_EVERY: Duration = Duration::from_millis(100);
/// Orders created while the fake does not read. Each request or reply is some 120
/// bytes on the wire; with the fake's small buffers, 400 to 600 of them fill the
/// socket, so writes block well before the last one.
const ORDERS: usize = 1500;

#[tokio::test]
async fn a_payments_that_stops_reading_is_dropped_after_the_peer_timeout_and_nothing_is_lost() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("orders=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let fake = FakePayments::builder()
        .manual()
        .small_socket_buffers()
        .start()
        .await;
    let app = TestApp::spawn_with(&fake.url(), |c| c.common.peer_timeout = PEER_TIMEOUT).await;
    let stuck = fake.next_connection().await;
    app.wait_connected().await;
    stuck.stop_reading().await;
    let stopped_reading = Instant::now();
    stuck.ping_every(PING_EVERY).await;

    // Every order is in the database before its request goes to the link, and none is
    // answered (manual fake), so all of them stay open orders.
    let orders: Vec<OrderId> = futures_util::stream::iter(0..ORDERS)
        .map(|i| app.create_order(100 + i as i64, "EUR"))
        .buffer_unordered(8)
        .map(|order| order.id())
        .collect()
        .await;
    // Requests are flow-controlled (at most MAX_OUTSTANDING unanswered), replies are
    // not: the fake offers methods for every order, and Orders' 1,500 selections are
    // what fills the buffers.
    for &order in &orders {
        // Orders may drop the connection before the last of them (that is the test):
        // a send to a closed connection is an error, and the rest need not go.
        if stuck.send(methods(order)).await.is_err() {
            break;
        }
    }
    let created = Instant::now();

    // The writes blocked before the last order was created, so within PEER_TIMEOUT of
    // it the write times out, and Orders reconnects within a backoff (100 ms at most).
    let fresh = fake.next_connection_within(3 * PEER_TIMEOUT).await;
    let reconnected = Instant::now();

    // Orders logged why it dropped the connection: the write timed out (the reader's
    // deadline would say "no frame from Payments for 2s").
    let logs = captured.text();
    let lost: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("lost the connection to Payments"))
        .collect();
    assert_eq!(lost.len(), 1, "{logs}");
    assert!(
        lost[0].contains(&format!("Payments read nothing for {PEER_TIMEOUT:?}")),
        "the connection was not dropped by the write timeout: {}",
        lost[0]
    );
    // Writes cannot block before the fake stopped reading, and then wait PEER_TIMEOUT.
    let dropped_after = fake.attempts()[1].at().into_std() - stopped_reading;
    assert!(
        dropped_after >= PEER_TIMEOUT,
        "dropped {dropped_after:?} after the fake stopped reading, before PEER_TIMEOUT"
    );
    // And the fake saw the old connection go: a ping to it failed.
    assert_eq!(
        stuck.wait_closed().await,
        test_harness::Closed::Dropped,
        "Orders sent a close frame"
    );
    assert!(!stuck.is_open());

    println!(
        "{ORDERS} orders created in {:?}; reconnected {:?} after the last one, {:?} after the fake stopped reading",
        created - stopped_reading,
        reconnected - created,
        reconnected - stopped_reading
    );

    // Nothing is lost: on the new connection every order is requested again. At most
    // MAX_OUTSTANDING requests are out unanswered, so the fake answers each with its
    // page, which lets the next ones out.
    let mut unrequested: HashSet<OrderId> = orders.iter().copied().collect();
    while !unrequested.is_empty() {
        let message = fresh.expect_within(Matcher::any(), DEADLINE).await;
        // A request that was in the outbox at the reconnect may come twice (idempotent).
        if let ClientMessage::InitiatePayment { order_id, .. } = message {
            unrequested.remove(&order_id);
            fresh.send(page(&fake, order_id)).await.unwrap();
        }
    }
    // Duplicates of requests already answered may still be on their way (idempotent,
    // as above): they are expected, not a contract violation.
    fresh.allow(Matcher::any());
    // The new connection is read, so it stays up: no third connection.
    assert!(fresh.is_open());
    assert_eq!(fake.connection_count(), 2, "{:?}", fake.attempts());
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

fn methods(order_id: OrderId) -> ServerMessage {
    ServerMessage::PaymentMethods {
        order_id,
        methods: vec!["credit_card".into()],
    }
}
