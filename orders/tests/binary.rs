//! The `orders` binary itself: its `--help`, JSON logs, and a graceful stop on SIGTERM
//! that closes the WebSocket with 1001 and exits within 10 s.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_harness::payments::FakePayments;
use test_harness::postgres::TestDatabase;
use test_harness::process::{free_port, wait_exit};

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

/// `APP_ENV=production` with the public development token is refused before anything
/// is opened (the check is the same for both binaries).
#[test]
fn production_refuses_the_development_token() {
    test_harness::process::assert_production_refuses_the_development_token(env!(
        "CARGO_BIN_EXE_orders"
    ));
}

/// Traces go over OTLP/HTTP with protobuf only: another protocol is refused at start,
/// saying so, rather than exporting nothing without a word.
#[test]
fn an_otlp_protocol_other_than_http_protobuf_is_refused() {
    for protocol in ["grpc", "http/json"] {
        test_harness::process::assert_refuses_to_start(
            env!("CARGO_BIN_EXE_orders"),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ],
            "is not supported: traces are exported over OTLP/HTTP with protobuf only",
        );
    }
}

/// Production needs the API token, and every secret at least 32 bytes long: without
/// the token, anyone who reaches the port reads every order and its payment page.
#[test]
fn production_refuses_to_start_without_a_long_api_token() {
    use test_harness::process::assert_refuses_to_start;
    let binary = env!("CARGO_BIN_EXE_orders");
    let link = "a-link-token-of-32-bytes-or-more!";
    let api = "an-api-token-of-32-bytes-or-more!";
    let production = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![("APP_ENV", "production")];
        env.extend_from_slice(extra);
        env
    };
    assert_refuses_to_start(
        binary,
        &production(&[("PAYMENTS_TOKEN", link)]),
        "ORDERS_API_TOKEN is required when APP_ENV is production",
    );
    assert_refuses_to_start(
        binary,
        &production(&[("PAYMENTS_TOKEN", link), ("ORDERS_API_TOKEN", "sekrit-api")]),
        "ORDERS_API_TOKEN is 10 bytes long and APP_ENV is production",
    );
    assert_refuses_to_start(
        binary,
        &production(&[("PAYMENTS_TOKEN", "sekrit-link"), ("ORDERS_API_TOKEN", api)]),
        "PAYMENTS_TOKEN is 11 bytes long and APP_ENV is production",
    );
    assert_refuses_to_start(
        binary,
        &production(&[("PAYMENTS_TOKEN", link), ("ORDERS_API_TOKEN", link)]),
        "ORDERS_API_TOKEN and PAYMENTS_TOKEN are the same secret",
    );
    // The link in clear to another host (issue 19): the token and every outcome would
    // cross the network readable.
    assert_refuses_to_start(
        binary,
        &production(&[
            ("PAYMENTS_TOKEN", link),
            ("ORDERS_API_TOKEN", api),
            ("PAYMENTS_WS_URL", "ws://payments.internal:8081/ws"),
        ]),
        "use wss://",
    );
}

/// A zero or huge duration used to start the service and then panic the link's thread
/// (tokio's `interval` takes no zero), with `/readyz` still green; now it is refused at
/// start, naming the setting and the range.
#[test]
fn zero_or_huge_durations_are_refused_at_start() {
    use test_harness::process::assert_refuses_to_start;
    let binary = env!("CARGO_BIN_EXE_orders");
    for (variable, value) in [
        ("HEARTBEAT_INTERVAL", "0"),
        ("RESEND_AFTER", "0s"),
        ("PEER_TIMEOUT", "100years"),
        ("DB_STATEMENT_TIMEOUT", "0ms"),
    ] {
        assert_refuses_to_start(binary, &[(variable, value)], "out of range");
    }
    assert_refuses_to_start(
        binary,
        &[("HEARTBEAT_INTERVAL", "40s")],
        "PEER_TIMEOUT must be longer than HEARTBEAT_INTERVAL",
    );
}

/// A request that never finishes (a body trickled for longer than the stop may take)
/// does not hold the stop past Docker Compose's grace period: in-flight requests get
/// `service_kit::startup::HTTP_STOP`, and the whole stop fits `STOP_BUDGET` (9 s; it
/// could take 15 s: 8 for requests, 5 for the link, 2 for the pool).
#[tokio::test]
async fn sigterm_with_a_request_that_never_finishes_exits_within_the_grace_period() {
    use tokio::io::AsyncWriteExt;
    let fake = FakePayments::start().await;
    let db = TestDatabase::unborn("orders");
    let port = free_port();
    let mut command = orders(&db, port, &fake.url());
    command
        .env("HTTP_BODY_TIMEOUT", "60s")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let _conn = fake.next_connection_within(Duration::from_secs(20)).await;
    // SIGTERM is handled from just before the port is bound (before, while the
    // database opens, it kills): wait until the port answers.
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
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
    let mut slow = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    slow.write_all(
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"amount\": ",
    )
    .await
    .unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    let exit = exit.expect("orders did not exit within 10 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    drop(slow);
}

/// On SIGTERM the instance drains first: for `DRAIN_PERIOD` its `/readyz` answers 503
/// ("draining"), so that a load balancer takes it out, while it still serves what comes
/// (here a `POST /orders`); then it stops accepting and exits.
#[tokio::test]
async fn sigterm_drains_readiness_first_and_keeps_serving_meanwhile() {
    let fake = FakePayments::builder().lenient().start().await;
    let db = TestDatabase::unborn("orders");
    let port = free_port();
    let mut command = orders(&db, port, &fake.url());
    command
        .env("DRAIN_PERIOD", "5s")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let end = Instant::now() + Duration::from_secs(20);
    while !client
        .get(url("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < end, "orders never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let draining = loop {
        let response = client.get(url("/readyz")).send().await.unwrap();
        if response.status() == 503 {
            break response.json::<serde_json::Value>().await.unwrap();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "/readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draining["status"], "draining");
    // Still served while draining (the load balancer may not have seen it yet).
    let created = client
        .post(url("/orders"))
        .json(&serde_json::json!({"amount": 1999, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the drain was over before the request: nothing to tell"
    );

    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(14)))
        .await
        .unwrap()
        .expect("orders did not exit after its drain");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(5),
        "exited before its drain was over"
    );
}

#[tokio::test]
async fn sigterm_closes_the_link_with_1001_and_exits_within_10_seconds() {
    let fake = FakePayments::start().await;
    let db = TestDatabase::unborn("orders");
    let port = free_port();
    let mut child = orders(&db, port, &fake.url()).spawn().unwrap();
    let conn = fake.next_connection_within(Duration::from_secs(20)).await;
    // SIGTERM is handled once the port is bound: wait until it answers.
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

    // Orders waits for the fake's close frame before it closes the socket, so its own
    // close is read whatever replies were still on their way to it.
    let closed = conn.wait_closed().await;
    assert_eq!(
        closed.code(),
        Some(1001),
        "close code on SIGTERM ({closed:?})"
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

/// Issue 8: SIGTERM with 1,000 orders in flight. Orders are being created over HTTP
/// and requested on the link when the signal comes; the binary must close the link with
/// 1001, exit successfully within 10 s, never panic, and every order it answered 201
/// for must be in the database (the open ones go out again on the next start).
#[tokio::test]
async fn sigterm_under_load_exits_cleanly_and_keeps_every_created_order() {
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ORDERS: usize = 1000;
    let fake = FakePayments::start().await;
    let db = TestDatabase::unborn("orders");
    let port = free_port();
    // No drain: this is the stop itself, with requests in flight (a drain would serve
    // the whole load first).
    let mut child = orders(&db, port, &fake.url())
        .env("DRAIN_PERIOD", "0s")
        .spawn()
        .unwrap();
    // Read the logs as they come: a full pipe would block the service's logging.
    let output = Arc::new(std::sync::Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|stream| {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut output = output.lock().unwrap();
                output.push_str(&line);
                output.push('\n');
            }
        })
    })
    .collect();
    let conn = fake.next_connection_within(Duration::from_secs(20)).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let end = Instant::now() + Duration::from_secs(20);
    while !client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < end, "orders never answered /healthz");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Create orders 32 at a time in the background; count the 201s.
    let created = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, base, created) = (client.clone(), base.clone(), created.clone());
        async move {
            futures_util::stream::iter(0..ORDERS)
                .map(|i| {
                    let (client, base, created) = (client.clone(), base.clone(), created.clone());
                    async move {
                        let response = client
                            .post(format!("{base}/orders"))
                            .json(&serde_json::json!({"amount": 100 + i, "currency": "EUR"}))
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status() == 201 => {
                                let order: serde_json::Value = r.json().await.unwrap();
                                created.fetch_add(1, Ordering::Relaxed);
                                Some(order["id"].as_str().unwrap().to_owned())
                            }
                            // Refused or cut off by the shutdown: not created.
                            _ => None,
                        }
                    }
                })
                .buffer_unordered(32)
                .filter_map(|id| async move { id })
                .collect::<Vec<String>>()
                .await
        }
    });
    // Signal while orders are still being created and requested.
    let end = Instant::now() + Duration::from_secs(60);
    while created.load(Ordering::Relaxed) < ORDERS / 5 {
        assert!(Instant::now() < end, "orders were not being created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // Orders waits for the fake's close frame before it closes the socket, so its own
    // close is read whatever replies were still on their way to it.
    let closed = conn.wait_closed().await;
    assert_eq!(
        closed.code(),
        Some(1001),
        "close code on SIGTERM ({closed:?})"
    );
    let exit = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    let exit = exit.expect("orders did not exit within 10 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    let ids = load.await.unwrap();
    assert!(
        ids.len() < ORDERS,
        "the signal came after every order was created: nothing was in flight"
    );

    // The process has exited: its pipes end, and so do the readers.
    for reader in readers {
        reader.join().unwrap();
    }
    let output = output.lock().unwrap().clone();
    assert!(!output.contains("panicked"), "a panic:\n{output}");
    assert!(output.contains("payments link stopped"), "{output}");

    // Every 201 is a row.
    let pool = db.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id::text = ANY($1)")
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, ids.len());
}
