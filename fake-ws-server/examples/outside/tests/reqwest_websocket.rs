//! reqwest-websocket 0.6, a request-style client (a reqwest request upgraded to a
//! WebSocket), against the fake: a 401 refusal, the close handshake both ways, an abort.
//! It never reconnects: each connection is one request, and the fake's attempts show it.
//! Each test's comment says what the fake showed.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use fake_ws_server::{Closed, FakeServer, HandshakeRule, json_includes};
use futures_util::{SinkExt, StreamExt};
use reqwest_websocket::{CloseCode, Error, HandshakeError, Message, Upgrade, WebSocket};
use serde_json::{Value, json};

type Fake = FakeServer<Value, Value>;

/// How long the test waits for what the client receives.
const DEADLINE: Duration = Duration::from_secs(5);

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn open(fake: &Fake) -> WebSocket {
    http()
        .get(fake.url())
        .upgrade()
        .send()
        .await
        .unwrap()
        .into_websocket()
        .await
        .unwrap()
}

async fn next(ws: &mut WebSocket) -> Option<Result<Message, Error>> {
    tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("the client received nothing within the deadline")
}

/// The 401 reaches the caller as an ordinary reqwest response (status, headers, body
/// readable); `into_websocket` then fails with `UnexpectedStatusCode(401)`. One request,
/// one attempt: no retry. The token set with reqwest's `bearer_auth` is on the upgrade.
#[tokio::test]
async fn a_401_is_a_response_the_caller_can_read_and_is_not_retried() {
    let fake = Fake::builder()
        .handshake_rule(
            HandshakeRule::reject(401)
                .when(|req| req.header("authorization").is_none())
                .header("www-authenticate", "Bearer")
                .body("no token"),
        )
        .start()
        .await;

    let response = http().get(fake.url()).upgrade().send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    match response.into_websocket().await {
        Err(Error::Handshake(HandshakeError::UnexpectedStatusCode(status))) => {
            assert_eq!(status, 401)
        }
        other => panic!("expected UnexpectedStatusCode(401), got {other:?}"),
    }
    let response = http().get(fake.url()).upgrade().send().await.unwrap();
    assert_eq!(response.into_inner().text().await.unwrap(), "no token");

    let attempts = fake.wait_for_attempts(2).await;
    assert_eq!(
        attempts.len(),
        2,
        "two requests, two attempts: {attempts:#?}"
    );
    assert!(attempts.iter().all(|a| a.rejected_with() == Some(401)));

    let mut ws = http()
        .get(fake.url())
        .bearer_auth("t0ken")
        .upgrade()
        .send()
        .await
        .unwrap()
        .into_websocket()
        .await
        .unwrap();
    let conn = fake.next_connection().await;
    assert_eq!(conn.request().header("authorization"), Some("Bearer t0ken"));
    ws.send(Message::Text(json!({"type": "hello"}).to_string()))
        .await
        .unwrap();
    conn.expect(json_includes!({"type": "hello"})).await;
}

/// `close(code, reason)` sends them as given; the close handshake completes.
#[tokio::test]
async fn its_close_sends_code_and_reason() {
    let fake = Fake::builder().start().await;
    let ws = open(&fake).await;
    let conn = fake.next_connection().await;

    ws.close(CloseCode::Away, Some("done")).await.unwrap();
    assert_eq!(
        conn.wait_closed().await,
        Closed::Frame {
            code: 1001,
            reason: "done".into()
        }
    );
}

/// A close from the server arrives as a `Message::Close` with the code and reason,
/// then the stream ends; the close handshake is answered with the same code.
#[tokio::test]
async fn a_close_from_the_server_is_a_message_then_the_end() {
    let fake = Fake::builder().start().await;
    let mut ws = open(&fake).await;
    let conn = fake.next_connection().await;
    conn.send(json!({"type": "bye soon"})).await.unwrap();
    conn.close(4001, "kicked").await.unwrap();

    match next(&mut ws).await {
        Some(Ok(Message::Text(text))) => assert_eq!(text, r#"{"type":"bye soon"}"#),
        other => panic!("expected the text first, got {other:?}"),
    }
    match next(&mut ws).await {
        Some(Ok(Message::Close { code, reason })) => {
            assert_eq!(u16::from(code), 4001);
            assert_eq!(reason, "kicked");
        }
        other => panic!("expected Message::Close, got {other:?}"),
    }
    assert!(
        next(&mut ws).await.is_none(),
        "the stream goes on after the close"
    );
    assert_eq!(conn.wait_closed().await.code(), Some(4001));
}

/// An abort (a TCP reset, no close frame) is an error on the stream, an I/O error
/// "connection reset", not a quiet end of the stream. The client has no reconnect of
/// its own: the fake saw one attempt.
#[tokio::test]
async fn an_abort_is_a_connection_reset_error_on_the_stream() {
    let fake = Fake::builder().start().await;
    let mut ws = open(&fake).await;
    let conn = fake.next_connection().await;
    conn.abort().await;

    match next(&mut ws).await {
        Some(Err(Error::Tungstenite(error))) => {
            let io = error.source().and_then(|e| e.downcast_ref::<io::Error>());
            assert_eq!(
                io.map(io::Error::kind),
                Some(io::ErrorKind::ConnectionReset),
                "{error:?}"
            );
        }
        other => panic!("expected a tungstenite error, got {other:?}"),
    }
    assert_eq!(conn.wait_closed().await, Closed::Aborted);
    assert_eq!(fake.attempts().len(), 1);
}
