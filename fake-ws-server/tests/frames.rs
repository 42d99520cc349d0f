//! Protocol controls: the fake's own ping and the client's pong, a message sent in
//! fragments, and the maximum frame and message size (close 1009, recorded).

mod common;

use std::time::Duration;

use common::{Client, Down, Fake, connect, panic_message, send, subscribe};
use fake_ws_server::{Direction, FrameKind};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Reads the client's stream in the background (tungstenite answers pings only while
/// reading) and hands on every frame.
fn keep_reading(mut client: Client) -> tokio::sync::mpsc::Receiver<Message> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = client.next().await {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn the_fake_pings_and_the_clients_pong_comes_back_with_its_round_trip_time() {
    let server = Fake::builder().start().await;
    let client = connect(&server.url()).await;
    let conn = server.next_connection().await;
    let _frames = keep_reading(client);

    conn.ping(b"are you there".to_vec()).await;
    conn.ping(b"second".to_vec()).await;
    let first = conn.expect_pong().await;
    let second = conn.expect_pong_within(Duration::from_secs(5)).await;
    assert!(first < Duration::from_secs(5) && second < Duration::from_secs(5));

    let transcript = conn.transcript();
    let sent: Vec<_> = transcript
        .iter()
        .filter(|e| e.direction == Direction::ToClient)
        .map(|e| e.frame.clone())
        .collect();
    assert_eq!(
        sent,
        [
            FrameKind::Ping(b"are you there".to_vec()),
            FrameKind::Ping(b"second".to_vec())
        ]
    );
    assert!(
        transcript
            .iter()
            .any(|e| e.direction == Direction::FromClient
                && e.frame == FrameKind::Pong(b"second".to_vec()))
    );
}

#[tokio::test]
async fn a_missing_pong_fails_with_the_transcript() {
    let message = panic_message(async {
        let server = Fake::builder().start().await;
        // Connected, but never read: tungstenite answers no ping.
        let _client = connect(&server.url()).await;
        let conn = server.next_connection().await;
        conn.ping(b"hello".to_vec()).await;
        conn.expect_pong_within(Duration::from_millis(300)).await;
    })
    .await;
    assert!(message.contains("expected a pong"), "{message}");
    assert!(message.contains("fake → client  ping"), "{message}");
}

#[tokio::test]
async fn expect_pong_without_a_ping_says_to_ping_first() {
    let message = panic_message(async {
        let server = Fake::builder().start().await;
        let _client = connect(&server.url()).await;
        let conn = server.next_connection().await;
        conn.expect_pong().await;
    })
    .await;
    assert!(message.contains("conn.ping(payload)"), "{message}");
}

#[tokio::test]
async fn a_message_sent_in_fragments_arrives_whole() {
    let server = Fake::builder().start().await;
    // A client that takes no frame over 16 bytes: only a fragmented message gets through.
    let config = WebSocketConfig::default().max_frame_size(Some(16));
    let (client, _) =
        tokio_tungstenite::connect_async_with_config(server.url(), Some(config), false)
            .await
            .expect("connect");
    let conn = server.next_connection().await;
    let mut frames = keep_reading(client);

    let price = Down::Price {
        topic: "prices/ACME".into(),
        price: 12_345,
    };
    conn.send_fragmented(price.clone(), 10).await;
    let whole = serde_json::to_string(&price).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), frames.recv())
        .await
        .expect("a message within 5 s")
        .expect("open");
    assert_eq!(got, Message::Text(whole.clone().into()));

    // Raw text, split inside a two-byte character: only the whole must be UTF-8.
    conn.send_text_fragmented("prix: 12 €, ça va", 3).await;
    let got = tokio::time::timeout(Duration::from_secs(5), frames.recv())
        .await
        .expect("a message within 5 s")
        .expect("open");
    assert_eq!(got, Message::Text("prix: 12 €, ça va".into()));

    let entry = &conn.transcript()[0];
    assert_eq!(entry.frame, FrameKind::Text(whole.clone()));
    let fragments = whole.len().div_ceil(10);
    assert_eq!(
        entry.note.as_deref(),
        Some(format!("sent in {fragments} fragments of at most 10 bytes").as_str())
    );
}

#[tokio::test]
async fn a_client_message_over_the_max_message_size_is_refused_with_1009_and_recorded() {
    let server = Fake::builder().max_message_size(64).start().await;
    let mut client = connect(&server.url()).await;
    let conn = server.next_connection().await;

    send(&mut client, &subscribe("short")).await;
    conn.expect(common::subscribe_to("short")).await;
    send(&mut client, &subscribe(&"long".repeat(20))).await;

    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a close within 5 s")
    .expect("with a code");
    assert_eq!(u16::from(close.code), 1009);

    let invalid = conn.expect_invalid().await;
    let FrameKind::Oversize { size, max } = invalid.frame else {
        panic!("an oversize frame, not {:?}", invalid.frame);
    };
    assert_eq!(max, 64);
    assert!(size > 64, "{size}");
    conn.wait_closed().await;
    let last = conn.transcript().pop().expect("entries");
    assert_eq!(
        last.frame,
        FrameKind::Close {
            code: Some(1009),
            reason: "message too big".into()
        }
    );
}

#[tokio::test]
async fn the_max_frame_size_limits_each_frame_not_the_message() {
    let server = Fake::builder().max_frame_size(16).start().await;
    let mut client = connect(&server.url()).await;
    let conn = server.next_connection().await;

    // A 40-byte message in fragments of at most 16 bytes gets through, whole.
    let json = serde_json::to_string(&subscribe("prices/ACME")).unwrap();
    let bytes = json.as_bytes();
    let chunks: Vec<&[u8]> = bytes.chunks(16).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(chunk.to_vec(), OpCode::Data(opcode), i + 1 == chunks.len());
        client.send(Message::Frame(frame)).await.unwrap();
    }
    conn.expect(common::subscribe_to("prices/ACME")).await;

    // The same message in one frame does not.
    client.send(Message::Text(json.into())).await.unwrap();
    let invalid = conn.expect_invalid().await;
    assert!(
        matches!(invalid.frame, FrameKind::Oversize { max: 16, .. }),
        "{invalid:?}"
    );
    assert!(invalid.error.contains("size limit"), "{}", invalid.error);
}

#[tokio::test]
async fn an_oversize_message_nobody_expected_fails_the_test() {
    let message = panic_message(async {
        let server = Fake::builder().max_message_size(8).start().await;
        let mut client = connect(&server.url()).await;
        let conn = server.next_connection().await;
        send(&mut client, &subscribe("too long for eight bytes")).await;
        conn.wait_closed().await;
        drop(conn);
    })
    .await;
    assert!(message.contains("over the fake's size limit"), "{message}");
}

#[tokio::test]
#[should_panic(expected = "a ping carries at most 125 bytes")]
async fn a_ping_over_125_bytes_is_a_misuse() {
    let server = Fake::builder().start().await;
    let _client = connect(&server.url()).await;
    let conn = server.next_connection().await;
    conn.ping(vec![0; 126]).await;
}
