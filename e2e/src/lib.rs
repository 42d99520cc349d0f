//! The whole stack in one process, for end-to-end tests: the real Payments and the
//! real Orders, each on port 0 with a fresh database, linked by the real WebSocket.
//! Either service can be stopped and started again (on the same port, with the same
//! database) to test that nothing is lost across restarts.

use std::time::Duration;

use serde_json::{Value, json};
use shared_protocol::OrderId;
use test_harness::postgres::TestDatabase;

/// How long a test waits for the stack to reach a state.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The files of a link over mutual TLS: Payments' certificate and key and the CA it
/// requires client certificates from; the CA Orders trusts, and its own certificate.
#[derive(Debug, Clone)]
pub struct StackTls {
    pub payments_cert: std::path::PathBuf,
    pub payments_key: std::path::PathBuf,
    pub client_ca: std::path::PathBuf,
    pub payments_ca: std::path::PathBuf,
    pub orders_cert: std::path::PathBuf,
    pub orders_key: std::path::PathBuf,
}

pub struct Stack {
    pub orders_db: TestDatabase,
    pub payments_db: TestDatabase,
    pub payments_port: u16,
    pub orders_port: u16,
    pub http: reqwest::Client,
    /// Databases other than the fresh ones, as (Orders', Payments') URLs.
    databases: Option<(String, String)>,
    /// The link over mutual TLS, when set.
    tls: Option<StackTls>,
    /// Where Orders connects instead of Payments (a recording proxy), when set.
    link_via: Option<String>,
    payments: Option<payments::AppHandle>,
    orders: Option<orders::AppHandle>,
}

impl Stack {
    pub async fn spawn() -> Stack {
        Stack::spawn_with(None, None).await
    }

    /// The stack with its link over mutual TLS (`wss://`), as `tls` says.
    pub async fn spawn_tls(tls: StackTls) -> Stack {
        Stack::spawn_with(None, Some(tls)).await
    }

    /// The stack on the databases at `orders_url` and `payments_url` (which the
    /// caller creates and drops), instead of fresh ones.
    pub async fn spawn_on(orders_url: &str, payments_url: &str) -> Stack {
        Stack::spawn_with(Some((orders_url.to_owned(), payments_url.to_owned())), None).await
    }

    async fn spawn_with(databases: Option<(String, String)>, tls: Option<StackTls>) -> Stack {
        let mut stack = Stack::unstarted(databases, tls);
        stack.start_payments().await;
        stack.start_orders().await;
        stack.wait_ready().await;
        stack
    }

    /// Payments alone, on a fresh database: [`Stack::start_orders_via`] starts Orders.
    pub async fn spawn_payments() -> Stack {
        let mut stack = Stack::unstarted(None, None);
        stack.start_payments().await;
        stack
    }

    /// Payments' WebSocket URL, where Orders connects unless told otherwise.
    pub fn payments_ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.payments_port)
    }

    /// Starts Orders with its link to `url` (a proxy in front of
    /// [`Stack::payments_ws_url`]) instead of Payments, and waits until it is ready.
    pub async fn start_orders_via(&mut self, url: String) {
        self.link_via = Some(url);
        self.start_orders().await;
        self.wait_ready().await;
    }

    fn unstarted(databases: Option<(String, String)>, tls: Option<StackTls>) -> Stack {
        Stack {
            orders_db: TestDatabase::unborn("e2e_orders"),
            payments_db: TestDatabase::unborn("e2e_payments"),
            payments_port: 0,
            orders_port: 0,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            databases,
            tls,
            link_via: None,
            payments: None,
            orders: None,
        }
    }

    /// Starts Payments (on its previous port after the first start).
    pub async fn start_payments(&mut self) {
        let mut config = payments::Config::defaults();
        config.database_url = match &self.databases {
            Some((_, payments)) => payments.as_str().into(),
            None => self.payments_db.url().into(),
        };
        config.payments_addr = format!("127.0.0.1:{}", self.payments_port);
        config.public_url = None;
        config.common.payments_token = "e2e-token".into();
        config.delivery_scan_interval = Duration::from_millis(200);
        config.expiry_interval = Duration::from_millis(200);
        if let Some(tls) = &self.tls {
            config.tls_cert = Some(tls.payments_cert.clone());
            config.tls_key = Some(tls.payments_key.clone());
            config.tls_client_ca = Some(tls.client_ca.clone());
        }
        let app = payments::Application::build(config)
            .await
            .expect("payments starts");
        self.payments_port = app.port();
        self.payments = Some(app.handle());
        tokio::spawn(app.run_until_stopped());
    }

    /// Starts Orders (on its previous port after the first start).
    pub async fn start_orders(&mut self) {
        let mut config = orders::Config::defaults();
        config.database_url = match &self.databases {
            Some((orders, _)) => orders.as_str().into(),
            None => self.orders_db.url().into(),
        };
        config.orders_addr = format!("127.0.0.1:{}", self.orders_port);
        config.payments_ws_url = format!("ws://127.0.0.1:{}/ws", self.payments_port);
        if let Some(tls) = &self.tls {
            config.payments_ws_url = format!("wss://127.0.0.1:{}/ws", self.payments_port);
            config.payments_ca = Some(tls.payments_ca.clone());
            config.tls_client_cert = Some(tls.orders_cert.clone());
            config.tls_client_key = Some(tls.orders_key.clone());
        }
        if let Some(url) = &self.link_via {
            config.payments_ws_url = url.clone();
        }
        config.common.payments_token = "e2e-token".into();
        config.common.heartbeat_interval = Duration::from_millis(500);
        config.common.peer_timeout = Duration::from_secs(10);
        config.reconnect_base = Duration::from_millis(50);
        config.reconnect_cap = Duration::from_millis(500);
        let app = orders::Application::build(config)
            .await
            .expect("orders starts");
        self.orders_port = app.port();
        self.orders = Some(app.handle());
        tokio::spawn(app.run_until_stopped());
    }

    pub async fn stop_payments(&mut self) {
        if let Some(handle) = self.payments.take() {
            handle.stop(true).await;
        }
    }

    pub async fn stop_orders(&mut self) {
        if let Some(handle) = self.orders.take() {
            handle.stop(true).await;
        }
    }

    /// Waits until Orders is ready and its link to Payments is open (`/healthz` says
    /// so; readiness leaves the link out).
    pub async fn wait_ready(&self) {
        let url = self.orders_url("/healthz");
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && let Ok(body) = response.json::<Value>().await
                && body["payments_link"] == "connected"
                && self
                    .http
                    .get(self.orders_url("/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "orders not ready within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn orders_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.orders_port)
    }

    pub async fn create_order(&self, amount: i64, currency: &str) -> OrderId {
        let response = self
            .http
            .post(self.orders_url("/orders"))
            .json(&json!({"amount": amount, "currency": currency}))
            .send()
            .await
            .expect("POST /orders");
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("an order");
        OrderId::parse(order["id"].as_str().expect("id")).expect("uuid")
    }

    pub async fn order(&self, id: OrderId) -> Value {
        self.http
            .get(self.orders_url(&format!("/orders/{id}")))
            .send()
            .await
            .expect("GET /orders/{id}")
            .json()
            .await
            .expect("an order")
    }

    /// Waits until the order's `field` satisfies `done`; returns the order.
    pub async fn wait_order(
        &self,
        id: OrderId,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let order = self.order(id).await;
            if done(&order) {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "order {id} never became {what} within {DEADLINE:?}: {order}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_status(&self, id: OrderId, status: &str) -> Value {
        self.wait_order(id, status, |o| o["status"] == status).await
    }

    /// Waits for the order's payment page and returns its URL.
    pub async fn payment_url(&self, id: OrderId) -> String {
        let order = self
            .wait_order(id, "awaiting_payment", |o| {
                o["status"] == "awaiting_payment"
            })
            .await;
        order["payment_url"]
            .as_str()
            .expect("payment_url")
            .to_owned()
    }

    /// `POST {page}/complete` or `/cancel`, as the page's form does.
    pub async fn press(&self, payment_url: &str, button: &str) {
        let response = self
            .http
            .post(format!("{payment_url}/{button}"))
            .send()
            .await
            .expect("POST to the page");
        assert_eq!(response.status(), 303);
    }

    /// The number of invoices in the Orders database.
    pub async fn invoices(&self) -> i64 {
        let pool = self.orders_db.pool().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
            .fetch_one(&pool)
            .await
            .expect("count invoices");
        pool.close().await;
        n
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(handle) = self.orders.take() {
            handle.stop_now();
        }
        if let Some(handle) = self.payments.take() {
            handle.stop_now();
        }
    }
}
