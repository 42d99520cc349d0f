//! Every row of PROTOCOL.md's message tables, over a real WebSocket.

mod helpers;

use helpers::{Client, TestApp, initiate};
use serde_json::json;
use shared_protocol::{
    CancelReason, ClientMessage, ErrorCode, EventId, OrderId, PaymentOutcome, ServerMessage,
};
use std::time::Duration;
use test_harness::postgres::TestDatabase;

fn error_code(message: &ServerMessage) -> (Option<OrderId>, ErrorCode) {
    match message {
        ServerMessage::Error { order_id, code, .. } => (*order_id, *code),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_repeated_initiate_answers_where_the_session_stands() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();

    // new, and again before a method is selected: the methods
    for _ in 0..2 {
        client.send(&initiate(order, 1999, "EUR")).await;
        assert_eq!(
            client.recv().await,
            ServerMessage::PaymentMethods {
                order_id: order,
                methods: vec![
                    "credit_card".into(),
                    "paypal".into(),
                    "bank_transfer".into()
                ],
            }
        );
    }
    // method selected: the same page
    let page = client.start_payment(order, 1999, "EUR").await;
    client.send(&initiate(order, 1999, "EUR")).await;
    assert_eq!(client.recv().await, page);
    // selecting the same method again is idempotent
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: order,
            method: "credit_card".into(),
        })
        .await;
    assert_eq!(client.recv().await, page);
    // final: the same event
    client
        .send(&ClientMessage::CancelPayment { order_id: order })
        .await;
    let event = client.recv().await;
    assert!(
        matches!(
            event,
            ServerMessage::PaymentState {
                state: PaymentOutcome::Cancel,
                reason: Some(CancelReason::OrdersCancelled),
                ..
            }
        ),
        "{event:?}"
    );
    client.send(&initiate(order, 1999, "EUR")).await;
    assert_eq!(client.recv().await, event);
    client
        .send(&ClientMessage::CancelPayment { order_id: order })
        .await;
    assert_eq!(
        client.recv().await,
        event,
        "a repeated cancel answers the same event"
    );
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: order,
            method: "credit_card".into(),
        })
        .await;
    assert_eq!(client.recv().await, event);
}

#[tokio::test]
async fn a_page_carries_the_session_and_an_expiry() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let ServerMessage::PaymentPage {
        order_id,
        payment_id,
        url,
        expires_at,
    } = client.start_payment(order, 500, "USD").await
    else {
        unreachable!()
    };
    assert_eq!(order_id, order);
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}/pay/{payment_id}", app.port)
    );
    let ttl = expires_at - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15),
        "{ttl}"
    );
}

#[tokio::test]
async fn a_changed_amount_currency_or_method_is_a_conflict() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    client.start_payment(order, 1999, "EUR").await;

    client.send(&initiate(order, 2000, "EUR")).await;
    assert_eq!(
        error_code(&client.recv().await),
        (Some(order), ErrorCode::Conflict)
    );
    client.send(&initiate(order, 1999, "USD")).await;
    assert_eq!(
        error_code(&client.recv().await),
        (Some(order), ErrorCode::Conflict)
    );
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: order,
            method: "paypal".into(),
        })
        .await;
    assert_eq!(
        error_code(&client.recv().await),
        (Some(order), ErrorCode::Conflict)
    );
}

#[tokio::test]
async fn unknown_orders_and_methods_are_refused_by_code() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let stranger = OrderId::new();
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: stranger,
            method: "credit_card".into(),
        })
        .await;
    assert_eq!(
        error_code(&client.recv().await),
        (Some(stranger), ErrorCode::UnknownOrder)
    );
    client
        .send(&ClientMessage::CancelPayment { order_id: stranger })
        .await;
    assert_eq!(
        error_code(&client.recv().await),
        (Some(stranger), ErrorCode::UnknownOrder)
    );

    let order = OrderId::new();
    client.send(&initiate(order, 100, "EUR")).await;
    client.recv().await;
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: order,
            method: "bitcoin".into(),
        })
        .await;
    assert_eq!(
        error_code(&client.recv().await),
        (Some(order), ErrorCode::UnknownMethod)
    );
    // Acking an unknown event is harmless: no answer, the connection stays usable.
    client
        .send(&ClientMessage::Ack {
            event_id: EventId(987_654),
        })
        .await;
    assert_eq!(client.try_recv(Duration::from_millis(300)).await, None);
    client.send(&initiate(order, 100, "EUR")).await;
    assert!(matches!(
        client.recv().await,
        ServerMessage::PaymentMethods { .. }
    ));
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_an_error_and_the_connection_stays_open() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let cases = [
        ("not json".to_owned(), None, ErrorCode::MalformedMessage),
        ("[1, 2]".to_owned(), None, ErrorCode::MalformedMessage),
        (
            json!({"order_id": order}).to_string(),
            Some(order),
            ErrorCode::MalformedMessage,
        ),
        (
            json!({"type": "refund", "order_id": order}).to_string(),
            Some(order),
            ErrorCode::UnknownType,
        ),
        (
            json!({"type": "initiate_payment", "order_id": "nope", "amount": 1, "currency": "EUR"})
                .to_string(),
            None,
            ErrorCode::MalformedMessage,
        ),
        (
            json!({"type": "initiate_payment", "order_id": order, "amount": -5, "currency": "EUR"})
                .to_string(),
            Some(order),
            ErrorCode::MalformedMessage,
        ),
        (
            json!({"type": "initiate_payment", "order_id": order, "amount": 5, "currency": "eur"})
                .to_string(),
            Some(order),
            ErrorCode::MalformedMessage,
        ),
        (
            // Three letters that are no currency: not ISO 4217.
            json!({"type": "initiate_payment", "order_id": order, "amount": 5, "currency": "ABC"})
                .to_string(),
            Some(order),
            ErrorCode::MalformedMessage,
        ),
        (
            json!({"type": "initiate_payment", "order_id": order, "amount": 5, "currency": "XAU"})
                .to_string(),
            Some(order),
            ErrorCode::MalformedMessage,
        ),
        (
            json!({"type": "payment_methods", "order_id": order, "methods": ["x"]}).to_string(),
            Some(order),
            ErrorCode::UnknownType,
        ),
    ];
    for (text, order_id, code) in cases {
        client.send_text(&text).await;
        assert_eq!(error_code(&client.recv().await), (order_id, code), "{text}");
    }
    // Unknown fields are ignored.
    client
        .send_text(&json!({"type": "initiate_payment", "order_id": order, "amount": 5, "currency": "EUR", "trace": "x"}).to_string())
        .await;
    assert!(matches!(
        client.recv().await,
        ServerMessage::PaymentMethods { .. }
    ));
}

#[tokio::test]
async fn many_connections_are_served_at_once() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(app.connect().await);
    }
    let orders: Vec<OrderId> = (0..20).map(|_| OrderId::new()).collect();
    for (client, order) in clients.iter_mut().zip(&orders) {
        client.send(&initiate(*order, 100, "EUR")).await;
    }
    for (client, order) in clients.iter_mut().zip(&orders) {
        assert_eq!(client.recv().await.order_id(), Some(*order));
    }
}

use shared_protocol::Message as _;

#[tokio::test]
async fn each_connection_gets_the_answers_to_its_own_messages() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut a = Client::connect(&app.ws_url()).await;
    let mut b = Client::connect(&app.ws_url()).await;
    let order = OrderId::new();
    a.send(&initiate(order, 100, "EUR")).await;
    assert!(matches!(
        a.recv().await,
        ServerMessage::PaymentMethods { .. }
    ));
    assert_eq!(b.try_recv(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn cancel_payment_before_a_method_is_selected_cancels_the_session() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    client.send(&initiate(order, 700, "JPY")).await;
    assert!(matches!(
        client.recv().await,
        ServerMessage::PaymentMethods { .. }
    ));
    client
        .send(&ClientMessage::CancelPayment { order_id: order })
        .await;
    let event = client.recv().await;
    assert!(
        matches!(
            event,
            ServerMessage::PaymentState {
                order_id,
                state: PaymentOutcome::Cancel,
                reason: Some(CancelReason::OrdersCancelled),
                ..
            } if order_id == order
        ),
        "{event:?}"
    );
    // Final: selecting a method now, or initiating again, answers with the same event.
    client
        .send(&ClientMessage::SelectPaymentMethod {
            order_id: order,
            method: "paypal".into(),
        })
        .await;
    assert_eq!(client.recv().await, event);
    client.send(&initiate(order, 700, "JPY")).await;
    assert_eq!(client.recv().await, event);
}

#[tokio::test]
async fn a_storage_failure_is_answered_with_internal_and_the_connection_stays_open() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    drop(db); // DROP DATABASE … WITH (FORCE): every query fails from now on

    for _ in 0..2 {
        let order = OrderId::new();
        client.send(&initiate(order, 100, "EUR")).await;
        let answer = client
            .try_recv(Duration::from_secs(15))
            .await
            .expect("no answer while the database is gone");
        assert_eq!(error_code(&answer), (Some(order), ErrorCode::Internal));
        let ServerMessage::Error { message, .. } = answer else {
            unreachable!()
        };
        assert!(
            !message.contains("database") && !message.contains("sqlx"),
            "the cause leaked into the answer: {message}"
        );
    }
}
