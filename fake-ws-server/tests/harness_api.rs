//! The API for a harness that drives the fake on someone else's behalf (the standalone
//! `fake-ws-server` binary's admin API): a chosen address, handles looked up by index
//! that check nothing at drop, and `try_` waits that return the failure instead of
//! failing the test.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;
use fake_ws_server::{Closed, FakeServer, FrameKind, json_includes};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SHORT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn it_listens_on_the_chosen_port_and_again_after_unbind() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fake = FakeServer::json()
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .path("/")
        .start()
        .await;
    assert_eq!(fake.port(), port);
    assert_eq!(fake.url(), format!("ws://127.0.0.1:{port}/"));
    fake.unbind().await;
    fake.restart().await;
    let _client = connect(&fake.url()).await;
    fake.wait_for_connections(1).await;
}

#[tokio::test]
async fn a_handle_by_index_checks_nothing_at_drop() {
    let fake = FakeServer::json().start().await;
    assert!(fake.connection(0).is_none());
    let mut client = connect(&fake.url()).await;
    send_frame(&mut client, Message::text(r#"{"type":"hello"}"#)).await;
    fake.wait_for_connections(1).await;
    let conn = fake.connection(0).unwrap();
    conn.wait_for_frames(1).await;
    assert!(conn.is_open() && conn.closed().is_none());
    drop(conn); // no panic, though the hello is unread
    assert_eq!(fake.problems().len(), 1, "{:?}", fake.problems());
    // Not handed out by the lookup: next_connection still does.
    let conn = fake.next_connection().await;
    conn.expect(json_includes!({"type": "hello"})).await;
}

#[tokio::test]
async fn the_try_waits_return_the_failure_with_the_transcript() {
    let fake = FakeServer::json().start().await;
    let failure = fake.try_next_connection_within(SHORT).await.err().unwrap();
    assert!(
        failure.starts_with("no WebSocket connection within"),
        "{failure}"
    );
    assert!(
        fake.try_wait_for_connections_within(1, SHORT)
            .await
            .is_err()
    );

    let mut client = connect(&fake.url()).await;
    send_frame(
        &mut client,
        Message::text(r#"{"type":"say","text":"hello"}"#),
    )
    .await;
    let conn = fake.try_next_connection_within(SHORT).await.unwrap();
    assert_eq!(
        fake.try_wait_for_attempts_within(1, SHORT)
            .await
            .unwrap()
            .len(),
        1
    );
    conn.try_wait_for_frames_within(1, Duration::from_secs(5))
        .await
        .unwrap();
    let failure = conn.try_wait_for_frames_within(2, SHORT).await.unwrap_err();
    assert!(failure.contains("fewer than 2 frames"), "{failure}");
    let failure = conn
        .try_expect_within(json_includes!({"text": "hi"}), SHORT)
        .await
        .unwrap_err();
    assert!(
        failure.starts_with("expected a message including"),
        "{failure}"
    );
    assert!(failure.contains("client → fake  text"), "{failure}");
    let failure = conn
        .try_expect_next_within(json_includes!({"text": "hi"}), SHORT)
        .await
        .unwrap_err();
    assert!(failure.contains("but it was:"), "{failure}");
    let failure = conn.try_expect_invalid_within(SHORT).await.unwrap_err();
    assert!(
        failure.starts_with("expected a frame that is not a valid message"),
        "{failure}"
    );
    let failure = conn.try_expect_pong_within(SHORT).await.unwrap_err();
    assert!(failure.contains("needs a ping"), "{failure}");
    assert!(conn.try_wait_closed_within(SHORT).await.is_err());
    assert!(
        conn.try_recv_within(SHORT).await.is_err(),
        "the next one was taken"
    );

    send_frame(&mut client, Message::binary(vec![1, 2])).await;
    let invalid = conn
        .try_expect_invalid_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(invalid.frame, FrameKind::Binary(vec![1, 2]));

    conn.close(1000, "bye").await.unwrap();
    drop(client);
    let closed = conn
        .try_wait_closed_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!matches!(closed, Closed::Aborted), "{closed:?}");
    assert_eq!(conn.try_recv_within(SHORT).await, Ok(None));
}

#[tokio::test]
async fn the_greeting_comes_before_any_answer() {
    let fake = FakeServer::json()
        .on_connect(|request| vec![json!({"type": "welcome", "query": request.query()})])
        .on(json_includes!({"type": "ping"}), |_| {
            vec![json!({"type": "pong"})]
        })
        .start()
        .await;
    let mut client = connect(&format!("{}?v=2", fake.url())).await;
    // Sent before the client reads anything: the pong still comes after the welcome.
    send_frame(&mut client, Message::text(r#"{"type":"ping"}"#)).await;
    assert_eq!(
        receive_text(&mut client).await,
        r#"{"query":"v=2","type":"welcome"}"#
    );
    assert_eq!(receive_text(&mut client).await, r#"{"type":"pong"}"#);
    fake.wait_for_connections(1).await;
}
