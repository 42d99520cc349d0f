//! The HTTP calls of the Orders API and the payment page, bounded: at most
//! `--http-concurrency` requests in flight (a semaphore), each with `--request-timeout`.
//! Every failure is counted by kind (`POST /orders: HTTP 503`, `POST /pay/…/complete:
//! timeout`, …) in the [`Recorder`].

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::stats::Recorder;
use crate::tls::BenchTls;

#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    orders: String,
    permits: Arc<Semaphore>,
    recorder: Arc<Recorder>,
}

/// One attempt of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<T> {
    /// The answer wanted.
    Done(T),
    /// No answer, a timeout, a 5xx or 429: it may pass later.
    Retry,
    /// A 4xx that a retry will not change.
    Refused(u16),
}

impl<T> Attempt<T> {
    pub fn ok(self) -> Option<T> {
        match self {
            Attempt::Done(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

/// What `GET /orders/{id}` says of an order (the fields a journey needs).
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
        tls: Option<&BenchTls>,
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

    /// The same client, within the same bound, on another Orders instance.
    pub fn at(&self, orders_url: &str) -> Api {
        Api {
            orders: orders_url.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    /// `POST /orders` → 201 with the new order's id; with an `Idempotency-Key`, 200
    /// too (the key's first order).
    pub async fn create(&self, key: Option<&str>) -> Attempt<Uuid> {
        let mut request = self.http.post(format!("{}/orders", self.orders)).json(
            &serde_json::json!({"amount": 1999, "currency": "EUR", "description": "loadgen"}),
        );
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let codes: &[u16] = if key.is_some() { &[200, 201] } else { &[201] };
        self.call("POST /orders", request, codes, |body| {
            serde_json::from_slice::<Created>(body).ok().map(|c| c.id)
        })
        .await
    }

    /// `GET /orders/{id}` → 200 with the order.
    pub async fn order(&self, id: Uuid) -> Attempt<OrderView> {
        let request = self.http.get(format!("{}/orders/{id}", self.orders));
        self.call("GET /orders/{id}", request, &[200], |body| {
            serde_json::from_slice(body).ok()
        })
        .await
    }

    /// `POST /orders/{id}/cancel`: 202, or 409 (already final: an earlier attempt whose
    /// answer was lost may have been the one).
    pub async fn cancel(&self, id: Uuid) -> Attempt<()> {
        let request = self
            .http
            .post(format!("{}/orders/{id}/cancel", self.orders));
        self.call("POST /orders/…/cancel", request, &[202, 409], |_| Some(()))
            .await
    }

    /// `GET /orders/{id}/invoice` → 200.
    pub async fn invoice(&self, id: Uuid) -> Attempt<()> {
        let request = self
            .http
            .get(format!("{}/orders/{id}/invoice", self.orders));
        self.call("GET /orders/…/invoice", request, &[200], |_| Some(()))
            .await
    }

    /// `POST {payment_url}/{action}` (`complete` or `cancel`, the page's buttons) → 303.
    pub async fn page(&self, payment_url: &str, action: &str) -> Attempt<()> {
        let request = self.http.post(format!("{payment_url}/{action}"));
        let what = format!("POST /pay/…/{action}");
        self.call(&what, request, &[303], |_| Some(())).await
    }

    /// Sends `request` within the bound: an answer with one of `codes` whose body
    /// `parse` reads is done; a 5xx or 429 may pass later; another status will not.
    async fn call<T>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        codes: &[u16],
        parse: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Attempt<T> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Retry;
        };
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => return self.failed(what, &e),
        };
        let code = answer.status().as_u16();
        if !codes.contains(&code) {
            self.recorder.error(format!("{what}: HTTP {code}"));
            return if code >= 500 || code == 429 {
                Attempt::Retry
            } else {
                Attempt::Refused(code)
            };
        }
        match answer.bytes().await.map(|body| parse(&body)) {
            Ok(Some(value)) => Attempt::Done(value),
            Ok(None) => {
                self.recorder.error(format!("{what}: bad body"));
                Attempt::Retry
            }
            Err(e) => self.failed(what, &e),
        }
    }

    fn failed<T>(&self, what: &str, e: &reqwest::Error) -> Attempt<T> {
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
        Attempt::Retry
    }
}
