//! The handshake refusals, the frame limits and their close codes, continuation
//! frames, pings, and dropping a silent peer.

mod helpers;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helpers::{Client, TestApp, initiate};
use shared_protocol::{OrderId, SUBPROTOCOL, ServerMessage};
use test_harness::postgres::TestDatabase;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn handshake(app: &TestApp, token: Option<&str>, protocol: Option<&str>) -> Result<u16, u16> {
    let mut request = app.ws_url().into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => {
            assert_eq!(response.headers()["sec-websocket-protocol"], SUBPROTOCOL);
            Ok(response.status().as_u16())
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_handshake_needs_the_token_and_the_subprotocol() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(handshake(&app, None, Some(SUBPROTOCOL)).await, Err(401));
    assert_eq!(
        handshake(&app, Some("wrong"), Some(SUBPROTOCOL)).await,
        Err(401)
    );
    assert_eq!(handshake(&app, Some(helpers::TOKEN), None).await, Err(400));
    assert_eq!(
        handshake(&app, Some(helpers::TOKEN), Some("payments.v2")).await,
        Err(400)
    );
    assert_eq!(
        handshake(&app, Some(helpers::TOKEN), Some(SUBPROTOCOL)).await,
        Ok(101)
    );
    assert_eq!(
        handshake(&app, Some(helpers::TOKEN), Some("x, payments.v1")).await,
        Ok(101)
    );
}

/// Authenticated WebSockets are capped (`PAYMENTS_MAX_WEBSOCKETS`): past the cap a
/// handshake is a 503 with `Retry-After`, before any upgrade, and a slot that frees
/// up takes the next one.
#[tokio::test]
async fn websockets_past_the_cap_are_refused_until_one_closes() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn_with(&db, |c| c.max_websockets = 2).await;
    let first = app.connect().await;
    let _second = app.connect().await;
    assert_eq!(
        handshake(&app, Some(helpers::TOKEN), Some(SUBPROTOCOL)).await,
        Err(503)
    );
    let refused = test_harness::http::request(
        &app.address,
        "GET",
        "/ws",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade, close",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            &format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}"),
            &format!("Authorization: Bearer {}", helpers::TOKEN),
        ],
        "",
    )
    .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(
        refused.body.contains("PAYMENTS_MAX_WEBSOCKETS"),
        "{}",
        refused.body
    );
    drop(first);
    let end = tokio::time::Instant::now() + helpers::DEADLINE;
    loop {
        match handshake(&app, Some(helpers::TOKEN), Some(SUBPROTOCOL)).await {
            Ok(101) => break,
            Err(503) if tokio::time::Instant::now() < end => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            other => panic!("no slot after a WebSocket closed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_over_64_kib_is_closed_with_1009() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    client
        .ws
        .send(Message::Text("x".repeat(64 * 1024 + 1).into()))
        .await
        .unwrap();
    assert_eq!(client.closed_with().await, Some(1009));
}

#[tokio::test]
async fn a_binary_frame_is_closed_with_1003() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    client
        .ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(client.closed_with().await, Some(1003));
}

async fn send_fragments(client: &mut Client, text: &str, pieces: usize) {
    let bytes = text.as_bytes();
    let size = bytes.len().div_ceil(pieces);
    let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let last = i + 1 == chunks.len();
        client
            .ws
            .send(Message::Frame(Frame::message(chunk.to_vec(), opcode, last)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn continuation_frames_are_reassembled_and_limited_to_64_kib_in_total() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    send_fragments(
        &mut client,
        &shared_protocol::encode(&initiate(order, 100, "EUR")),
        4,
    )
    .await;
    assert!(
        matches!(client.recv().await, ServerMessage::PaymentMethods { order_id, .. } if order_id == order)
    );

    // Every fragment is small; together they exceed the limit.
    let big = format!(
        r#"{{"type":"ack","event_id":1,"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    send_fragments(&mut client, &big, 10).await;
    assert_eq!(client.closed_with().await, Some(1009));
}

#[tokio::test]
async fn pings_are_answered() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    client
        .ws
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(helpers::DEADLINE, async {
        loop {
            if let Some(Ok(Message::Pong(payload))) = client.ws.next().await {
                return payload;
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&pong[..], b"are you there");
}

#[tokio::test]
async fn a_silent_peer_is_dropped() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn_with(&db, |c| {
        c.common.peer_timeout = Duration::from_millis(400);
        c.common.heartbeat_interval = Duration::from_secs(60);
    })
    .await;
    let mut client = app.connect().await;
    // The client sends nothing at all; the server gives up on it.
    let code = client.closed_with().await;
    assert!(matches!(code, Some(1008) | None), "{code:?}");
}

#[tokio::test]
async fn readiness_and_json_errors_for_unknown_routes() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["page_writer"], "running");
    let response = app.get("/nope").await;
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    for (path, allow) in [
        ("/ws", "GET, HEAD"),
        ("/healthz", "GET, HEAD"),
        ("/readyz", "GET, HEAD"),
        ("/metrics", "GET, HEAD"),
        ("/admin/dead-letters", "GET, HEAD"),
    ] {
        // The admin routes tell their methods only to an operator (doors.rs).
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth(helpers::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{path}");
        // RFC 9110: a 405 lists what the resource allows.
        assert_eq!(response.headers()["allow"], allow, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    let response = app
        .get(&format!("/pay/{}/complete", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn a_message_of_exactly_64_kib_is_accepted() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let head = format!(
        r#"{{"type":"initiate_payment","order_id":"{order}","amount":100,"currency":"EUR","pad":""#
    );
    let tail = r#""}"#;
    let text = format!(
        "{head}{}{tail}",
        "x".repeat(shared_protocol::MAX_MESSAGE_BYTES - head.len() - tail.len())
    );
    assert_eq!(text.len(), 64 * 1024);
    client.send_text(&text).await;
    assert!(
        matches!(client.recv().await, ServerMessage::PaymentMethods { order_id, .. } if order_id == order)
    );
}
