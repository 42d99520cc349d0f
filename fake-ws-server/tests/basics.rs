//! The basics, driven by a plain tokio-tungstenite client: the URL, sending typed and
//! raw frames, the handshake, the transcript, and running under any executor.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{Closed, Direction, FakeServer, FrameKind, Matcher};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn the_url_names_a_free_port_and_the_ws_path() {
    let a = Fake::builder().start().await;
    let b = Fake::builder().start().await;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("ws://127.0.0.1:{}/ws", a.port()));
}

#[tokio::test]
async fn typed_and_raw_frames_reach_the_client_and_nothing_is_sent_unasked() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    conn.expect(subscribe_to("btc")).await;
    assert_no_frame(
        &mut client,
        Duration::from_millis(200),
        "a fake without rules replied",
    )
    .await;

    conn.send(Down::Price {
        topic: "btc".into(),
        price: 7,
    })
    .await
    .unwrap();
    assert_eq!(
        receive(&mut client).await,
        Down::Price {
            topic: "btc".into(),
            price: 7
        }
    );
    conn.send_text("not json").await.unwrap();
    conn.send_binary(vec![1, 2, 3]).await.unwrap();
    let frame = client.next().await.unwrap().unwrap();
    assert_eq!(frame, Message::Text("not json".into()));
    let frame = client.next().await.unwrap().unwrap();
    assert_eq!(frame, Message::Binary(vec![1, 2, 3].into()));
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
    let (mut client, conn) = open(&fake).await;
    send_frame(&mut client, Message::Text(r#"{"n": 1}"#.into())).await;
    let reply = client.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::Text(r#"{"n":2}"#.into()));
    assert_eq!(
        conn.expect(Matcher::new("n = 1", |p: &Ping| p.n == 1))
            .await,
        Ping { n: 1 }
    );
}

#[tokio::test]
async fn rejected_handshakes_get_the_status_and_are_logged_with_their_time() {
    let fake = Fake::builder().start().await;
    fake.reject_next_handshakes(2, 401);
    for _ in 0..2 {
        match try_connect(&fake.url()).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    let (_client, _conn) = open(&fake).await;
    let attempts = fake.wait_for_attempts(3).await;
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].rejected_with(), Some(401));
    assert_eq!(attempts[1].rejected_with(), Some(401));
    assert_eq!(attempts[2].rejected_with(), None);
    assert!(attempts[0].at() <= attempts[1].at() && attempts[1].at() <= attempts[2].at());
}

#[tokio::test]
async fn the_handshake_can_be_inspected_and_the_subprotocol_is_selected() {
    let fake = Fake::builder().subprotocol("prices.v1").start().await;
    let mut request = fake.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "other, prices.v1".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("Authorization", "Bearer t0ken".parse().unwrap());
    let (_client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "prices.v1");
    let conn = fake.next_connection().await;
    assert_eq!(conn.request().header("authorization"), Some("Bearer t0ken"));
    assert_eq!(conn.request().subprotocols(), ["other", "prices.v1"]);
    assert_eq!(conn.request().path(), "/ws");

    match try_connect(&fake.url().replace("/ws", "/elsewhere")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn the_transcript_holds_both_directions_in_order() {
    let fake = Fake::builder()
        .on(any_subscribe(), subscribed)
        .start()
        .await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    receive(&mut client).await;
    client.close(None).await.unwrap();
    assert_eq!(conn.wait_closed().await, Closed::FrameWithoutCode);
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
    assert!(matches!(&transcript[0].frame, FrameKind::Text(t) if t.contains("subscribe")));
    assert!(matches!(&transcript[1].frame, FrameKind::Text(t) if t.contains("subscribed")));
    assert!(matches!(
        transcript[2].frame,
        FrameKind::Close { code: None, .. }
    ));
    assert!(transcript.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(!conn.is_open());
}

#[test]
fn it_works_without_any_async_runtime_of_the_caller() {
    // A plain #[test] driving the fake with the futures executor: every wait is timed
    // on the fake's own runtime.
    futures_executor::block_on(async {
        let fake = Fake::builder().start().await;
        let url = fake.url();
        // The client needs a tokio runtime of its own; the fake does not.
        let client = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut client = connect(&url).await;
                send(&mut client, &Up::Ack { id: 5 }).await;
                client
            })
        });
        let conn = fake.next_connection().await;
        conn.expect(ack_of(5)).await;
        conn.expect_silence(Duration::from_millis(50)).await;
        drop(client.join().unwrap());
    });
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
        let fake = Fake::builder().start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection_within(Duration::from_secs(2)).await;
        send(&mut client, &subscribe("eth")).await;
        conn.expect_within(subscribe_to("eth"), Duration::from_secs(2))
            .await;
        conn.expect_silence(Duration::from_millis(20)).await;
        conn.close(1000, "done").await.unwrap();
        fake.shutdown().await;
    });
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<Fake>();
    // The futures a test awaits can move across threads (e.g. into tokio::spawn).
    let fake = futures_executor::block_on(Fake::builder().start());
    assert_send(&fake.next_connection_within(Duration::from_millis(1)));
    assert_send_sync::<fake_ws_server::Connection<Up, Down>>();
}

#[tokio::test]
async fn the_query_of_the_upgrade_is_kept_and_json_needs_no_turbofish() {
    let fake = FakeServer::json().start().await;
    let _client = connect(format!("{}?token=abc&v=2", fake.url())).await;
    let conn = fake.next_connection().await;
    assert_eq!(conn.request().path(), "/ws");
    assert_eq!(conn.request().query(), Some("token=abc&v=2"));
    let _plain = connect(fake.url()).await;
    assert_eq!(fake.next_connection().await.request().query(), None);
}

#[tokio::test]
async fn the_101_carries_the_builders_headers() {
    let fake = Fake::builder()
        .response_header("x-session", "s-42")
        .start()
        .await;
    let (_client, response) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-session"], "s-42");
    fake.next_connection().await;
}

#[tokio::test]
async fn a_broadcast_reaches_every_open_connection() {
    let fake = Fake::builder().start().await;
    let (mut first, _conn) = open(&fake).await;
    let (mut second, other) = open(&fake).await;
    let price = Down::Price {
        topic: "btc".into(),
        price: 7,
    };
    assert_eq!(fake.broadcast(price.clone()).await, 2);
    assert_eq!(receive(&mut first).await, price);
    assert_eq!(receive(&mut second).await, price);

    second.close(None).await.unwrap();
    other.wait_closed().await;
    assert_eq!(fake.broadcast(price.clone()).await, 1);
    assert_eq!(receive(&mut first).await, price);
}

#[tokio::test]
async fn one_fake_serves_more_than_one_path() {
    let fake = Fake::builder()
        .path("/prices")
        .also_path("/orders")
        .start()
        .await;
    assert_eq!(fake.url(), fake.url_for("/prices"));
    let _prices = connect(fake.url()).await;
    let _orders = connect(fake.url_for("/orders")).await;
    assert_eq!(fake.next_connection().await.request().path(), "/prices");
    assert_eq!(fake.next_connection().await.request().path(), "/orders");
    match try_connect(fake.url_for("/elsewhere")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}
