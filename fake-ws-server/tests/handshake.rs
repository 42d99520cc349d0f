//! Handshake rules and outages, driven by a plain tokio-tungstenite client: rejecting
//! upgrades by predicate with a status, headers and a body; hanging handshakes;
//! refusing new connections apart from resetting live ones; `stop` keeping the port
//! so every try is recorded, and a client's backoff measured across an outage.

use std::time::Duration;

use fake_ws_server::{AttemptOutcome, FakeServer, HandshakeRule, Matcher, Rule};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Fake = FakeServer<Value, Value>;

async fn try_connect(url: &str, token: Option<&str>) -> Result<Client, WsError> {
    let mut request = url.into_client_request().expect("a request");
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", token.parse().expect("a header value"));
    }
    let connecting = tokio_tungstenite::connect_async(request);
    tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .expect("the handshake ends within 5 s")
        .map(|(ws, _)| ws)
}

async fn connect(url: &str) -> Client {
    try_connect(url, None).await.expect("connect")
}

/// A fake that echoes every message.
async fn echo() -> Fake {
    FakeServer::builder()
        .rule(Rule::when(Matcher::any(), |m: &Value| vec![m.clone()]))
        .start()
        .await
}

async fn echoes(client: &mut Client, n: u32) {
    client
        .send(Message::text(json!({ "n": n }).to_string()))
        .await
        .expect("send");
    let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("an answer within 5 s");
    match frame {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), json!({ "n": n }).to_string()),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// Waits until the client sees its connection end (a reset or the stream ending).
async fn ends(client: &mut Client) {
    let end = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the connection ends within 5 s");
    assert!(
        matches!(end, Some(Err(_)) | None),
        "expected the end, got {end:?}"
    );
}

#[tokio::test]
async fn a_handshake_rule_rejects_by_predicate_with_status_headers_and_body() {
    let fake: Fake = FakeServer::builder()
        .handshake_rule(
            HandshakeRule::reject(401)
                .when(|request| request.header("authorization").is_none())
                .header("retry-after", "2")
                .body("a token, please")
                .named("no token"),
        )
        .start()
        .await;
    match try_connect(&fake.url(), None).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert_eq!(response.headers()["retry-after"], "2");
            assert_eq!(response.body().as_deref(), Some(&b"a token, please"[..]));
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let _client = try_connect(&fake.url(), Some("Bearer t"))
        .await
        .expect("let in");
    let conn = fake.next_connection().await;
    assert_eq!(conn.request().header("authorization"), Some("Bearer t"));
    let outcomes: Vec<_> = fake
        .attempts()
        .iter()
        .map(|a| a.outcome().clone())
        .collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Rejected(401), AttemptOutcome::Accepted]
    );
}

#[tokio::test]
async fn handshake_rules_mounted_at_runtime_answer_up_to_n_times_in_mount_order() {
    let fake = echo().await;
    fake.mount_handshake_rule(HandshakeRule::reject(503).up_to_n_times(2));
    fake.reject_next_handshakes(1, 429);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        match try_connect(&fake.url(), None).await {
            Err(WsError::Http(response)) => statuses.push(response.status().as_u16()),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(statuses, [503, 503, 429]);
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    echoes(&mut client, 1).await;
}

#[test]
fn a_bad_status_or_header_is_a_misuse_that_says_what_to_do() {
    let status = std::panic::catch_unwind(|| HandshakeRule::reject(42)).expect_err("a panic");
    assert!(
        status
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("use one such as 401")),
        "{status:?}"
    );
    let header = std::panic::catch_unwind(|| HandshakeRule::reject(503).header("retry after", "2"))
        .expect_err("a panic");
    assert!(
        header
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("not a valid HTTP header")),
        "{header:?}"
    );
}

#[tokio::test]
async fn a_hung_handshake_is_recorded_and_released_by_a_reset() {
    let fake = echo().await;
    fake.hang_connections();
    let url = fake.url();
    let hung = tokio::spawn(async move { try_connect(&url, None).await.map(|_| ()) });
    let attempts = fake.wait_for_attempts(1).await;
    assert_eq!(attempts[0].outcome(), &AttemptOutcome::Hung);
    assert!(attempts[0].request().is_none());
    assert!(!hung.is_finished(), "the handshake was answered");

    fake.reset_connections().await;
    let result = hung.await.expect("the client task");
    assert!(result.is_err(), "a hung handshake succeeded: {result:?}");

    fake.accept_connections();
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    echoes(&mut client, 1).await;
}

#[tokio::test]
async fn refusing_new_connections_leaves_live_ones_and_resetting_live_ones_leaves_new_ones() {
    let fake = echo().await;
    let mut live = connect(&fake.url()).await;
    let conn = fake.next_connection().await;

    fake.refuse_connections();
    match try_connect(&fake.url(), None).await {
        Err(WsError::Io(e)) => assert_ne!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Err(_) => {}
        Ok(_) => panic!("connected while refusing"),
    }
    echoes(&mut live, 1).await;
    assert!(conn.is_open());

    fake.accept_connections();
    fake.reset_connections().await;
    ends(&mut live).await;
    assert!(!conn.is_open());
    let mut again = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    echoes(&mut again, 2).await;

    let outcomes: Vec<_> = fake
        .attempts()
        .iter()
        .map(|a| a.outcome().clone())
        .collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Accepted,
            AttemptOutcome::Refused,
            AttemptOutcome::Accepted
        ]
    );
}

#[tokio::test]
async fn stop_keeps_the_port_and_records_each_try_and_unbind_refuses_at_the_kernel() {
    let fake = echo().await;
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    fake.stop().await;
    ends(&mut client).await;
    assert!(
        try_connect(&fake.url(), None).await.is_err(),
        "connected while stopped"
    );
    let attempts = fake.wait_for_attempts(2).await;
    assert_eq!(attempts[1].outcome(), &AttemptOutcome::Refused);

    fake.unbind().await;
    match try_connect(&fake.url(), None).await {
        Err(WsError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected connection refused, got {other:?}"),
    }
    assert_eq!(fake.attempts().len(), 2, "{:#?}", fake.attempts());

    fake.restart().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    assert_eq!(conn.index(), 1);
    echoes(&mut client, 1).await;
}

#[tokio::test]
async fn a_clients_backoff_is_measured_across_an_outage() {
    let fake = echo().await;
    fake.stop().await;

    // A tiny reconnecting client: 100 ms after the first failure, then doubling.
    let base = Duration::from_millis(100);
    let url = fake.url();
    let client = tokio::spawn(async move {
        let mut backoff = base;
        loop {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => return ws,
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(800));
                }
            }
        }
    });

    let attempts = fake.wait_for_attempts(4).await;
    fake.restart().await;
    let _conn = fake.next_connection().await;
    let mut client = client.await.expect("the client task");
    echoes(&mut client, 1).await;

    for attempt in &attempts[..4] {
        assert_eq!(attempt.outcome(), &AttemptOutcome::Refused, "{attempt:?}");
    }
    // Each try came at least its backoff after the one before (the client sleeps after
    // the fake's reset, which follows the recorded accept).
    for (n, pair) in attempts[..4].windows(2).enumerate() {
        let gap = pair[1].at() - pair[0].at();
        let backoff = base * 2u32.pow(n as u32);
        assert!(
            gap >= backoff,
            "gap {n} was {gap:?}, under the backoff {backoff:?}"
        );
    }
    let last = fake.attempts().last().cloned().expect("attempts");
    assert_eq!(last.outcome(), &AttemptOutcome::Accepted);
}
