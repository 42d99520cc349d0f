//! The fake server driven by a plain WebSocket client (tokio-tungstenite), without
//! Orders: everything a test of a client relies on, and the faults it can inject.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use shared_protocol::{
    CancelReason, ClientMessage, EventId, OrderId, PaymentOutcome, SUBPROTOCOL, ServerMessage,
};
use test_harness::payments::{
    FakePayments, ack_of, any, cancel_payment, initiate_payment, select_payment_method,
};
use test_harness::{Direction, FakeServer, FrameKind, Matcher, Rule};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str) -> Client {
    try_connect(url).await.expect("connect")
}

async fn try_connect(url: &str) -> Result<Client, WsError> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    request
        .headers_mut()
        .insert("authorization", "Bearer secret".parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

async fn send(client: &mut Client, message: &ClientMessage) {
    client
        .send(Message::Text(shared_protocol::encode(message).into()))
        .await
        .unwrap();
}

/// The next text frame, decoded.
async fn receive(client: &mut Client) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(text) = frame {
            return shared_protocol::decode(text.as_str()).expect("a ServerMessage");
        }
    }
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

/// Runs `f` and returns its panic message (the fake fails tests by panicking).
async fn panic_message<F: std::future::Future<Output = ()> + Send + 'static>(f: F) -> String {
    let error = tokio::spawn(f).await.expect_err("should have panicked");
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_url_names_a_free_port_and_the_ws_path() {
    let a = FakePayments::start().await;
    let b = FakePayments::start().await;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("ws://127.0.0.1:{}/ws", a.port()));
}

#[tokio::test]
async fn auto_replies_walk_the_happy_path_and_expect_sees_each_message() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
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

    let event = conn.fulfill(order).await;
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
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let order = OrderId::new();
    send(&mut client, &initiate(order)).await;
    conn.expect(initiate_payment(order)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.next())
            .await
            .is_err(),
        "manual mode replied"
    );

    conn.send(ServerMessage::PaymentMethods {
        order_id: order,
        methods: vec!["paypal".into()],
    })
    .await;
    assert!(
        matches!(receive(&mut client).await, ServerMessage::PaymentMethods { methods, .. } if methods == ["paypal"])
    );
    conn.send_text("not json").await;
    conn.send_binary(vec![1, 2, 3]).await;
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
            .expect(1),
        )
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    send(&mut client, &initiate(order)).await;
    assert!(matches!(
        receive(&mut client).await,
        ServerMessage::Error { .. }
    ));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());

    // A rule that should have fired twice is reported.
    let strict = FakePayments::builder()
        .rule(Rule::when(any(), |_| Vec::new()).expect(2))
        .start()
        .await;
    let mut client = connect(&strict.url()).await;
    let conn = strict.next_connection().await;
    send(&mut client, &initiate(order)).await;
    conn.wait_for_frames(1).await;
    drop(client);
    let message = panic_message(async move { drop(strict) }).await;
    assert!(message.contains("fired 1 times, expected 2"), "{message}");
}

#[tokio::test]
async fn a_delayed_rule_answers_later() {
    let order = OrderId::new();
    let fake = FakePayments::builder()
        .rule(
            Rule::when(initiate_payment(order), move |_| {
                vec![ServerMessage::PaymentMethods {
                    order_id: order,
                    methods: vec!["paypal".into()],
                }]
            })
            .delay(Duration::from_millis(300)),
        )
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    send(&mut client, &initiate(order)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), client.next())
            .await
            .is_err(),
        "answered before the delay"
    );
    assert!(matches!(
        receive(&mut client).await,
        ServerMessage::PaymentMethods { .. }
    ));
}

#[tokio::test]
async fn expect_times_out_with_the_matcher_the_deadline_and_the_transcript() {
    let message = panic_message(async {
        let fake = FakePayments::start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        send(
            &mut client,
            &ClientMessage::Ack {
                event_id: EventId(9),
            },
        )
        .await;
        conn.expect_within(cancel_payment(nil()), Duration::from_millis(300))
            .await;
    })
    .await;
    assert!(
        message.contains(
            "expected cancel_payment for 00000000-0000-0000-0000-000000000000 within 300ms"
        ),
        "{message}"
    );
    assert!(
        message.contains(r#"{"type":"ack","event_id":9}"#),
        "no transcript in: {message}"
    );
    assert!(
        message.contains("fake_server.rs"),
        "does not point at the test: {message}"
    );
}

#[tokio::test]
async fn expect_silence_fails_when_the_client_speaks() {
    let fake = FakePayments::builder().lenient().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.expect_silence(Duration::from_millis(200)).await;

    let message = panic_message(async move {
        let speaker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            send(
                &mut client,
                &ClientMessage::Ack {
                    event_id: EventId(1),
                },
            )
            .await;
            client
        });
        conn.expect_silence(Duration::from_secs(3)).await;
        drop(speaker);
    })
    .await;
    assert!(message.contains("expected silence"), "{message}");
}

#[tokio::test]
async fn close_sends_the_code_and_abort_resets_the_connection() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.close(4001, "bye").await;
    match client.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.abort().await;
    match client.next().await {
        Some(Err(_)) | None => {}
        Some(Ok(frame)) => panic!("expected a reset, got {frame:?}"),
    }
    assert!(!conn.is_open());
}

#[tokio::test]
async fn wait_closed_reports_the_clients_close_code() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    assert!(conn.is_open());
    client
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1001.into(),
            reason: "going away".into(),
        }))
        .await
        .unwrap();
    assert_eq!(conn.wait_closed().await, Some(1001));
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_listens_on_the_same_port() {
    let fake = FakePayments::start().await;
    let url = fake.url();
    let mut client = connect(&url).await;
    let _conn = fake.next_connection().await;

    fake.stop().await;
    match client.next().await {
        Some(Err(_)) | None => {}
        Some(Ok(frame)) => panic!("the connection survived stop: {frame:?}"),
    }
    assert!(try_connect(&url).await.is_err(), "connected while stopped");

    fake.restart().await;
    let _client = connect(&url).await;
    let conn = fake.next_connection().await;
    assert_eq!(conn.index(), 1);
    assert_eq!(fake.connection_count(), 2);
}

#[tokio::test]
async fn rejected_handshakes_get_the_status_and_are_logged_with_their_time() {
    let fake = FakePayments::start().await;
    fake.reject_next_handshakes(2, 401);
    for _ in 0..2 {
        match try_connect(&fake.url()).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    let _client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].rejected_with(), Some(401));
    assert_eq!(attempts[1].rejected_with(), Some(401));
    assert_eq!(attempts[2].rejected_with(), None);
    assert!(attempts[0].at() <= attempts[1].at() && attempts[1].at() <= attempts[2].at());
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
async fn a_stalled_connection_answers_no_ping() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;

    client
        .send(Message::Ping(b"1".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap();
    assert!(matches!(pong, Some(Ok(Message::Pong(_)))), "{pong:?}");

    conn.stop_answering_pings();
    // Taken before any frame the client writes from now on: this ping goes unanswered.
    client
        .send(Message::Ping(b"2".to_vec().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_millis(500), client.next()).await;
    assert!(answer.is_err(), "a stalled fake answered: {answer:?}");
}

/// Writes `initiate_payment` frames until one has not gone out after 500 ms: the socket
/// buffers are full. Returns the frames that went out, and the blocked write.
async fn write_until_blocked(
    mut sink: futures_util::stream::SplitSink<Client, Message>,
) -> (
    Vec<OrderId>,
    tokio::task::JoinHandle<futures_util::stream::SplitSink<Client, Message>>,
    OrderId,
) {
    let mut written = Vec::new();
    loop {
        assert!(
            written.len() < 100_000,
            "wrote {} frames and the fake's socket never filled",
            written.len()
        );
        let order = OrderId::new();
        let mut write = tokio::spawn(async move {
            let text = shared_protocol::encode(&initiate(order));
            sink.send(Message::Text(text.into())).await.unwrap();
            sink
        });
        match tokio::time::timeout(Duration::from_millis(500), &mut write).await {
            Ok(done) => {
                sink = done.unwrap();
                written.push(order);
            }
            Err(_) => return (written, write, order),
        }
    }
}

#[tokio::test]
async fn a_connection_that_stops_reading_blocks_the_clients_writes_until_it_resumes() {
    let fake = FakePayments::builder()
        .manual()
        .small_socket_buffers()
        .start()
        .await;
    let client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.stop_reading().await;

    let (sink, _stream) = client.split();
    let (written, blocked, last) = write_until_blocked(sink).await;
    // Small buffers: blocked after tens of KiB (some 120 bytes a frame), not MiB.
    assert!(
        written.len() < 4000,
        "{} frames went out before the client blocked",
        written.len()
    );
    // Nothing was read meanwhile.
    assert!(conn.transcript().is_empty(), "{:?}", conn.transcript());

    conn.resume_reading().await;
    let _sink = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("the client's write still blocked after the fake resumed reading")
        .unwrap();
    for order in written.into_iter().chain([last]) {
        conn.expect(initiate_payment(order)).await;
    }
}

#[tokio::test]
async fn a_fake_that_does_not_read_sees_the_client_leave_when_its_ping_fails() {
    let fake = FakePayments::builder()
        .manual()
        .small_socket_buffers()
        .start()
        .await;
    let client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.stop_reading().await;
    conn.ping_every(Duration::from_millis(50)).await;

    let (sink, mut stream) = client.split();
    // The pings reach the client while the fake reads nothing.
    let frame = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a ping within 5 s");
    assert!(matches!(frame, Some(Ok(Message::Ping(_)))), "{frame:?}");
    // Like a client that gives up on a write: it drops the socket with data unsent.
    let (_, blocked, _) = write_until_blocked(sink).await;
    blocked.abort();
    let _ = blocked.await;
    drop(stream);

    // Never read, so only a failed ping can tell the fake.
    assert_eq!(conn.wait_closed().await, None);
    assert!(!conn.is_open());
    let pings = conn
        .transcript()
        .iter()
        .filter(|e| e.direction == Direction::ToClient && matches!(e.frame, FrameKind::Ping(_)))
        .count();
    assert!(pings >= 1, "{:?}", conn.transcript());
}

#[tokio::test]
async fn an_unread_message_fails_the_test_at_drop() {
    let fake = FakePayments::builder().manual().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &initiate(nil())).await;
    send(
        &mut client,
        &ClientMessage::Ack {
            event_id: EventId(3),
        },
    )
    .await;
    conn.expect(ack_of(EventId(3))).await;
    let message = panic_message(async move { drop(fake) }).await;
    assert!(
        message.contains("no expectation or rule looked at"),
        "{message}"
    );
    assert!(message.contains("initiate_payment"), "{message}");
    assert!(
        message.contains("fake_server.rs"),
        "does not point at where the fake started: {message}"
    );
}

#[tokio::test]
async fn a_frame_outside_the_protocol_is_a_contract_violation_even_when_lenient() {
    let fake = FakePayments::builder().lenient().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    client
        .send(Message::Text(json!({"type": "refund"}).to_string().into()))
        .await
        .unwrap();
    client.send(Message::Binary(vec![0].into())).await.unwrap();
    conn.wait_for_frames(2).await;
    let problems = fake.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("contract violation") && problems[0].contains("refund"));
    assert!(problems[1].contains("binary"));
    let message = panic_message(async move { drop(fake) }).await;
    assert!(message.contains("contract violation"), "{message}");
}

#[tokio::test]
async fn allowed_messages_and_recv_keep_a_strict_fake_quiet() {
    let fake = FakePayments::builder().manual().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let order = OrderId::new();
    conn.allow(initiate_payment(order));
    send(&mut client, &initiate(order)).await;
    send(
        &mut client,
        &ClientMessage::CancelPayment { order_id: order },
    )
    .await;
    assert_eq!(conn.recv().await, Some(initiate(order)));
    assert_eq!(
        conn.recv().await,
        Some(ClientMessage::CancelPayment { order_id: order })
    );
    drop(client);
    assert_eq!(conn.recv().await, None, "closed and drained");
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn a_duplicate_event_can_be_built_once_and_sent_twice() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let event = fake.payment_state(nil(), PaymentOutcome::Fulfill, None);
    conn.send(event.clone()).await;
    conn.send(event.clone()).await;
    assert_eq!(receive(&mut client).await, event);
    assert_eq!(receive(&mut client).await, event);
}

#[tokio::test]
async fn the_generic_core_serves_any_serde_protocol() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    struct Ping {
        n: u32,
    }
    let fake: FakeServer<Ping, Ping> = FakeServer::builder()
        .path("/echo")
        .on(Matcher::new("any ping", |_: &Ping| true), |p: &Ping| {
            vec![Ping { n: p.n + 1 }]
        })
        .start()
        .await;
    assert!(fake.url().ends_with("/echo"));
    let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    let conn = fake.next_connection().await;
    client
        .send(Message::Text(r#"{"n": 1}"#.into()))
        .await
        .unwrap();
    let reply = client.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::Text(r#"{"n":2}"#.into()));
    assert_eq!(
        conn.expect(Matcher::new("n = 1", |p: &Ping| p.n == 1))
            .await,
        Ping { n: 1 }
    );
}

#[test]
fn it_works_without_any_async_runtime_of_the_caller() {
    // A plain #[test] driving the fake with the futures executor: every wait is timed
    // on the fake's own runtime.
    futures_executor::block_on(async {
        let fake = FakePayments::builder().manual().start().await;
        let url = fake.url();
        // The client needs a tokio runtime of its own; the fake does not.
        let client = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut client = connect(&url).await;
                send(
                    &mut client,
                    &ClientMessage::Ack {
                        event_id: EventId(5),
                    },
                )
                .await;
                client
            })
        });
        let conn = fake.next_connection().await;
        conn.expect(ack_of(EventId(5))).await;
        conn.expect_silence(Duration::from_millis(50)).await;
        drop(client.join().unwrap());
    });
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<FakePayments>();
    // The futures a test awaits can move across threads (e.g. into tokio::spawn).
    let fake = futures_executor::block_on(FakePayments::start());
    assert_send(&fake.next_connection_within(Duration::from_millis(1)));
    assert_send_sync::<test_harness::payments::PaymentsConnection>();
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
        .times(2)
        .delay(Duration::from_millis(200))
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &initiate(order)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), client.next())
            .await
            .is_err(),
        "answered before the delay"
    );
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
async fn expect_takes_the_first_match_and_leaves_earlier_frames_for_later() {
    let fake = FakePayments::builder().manual().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let (a, b) = (OrderId::new(), OrderId::new());
    send(&mut client, &initiate(a)).await;
    send(&mut client, &initiate(b)).await;
    conn.expect(initiate_payment(b)).await;
    assert_eq!(conn.expect(any()).await, initiate(a));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn a_failing_test_is_not_masked_by_a_second_panic_at_drop() {
    // Had the fake panicked again while unwinding, the process would abort here.
    let message = panic_message(async {
        let fake = FakePayments::builder().manual().start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        send(&mut client, &initiate(nil())).await;
        conn.wait_for_frames(1).await;
        assert!(!fake.problems().is_empty());
        panic!("the test's own failure");
    })
    .await;
    assert_eq!(message, "the test's own failure");
}

#[tokio::test]
async fn dropping_the_last_connection_handle_reports_its_unread_frames_once() {
    let fake = FakePayments::builder().manual().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let line = line!() - 1;
    let clone = conn.clone();
    send(&mut client, &initiate(nil())).await;
    conn.wait_for_frames(1).await;
    drop(clone);
    let message = panic_message(async move { drop(conn) }).await;
    assert!(
        message.contains("no expectation or rule looked at"),
        "{message}"
    );
    assert!(
        message.contains(&format!("fake_server.rs:{line}:")),
        "does not point at next_connection: {message}"
    );
    // Already reported: the fake itself has nothing more to say.
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn an_invalid_frame_can_be_expected_instead_of_failing_the_test() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    client
        .send(Message::Text(r#"{"type":"refund"}"#.into()))
        .await
        .unwrap();
    client.send(Message::Binary(vec![7].into())).await.unwrap();
    let first = conn.expect_invalid().await;
    assert_eq!(first.frame, FrameKind::Text(r#"{"type":"refund"}"#.into()));
    assert!(!first.error.is_empty());
    assert_eq!(
        conn.expect_invalid().await.frame,
        FrameKind::Binary(vec![7])
    );
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn an_oversize_frame_reaches_the_client_whole() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.send_oversize().await;
    match client.next().await.unwrap().unwrap() {
        Message::Text(text) => assert_eq!(text.len(), shared_protocol::MAX_MESSAGE_BYTES + 1),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_transcript_holds_both_directions_in_order() {
    let fake = FakePayments::start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let order = OrderId::new();
    send(&mut client, &initiate(order)).await;
    receive(&mut client).await;
    conn.expect(initiate_payment(order)).await;
    client.close(None).await.unwrap();
    assert_eq!(conn.wait_closed().await, None);
    let transcript = conn.transcript();
    let directions: Vec<_> = transcript.iter().map(|e| e.direction).collect();
    assert_eq!(
        directions[..3],
        [
            Direction::FromClient,
            Direction::ToClient,
            Direction::FromClient
        ]
    );
    assert!(matches!(&transcript[0].frame, FrameKind::Text(t) if t.contains("initiate_payment")));
    assert!(matches!(&transcript[1].frame, FrameKind::Text(t) if t.contains("payment_methods")));
    assert!(matches!(
        transcript[2].frame,
        FrameKind::Close { code: None, .. }
    ));
    assert!(transcript.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(!conn.is_open());
}

#[tokio::test]
async fn stop_logs_no_attempt_of_its_own_and_refuses_until_restart() {
    let fake = FakePayments::start().await;
    let url = fake.url();
    let mut first = connect(&url).await;
    let conn = fake.next_connection().await;
    fake.stop().await;
    // The client sees a reset (or at least the end of the stream), never a close frame.
    match first.next().await {
        Some(Err(_)) | None => {}
        Some(Ok(frame)) => panic!("expected a reset, got {frame:?}"),
    }
    assert!(!conn.is_open());
    match try_connect(&url).await {
        Err(WsError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected connection refused, got {other:?}"),
    }
    assert_eq!(fake.attempts().len(), 1, "{:#?}", fake.attempts());

    fake.restart().await;
    let mut second = connect(&url).await;
    let conn = fake.next_connection().await;
    let order = OrderId::new();
    send(&mut second, &initiate(order)).await;
    assert!(matches!(
        receive(&mut second).await,
        ServerMessage::PaymentMethods { .. }
    ));
    conn.expect(initiate_payment(order)).await;
    fake.shutdown().await;
    assert!(matches!(second.next().await, Some(Err(_)) | None));
}

#[tokio::test]
async fn payment_ids_survive_a_restart() {
    let fake = FakePayments::start().await;
    let order = OrderId::new();
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    let select = ClientMessage::SelectPaymentMethod {
        order_id: order,
        method: "paypal".into(),
    };
    send(&mut client, &select).await;
    let before = receive(&mut client).await;
    fake.stop().await;
    fake.restart().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
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
    let cancelled = conn.cancel(order, CancelReason::Customer).await;
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

#[test]
fn it_works_on_a_runtime_without_a_timer() {
    // Like actix's or a minimal executor: the caller's runtime has no time driver, so
    // every deadline must be timed on the fake's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = FakePayments::start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection_within(Duration::from_secs(2)).await;
        let order = OrderId::new();
        send(&mut client, &initiate(order)).await;
        conn.expect_within(initiate_payment(order), Duration::from_secs(2))
            .await;
        conn.expect_silence(Duration::from_millis(20)).await;
        conn.close(1000, "done").await;
        fake.shutdown().await;
    });
}
