//! The protocol controls of the admin API, driven over HTTP against the real binary
//! with a real WebSocket client: the fake's pings and the client's pongs, and a frame
//! that is not a valid message, taken so that verify passes.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_reading_client_answers_the_ping() {
    let (fake, mut client) = Fake::with_a_client().await;
    // tungstenite answers a ping while it reads: read until the stream ends.
    let reader = tokio::spawn(async move { while client.next().await.is_some() {} });
    let (status, body) = fake
        .post("/connections/0/ping", json!({"base64": "aGk="}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["round_trip_ms"].as_f64().unwrap() >= 0.0, "{body}");
    let (_, transcript) = fake.get("/connections/0/transcript").await;
    let kinds: Vec<_> = transcript["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["kind"].clone(), entry["base64"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (json!("ping"), json!("aGk=")),
            (json!("pong"), json!("aGk="))
        ]
    );
    reader.abort();
}

#[tokio::test]
async fn a_client_that_does_not_read_leaves_the_ping_unanswered() {
    let (fake, _client) = Fake::with_a_client().await;
    let (status, body) = fake
        .post("/connections/0/ping?timeout_ms=300", json!({}))
        .await;
    assert_eq!(status, 408, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("expected a pong"), "{error}");
    assert!(error.contains("fake → client  ping"), "{error}");
}

#[tokio::test]
async fn ping_every_pings_until_stopped() {
    let (fake, mut client) = Fake::with_a_client().await;
    let (status, body) = fake
        .post("/connections/0/ping-every", json!({"every_ms": 20}))
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let frame = tokio::time::timeout(WAIT, client.next()).await.unwrap();
        assert_eq!(frame.unwrap().unwrap(), Message::Ping(Vec::new().into()));
    }
    let (status, body) = fake
        .post("/connections/0/ping-every", json!({"every_ms": null}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Once stopped, a text sent after it is the next frame the client sees, pings
    // already on their way aside.
    fake.post("/connections/0/send", json!({"text": "after"}))
        .await;
    assert_eq!(receive(&mut client).await, Some(Ok(Message::text("after"))));
}

#[tokio::test]
async fn an_invalid_frame_taken_by_expect_invalid_no_longer_fails_verify() {
    let (fake, mut client) = Fake::with_a_client().await;
    client.send(Message::binary(vec![0, 1, 255])).await.unwrap();
    let (status, body) = fake
        .post("/connections/0/expect-invalid", Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["frame"]["kind"].clone(),
            body["frame"]["base64"].clone()
        ),
        (json!("binary"), json!("AAH/"))
    );
    assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(fake.ok("/verify").await, json!({"problems": []}));

    let (status, body) = fake
        .post("/connections/0/expect-invalid?timeout_ms=200", Value::Null)
        .await;
    assert_eq!(status, 408, "{body}");
}

#[tokio::test]
async fn bad_protocol_requests_are_answered_with_an_error() {
    let (fake, _client) = Fake::with_a_client().await;
    let too_long = base64_of(&[7; 126]);
    let bad = [
        (
            "/connections/0/ping",
            json!({"base64": too_long}),
            400,
            "at most 125 bytes",
        ),
        ("/connections/0/ping", json!({"base64": "!"}), 400, "base64"),
        (
            "/connections/0/ping",
            json!({"payload": "x"}),
            400,
            "unknown field",
        ),
        (
            "/connections/0/ping-every",
            json!({"every_ms": 0}),
            400,
            "from 1 to",
        ),
        (
            "/connections/0/ping-every",
            json!({"every_ms": -1}),
            400,
            "invalid value",
        ),
        ("/connections/9/ping", json!({}), 404, "no connection 9"),
    ];
    fake.assert_refuses(&bad).await;
    fake.ok("/connections/0/abort").await;
    fake.ok("/connections/0/wait-closed").await;
    let (status, answer) = fake.post("/connections/0/ping", json!({})).await;
    assert_eq!(status, 409, "{answer}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
