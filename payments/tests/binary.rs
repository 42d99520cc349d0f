//! The `payments` binary itself: `--help`, and a graceful stop on SIGTERM that closes
//! WebSockets with 1001 and exits within 10 s, logging JSON lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shared_protocol::SUBPROTOCOL;
use test_harness::postgres::TestDatabase;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
        "PAYMENTS_PUBLIC_URL",
        "PAYMENTS_TOKEN",
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

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_within_10_seconds() {
    let db = TestDatabase::unborn("payments");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_payments"))
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("PAYMENTS_ADDR", format!("127.0.0.1:{port}"))
        .env("PAYMENTS_TOKEN", "binary-test-token")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer binary-test-token".parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    let end = Instant::now() + Duration::from_secs(20);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(request.clone()).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < end => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("payments never accepted a WebSocket: {e}"),
        }
    };

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("no close frame within 10 s");
    assert_eq!(close, Some(1001));

    let exited = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(status) = child.try_wait().unwrap() {
                return Some((status, child));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait(); // reap it: no zombie left behind
        None
    })
    .await
    .unwrap();
    let (status, mut child) = exited.expect("payments did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");

    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(lines.iter().any(|l| l.contains("stopping")), "{lines:?}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object());
    }
}
