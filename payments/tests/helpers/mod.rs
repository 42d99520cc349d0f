//! `TestApp`: the real Payments service in-process on port 0 with a fresh database,
//! and `Client`: a plain WebSocket client speaking payments.v1 to it.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use payments::{AppHandle, Application, Config};
use shared_protocol::{Amount, ClientMessage, Currency, OrderId, SUBPROTOCOL, ServerMessage};
use test_harness::postgres::TestDatabase;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TOKEN: &str = "test-token";
/// The operators' token (`PAYMENTS_ADMIN_TOKEN`), not the link's.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// How long a test waits for an expected frame.
pub const DEADLINE: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub http: reqwest::Client,
    /// The service's own store (its pool), for tests of what the service holds.
    pub store: payments::store::Store,
    handle: AppHandle,
}

pub fn test_config(db: &TestDatabase) -> Config {
    let mut config = Config::defaults();
    config.database_url = db.url().into();
    config.payments_addr = "127.0.0.1:0".into();
    config.public_url = None;
    config.common.payments_token = TOKEN.into();
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.common.heartbeat_interval = Duration::from_millis(500);
    config.common.peer_timeout = Duration::from_secs(10);
    config.expiry_interval = Duration::from_millis(100);
    config.delivery_scan_interval = Duration::from_millis(200);
    // Every scrape reads the backlog (metrics.rs: caching is tested on its own).
    config.backlog_gauge_max_age = Duration::from_millis(1);
    config
}

impl TestApp {
    pub async fn spawn(db: &TestDatabase) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: &TestDatabase, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = test_config(db);
        tweak(&mut config);
        let app = Application::build(config)
            .await
            .expect("payments failed to start");
        let port = app.port();
        let handle = app.handle();
        let store = app.store();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            store,
            handle,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http.post(self.url(path)).send().await.unwrap()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.handle.stop_now();
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A plain WebSocket client, as Orders would connect.
pub struct Client {
    pub ws: Ws,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        headers.insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        Client { ws }
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        self.send_text(&shared_protocol::encode(message)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next protocol message (control frames are skipped); panics after [`DEADLINE`].
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("no message within {DEADLINE:?}"))
    }

    /// The next protocol message within `within`, if any.
    pub async fn try_recv(&mut self, within: Duration) -> Option<ServerMessage> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(end, self.ws.next()).await.ok()??;
            match frame.expect("a frame") {
                Message::Text(text) => {
                    return Some(shared_protocol::decode(text.as_str()).expect("a ServerMessage"));
                }
                Message::Close(frame) => panic!("the server closed the connection: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => panic!("the server did not close the connection within {DEADLINE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// initiate → methods → select the first → page; returns the page's message.
    pub async fn start_payment(
        &mut self,
        order_id: OrderId,
        amount: i64,
        currency: &str,
    ) -> ServerMessage {
        self.send(&initiate(order_id, amount, currency)).await;
        let methods = self.recv().await;
        assert!(
            matches!(methods, ServerMessage::PaymentMethods { .. }),
            "{methods:?}"
        );
        self.send(&ClientMessage::SelectPaymentMethod {
            order_id,
            method: "credit_card".into(),
        })
        .await;
        let page = self.recv().await;
        assert!(
            matches!(page, ServerMessage::PaymentPage { .. }),
            "{page:?}"
        );
        page
    }
}

pub fn initiate(order_id: OrderId, amount: i64, currency: &str) -> ClientMessage {
    ClientMessage::InitiatePayment {
        order_id,
        amount: Amount::new(amount).unwrap(),
        currency: Currency::parse(currency).unwrap(),
    }
}

/// The path of a page URL (`/pay/{id}`).
pub fn page_path(page: &ServerMessage) -> String {
    let ServerMessage::PaymentPage { url, .. } = page else {
        panic!("not a page: {page:?}")
    };
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .expect("a URL with a path")
}

/// Stores `n` fulfilled payments with unacked, never-sent events straight in the
/// database (the insert trigger NOTIFYs as the service would); returns the event ids.
pub async fn seed_unacked_events(db: &TestDatabase, n: i64) -> Vec<i64> {
    let pool = db.pool().await;
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "WITH s AS (
             INSERT INTO payment_sessions (payment_id, order_id, amount, currency, state, method, expires_at)
             SELECT gen_random_uuid(), gen_random_uuid(), 100, 'EUR', 'fulfilled', 'credit_card',
                 now() + interval '1 hour'
             FROM generate_series(1, $1)
             RETURNING payment_id, order_id)
         INSERT INTO payment_events (payment_id, order_id, state)
         SELECT payment_id, order_id, 'FULFILL' FROM s RETURNING event_id",
    )
    .bind(n)
    .fetch_all(&pool)
    .await
    .unwrap();
    ids.sort_unstable();
    ids
}

/// Waits until `query` (a single bigint) returns `want`, up to `within`.
pub async fn wait_for_count(db: &TestDatabase, query: &'static str, want: i64, within: Duration) {
    let pool = db.pool().await;
    let end = tokio::time::Instant::now() + within;
    loop {
        let got: i64 = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{query} is {got}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
