//! Bounded everywhere: a peer that stops reading is dropped after PEER_TIMEOUT; a big
//! event backlog goes out in batches interleaved with reading, so it drains to a peer
//! that is itself writing thousands of messages before it reads (no deadlock); and the
//! bounded per-connection queue never loses an event: what does not fit waits in the
//! database.

mod helpers;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helpers::{TestApp, initiate, seed_unacked_events};
use shared_protocol::{OrderId, ServerMessage};
use test_harness::postgres::TestDatabase;
use tokio_tungstenite::tungstenite::Message;

/// The number of open WebSockets the app reports.
async fn open_connections(app: &TestApp) -> Option<u64> {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("payments_websocket_connections "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_for_connections(app: &TestApp, want: u64) {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while open_connections(app).await != Some(want) {
        assert!(
            tokio::time::Instant::now() < end,
            "not {want} open connections after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_peer_timeout() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn_with(&db, |c| {
        c.common.peer_timeout = Duration::from_secs(1);
        c.common.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let client = app.connect().await;
    wait_for_connections(&app, 1).await;
    // It talks all the time (so it is never silent) but never reads: the answers pile
    // up until Payments' sends block, and the send deadline ends the connection.
    let (mut sink, _stream) = client.ws.split();
    let talker = tokio::spawn(async move {
        loop {
            let text = shared_protocol::encode(&initiate(OrderId::new(), 100, "EUR"));
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
    });
    wait_for_connections(&app, 0).await;
    // And the socket is gone: the talker's writes fail.
    tokio::time::timeout(Duration::from_secs(30), talker)
        .await
        .expect("the client can still write 30 s after it was dropped")
        .unwrap();
}

#[tokio::test]
async fn an_event_backlog_drains_to_a_client_that_writes_thousands_of_messages_before_reading() {
    const EVENTS: i64 = 3000;
    const ORDERS: usize = 3000;
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let backlog: HashSet<i64> = seed_unacked_events(&db, EVENTS).await.into_iter().collect();

    // Like an Orders that resumes by writing its whole backlog before reading: together
    // with the event backlog, far more than the socket buffers hold.
    let (mut sink, mut stream) = app.connect().await.ws.split();
    let orders: Vec<OrderId> = (0..ORDERS).map(|_| OrderId::new()).collect();
    let writer = {
        let orders = orders.clone();
        tokio::spawn(async move {
            for order in orders {
                let text = shared_protocol::encode(&initiate(order, 100, "EUR"));
                sink.send(Message::Text(text.into())).await.unwrap();
            }
            sink
        })
    };
    let _sink = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("deadlock: the client could not write its backlog while Payments wrote its own")
        .unwrap();

    let mut events = HashSet::new();
    let mut answered = HashSet::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while events.len() < backlog.len() || answered.len() < orders.len() {
        let frame = tokio::time::timeout_at(end, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "after 60 s: {} of {EVENTS} events, {} of {ORDERS} answers",
                    events.len(),
                    answered.len()
                )
            })
            .expect("the connection ended")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        match shared_protocol::decode::<ServerMessage>(text.as_str()).unwrap() {
            ServerMessage::PaymentState { event_id, .. } => {
                events.insert(event_id.0);
            }
            ServerMessage::PaymentMethods { order_id, .. } => {
                answered.insert(order_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events, backlog);
}

#[tokio::test]
async fn a_slow_client_gets_every_event_through_the_bounded_queue() {
    const EVENTS: i64 = 4000; // well over the per-connection event room
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    // Connected first, so the events go through delivery (not the resume on connect).
    let created: HashSet<i64> = seed_unacked_events(&db, EVENTS).await.into_iter().collect();

    let mut received = HashSet::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    while received.len() < created.len() {
        let left = end - tokio::time::Instant::now();
        let Some(message) = client.try_recv(left).await else {
            panic!("{} of {EVENTS} events after 90 s", received.len());
        };
        let ServerMessage::PaymentState { event_id, .. } = message else {
            panic!("unexpected {message:?}");
        };
        received.insert(event_id.0);
        if received.len() % 100 == 0 {
            // A slow reader: the queue fills, and the rest waits in the database.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(received, created);
}
