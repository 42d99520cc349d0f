//! Messages written back to back (pipelined) are answered in batches, one transaction
//! each: messages about one order keep their order, every message gets its own
//! answer (errors included), and acks that arrive together all take effect.

mod helpers;

use std::collections::HashMap;
use std::time::Duration;

use helpers::{TestApp, initiate, seed_unacked_events, wait_for_count};
use shared_protocol::{
    CancelReason, ClientMessage, ErrorCode, EventId, Message, OrderId, PaymentOutcome,
    ServerMessage,
};
use test_harness::postgres::TestDatabase;

#[tokio::test]
async fn messages_about_one_order_keep_their_order_in_a_pipelined_batch() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let orders: Vec<OrderId> = (0..40).map(|_| OrderId::new()).collect();
    let steps = |order: OrderId| {
        vec![
            initiate(order, 100, "EUR"),
            ClientMessage::SelectPaymentMethod {
                order_id: order,
                method: "credit_card".into(),
            },
            ClientMessage::CancelPayment { order_id: order },
        ]
    };
    // Interleaved: the orders' steps are staggered, so one burst holds the initiate
    // of one order next to the select and the cancel of others, and each order's three
    // messages sit in the same burst.
    let mut burst = Vec::new();
    for round in 0..orders.len() + 2 {
        for (i, order) in orders.iter().enumerate() {
            let step = round
                .checked_sub(i % 3)
                .and_then(|r| steps(*order).get(r).cloned());
            burst.extend(step);
        }
    }
    let expected = burst.len();
    assert_eq!(expected, orders.len() * 3);
    // Plus, in the middle, a message that is not the protocol and one about an order
    // Payments does not know: each gets its own error, the rest goes on.
    let stranger = OrderId::new();
    for message in &burst[..expected / 2] {
        client.send(message).await;
    }
    client
        .send_text(r#"{"type":"initiate_payment","order_id":"not-a-uuid"}"#)
        .await;
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: stranger,
            method: "paypal".into(),
        })
        .await;
    for message in &burst[expected / 2..] {
        client.send(message).await;
    }

    let mut seen: HashMap<OrderId, Vec<ServerMessage>> = HashMap::new();
    let mut errors = Vec::new();
    for _ in 0..expected + 2 {
        let answer = client.recv().await;
        match &answer {
            ServerMessage::Error { order_id, code, .. } => {
                errors.push((*order_id, *code));
            }
            other => seen
                .entry(other.order_id().expect("an order"))
                .or_default()
                .push(answer),
        }
    }
    errors.sort_by_key(|(o, _)| o.is_some());
    assert_eq!(
        errors,
        vec![
            (None, ErrorCode::MalformedMessage),
            (Some(stranger), ErrorCode::UnknownOrder)
        ]
    );
    for order in &orders {
        let answers = &seen[order];
        assert!(
            matches!(
                answers.as_slice(),
                [
                    ServerMessage::PaymentMethods { .. },
                    ServerMessage::PaymentPage { .. },
                    ServerMessage::PaymentState {
                        state: PaymentOutcome::Cancel,
                        reason: Some(CancelReason::OrdersCancelled),
                        ..
                    },
                ]
            ),
            "order {order}: {answers:?}"
        );
    }
}

#[tokio::test]
async fn acks_that_arrive_together_all_take_effect() {
    const EVENTS: i64 = 300;
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let created = seed_unacked_events(&db, EVENTS).await;
    let mut client = app.connect().await;
    let mut received = Vec::new();
    while received.len() < created.len() {
        let ServerMessage::PaymentState { event_id, .. } = client.recv().await else {
            panic!("only payment_state was expected");
        };
        if !received.contains(&event_id.0) {
            received.push(event_id.0);
        }
    }
    // All acks back to back, plus a repeated one and one for an unknown event.
    for event_id in received.iter().chain([&received[0], &i64::MAX]) {
        client
            .send(&ClientMessage::Ack {
                event_id: EventId(*event_id),
            })
            .await;
    }
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE acked_at IS NULL",
        0,
        Duration::from_secs(10),
    )
    .await;
    // Acked: a new connection gets none of them.
    drop(client);
    let mut next = app.connect().await;
    assert_eq!(next.try_recv(Duration::from_millis(500)).await, None);
}
