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

/// One attempt of a call that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<T> {
    /// The answer wanted.
    Done(T),
    /// No answer, a timeout, a 5xx or 429: it may pass later.
    Retry,
    /// A 4xx that a retry will not change.
    Refused(u16),
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

/// What `GET /orders/{id}` says of an order (the fields a flow needs).
#[derive(Debug, Clone, Deserialize)]
pub struct OrderView {
    pub status: String,
    pub payment_url: Option<String>,
}

impl Api {
    pub fn new(
        orders_url: &str,
        concurrency: usize,
        timeout: Duration,
        recorder: Arc<Recorder>,
        tls: Option<&crate::tls::BenchTls>,
    ) -> anyhow::Result<Api> {
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            // The payment page answers 303 to its own page: that is the answer we check.
            .redirect(reqwest::redirect::Policy::none());
        let http = match tls {
            Some(tls) => tls.http(builder),
            None => builder,
        }
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

    /// `POST {orders}/orders` on the given Orders instance with an `Idempotency-Key`:
    /// 201 (created) or 200 (the key's first order) → its id.
    pub async fn create_keyed(&self, orders: &str, key: &str) -> Attempt<Uuid> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Retry;
        };
        let sent = self
            .http
            .post(format!("{orders}/orders"))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({"amount": 1999, "currency": "EUR", "description": "loadgen chaos"}))
            .send()
            .await;
        match sent {
            Ok(r) if matches!(r.status().as_u16(), 200 | 201) => match r.json::<Created>().await {
                Ok(created) => Attempt::Done(created.id),
                Err(e) => {
                    self.fail("POST /orders", &e);
                    Attempt::Retry
                }
            },
            Ok(r) => self.status("POST /orders", r.status().as_u16()),
            Err(e) => {
                self.fail("POST /orders", &e);
                Attempt::Retry
            }
        }
    }

    /// `POST {orders}/orders/{id}/cancel`: 202, or 409 (already final: an earlier
    /// attempt whose answer was lost may have been the one).
    pub async fn cancel_order(&self, orders: &str, id: Uuid) -> Attempt<u16> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Retry;
        };
        match self
            .http
            .post(format!("{orders}/orders/{id}/cancel"))
            .send()
            .await
        {
            Ok(r) if matches!(r.status().as_u16(), 202 | 409) => Attempt::Done(r.status().as_u16()),
            Ok(r) => self.status("POST /orders/…/cancel", r.status().as_u16()),
            Err(e) => {
                self.fail("POST /orders/…/cancel", &e);
                Attempt::Retry
            }
        }
    }

    /// `POST {payment_url}/{action}` (`complete` or `cancel`, the page's buttons) → 303.
    pub async fn page_action(&self, payment_url: &str, action: &str) -> Attempt<()> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Retry;
        };
        let what = format!("POST /pay/…/{action}");
        match self
            .http
            .post(format!("{payment_url}/{action}"))
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 303 => Attempt::Done(()),
            Ok(r) => self.status(&what, r.status().as_u16()),
            Err(e) => {
                self.fail(&what, &e);
                Attempt::Retry
            }
        }
    }

    /// `GET {orders}/orders/{id}` → 200 with the order.
    pub async fn order(&self, orders: &str, id: Uuid) -> Attempt<OrderView> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Retry;
        };
        let what = "GET /orders/{id}";
        match self.http.get(format!("{orders}/orders/{id}")).send().await {
            Ok(r) if r.status().as_u16() == 200 => match r.json::<OrderView>().await {
                Ok(view) => Attempt::Done(view),
                Err(e) => {
                    self.fail(what, &e);
                    Attempt::Retry
                }
            },
            Ok(r) => self.status(what, r.status().as_u16()),
            Err(e) => {
                self.fail(what, &e);
                Attempt::Retry
            }
        }
    }

    /// A status that is not the answer: 5xx and 429 may pass (retry), others never do.
    fn status<T>(&self, what: &str, code: u16) -> Attempt<T> {
        self.recorder.error(format!("{what}: HTTP {code}"));
        if code >= 500 || code == 429 {
            Attempt::Retry
        } else {
            Attempt::Refused(code)
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
