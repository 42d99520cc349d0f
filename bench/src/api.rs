//! The HTTP calls of a flow, bounded: at most `--http-concurrency` requests in flight
//! (a semaphore), each with `--request-timeout`. Every failure is counted by kind
//! (`POST /orders: 503`, `POST complete: timeout`, …) in the [`Recorder`].

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::stats::Recorder;

#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    orders: String,
    permits: Arc<Semaphore>,
    recorder: Arc<Recorder>,
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

impl Api {
    pub fn new(
        orders_url: &str,
        concurrency: usize,
        timeout: Duration,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            // The payment page answers 303 to its own page: that is the answer we check.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Api {
            http,
            orders: orders_url.trim_end_matches('/').to_owned(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            recorder,
        })
    }

    /// `POST /orders` → 201 with the new order's id.
    pub async fn create_order(&self) -> Option<Uuid> {
        let _permit = self.permits.acquire().await.ok()?;
        let sent = self
            .http
            .post(format!("{}/orders", self.orders))
            .json(&serde_json::json!({"amount": 1999, "currency": "EUR", "description": "loadgen"}))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 201 => match r.json::<Created>().await {
                Ok(created) => Some(created.id),
                Err(e) => {
                    self.fail("POST /orders", &e);
                    None
                }
            },
            Ok(r) => {
                self.recorder
                    .error(format!("POST /orders: HTTP {}", r.status().as_u16()));
                None
            }
            Err(e) => {
                self.fail("POST /orders", &e);
                None
            }
        }
    }

    /// `POST {payment_url}/complete` → 303, what the page's Pay button does.
    pub async fn complete(&self, payment_url: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        match self
            .http
            .post(format!("{payment_url}/complete"))
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 303 => true,
            Ok(r) => {
                self.recorder.error(format!(
                    "POST /pay/…/complete: HTTP {}",
                    r.status().as_u16()
                ));
                false
            }
            Err(e) => {
                self.fail("POST /pay/…/complete", &e);
                false
            }
        }
    }

    /// `GET /orders/{id}/invoice` → 200.
    pub async fn invoice(&self, id: Uuid) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        match self
            .http
            .get(format!("{}/orders/{id}/invoice", self.orders))
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 200 => r.bytes().await.is_ok(),
            Ok(r) => {
                self.recorder.error(format!(
                    "GET /orders/…/invoice: HTTP {}",
                    r.status().as_u16()
                ));
                false
            }
            Err(e) => {
                self.fail("GET /orders/…/invoice", &e);
                false
            }
        }
    }

    fn fail(&self, what: &str, e: &reqwest::Error) {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect error"
        } else if e.is_decode() || e.is_body() {
            "bad body"
        } else {
            "transport error"
        };
        self.recorder.error(format!("{what}: {kind}"));
    }
}
