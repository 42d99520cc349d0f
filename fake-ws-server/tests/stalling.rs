//! Stalling: a connection that answers no ping, or stops reading altogether
//! (backpressure), and the fake's own pings.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{Direction, FrameKind};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_stalled_connection_answers_no_ping() {
    let fake = Fake::builder().start().await;
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

#[tokio::test]
async fn resume_answering_pings_undoes_stop_answering_pings() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.stop_answering_pings();
    client
        .send(Message::Ping(b"unanswered".to_vec().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(answer.is_err(), "a stalled fake answered: {answer:?}");

    conn.resume_answering_pings().await;
    client
        .send(Message::Ping(b"answered".to_vec().into()))
        .await
        .unwrap();
    // Whether the held-back pong comes first is the pong filter's business; the new
    // ping's pong must come.
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = client.next().await {
            if frame.unwrap() == Message::Pong(b"answered".to_vec().into()) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(answered, Ok(true));
    // Reading went on all along: a message after the stall is taken as usual.
    send(&mut client, &subscribe("btc")).await;
    conn.expect(subscribe_to("btc")).await;
}

/// Writes `subscribe` frames until one has not gone out after 500 ms: the socket
/// buffers are full. Returns the topics that went out, and the blocked write.
async fn write_until_blocked(
    mut sink: futures_util::stream::SplitSink<Client, Message>,
) -> (
    Vec<String>,
    tokio::task::JoinHandle<futures_util::stream::SplitSink<Client, Message>>,
    String,
) {
    let mut written = Vec::new();
    loop {
        assert!(
            written.len() < 100_000,
            "wrote {} frames and the fake's socket never filled",
            written.len()
        );
        // Some 120 bytes a frame, like a real client's messages.
        let topic = format!("topic-{:0>80}", written.len());
        let text = serde_json::to_string(&subscribe(&topic)).unwrap();
        let mut write = tokio::spawn(async move {
            sink.send(Message::Text(text.into())).await.unwrap();
            sink
        });
        match tokio::time::timeout(Duration::from_millis(500), &mut write).await {
            Ok(done) => {
                sink = done.unwrap();
                written.push(topic);
            }
            Err(_) => return (written, write, topic),
        }
    }
}

#[tokio::test]
async fn a_connection_that_stops_reading_blocks_the_clients_writes_until_it_resumes() {
    let fake = Fake::builder().small_socket_buffers().start().await;
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
    for topic in written.into_iter().chain([last]) {
        conn.expect(subscribe_to(&topic)).await;
    }
}

#[tokio::test]
async fn a_fake_that_does_not_read_sees_the_client_leave_when_its_ping_fails() {
    let fake = Fake::builder().small_socket_buffers().start().await;
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
    assert_eq!(conn.wait_closed().await, fake_ws_server::Closed::Dropped);
    assert!(!conn.is_open());
    let pings = conn
        .transcript()
        .iter()
        .filter(|e| e.direction == Direction::ToClient && matches!(e.frame, FrameKind::Ping(_)))
        .count();
    assert!(pings >= 1, "{:?}", conn.transcript());
}

#[tokio::test]
async fn a_stalled_connection_still_records_what_the_client_sends() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.stop_answering_pings();
    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    send(&mut client, &subscribe("btc")).await;
    // Read and recorded, though no pong went out.
    conn.expect(subscribe_to("btc")).await;
    let transcript = conn.transcript();
    assert!(
        matches!(&transcript[0].frame, FrameKind::Ping(p) if p == b"are you there"),
        "{transcript:?}"
    );
    // What the fake sends still goes out; the pong never does.
    conn.send(Down::Subscribed {
        topic: "btc".into(),
    })
    .await
    .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a frame within 5 s");
    assert!(
        matches!(frame, Some(Ok(Message::Text(_)))),
        "the stalled fake answered the ping: {frame:?}"
    );
    assert!(
        !conn
            .transcript()
            .iter()
            .any(|e| e.direction == Direction::ToClient && matches!(e.frame, FrameKind::Pong(_))),
        "{:?}",
        conn.transcript()
    );

    // Resumed: pings are answered again.
    conn.resume_reading().await;
    client
        .send(Message::Ping(b"now?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a pong within 5 s");
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if p.as_ref() == b"now?"),
        "{pong:?}"
    );
}
