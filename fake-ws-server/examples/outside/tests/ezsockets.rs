//! ezsockets 0.7, a client that reconnects by itself, against the fake: its reconnect
//! timing across an outage, its close handshake both ways, its heartbeat, and what it
//! does with a 401. Each test's comment says what the fake showed.

use std::time::Duration;

use async_trait::async_trait;
use ezsockets::client::ClientCloseMode;
use ezsockets::{ClientConfig, ClientExt, CloseCode, CloseFrame, SocketConfig, WSError};
use fake_ws_server::{AttemptOutcome, Closed, FakeServer, FrameKind, HandshakeRule, json_includes};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

type Fake = FakeServer<Value, Value>;

/// ezsockets' wait between two connection attempts (its default is 5 s).
const INTERVAL: Duration = Duration::from_millis(200);
/// How long the test waits for what the client reports about itself.
const DEADLINE: Duration = Duration::from_secs(5);

/// What the client under test tells the test, from ezsockets' callbacks.
#[derive(Debug, PartialEq)]
enum Event {
    Connected,
    Text(String),
    /// `on_connect_fail` with an HTTP answer: its status and body.
    Refused(u16, String),
    /// `on_close`: the server's close code.
    Closed(Option<u16>),
}

struct Probe(mpsc::UnboundedSender<Event>);

impl Probe {
    fn tell(&self, event: Event) {
        let _ = self.0.send(event);
    }
}

#[async_trait]
impl ClientExt for Probe {
    type Call = ();

    async fn on_text(&mut self, text: ezsockets::Utf8Bytes) -> Result<(), ezsockets::Error> {
        self.tell(Event::Text(text.to_string()));
        Ok(())
    }

    async fn on_binary(&mut self, _bytes: ezsockets::Bytes) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    async fn on_call(&mut self, (): ()) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    async fn on_connect(&mut self) -> Result<(), ezsockets::Error> {
        self.tell(Event::Connected);
        Ok(())
    }

    async fn on_connect_fail(
        &mut self,
        error: WSError,
    ) -> Result<ClientCloseMode, ezsockets::Error> {
        if let WSError::Http(response) = &error {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            self.tell(Event::Refused(
                response.status().as_u16(),
                body.into_owned(),
            ));
        }
        Ok(ClientCloseMode::Reconnect) // ezsockets' default
    }

    async fn on_close(
        &mut self,
        frame: Option<CloseFrame>,
    ) -> Result<ClientCloseMode, ezsockets::Error> {
        self.tell(Event::Closed(frame.map(|f| u16::from(f.code))));
        Ok(ClientCloseMode::Reconnect) // ezsockets' default
    }
}

struct Client {
    handle: ezsockets::Client<Probe>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Ends when the client gives up for good (it closed itself, or an error).
    done: tokio::task::JoinHandle<Result<(), ezsockets::Error>>,
}

impl Client {
    async fn connect(config: ClientConfig) -> Client {
        let (tx, events) = mpsc::unbounded_channel();
        let (handle, future) = ezsockets::connect(|_| Probe(tx), config).await;
        let done = tokio::spawn(future);
        Client {
            handle,
            events,
            done,
        }
    }

    async fn next_event(&mut self) -> Event {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("the client reported nothing within the deadline")
            .expect("the client is gone")
    }
}

fn config(fake: &Fake) -> ClientConfig {
    ClientConfig::new(fake.url().as_str()).reconnect_interval(INTERVAL)
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// A constant interval, no backoff: every gap is at least the interval and none is
/// twice it (a doubling backoff's third gap would be four times).
#[track_caller]
fn assert_constant_interval(gaps: &[Duration]) {
    for gap in gaps {
        assert!(
            *gap >= INTERVAL && *gap < 2 * INTERVAL,
            "gaps {gaps:?}: expected each in [{INTERVAL:?}, {:?})",
            2 * INTERVAL
        );
    }
}

/// ezsockets hands the 401 (status and body) to `on_connect_fail`, whose default is to
/// try again: it retries a refused handshake forever, at its fixed `reconnect_interval`,
/// with no backoff and no jitter. With a token it gets through.
#[tokio::test]
async fn a_401_is_retried_forever_at_the_fixed_interval() {
    let fake = Fake::builder()
        .handshake_rule(
            HandshakeRule::reject(401)
                .when(|req| req.header("authorization").is_none())
                .header("www-authenticate", "Bearer")
                .body("no token"),
        )
        .start()
        .await;
    let mut client = Client::connect(config(&fake)).await;

    let attempts = fake.wait_for_attempts(5).await;
    for attempt in &attempts {
        assert_eq!(attempt.rejected_with(), Some(401), "{attempt:?}");
    }
    let g = gaps(&attempts.iter().map(|a| a.at()).collect::<Vec<_>>());
    println!("401 gaps {g:?}");
    assert_constant_interval(&g);
    assert_eq!(
        client.next_event().await,
        Event::Refused(401, "no token".into())
    );
    client.handle.close(None).unwrap();

    let fake_with_token = Fake::builder()
        .handshake_rule(
            HandshakeRule::reject(401).when(|req| req.header("authorization").is_none()),
        )
        .start()
        .await;
    let mut client = Client::connect(config(&fake_with_token).bearer("t0ken")).await;
    let conn = fake_with_token.next_connection().await;
    assert_eq!(conn.request().header("authorization"), Some("Bearer t0ken"));
    assert_eq!(client.next_event().await, Event::Connected);
}

/// When the connection drops (a reset, no close frame), ezsockets tries again at once,
/// without waiting; only after that try fails does it wait its interval between tries.
/// What it sent before the drop is not sent again: resubscribing is the application's job.
#[tokio::test]
async fn a_dropped_connection_is_retried_at_once_then_at_the_fixed_interval() {
    let fake = Fake::builder().start().await;
    let mut client = Client::connect(config(&fake)).await;
    let conn = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);
    client
        .handle
        .text(r#"{"type":"subscribe","topic":"btc"}"#)
        .unwrap();
    conn.expect(json_includes!({"type": "subscribe", "topic": "btc"}))
        .await;

    let dropped = Instant::now();
    fake.stop().await; // resets the connection, then refuses every try until restart()
    let attempts = fake.wait_for_attempts(1 + 4).await;
    assert!(
        attempts[1..]
            .iter()
            .all(|a| *a.outcome() == AttemptOutcome::Refused),
        "{attempts:#?}"
    );
    let first_retry = attempts[1].at() - dropped;
    assert!(
        first_retry < INTERVAL / 2,
        "the first retry came {first_retry:?} after the drop, expected at once"
    );
    let retries: Vec<Instant> = attempts[1..].iter().map(|a| a.at()).collect();
    println!("first retry {first_retry:?}, gaps {:?}", gaps(&retries));
    assert_constant_interval(&gaps(&retries));

    fake.restart().await;
    let again = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);
    client.handle.text(r#"{"type":"ping"}"#).unwrap();
    // The first message on the new connection is the application's next one: nothing was
    // replayed from before the drop.
    again.expect_next(json_includes!({"type": "ping"})).await;
}

/// `close(Some(frame))` sends that code and reason; the client then ends for good (its
/// future resolves) and never comes back.
#[tokio::test]
async fn its_own_close_sends_code_and_reason_and_ends_the_client() {
    let fake = Fake::builder().start().await;
    let mut client = Client::connect(config(&fake)).await;
    let conn = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);

    client
        .handle
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
    assert_eq!(
        conn.wait_closed().await,
        Closed::Frame {
            code: 1000,
            reason: "bye".into()
        }
    );
    let ended = tokio::time::timeout(DEADLINE, client.done)
        .await
        .expect("the client did not end after closing itself");
    ended.unwrap().unwrap();
    assert_eq!(
        fake.attempts().len(),
        1,
        "it connected again after closing itself"
    );
}

/// A close from the server, even a normal 1000, is answered (the close handshake
/// completes) and then treated as a reason to reconnect: `on_close` defaults to
/// reconnecting, after the interval. The server's code reaches `on_close`.
#[tokio::test]
async fn a_normal_close_from_the_server_is_answered_then_reconnected_after_the_interval() {
    let fake = Fake::builder().start().await;
    let mut client = Client::connect(config(&fake)).await;
    let conn = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);
    conn.send(json!({"type": "hello"})).await.unwrap();
    assert_eq!(
        client.next_event().await,
        Event::Text(r#"{"type":"hello"}"#.into())
    );

    let closed_at = Instant::now();
    conn.close(1000, "maintenance").await.unwrap();
    // The client's answer echoes the code.
    assert_eq!(conn.wait_closed().await.code(), Some(1000));
    assert_eq!(client.next_event().await, Event::Closed(Some(1000)));

    let _again = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);
    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let gap = attempts[1].at() - closed_at;
    println!("reconnected {gap:?} after the close");
    assert!(
        gap >= INTERVAL && gap < 2 * INTERVAL,
        "reconnected {gap:?} after the close, expected the interval {INTERVAL:?}"
    );
}

/// ezsockets' heartbeat pings every `heartbeat`; any frame from the server counts as
/// alive. When the server stops answering pings, it gives up `timeout` after the last
/// sign of life and closes with 1006 "remote partner is inactive", a code RFC 6455
/// forbids on the wire: the fake records it as sent and flags it as a protocol violation
/// (`expect_invalid` takes it). The fake's answer (1002, what tungstenite answers a
/// forbidden code with) reaches `on_close`, and ezsockets reconnects.
#[tokio::test]
async fn an_unanswered_heartbeat_ends_in_a_forbidden_1006_then_a_reconnect() {
    let heartbeat = Duration::from_millis(50);
    let timeout = Duration::from_millis(300);
    let fake = Fake::builder().start().await;
    let socket = SocketConfig {
        heartbeat,
        timeout,
        ..SocketConfig::default()
    };
    let mut client = Client::connect(config(&fake).socket_config(socket)).await;
    let conn = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);

    conn.stop_answering_pings(); // from the start: no pong ever
    let closed = conn.wait_closed().await;
    let inactive = "remote partner is inactive";
    assert_eq!(
        closed,
        Closed::Frame {
            code: 1006,
            reason: inactive.into()
        }
    );
    let invalid = conn.expect_invalid().await;
    assert_eq!(
        invalid.frame,
        FrameKind::Close {
            code: Some(1006),
            reason: inactive.into()
        }
    );

    // Times since the fake accepted the connection, a little before the client's clock
    // of "alive" started.
    let transcript = conn.transcript();
    let at = |kind: fn(&FrameKind) -> bool| -> Vec<Duration> {
        transcript
            .iter()
            .filter(|e| kind(&e.frame))
            .map(|e| e.at)
            .collect()
    };
    let pings = at(|f| matches!(f, FrameKind::Ping(_)));
    let close = at(|f| matches!(f, FrameKind::Close { .. }))[0];
    println!("pings at {pings:?}, then at {close:?} {closed}");
    assert!(
        close >= timeout && close < timeout + 4 * heartbeat,
        "closed at {close:?}, expected about {timeout:?} after the connection"
    );
    // One ping per heartbeat (read times jitter a little either way).
    assert!(pings.len() >= 4, "pings at {pings:?}");
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap > heartbeat / 2 && gap < 2 * heartbeat,
            "pings at {pings:?}"
        );
    }

    assert_eq!(client.next_event().await, Event::Closed(Some(1002)));
    let _again = fake.next_connection().await;
    assert_eq!(client.next_event().await, Event::Connected);
}
