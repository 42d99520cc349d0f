//! `TestApp`: the real Orders service, in-process on port 0, with a fresh database,
//! connected to a `FakePayments`, and an HTTP client to drive it (zero2prod's
//! `spawn_app`).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::time::Duration;

use orders::{AppHandle, Application, Config};
use serde_json::{Value, json};
use shared_protocol::{ClientMessage, OrderId, ServerMessage};
use test_harness::payments::{initiate_payment, select_payment_method};
use test_harness::postgres::TestDatabase;

pub const TOKEN: &str = "test-token";
/// How long a test waits for the service to reach a state before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub link: orders::payments_link::PaymentsLink,
    /// The service's own store (its pool), for tests of what the service holds.
    pub store: orders::store::Store,
    handle: AppHandle,
}

/// Timing for tests: fast reconnects and dead-peer detection; the sweeper slow enough
/// that it never fires unless a test asks for it.
pub fn test_config(payments_ws_url: &str, db: &TestDatabase) -> Config {
    let mut config = Config::defaults();
    config.database_url = db.url().into();
    config.orders_addr = "127.0.0.1:0".into();
    config.payments_ws_url = payments_ws_url.to_owned();
    config.common.payments_token = TOKEN.into();
    config.common.heartbeat_interval = Duration::from_millis(200);
    // Short enough for the dead-peer test, long enough that a loaded CI machine
    // never trips it by accident.
    config.common.peer_timeout = Duration::from_secs(3);
    config.resend_after = Duration::from_secs(60);
    config.reconnect_base = Duration::from_millis(50);
    config.reconnect_cap = Duration::from_millis(500);
    config
}

impl TestApp {
    /// Orders on a fresh database, linked to the fake at `payments_ws_url`.
    pub async fn spawn(payments_ws_url: &str) -> TestApp {
        Self::spawn_with(payments_ws_url, |_| {}).await
    }

    /// Like [`TestApp::spawn`], after `tweak` adjusts the configuration.
    pub async fn spawn_with(payments_ws_url: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDatabase::unborn("orders");
        let mut config = test_config(payments_ws_url, &db);
        tweak(&mut config);
        let app = Application::build(config)
            .await
            .expect("orders failed to start");
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        let link = app.link();
        let store = app.store();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            db,
            link,
            store,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST /orders` with a JSON body; returns the raw response.
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/orders"))
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    /// Creates an order and returns it (asserts `201`).
    pub async fn create_order(&self, amount: i64, currency: &str) -> Order {
        let response = self
            .post_order(&json!({"amount": amount, "currency": currency}))
            .await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        Order(response.json().await.unwrap())
    }

    /// Creates an order and walks it to `awaiting_payment` on `conn`, a connection of a
    /// `FakePayments` with its automatic replies on: the fake must see `initiate_payment`
    /// and then `select_payment_method` for the first method it offers (`credit_card`),
    /// and Orders must store the page it answers with. Returns the order as it then is.
    pub async fn order_awaiting_payment(
        &self,
        conn: &test_harness::Connection<ClientMessage, ServerMessage>,
        amount: i64,
        currency: &str,
    ) -> Order {
        let order = self.create_order(amount, currency).await;
        conn.expect(initiate_payment(order.id())).await;
        conn.expect(select_payment_method(order.id(), "credit_card"))
            .await;
        self.wait_for_status(order.id(), "awaiting_payment").await
    }

    /// `GET /orders/{id}` (asserts `200`).
    pub async fn order(&self, id: OrderId) -> Order {
        let response = self.get(&format!("/orders/{id}")).await;
        assert_eq!(response.status(), 200);
        Order(response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.expect("POST")
    }

    /// Waits until the order has `status`, or fails showing where it stands.
    pub async fn wait_for_status(&self, id: OrderId, status: &str) -> Order {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let order = self.order(id).await;
            if order.status() == status {
                return order;
            }
            if tokio::time::Instant::now() >= end {
                panic!(
                    "order {id} did not become {status} within {DEADLINE:?}; it is {}",
                    order.0
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the order's field `field` is not null.
    pub async fn wait_for_field(&self, id: OrderId, field: &str) -> Order {
        wait_until(DEADLINE, || async {
            let order = self.order(id).await;
            (!order.0[field].is_null()).then_some(order)
        })
        .await
        .unwrap_or_else(|| panic!("order {id} never got a {field} within {DEADLINE:?}"))
    }

    pub async fn wait_connected(&self) {
        wait_until(DEADLINE, || async {
            self.link.is_connected().then_some(())
        })
        .await
        .expect("the link to Payments did not open");
    }

    /// Counts rows of a table in the service's database.
    pub async fn count(&self, sql: &'static str) -> i64 {
        let pool = self.db.pool().await;
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.handle.stop_now();
    }
}

/// An order as the API returned it.
#[derive(Debug, Clone)]
pub struct Order(pub Value);

impl Order {
    pub fn id(&self) -> OrderId {
        OrderId::parse(self.0["id"].as_str().expect("id")).expect("uuid")
    }

    pub fn status(&self) -> &str {
        self.0["status"].as_str().expect("status")
    }
}

/// Polls `check` every 20 ms until it yields a value or `deadline` passes.
pub async fn wait_until<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
