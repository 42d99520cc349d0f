//! `FakePayments` driven by a plain WebSocket client (tokio-tungstenite), without
//! Orders: its auto-replies, its own builder, its Payments helpers. The generic fake's
//! own tests are in fake-ws-server/tests/.

use std::time::Duration;

use fake_ws_server::testing::{Client, assert_no_frame, panic_message, receive_text, send_frame};
use futures_util::StreamExt;
use shared_protocol::{
    CancelReason, ClientMessage, EventId, OrderId, PaymentOutcome, SUBPROTOCOL, ServerMessage,
};
use test_harness::payments::{
    FakePayments, ack_of, cancel_payment, initiate_payment, select_payment_method,
};
use test_harness::{Connection, Matcher, Rule};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Connects as Orders does: with the subprotocol and a token.
async fn try_connect(url: &str) -> Result<Client, WsError> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    request
        .headers_mut()
        .insert("authorization", "Bearer secret".parse().unwrap());
    fake_ws_server::testing::try_connect(request).await
}

/// Connects a client to `fake` as Orders does and takes its connection.
async fn open(fake: &FakePayments) -> (Client, Connection<ClientMessage, ServerMessage>) {
    let client = try_connect(&fake.url()).await.expect("connect");
    (client, fake.next_connection().await)
}

async fn send(client: &mut Client, message: &ClientMessage) {
    send_frame(
        client,
        Message::Text(shared_protocol::encode(message).into()),
    )
    .await;
}

/// The next text frame, decoded.
async fn receive(client: &mut Client) -> ServerMessage {
    shared_protocol::decode(&receive_text(client).await).expect("a ServerMessage")
}

fn nil() -> OrderId {
    OrderId(uuid::Uuid::nil())
}

fn initiate(order_id: OrderId) -> ClientMessage {
    ClientMessage::InitiatePayment {
        order_id,
        amount: shared_protocol::Amount::new(1999).unwrap(),
        currency: shared_protocol::Currency::parse("EUR").unwrap(),
    }
}

#[tokio::test]
async fn auto_replies_walk_the_happy_path_and_expect_sees_each_message() {
    let fake = FakePayments::start().await;
    let (mut client, conn) = open(&fake).await;
    let order = OrderId::new();

    send(&mut client, &initiate(order)).await;
    let ServerMessage::PaymentMethods { methods, .. } = receive(&mut client).await else {
        panic!("expected methods")
    };
    assert_eq!(methods, ["credit_card", "paypal", "bank_transfer"]);
    let seen = conn.expect(initiate_payment(order)).await;
    assert_eq!(seen, initiate(order));

    send(
        &mut client,
        &ClientMessage::SelectPaymentMethod {
            order_id: order,
            method: "credit_card".into(),
        },
    )
    .await;
    let ServerMessage::PaymentPage {
        payment_id, url, ..
    } = receive(&mut client).await
    else {
        panic!("expected a page")
    };
    assert_eq!(payment_id, fake.payment_id(order));
    assert!(url.ends_with(&format!("/pay/{payment_id}")));
    conn.expect(select_payment_method(order, "credit_card"))
        .await;

    let event = fake.fulfill(&conn, order).await.unwrap();
    let ServerMessage::PaymentState {
        event_id,
        state,
        payment_id: paid,
        ..
    } = receive(&mut client).await
    else {
        panic!("expected a state")
    };
    assert_eq!(
        (event_id, state, paid),
        (event, PaymentOutcome::Fulfill, payment_id)
    );
    send(&mut client, &ClientMessage::Ack { event_id }).await;
    conn.expect(ack_of(event)).await;

    send(
        &mut client,
        &ClientMessage::CancelPayment { order_id: order },
    )
    .await;
    let ServerMessage::PaymentState { state, reason, .. } = receive(&mut client).await else {
        panic!("expected a state")
    };
    assert_eq!(
        (state, reason),
        (PaymentOutcome::Cancel, Some(CancelReason::OrdersCancelled))
    );
    conn.expect(cancel_payment(order)).await;
}

#[tokio::test]
async fn manual_mode_sends_nothing_by_itself_and_typed_and_raw_frames_reach_the_client() {
    let fake = FakePayments::builder().manual().start().await;
    let (mut client, conn) = open(&fake).await;
    let order = OrderId::new();
    send(&mut client, &initiate(order)).await;
    conn.expect(initiate_payment(order)).await;
    assert_no_frame(
        &mut client,
        Duration::from_millis(200),
        "manual mode replied",
    )
    .await;

    conn.send(ServerMessage::PaymentMethods {
        order_id: order,
        methods: vec!["paypal".into()],
    })
    .await
    .unwrap();
    assert!(
        matches!(receive(&mut client).await, ServerMessage::PaymentMethods { methods, .. } if methods == ["paypal"])
    );
    conn.send_text("not json").await.unwrap();
    conn.send_binary(vec![1, 2, 3]).await.unwrap();
    let frame = client.next().await.unwrap().unwrap();
    assert_eq!(frame, Message::Text("not json".into()));
    let frame = client.next().await.unwrap().unwrap();
    assert_eq!(frame, Message::Binary(vec![1, 2, 3].into()));
}

#[tokio::test]
async fn a_custom_rule_answers_first_and_its_expected_count_is_checked() {
    let order = OrderId::new();
    let fake = FakePayments::builder()
        .rule(
            Rule::when(initiate_payment(order), move |_| {
                vec![ServerMessage::error(
                    Some(order),
                    shared_protocol::ErrorCode::Internal,
                    "try later",
                )]
            })
            .times(1),
        )
        .start()
        .await;
    let (mut client, _conn) = open(&fake).await;
    send(&mut client, &initiate(order)).await;
    assert!(matches!(
        receive(&mut client).await,
        ServerMessage::Error { .. }
    ));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());

    // A rule that should have fired twice is reported.
    let strict = FakePayments::builder()
        .rule(Rule::when(Matcher::any(), |_| Vec::new()).times(2))
        .start()
        .await;
    let (mut client, conn) = open(&strict).await;
    send(&mut client, &initiate(order)).await;
    conn.wait_for_frames(1).await;
    drop(client);
    let message = panic_message(async move { drop(strict) }).await;
    assert!(message.contains("fired 1 times, expected 2"), "{message}");
}

#[tokio::test]
async fn the_handshake_can_be_inspected_and_the_subprotocol_is_selected() {
    let fake = FakePayments::start().await;
    let mut request = fake.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "other, payments.v1".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("Authorization", "Bearer t0ken".parse().unwrap());
    let (_client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], SUBPROTOCOL);
    let conn = fake.next_connection().await;
    assert_eq!(conn.request().header("authorization"), Some("Bearer t0ken"));
    assert_eq!(conn.request().subprotocols(), ["other", "payments.v1"]);
    assert_eq!(conn.request().path(), "/ws");

    match try_connect(&fake.url().replace("/ws", "/elsewhere")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn a_duplicate_event_can_be_built_once_and_sent_twice() {
    let fake = FakePayments::start().await;
    let (mut client, conn) = open(&fake).await;
    let event = fake.payment_state(nil(), PaymentOutcome::Fulfill, None);
    conn.send(event.clone()).await.unwrap();
    conn.send(event.clone()).await.unwrap();
    assert_eq!(receive(&mut client).await, event);
    assert_eq!(receive(&mut client).await, event);
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<FakePayments>();
    // The futures a test awaits can move across threads (e.g. into tokio::spawn).
    let fake = futures_executor::block_on(FakePayments::start());
    assert_send(&fake.next_connection_within(Duration::from_millis(1)));
    assert_send_sync::<test_harness::Connection<ClientMessage, ServerMessage>>();
}

#[tokio::test]
async fn builder_shorthands_count_and_delay_the_rule_just_mounted() {
    let order = OrderId::new();
    let fake = FakePayments::builder()
        .on(initiate_payment(order), move |_| {
            vec![ServerMessage::PaymentMethods {
                order_id: order,
                methods: vec!["paypal".into()],
            }]
        })
        .expect(2)
        .delay(Duration::from_millis(200))
        .start()
        .await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &initiate(order)).await;
    assert_no_frame(
        &mut client,
        Duration::from_millis(50),
        "answered before the delay",
    )
    .await;
    assert!(
        matches!(receive(&mut client).await, ServerMessage::PaymentMethods { methods, .. } if methods == ["paypal"])
    );
    conn.wait_for_frames(2).await;
    assert_eq!(fake.problems().len(), 1, "{:?}", fake.problems());
    send(&mut client, &initiate(order)).await;
    receive(&mut client).await;
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn an_oversize_frame_reaches_the_client_whole() {
    let fake = FakePayments::start().await;
    let (mut client, conn) = open(&fake).await;
    fake.send_oversize(&conn).await.unwrap();
    match client.next().await.unwrap().unwrap() {
        Message::Text(text) => assert_eq!(text.len(), shared_protocol::MAX_MESSAGE_BYTES + 1),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn payment_ids_survive_a_restart() {
    let fake = FakePayments::start().await;
    let order = OrderId::new();
    let (mut client, _conn) = open(&fake).await;
    let select = ClientMessage::SelectPaymentMethod {
        order_id: order,
        method: "paypal".into(),
    };
    send(&mut client, &select).await;
    let before = receive(&mut client).await;
    fake.stop().await;
    fake.restart().await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &select).await;
    let after = receive(&mut client).await;
    let (
        ServerMessage::PaymentPage { payment_id: a, .. },
        ServerMessage::PaymentPage { payment_id: b, .. },
    ) = (before, after)
    else {
        panic!("expected two pages")
    };
    assert_eq!(a, b);
    let cancelled = fake
        .cancel(&conn, order, CancelReason::Customer)
        .await
        .unwrap();
    let ServerMessage::PaymentState {
        event_id,
        payment_id,
        ..
    } = receive(&mut client).await
    else {
        panic!("expected a state")
    };
    assert_eq!((event_id, payment_id), (cancelled, a));
    assert_eq!(cancelled, EventId(1));
}
