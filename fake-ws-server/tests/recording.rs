//! The recording proxy: between a client and a real server (here, a fake playing one),
//! it forwards both ways and records every frame; past its limits it stops with a
//! clear error.

use fake_ws_server::testing::{connect, receive_text, send_frame};
use fake_ws_server::{
    FakeServer, RecordedKind, Recording, RecordingError, RecordingProxy, Rule, Sender,
    json_includes,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The "real" server: greets, answers a join, and wants the subprotocol and token.
async fn upstream() -> FakeServer<Value, Value> {
    FakeServer::json()
        .subprotocol("chat.v1")
        .rule(Rule::when(json_includes!({"type": "join"}), |m: &Value| {
            vec![json!({"type": "joined", "room": m["room"]})]
        }))
        .start()
        .await
}

#[tokio::test]
async fn the_proxy_forwards_both_ways_and_records_every_frame() {
    let server = upstream().await;
    let proxy = RecordingProxy::builder(server.url()).start().await;
    assert!(proxy.url().ends_with("/ws"), "{}", proxy.url());

    let mut request = proxy.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    request
        .headers_mut()
        .insert("authorization", "Bearer t".parse().unwrap());
    let mut client = connect(request).await;
    let conn = server.next_connection().await;
    // The client's handshake headers reached the upstream.
    assert_eq!(conn.request().header("authorization"), Some("Bearer t"));
    conn.send(json!({"type": "welcome"})).await.unwrap();
    assert_eq!(receive_text(&mut client).await, r#"{"type":"welcome"}"#);
    send_frame(
        &mut client,
        Message::text(r#"{"type":"join","room":"rust"}"#),
    )
    .await;
    assert_eq!(
        receive_text(&mut client).await,
        r#"{"room":"rust","type":"joined"}"#
    );
    send_frame(&mut client, Message::binary(vec![0u8, 1, 255])).await;
    conn.wait_for_frames(4).await;
    let binary = conn.transcript()[3].frame.clone();
    assert_eq!(binary, fake_ws_server::FrameKind::Binary(vec![0, 1, 255]));
    conn.expect_invalid().await; // JSON in text frames: the binary one is not a message
    send_frame(&mut client, Message::Close(None)).await;
    assert!(client.next().await.is_some_and(|f| f.unwrap().is_close()));
    proxy.wait_for_frames(6).await;

    let recording = proxy.recording().unwrap();
    let seen: Vec<(Sender, RecordedKind)> = recording
        .frames()
        .iter()
        .map(|f| (f.from, f.kind.clone()))
        .collect();
    let text = |t: &str| RecordedKind::Text { text: t.to_owned() };
    assert_eq!(
        seen[..4],
        [
            (Sender::Server, text(r#"{"type":"welcome"}"#)),
            (Sender::Client, text(r#"{"type":"join","room":"rust"}"#)),
            (Sender::Server, text(r#"{"room":"rust","type":"joined"}"#)),
            (
                Sender::Client,
                RecordedKind::Binary {
                    bytes: vec![0, 1, 255]
                }
            ),
        ]
    );
    assert!(matches!(
        seen[4],
        (Sender::Client, RecordedKind::Close { code: None, .. })
    ));
    assert!(recording.frames().iter().all(|f| f.connection == 0));
    assert!(
        recording
            .frames()
            .windows(2)
            .all(|w| w[0].at_ms <= w[1].at_ms)
    );

    // The file is JSON lines, binary as base64, and reads back the same.
    let path = std::env::temp_dir().join(format!("recording-{}.jsonl", std::process::id()));
    proxy.save(&path).unwrap();
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(
        file.contains(r#""from":"client","kind":"binary","base64":"AAH/""#),
        "{file}"
    );
    assert_eq!(Recording::load(&path).unwrap(), recording);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_frame_over_the_limit_stops_the_recording_with_a_clear_error() {
    let server = FakeServer::json().lenient().start().await;
    let proxy = RecordingProxy::builder(server.url())
        .max_frame_size(16)
        .start()
        .await;
    let mut client = connect(proxy.url()).await;
    let _conn = server.next_connection().await;
    send_frame(&mut client, Message::text(r#"{"a":"small"}"#)).await;
    send_frame(&mut client, Message::text(r#"{"a":"much too big for it"}"#)).await;
    // The proxy closes the client's connection with 1009.
    let close = loop {
        match client.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));
    let error = proxy.recording().unwrap_err();
    assert_eq!(
        error,
        RecordingError::FrameTooBig {
            connection: 0,
            from: Sender::Client,
            size: 27,
            max: 16
        }
    );
    assert!(
        error
            .to_string()
            .contains("over the recording's per-frame limit of 16 bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn a_recording_over_its_total_size_stops_with_a_clear_error() {
    let server = FakeServer::json().lenient().start().await;
    let proxy = RecordingProxy::builder(server.url())
        .max_total_size(150)
        .start()
        .await;
    let mut client = connect(proxy.url()).await;
    let _conn = server.next_connection().await;
    for _ in 0..3 {
        send_frame(&mut client, Message::text(r#"{"n":1}"#)).await;
    }
    while let Some(Ok(frame)) = client.next().await {
        if frame.is_close() {
            break;
        }
    }
    let error = proxy.recording().unwrap_err();
    assert_eq!(error, RecordingError::TooBig { max: 150 });
    assert!(error.to_string().contains("limit of 150 bytes"), "{error}");
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_error_and_closes_the_client_with_1011() {
    let server = FakeServer::json().start().await;
    let upstream = format!("ws://127.0.0.1:{}/nowhere", server.port()); // a 404
    let proxy = RecordingProxy::builder(upstream).start().await;
    let mut client = connect(proxy.url()).await;
    let frame = client.next().await.unwrap().unwrap();
    assert!(
        matches!(&frame, Message::Close(Some(f)) if u16::from(f.code) == 1011),
        "{frame:?}"
    );
    let error = proxy.recording().unwrap_err().to_string();
    assert!(error.contains("connection 0: the proxy could not connect to the upstream server: the upstream answered 404"), "{error}");
}

#[test]
fn a_line_that_is_not_a_frame_says_where() {
    let error = Recording::from_jsonl("\n{\"at_ms\":0}\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("the recording, line 2: not a recorded frame"),
        "{error}"
    );
}

#[tokio::test]
async fn an_upstream_that_hangs_is_given_up_after_the_deadline() {
    let server = FakeServer::json().start().await;
    server.hang_connections();
    let proxy = RecordingProxy::builder(server.url())
        .default_deadline(std::time::Duration::from_millis(200))
        .start()
        .await;
    let mut client = connect(proxy.url()).await;
    let frame = client.next().await.unwrap().unwrap();
    assert!(
        matches!(&frame, Message::Close(Some(f)) if u16::from(f.code) == 1011),
        "{frame:?}"
    );
    let error = proxy.recording().unwrap_err().to_string();
    assert!(
        error.ends_with("no WebSocket connection within 200ms"),
        "{error}"
    );
}
