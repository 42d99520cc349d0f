//! Hostile WebSocket clients against the real `payments` binary (issue 9): 1,000
//! connections opened and left idle, a client that never reads, a frame trickled one
//! byte at a time (and a request head the same way), fragmented text over the 64 KiB
//! limit, and text that is not UTF-8. Throughout, a well-behaved Orders keeps getting
//! answers; afterwards the abusers are gone, and the process's peak memory is reported
//! and bounded. The binary runs as a child, so its memory is its own.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use shared_protocol::{Amount, ClientMessage, Currency, OrderId, SUBPROTOCOL, ServerMessage};
use test_harness::postgres::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "abuse-test-token";
/// Short, so that the abusers are dropped within the test.
const PEER_TIMEOUT: Duration = Duration::from_secs(4);
const IDLE_CONNECTIONS: usize = 1000;
/// The most the process may hold at its peak: a leak per connection or per frame would
/// pass it.
const MAX_PEAK_RSS_KIB: u64 = 200 * 1024;

struct Payments {
    child: Child,
    port: u16,
    stderr: std::path::PathBuf,
    _db: TestDatabase,
}

impl Payments {
    fn start() -> Payments {
        let db = TestDatabase::unborn("payments");
        let port = test_harness::process::free_port();
        let stderr =
            std::env::temp_dir().join(format!("payments-abuse-{}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_payments"))
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{port}"))
            .env("PAYMENTS_TOKEN", TOKEN)
            .env("PEER_TIMEOUT", format!("{}s", PEER_TIMEOUT.as_secs()))
            .env("HEARTBEAT_INTERVAL", "1s")
            // Room for the thousand idle WebSockets (the cap itself: handshake_and_limits.rs).
            .env("PAYMENTS_MAX_WEBSOCKETS", "1100")
            // Warnings only, to a file: a thousand connections log a lot at info, and
            // a pipe nobody reads would block the service.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Payments {
            child,
            port,
            stderr,
            _db: db,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// A well-behaved Orders connection, retried while the service starts (up to 20 s).
    async fn connect(&self) -> Ws {
        let mut request = self.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
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

    /// `VmHWM` (peak) and `VmRSS` of the process, in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for Payments {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// A well-behaved Orders: a task reads its connection all the time, so it answers
/// Payments' pings however long the abuse steps take (a connection left unread past
/// PEER_TIMEOUT is dropped, rightly), and hands over the orders that got their methods.
struct Good {
    sink: futures_util::stream::SplitSink<Ws, Message>,
    answered: tokio::sync::mpsc::Receiver<OrderId>,
}

impl Good {
    fn new(ws: Ws) -> Good {
        let (sink, mut stream) = ws.split();
        let (tx, answered) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message
                    && let Ok(ServerMessage::PaymentMethods { order_id, .. }) =
                        shared_protocol::decode::<ServerMessage>(&text)
                    && tx.send(order_id).await.is_err()
                {
                    return;
                }
            }
        });
        Good { sink, answered }
    }

    /// One request, answered within `deadline` (a correctness bound: Payments still
    /// serves; how fast is printed, not asserted).
    async fn round_trip(&mut self, deadline: Duration) -> Duration {
        let order = OrderId::new();
        let started = Instant::now();
        let request = ClientMessage::InitiatePayment {
            order_id: order,
            amount: Amount::new(1999).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
        };
        self.sink
            .send(Message::Text(shared_protocol::encode(&request).into()))
            .await
            .expect("the good connection ended");
        let answered = tokio::time::timeout(deadline, async {
            loop {
                match self.answered.recv().await {
                    Some(id) if id == order => return,
                    Some(_) => {}
                    None => panic!("the good connection ended"),
                }
            }
        })
        .await;
        assert!(answered.is_ok(), "no answer within {deadline:?}");
        started.elapsed()
    }
}

/// A TCP connection upgraded by hand (so that frames can be written byte by byte).
async fn raw_upgrade(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(upgrade_request(port).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "no end of the response head");
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

fn upgrade_request(port: u16) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\
         Authorization: Bearer {TOKEN}\r\n\r\n"
    )
}

/// A client frame (masked, as RFC 6455 requires of clients).
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// What the server did with a raw connection, read until it ends (bounded by `within`):
/// the code of its close frame, if it sent one, and whether the connection ended.
async fn server_end(stream: &mut TcpStream, within: Duration) -> (Option<u16>, bool) {
    let read = async {
        let mut close = None;
        loop {
            let mut head = [0u8; 2];
            if stream.read_exact(&mut head).await.is_err() {
                return (close, true);
            }
            let mut len = u64::from(head[1] & 0x7F);
            if len == 126 {
                let mut ext = [0u8; 2];
                if stream.read_exact(&mut ext).await.is_err() {
                    return (close, true);
                }
                len = u64::from(u16::from_be_bytes(ext));
            } else if len == 127 {
                let mut ext = [0u8; 8];
                if stream.read_exact(&mut ext).await.is_err() {
                    return (close, true);
                }
                len = u64::from_be_bytes(ext);
            }
            let mut payload = vec![0u8; len as usize];
            if stream.read_exact(&mut payload).await.is_err() {
                return (close, true);
            }
            if head[0] & 0x0F == 0x8 && payload.len() >= 2 {
                close = Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or((None, false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_stays_responsive_and_bounded_under_hostile_websocket_clients() {
    let payments = Payments::start();
    let mut good = Good::new(payments.connect().await);
    let baseline = good.round_trip(Duration::from_secs(10)).await;
    let (_, rss_before) = payments.memory_kib();

    // 1. A thousand connections, upgraded and then left idle.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS / 100 {
        let batch = futures_util::future::join_all((0..100).map(|_| payments.connect())).await;
        idle.extend(batch);
    }
    assert_eq!(idle.len(), IDLE_CONNECTIONS);
    let with_idle = good.round_trip(Duration::from_secs(10)).await;
    let (_, rss_idle) = payments.memory_kib();

    // 2. A client that sends and never reads: its answers pile up until Payments' send
    //    deadline (PEER_TIMEOUT) drops it.
    let mut reader_never = payments.connect().await;
    let initiate = |order_id| {
        Message::Text(
            shared_protocol::encode(&ClientMessage::InitiatePayment {
                order_id,
                amount: Amount::new(500).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
            })
            .into(),
        )
    };
    let flood = tokio::spawn(async move {
        for _ in 0..5000 {
            if tokio::time::timeout(
                Duration::from_secs(2),
                reader_never.send(initiate(OrderId::new())),
            )
            .await
            .is_err()
            {
                break; // our own writes block: Payments stopped reading us
            }
        }
        reader_never
    });

    // 3. A request head sent one byte every 200 ms (slowloris), and a frame sent one
    //    byte every 300 ms after the upgrade.
    let port = payments.port;
    let slow_head = tokio::spawn(async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let started = Instant::now();
        for byte in upgrade_request(port).bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        // Sent it all (it should not get that far): wait for whatever comes.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        started.elapsed()
    });
    let slow_frame = tokio::spawn(async move {
        let mut stream = raw_upgrade(port).await;
        let started = Instant::now();
        let text = frame(
            0x1,
            true,
            br#"{"type":"cancel_payment","order_id":"7d3c1f2e-8a4b-4c5d-9e6f-0123456789ab"}"#,
        );
        for byte in text {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        let end = server_end(&mut stream, Duration::from_secs(20)).await;
        (started.elapsed(), end)
    });

    // 4. Text fragmented into continuation frames that add up past 64 KiB.
    let mut fragmented = raw_upgrade(port).await;
    let chunk = vec![b' '; 40 * 1024];
    fragmented
        .write_all(&frame(0x1, false, &chunk))
        .await
        .unwrap();
    let _ = fragmented.write_all(&frame(0x0, false, &chunk)).await;
    let _ = fragmented.write_all(&frame(0x0, true, b"{}")).await;
    let (fragmented_close, _) = server_end(&mut fragmented, Duration::from_secs(10)).await;
    assert_eq!(
        fragmented_close,
        Some(1009),
        "fragments past 64 KiB: close 1009 (message too big)"
    );

    // 5. A text frame that is not UTF-8.
    let mut not_utf8 = raw_upgrade(port).await;
    not_utf8
        .write_all(&frame(0x1, true, &[0x7B, 0xFF, 0xFE, 0x7D]))
        .await
        .unwrap();
    let (not_utf8_close, _) = server_end(&mut not_utf8, Duration::from_secs(10)).await;
    assert_eq!(
        not_utf8_close,
        Some(1007),
        "text that is not UTF-8: close 1007 (invalid payload)"
    );

    // Through all of it, the good connection is answered.
    let during = good.round_trip(Duration::from_secs(10)).await;

    let slow_head = slow_head.await.unwrap();
    assert!(
        slow_head < Duration::from_secs(30),
        "a request head trickled byte by byte was let hang for {slow_head:?}"
    );
    let (slow_frame_for, (_, slow_frame_ended)) = slow_frame.await.unwrap();
    assert!(
        slow_frame_ended,
        "a frame trickled byte by byte kept its connection"
    );
    let mut reader_never = flood.await.unwrap();
    // Dropped by now (its writes blocked for 2 s, longer than... or it sent all 5000):
    // reading what is buffered ends in the end of the connection within the deadline.
    let dropped = tokio::time::timeout(PEER_TIMEOUT * 5, async {
        while let Some(Ok(_)) = reader_never.next().await {}
    })
    .await;
    assert!(dropped.is_ok(), "a client that never reads was kept");

    // The idle ones are dropped too (no pong within PEER_TIMEOUT), and with them what
    // they held.
    let end = Instant::now() + PEER_TIMEOUT * 5;
    loop {
        let open = payments.metric("payments_websocket_connections").await;
        if open.is_some_and(|n| n <= 1.0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "{open:?} connections still open after the idle ones went silent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(idle);
    let after = good.round_trip(Duration::from_secs(10)).await;
    let (peak, rss_after) = payments.memory_kib();

    eprintln!(
        "payments under abuse: round trip {baseline:?} alone, {with_idle:?} with {IDLE_CONNECTIONS} idle \
         connections, {during:?} during the abuse, {after:?} after; RSS {rss_before} KiB before, \
         {rss_idle} KiB with {IDLE_CONNECTIONS} idle connections, {rss_after} KiB after, peak \
         {peak} KiB; slowloris head cut after {slow_head:?}, trickled frame cut after {slow_frame_for:?}"
    );
    assert!(
        peak < MAX_PEAK_RSS_KIB,
        "peak RSS {peak} KiB is over {MAX_PEAK_RSS_KIB} KiB"
    );
    let mut stderr = String::new();
    std::fs::File::open(&payments.stderr)
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
