//! The network faults of the admin API, driven over HTTP against the real binary with
//! a real WebSocket client: a slow link, a blackhole and its heal, forbidden frames.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_blackhole_holds_everything_both_ways_until_the_heal() {
    let (fake, mut client) = Fake::with_a_client().await;
    fake.ok("/connections/0/blackhole").await;
    client
        .send(Message::Ping(b"anyone?".to_vec().into()))
        .await
        .unwrap();
    let (status, body) = fake
        .post("/connections/0/send", json!({"text": "held"}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Silence: no pong, no text, no close, no EOF.
    let silence = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(silence.is_err(), "something came through: {silence:?}");

    fake.ok("/connections/0/heal").await;
    let mut came = Vec::new();
    while came.len() < 2 {
        let frame = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("what was held comes through")
            .expect("the connection is open")
            .unwrap();
        came.push(frame);
    }
    assert_eq!(
        came,
        [
            Message::text("held"),
            Message::Pong(b"anyone?".to_vec().into())
        ],
        "the fake's text was held first, the pong answers a ping read only now"
    );
}

#[tokio::test]
async fn a_slow_link_delays_each_frame_by_its_latency_until_cleared() {
    let (fake, mut client) = Fake::with_a_client().await;
    let (status, body) = fake
        .post(
            "/connections/0/impair",
            json!({"latency_ms": 200, "jitter_ms": 20, "bytes_per_sec": 100000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = Instant::now();
    fake.post("/connections/0/send", json!({"text": "slow"}))
        .await;
    assert_eq!(receive(&mut client).await, Some(Ok(Message::text("slow"))));
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(200), "came after {took:?}");

    fake.ok("/connections/0/clear-impairment").await;
    fake.post("/connections/0/send", json!({"text": "fast"}))
        .await;
    assert_eq!(receive(&mut client).await, Some(Ok(Message::text("fast"))));
}

#[tokio::test]
async fn a_forbidden_frame_fails_the_client_and_is_in_the_transcript() {
    let (fake, mut client) = Fake::with_a_client().await;
    let (status, body) = fake
        .post("/connections/0/fault", json!({"fault": "invalid_utf8"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let error = receive(&mut client).await;
    assert!(
        matches!(&error, Some(Err(e)) if e.contains("UTF-8")),
        "tungstenite refuses the frame: {error:?}"
    );
    let rendered = fake.rendered_transcript(0).await;
    assert!(
        rendered.contains("a text frame that is not UTF-8"),
        "{rendered}"
    );
}

#[tokio::test]
async fn a_close_code_fault_and_raw_bytes_are_sent_as_given() {
    let (fake, mut client) = Fake::with_a_client().await;
    // A ping with payload "hi", as raw bytes: a legal frame, sent past tungstenite.
    let (status, body) = fake
        .post(
            "/connections/0/fault",
            json!({"fault": "raw", "base64": "iQJoaQ=="}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ping = tokio::time::timeout(WAIT, client.next()).await.unwrap();
    assert_eq!(ping.unwrap().unwrap(), Message::Ping(b"hi".to_vec().into()));

    let (status, body) = fake
        .post(
            "/connections/0/fault",
            json!({"fault": "close_code", "code": 1005}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let closed = receive(&mut client).await;
    assert!(
        !matches!(closed, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "a forbidden close code ends the client's side: {closed:?}"
    );
    let rendered = fake.rendered_transcript(0).await;
    assert!(
        rendered.contains("a close frame with code 1005"),
        "{rendered}"
    );
}

#[tokio::test]
async fn bad_network_requests_are_answered_with_an_error_and_change_nothing() {
    let (fake, mut client) = Fake::with_a_client().await;
    let bad = [
        (
            "/connections/0/impair",
            json!({"bytes_per_sec": 0}),
            400,
            "blackhole",
        ),
        (
            "/connections/0/impair",
            json!({"latency_ms": 86_400_001}),
            400,
            "at most",
        ),
        (
            "/connections/0/impair",
            json!({"latency": 5}),
            400,
            "unknown field",
        ),
        (
            "/connections/0/fault",
            json!({"fault": "gremlins"}),
            400,
            "unknown variant",
        ),
        (
            "/connections/0/fault",
            json!({"fault": "close_code"}),
            400,
            "missing field `code`",
        ),
        (
            "/connections/0/fault",
            json!({"fault": "raw", "base64": "!!"}),
            400,
            "base64",
        ),
        (
            "/connections/0/fault",
            json!({"fault": "raw", "base64": ""}),
            400,
            "no bytes",
        ),
        (
            "/connections/7/fault",
            json!({"fault": "masked_frame"}),
            404,
            "no connection 7",
        ),
        (
            "/connections/7/blackhole",
            json!(null),
            404,
            "no connection 7",
        ),
    ];
    fake.assert_refuses(&bad).await;
    // The link is still clean and the connection open.
    fake.post("/connections/0/send", json!({"text": "still here"}))
        .await;
    assert_eq!(
        receive(&mut client).await,
        Some(Ok(Message::text("still here")))
    );

    fake.ok("/connections/0/abort").await;
    fake.ok("/connections/0/wait-closed").await;
    let (status, answer) = fake
        .post("/connections/0/fault", json!({"fault": "invalid_utf8"}))
        .await;
    assert_eq!(status, 409, "{answer}");
}
