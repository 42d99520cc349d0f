//! Closing: the fake's close frame and abort, the client's close, stop and restart.

mod common;

use common::*;
use fake_ws_server::AttemptOutcome;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn close_sends_the_code_and_abort_resets_the_connection() {
    let fake = Fake::builder().start().await;
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
    let fake = Fake::builder().start().await;
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
    let fake = Fake::builder().start().await;
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
async fn stop_logs_no_attempt_of_its_own_and_refuses_each_try_until_restart() {
    let fake = Fake::builder()
        .on(any_subscribe(), subscribed)
        .start()
        .await;
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
    // The port stays bound: the try is accepted and reset at once (not ECONNREFUSED),
    // and recorded as the client's attempt.
    match try_connect(&url).await {
        Err(WsError::Io(e)) => assert_ne!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Err(_) => {}
        Ok(_) => panic!("connected while stopped"),
    }
    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[1].outcome(), &AttemptOutcome::Refused);

    fake.restart().await;
    let mut second = connect(&url).await;
    let conn = fake.next_connection().await;
    send(&mut second, &subscribe("btc")).await;
    assert!(matches!(
        receive(&mut second).await,
        Down::Subscribed { .. }
    ));
    conn.expect(subscribe_to("btc")).await;
    fake.shutdown().await;
    assert!(matches!(second.next().await, Some(Err(_)) | None));
}
