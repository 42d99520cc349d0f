//! Closing: the fake's close frame and abort, the client's close, stop and restart.

mod common;

use common::*;
use fake_ws_server::{AttemptOutcome, Closed, Direction, FrameKind, SendError};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[tokio::test]
async fn close_sends_the_code_and_abort_resets_the_connection() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.close(4001, "bye").await.unwrap();
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
    assert_eq!(
        conn.wait_closed().await,
        Closed::Frame {
            code: 1001,
            reason: "going away".into()
        }
    );
}

#[tokio::test]
async fn the_fake_answers_the_clients_close_frame_before_it_ends_the_connection() {
    // The close handshake a client sees: its close frame is answered with the same
    // code, then the TCP connection ends (not a reset without a closing handshake).
    let fake = Fake::builder().start().await;
    for close in [
        Some(CloseFrame {
            code: 4000.into(),
            reason: "done".into(),
        }),
        None,
    ] {
        let (mut client, conn) = open(&fake).await;
        client.close(close.clone()).await.unwrap();
        match client.next().await {
            Some(Ok(Message::Close(answer))) => assert_eq!(answer, close),
            other => panic!("expected the fake's close frame, got {other:?}"),
        }
        assert!(client.next().await.is_none());
        assert_eq!(
            conn.wait_closed().await.code(),
            Some(4000).filter(|_| close.is_some())
        );
    }
}

#[tokio::test]
async fn wait_closed_tells_a_close_without_code_a_drop_and_an_abort_apart() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    client.close(None).await.unwrap();
    assert_eq!(conn.wait_closed().await, Closed::FrameWithoutCode);
    assert_eq!(conn.wait_closed().await.code(), None);

    let client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    drop(client);
    assert_eq!(conn.wait_closed().await, Closed::Dropped);

    let _client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.abort().await;
    assert_eq!(conn.wait_closed().await, Closed::Aborted);

    let _client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    fake.stop().await;
    assert_eq!(conn.wait_closed().await, Closed::Aborted);
}

/// The frames the fake wrote to the client, as the transcript has them.
fn sent(conn: &fake_ws_server::Connection<Up, Down>) -> Vec<FrameKind> {
    conn.transcript()
        .into_iter()
        .filter(|e| e.direction == Direction::ToClient)
        .map(|e| e.frame)
        .collect()
}

#[tokio::test]
async fn sending_on_a_closed_connection_is_an_error_and_not_in_the_transcript() {
    let fake = Fake::builder().start().await;
    let price = Down::Price {
        topic: "btc".into(),
        price: 1,
    };

    // The client closed it.
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    client
        .close(Some(CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        }))
        .await
        .unwrap();
    let closed = conn.wait_closed().await;
    assert_eq!(
        conn.send(price.clone()).await,
        Err(SendError::Closed(closed.clone()))
    );
    assert_eq!(
        conn.send_text("x").await,
        Err(SendError::Closed(closed.clone()))
    );
    assert_eq!(
        conn.send_binary(vec![1]).await,
        Err(SendError::Closed(closed.clone()))
    );
    assert_eq!(conn.close(1000, "").await, Err(SendError::Closed(closed)));
    assert!(
        sent(&conn)
            .iter()
            .all(|f| matches!(f, FrameKind::Close { .. })),
        "{:?}",
        conn.transcript()
    );

    // The fake aborted it.
    let _client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.send(price.clone()).await.unwrap();
    conn.abort().await;
    assert_eq!(
        conn.send(price.clone()).await,
        Err(SendError::Closed(Closed::Aborted))
    );
    assert_eq!(sent(&conn).len(), 1, "{:?}", conn.transcript());

    // The fake sent its close frame: nothing may follow it.
    let _client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.close(4000, "bye").await.unwrap();
    let after = conn.send(price).await;
    assert!(
        matches!(after, Err(SendError::Closing | SendError::Closed(_))),
        "{after:?}"
    );
    assert_eq!(
        sent(&conn),
        [FrameKind::Close {
            code: Some(4000),
            reason: "bye".into()
        }]
    );
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
    // The fake records the try a moment after the client saw the reset: wait for it.
    let attempts = fake.wait_for_attempts(2).await;
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
