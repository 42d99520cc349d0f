//! The `payments` binary itself: `--help`, and a graceful stop on SIGTERM that closes
//! WebSockets with 1001 and exits within 10 s, logging JSON lines, idle and under load.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use shared_protocol::{Amount, ClientMessage, Currency, OrderId, SUBPROTOCOL};
use sqlx::Connection;
use test_harness::postgres::TestDatabase;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[test]
fn help_lists_every_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_payments"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "DATABASE_URL",
        "PAYMENTS_ADDR",
        "PAYMENTS_TOKEN",
        "PAYMENTS_PUBLIC_URL",
        "PAYMENT_TTL",
        "RUST_LOG",
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(variable),
            "{variable} missing from --help:\n{help}"
        );
    }
}

/// `APP_ENV=production` with the public development token is refused before anything
/// is opened (the check is the same for both binaries).
#[test]
fn production_refuses_the_development_token() {
    test_harness::process::assert_production_refuses_the_development_token(env!(
        "CARGO_BIN_EXE_payments"
    ));
}

/// Production wants every secret at least 32 bytes long, and the admin token apart from
/// the link's: the holder of the link token is an Orders instance, not an operator.
#[test]
fn production_refuses_short_or_shared_secrets() {
    use test_harness::process::assert_refuses_to_start;
    let binary = env!("CARGO_BIN_EXE_payments");
    let link = "a-link-token-of-32-bytes-or-more!";
    assert_refuses_to_start(
        binary,
        &[("APP_ENV", "production"), ("PAYMENTS_TOKEN", "sekrit-link")],
        "PAYMENTS_TOKEN is 11 bytes long and APP_ENV is production",
    );
    assert_refuses_to_start(
        binary,
        &[
            ("APP_ENV", "production"),
            ("PAYMENTS_TOKEN", link),
            ("PAYMENTS_ADMIN_TOKEN", "sekrit-admin"),
        ],
        "PAYMENTS_ADMIN_TOKEN is 12 bytes long and APP_ENV is production",
    );
    assert_refuses_to_start(
        binary,
        &[("PAYMENTS_TOKEN", link), ("PAYMENTS_ADMIN_TOKEN", link)],
        "PAYMENTS_ADMIN_TOKEN and PAYMENTS_TOKEN are the same secret",
    );
}

/// The binary, started on a free port against its own (not yet created) database.
struct Payments {
    child: Child,
    port: u16,
    db: TestDatabase,
}

impl Payments {
    fn start() -> Payments {
        let db = TestDatabase::unborn("payments");
        let port = test_harness::process::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_payments"))
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{port}"))
            .env("PAYMENTS_TOKEN", "binary-test-token")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Payments { child, port, db }
    }

    /// A WebSocket to it, retried while it starts (up to 20 s).
    async fn connect(&self) -> Ws {
        let mut request = format!("ws://127.0.0.1:{}/ws", self.port)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", "Bearer binary-test-token".parse().unwrap());
        request
            .headers_mut()
            .insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match tokio_tungstenite::connect_async(request.clone()).await {
                Ok((ws, _)) => return ws,
                Err(_) if Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("payments never accepted a WebSocket: {e}"),
            }
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit; kills and reaps it otherwise.
    /// Returns its status, stdout lines and stderr.
    async fn exit(self, within: Duration) -> (Option<ExitStatus>, Vec<String>, String) {
        let Payments { mut child, .. } = self;
        tokio::task::spawn_blocking(move || {
            let status = test_harness::process::wait_exit(&mut child, within);
            let lines = BufReader::new(child.stdout.take().unwrap())
                .lines()
                .map_while(Result::ok)
                .collect();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            (status, lines, stderr)
        })
        .await
        .unwrap()
    }
}

/// Reads until the server's close frame; returns its code (None if the socket just ended).
async fn close_code(ws: &mut futures_util::stream::SplitStream<Ws>) -> Option<u16> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}

/// On SIGTERM Payments drains first (`DRAIN_PERIOD`, 2 s by default): `/readyz`
/// answers 503 ("draining") while its WebSockets and pages are still served; then the
/// WebSockets close with 1001.
#[tokio::test]
async fn sigterm_drains_readiness_before_closing_websockets() {
    let payments = Payments::start();
    let (mut sink, mut stream) = payments.connect().await.split();
    let readyz = format!("http://127.0.0.1:{}/readyz", payments.port);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);

    payments.terminate();
    let end = Instant::now() + Duration::from_secs(2);
    let draining = loop {
        let response = reqwest::get(&readyz).await.unwrap();
        if response.status() == 503 {
            break response.json::<serde_json::Value>().await.unwrap();
        }
        assert!(Instant::now() < end, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draining["status"], "draining");
    // The link still works while draining: a request is answered, not closed.
    let initiate = ClientMessage::InitiatePayment {
        order_id: OrderId::new(),
        amount: Amount::new(100).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
    };
    sink.send(Message::Text(shared_protocol::encode(&initiate).into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("no answer while draining")
        .unwrap()
        .unwrap();
    assert!(answer.is_text(), "{answer:?}");
    // Then the WebSocket closes with 1001, and the process exits.
    let close = tokio::time::timeout(Duration::from_secs(10), close_code(&mut stream))
        .await
        .expect("no close frame within 10 s");
    assert_eq!(close, Some(1001));
    let (status, _, stderr) = payments.exit(Duration::from_secs(10)).await;
    assert!(status.expect("payments did not exit").success(), "{stderr}");
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_within_10_seconds() {
    let payments = Payments::start();
    let (_sink, mut stream) = payments.connect().await.split();

    payments.terminate();
    let close = tokio::time::timeout(Duration::from_secs(10), close_code(&mut stream))
        .await
        .expect("no close frame within 10 s");
    assert_eq!(close, Some(1001));

    let (status, lines, stderr) = payments.exit(Duration::from_secs(10)).await;
    let status = status.expect("payments did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(lines.iter().any(|l| l.contains("stopping")), "{lines:?}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object());
    }
}

#[tokio::test]
async fn sigterm_under_load_closes_with_1001_and_exits_cleanly_within_10_seconds() {
    let payments = Payments::start();
    // Connections, each with hundreds of initiate_payment messages in flight
    // (written without waiting for answers, and written on until the close), so
    // database work is under way on every connection when the signal arrives.
    let mut clients = Vec::new();
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..4 {
        let (mut sink, mut stream) = payments.connect().await.split();
        let writer = tokio::spawn(async move {
            loop {
                let message = ClientMessage::InitiatePayment {
                    order_id: OrderId::new(),
                    amount: Amount::new(1999).unwrap(),
                    currency: Currency::parse("EUR").unwrap(),
                };
                let text = shared_protocol::encode(&message);
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let answered_tx = answered_tx.clone();
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(Message::Text(_))) => {
                        let _ = answered_tx.send(());
                    }
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        });
        clients.push((writer, reader));
    }
    // And the page and readiness routes busy on keep-alive HTTP connections.
    let mut pollers = Vec::new();
    for _ in 0..4 {
        let url = format!("http://127.0.0.1:{}/readyz", payments.port);
        pollers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while http.get(&url).send().await.is_ok() {}
        }));
    }
    // Under load: hundreds of answers already out, many more messages queued.
    tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..400 {
            answered.recv().await.unwrap();
        }
    })
    .await
    .expect("payments answered fewer than 400 messages in 30 s");

    // And a database that is slow at that moment: what a closing connection does last,
    // forget itself in ws_connections, waits on a lock. So its pool connection is
    // still checked out when the server's worker stops, every time (this made
    // Payments panic with "this functionality requires a Tokio context").
    let mut locker = sqlx::PgConnection::connect(payments.db.url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE ws_connections IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    payments.terminate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (writer, reader) in clients {
        let close = tokio::time::timeout_at(deadline, reader)
            .await
            .expect("no close frame within 10 s of SIGTERM")
            .unwrap();
        assert_eq!(close, Some(1001));
        writer.abort();
    }

    let left = deadline - tokio::time::Instant::now();
    let (status, _, stderr) = payments.exit(left).await;
    let status = status.expect("payments did not exit within 10 s of SIGTERM");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(locker);
    for poller in pollers {
        poller.abort();
    }
    assert!(status.success(), "{status:?}\n{stderr}");
}
