//! The `orders` binary itself: its `--help`, JSON logs, and a graceful stop on SIGTERM
//! that closes the WebSocket with 1001 and exits within 10 s.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_harness::payments::FakePayments;
use test_harness::postgres::TestDatabase;

fn orders(db: &TestDatabase, port: u16, payments_ws_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orders"));
    command
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("ORDERS_ADDR", format!("127.0.0.1:{port}"))
        .env("PAYMENTS_WS_URL", payments_ws_url)
        .env("PAYMENTS_TOKEN", "binary-test-token")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A port that was free a moment ago (the binary must be told its port up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for the child to exit, killing it after `deadline`.
fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn help_lists_every_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "DATABASE_URL",
        "ORDERS_ADDR",
        "PAYMENTS_WS_URL",
        "PAYMENTS_TOKEN",
        "RUST_LOG",
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(variable),
            "{variable} missing from --help:\n{help}"
        );
    }
    assert!(
        !help.contains("binary-test-token"),
        "the token's value must not be shown"
    );
}

#[tokio::test]
async fn sigterm_closes_the_link_with_1001_and_exits_within_10_seconds() {
    let fake = FakePayments::start().await;
    let db = TestDatabase::unborn("orders");
    let port = free_port();
    let mut child = orders(&db, port, &fake.url()).spawn().unwrap();
    let conn = fake.next_connection_within(Duration::from_secs(20)).await;
    // SIGTERM is handled once the HTTP server runs: wait until it answers.
    let client = reqwest::Client::new();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let end = Instant::now() + Duration::from_secs(20);
    while !client
        .get(&healthz)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < end, "orders never answered {healthz}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    assert_eq!(
        conn.wait_closed().await,
        Some(1001),
        "close code on SIGTERM"
    );
    let exit = tokio::task::spawn_blocking(move || {
        let exit = wait_exit(&mut child, Duration::from_secs(10));
        (exit, child)
    })
    .await
    .unwrap();
    let (exit, mut child) = exit;
    let exit = exit.expect("orders did not exit within 10 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");

    // Every log line is one JSON object.
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(!lines.is_empty(), "no logs on stdout");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("connected to Payments")));
    assert!(lines.iter().any(|l| l.contains("payments link stopped")));
}
