//! Hostile HTTP clients against the real `orders` binary (issue 18), as
//! payments/tests/abuse.rs does for Payments' WebSocket: a body trickled a byte at a
//! time, ten thousand connections opened and left idle, and a method as long as a
//! request head may be. Throughout, a well-behaved client keeps getting answers; the
//! process holds no more connections than its cap, and its memory stays bounded. (Paths
//! spelled to slip past the token: auth.rs.) The binary runs as a child, so its
//! descriptors and memory are its own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_harness::postgres::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_CONNECTIONS: usize = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_CONNECTIONS: usize = 10_000;
/// The most the process may hold at its peak: a leak per connection would pass it.
const MAX_PEAK_RSS_KIB: u64 = 200 * 1024;

struct Orders {
    child: Child,
    address: String,
    db: TestDatabase,
}

impl Orders {
    fn start() -> Orders {
        let db = TestDatabase::unborn("orders");
        let port = test_harness::process::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_orders"))
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("ORDERS_ADDR", format!("127.0.0.1:{port}"))
            .env("PAYMENTS_WS_URL", "ws://127.0.0.1:9/ws")
            .env("HTTP_MAX_CONNECTIONS", MAX_CONNECTIONS.to_string())
            .env(
                "HTTP_REQUEST_TIMEOUT",
                format!("{}ms", REQUEST_TIMEOUT.as_millis()),
            )
            .env(
                "HTTP_BODY_TIMEOUT",
                format!("{}ms", BODY_TIMEOUT.as_millis()),
            )
            .env("HTTP_KEEP_ALIVE", "1s")
            // Warnings only, and not to a pipe nobody reads.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Orders {
            child,
            address: format!("127.0.0.1:{port}"),
            db,
        }
    }

    /// A well-behaved `POST /orders`, retried while the service starts; its status and
    /// how long it took.
    async fn create_order(&self, within: Duration) -> (u16, Duration) {
        let started = Instant::now();
        let end = started + within;
        loop {
            let body = r#"{"amount": 1999, "currency": "EUR"}"#;
            let attempt = tokio::time::timeout(
                end.saturating_duration_since(Instant::now()),
                raw(&self.address, "POST", "/orders", body),
            )
            .await;
            match attempt {
                Ok(Ok(status)) => return (status, started.elapsed()),
                Ok(Err(_)) if Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => panic!("orders answered no well-behaved client within {within:?}"),
            }
        }
    }

    /// Open descriptors, `VmHWM` and `VmRSS` (KiB) of the process.
    fn resources(&self) -> (usize, u64, u64) {
        let pid = self.child.id();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (fds, field("VmHWM:"), field("VmRSS:"))
    }

    async fn orders_stored(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.db.pool().await)
            .await
            .unwrap()
    }
}

impl Drop for Orders {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection; the status of the answer.
async fn raw(address: &str, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let mut socket = TcpStream::connect(address).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {text:?}")))
}

/// Whether the server ends `socket` (after a 408, or with none; EOF or reset) within
/// `within`. A connection the kernel completed but then dropped from a full listen
/// queue is one the server never had: it stays silent until the client writes, which
/// the server answers with a reset; so a connection not ended within `within` is sent a
/// byte and given `within` again.
async fn ended_by_server(socket: &mut TcpStream, within: Duration) -> bool {
    let mut answer = Vec::new();
    if tokio::time::timeout(within, socket.read_to_end(&mut answer))
        .await
        .is_ok()
    {
        return true;
    }
    let _ = socket.write_all(b"G").await;
    tokio::time::timeout(within, socket.read_to_end(&mut answer))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_stays_responsive_and_bounded_under_hostile_http_clients() {
    let orders = Orders::start();
    let (status, baseline) = orders.create_order(Duration::from_secs(30)).await;
    assert_eq!(status, 201);
    let (fds_before, _, rss_before) = orders.resources();

    // 1. A body trickled a byte at a time: 408 after HTTP_BODY_TIMEOUT, nothing written.
    let address = orders.address.clone();
    let trickle = tokio::spawn(async move {
        let mut socket = TcpStream::connect(&address).await.unwrap();
        let body = br#"{"amount": 1999, "currency": "EUR", "description": "slow"}"#;
        let head = format!(
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        for byte in body {
            if socket.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > BODY_TIMEOUT * 3 {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    });
    let (status, during_trickle) = orders.create_order(Duration::from_secs(10)).await;
    assert_eq!(status, 201);
    let (answer, after) = trickle.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer:?}");
    assert!(
        after < BODY_TIMEOUT * 3,
        "the trickled body held on for {after:?}"
    );
    assert_eq!(
        orders.orders_stored().await,
        2,
        "the trickled order was written"
    );

    // 2. A method as long as a request head may be, and one of 96 letters.
    for len in [96, 100 * 1024] {
        let method = "A".repeat(len);
        let status = raw(&orders.address, &method, "/healthz", "").await;
        // A method that long may be refused, or the connection cut: never served.
        if let Ok(status) = status {
            assert!(
                (400..500).contains(&status),
                "{len}-letter method: {status}"
            );
        }
    }

    // 3. Ten thousand connections opened and never used: the server holds at most its
    //    cap at a time, ends each within HTTP_REQUEST_TIMEOUT of taking it, and a
    //    well-behaved client is still served.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS / 500 {
        let batch = futures_util::future::join_all((0..500).map(|_| {
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&orders.address))
        }))
        .await;
        idle.extend(batch.into_iter().filter_map(|c| c.ok()?.ok()));
    }
    let connected = idle.len();
    let (fds_idle, _, rss_idle) = orders.resources();
    let (status, with_idle) = orders.create_order(Duration::from_secs(60)).await;
    assert_eq!(status, 201);
    let still_open = futures_util::future::join_all(
        idle.iter_mut()
            .map(|socket| ended_by_server(socket, Duration::from_secs(20))),
    )
    .await
    .into_iter()
    .filter(|ended| !ended)
    .count();
    assert_eq!(still_open, 0, "idle connections the server never ended");
    drop(idle);
    let (fds_after, peak, rss_after) = orders.resources();

    println!(
        "orders under abuse: POST /orders {baseline:?} alone, {during_trickle:?} during a \
         trickled body, {with_idle:?} with {connected} idle connections pending; descriptors \
         {fds_before} before, {fds_idle} with them, {fds_after} after; RSS {rss_before} KiB \
         before, {rss_idle} KiB with them, {rss_after} KiB after, peak {peak} KiB"
    );
    assert!(
        connected >= MAX_CONNECTIONS,
        "only {connected} connections opened"
    );
    assert!(
        fds_idle <= fds_before + MAX_CONNECTIONS + 16,
        "{fds_idle} descriptors with {connected} idle connections (cap {MAX_CONNECTIONS})"
    );
    assert!(peak < MAX_PEAK_RSS_KIB, "peak RSS {peak} KiB");
}
