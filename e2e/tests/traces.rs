//! One trace per order, across the WebSocket (issue 21): the real Orders and the real
//! Payments, each a process of its own exporting to an in-process OTLP receiver, run
//! one order from `POST /orders` to its invoice. The order's trace continues the
//! request's `traceparent` through both services to the stored page; the customer's
//! Pay starts a trace of its own, linked to the order's, under which the outcome's
//! delivery, Orders' batch that fulfils it and the ack run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_harness::otlp::{OtlpReceiver, Span};
use test_harness::postgres::TestDatabase;
use test_harness::process::{free_port, wait_exit};

const DEADLINE: Duration = Duration::from_secs(30);
const TOKEN: &str = "trace-test-token-of-at-least-32-bytes";
/// The trace and the parent span of the test's own `traceparent` on `POST /orders`.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
/// The trace of an order whose caller did not sample it.
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// A service process, stopped with SIGTERM (so it flushes its spans) when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if wait_exit(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
        }
    }
}

/// Starts `binary` with traces exported to `otlp`, and the environment `env`.
fn start(binary: &str, otlp: &str, env: &[(&str, String)]) -> Service {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PAYMENTS_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        // Export every 100 ms instead of every 5 s: the test waits on what arrives.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    Service(command.spawn().expect("start the service"))
}

/// Polls `url` until `done` holds for its JSON, within [`DEADLINE`].
async fn wait_json(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(response) = http.get(url).send().await
            && let Ok(body) = response.json::<Value>().await
            && done(&body)
        {
            return body;
        }
        assert!(
            Instant::now() < end,
            "{url} did not reach the state in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one span of `spans` that `is` picks out; fails listing them otherwise.
fn one<'s>(spans: &'s [Span], what: &str, is: impl Fn(&Span) -> bool) -> &'s Span {
    let found: Vec<&Span> = spans.iter().filter(|s| is(s)).collect();
    assert_eq!(found.len(), 1, "{what}: found {found:#?} among {spans:#?}");
    found[0]
}

fn child_of<'s>(spans: &'s [Span], parent: &Span, service: &str, name: &str) -> &'s Span {
    one(
        spans,
        &format!("{service} {name} under {}", parent.name),
        |s| {
            s.parent_span_id.as_deref() == Some(parent.span_id.as_str())
                && s.service == service
                && s.name == name
        },
    )
}

#[tokio::test]
async fn one_order_is_one_trace_and_its_pay_a_linked_one() {
    let otlp = OtlpReceiver::start().await;
    let (orders_db, payments_db) = (
        TestDatabase::unborn("traces_orders"),
        TestDatabase::unborn("traces_payments"),
    );
    let (orders_port, payments_port) = (free_port(), free_port());
    let _payments = start(
        env!("CARGO_BIN_EXE_e2e-payments"),
        &otlp.endpoint(),
        &[
            ("DATABASE_URL", payments_db.url().to_owned()),
            ("PAYMENTS_ADDR", format!("127.0.0.1:{payments_port}")),
        ],
    );
    let _orders = start(
        env!("CARGO_BIN_EXE_e2e-orders"),
        &otlp.endpoint(),
        &[
            ("DATABASE_URL", orders_db.url().to_owned()),
            ("ORDERS_ADDR", format!("127.0.0.1:{orders_port}")),
            (
                "PAYMENTS_WS_URL",
                format!("ws://127.0.0.1:{payments_port}/ws"),
            ),
        ],
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let orders = format!("http://127.0.0.1:{orders_port}");
    wait_json(&http, &format!("{orders}/healthz"), |b| {
        b["payments_link"] == "connected"
    })
    .await;

    let unsampled = create_unsampled_order(&http, &orders).await;
    let (order_id, payment_id) = run_one_order(&http, &orders).await;
    let spans = wait_for_the_ack(&otlp, &order_id).await;
    assert_no_payment_id(&spans, &payment_id);
    assert_nothing_of(&spans, &unsampled);

    let pay_trace = assert_the_order_trace(&spans, &order_id);
    assert_the_pay_trace(&spans, &pay_trace, &order_id);
    println!("{}", otlp.render_tree(TRACE));
    println!("{}", otlp.render_tree(&pay_trace));
}

/// Creates an order (continuing the test's trace), pays its page, reads its invoice;
/// returns the order's id and its payment's.
async fn run_one_order(http: &reqwest::Client, orders: &str) -> (String, String) {
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let (id, order) = create_order_to_its_page(http, orders, &traceparent, 1999).await;
    let order_url = format!("{orders}/orders/{id}");
    let page = order["payment_url"].as_str().unwrap();
    let paid = http.post(format!("{page}/complete")).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    wait_json(http, &order_url, |o| o["status"] == "fulfilled").await;
    let invoice = http
        .get(format!("{order_url}/invoice"))
        .send()
        .await
        .unwrap();
    assert_eq!(invoice.status(), 200);
    let payment_id = page.rsplit('/').next().unwrap().to_owned();
    (id, payment_id)
}

/// Creates an order whose caller's `traceparent` says "not sampled", and waits for
/// its page: four messages went across the link and back for it. Returns its id.
async fn create_unsampled_order(http: &reqwest::Client, orders: &str) -> String {
    let traceparent = format!("00-{UNSAMPLED_TRACE}-{PARENT}-00");
    create_order_to_its_page(http, orders, &traceparent, 500)
        .await
        .0
}

/// `POST /orders` of `amount` EUR with `traceparent`, then waits for its page; returns
/// the order's id and the order as it then reads.
async fn create_order_to_its_page(
    http: &reqwest::Client,
    orders: &str,
    traceparent: &str,
    amount: u32,
) -> (String, Value) {
    let created: Value = http
        .post(format!("{orders}/orders"))
        .header("traceparent", traceparent)
        .json(&json!({"amount": amount, "currency": "EUR"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("an order id").to_owned();
    let order_url = format!("{orders}/orders/{id}");
    let order = wait_json(http, &order_url, |o| o["status"] == "awaiting_payment").await;
    (id, order)
}

/// An unsampled order stays unsampled on both sides: neither service exported a span
/// of its trace, and Payments did not start a trace of its own for it (the messages
/// carried the unsampled context; with none, Payments' sampler, always on here, would
/// have sampled its batches). Its spans ended before the sampled order started, so
/// they would have been exported before the sampled order's last ones.
fn assert_nothing_of(spans: &[Span], order_id: &str) {
    let exported: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.trace_id == UNSAMPLED_TRACE
                || s.attributes.get("order_id").map(String::as_str) == Some(order_id)
        })
        .collect();
    assert!(
        exported.is_empty(),
        "spans of the unsampled order: {exported:#?}"
    );
}

/// The payment id is the page's capability (whoever has it can pay or cancel): no
/// span, and no event of a span, exports it, under any name.
fn assert_no_payment_id(spans: &[Span], payment_id: &str) {
    for span in spans {
        let values = span
            .attributes
            .values()
            .chain(span.events.iter().flat_map(|e| e.attributes.values()));
        for value in values {
            assert!(!value.contains(payment_id), "the payment id in {span:#?}");
        }
    }
}

/// Every span up to Payments' batch that applies the ack of the order's outcome, once
/// the parent of each span of both traces has arrived too.
async fn wait_for_the_ack(otlp: &OtlpReceiver, order_id: &str) -> Vec<Span> {
    let delivered = |s: &Span| {
        s.name == "deliver payment_state"
            && s.attributes.get("order_id").map(String::as_str) == Some(order_id)
    };
    otlp.wait_for(
        |spans| {
            let Some(delivery) = spans.iter().find(|s| delivered(s)) else {
                return false;
            };
            // Orders' batch under the delivery, and Payments' batch (the ack) under it.
            let acked = spans.iter().any(|fulfil| {
                fulfil.parent_span_id.as_deref() == Some(delivery.span_id.as_str())
                    && spans.iter().any(|ack| {
                        ack.parent_span_id.as_deref() == Some(fulfil.span_id.as_str())
                            && ack.service == "payments"
                            && ack.name == "answer messages from Orders"
                    })
            });
            acked && parents_arrived(spans, &[TRACE, &delivery.trace_id])
        },
        DEADLINE,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Whether every span of `traces` has its parent among `spans` (but the root of the
/// order's trace, whose parent is the test's request). Each service exports a span
/// when it ends, in batches of its own: a request's span can arrive after the spans
/// that its work caused in the other service.
fn parents_arrived(spans: &[Span], traces: &[&str]) -> bool {
    spans
        .iter()
        .filter(|s| traces.contains(&s.trace_id.as_str()))
        .all(|s| match s.parent_span_id.as_deref() {
            None | Some(PARENT) => true,
            Some(parent) => spans.iter().any(|p| p.span_id == parent),
        })
}

/// The order's trace: the test's request → Orders' HTTP span → the insert and the
/// `initiate_payment` sent → Payments' batch → Orders' batch (methods) → Payments'
/// batch (the selection) → Orders' batch (the page stored). Returns the Pay's trace.
fn assert_the_order_trace(spans: &[Span], order_id: &str) -> String {
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE)
        .cloned()
        .collect();
    let http = one(&trace, "Orders' POST /orders", |s| {
        s.parent_span_id.as_deref() == Some(PARENT)
    });
    assert_eq!(http.service, "orders");
    assert_eq!(http.name, "POST /orders");
    assert_eq!(http.attributes["http.route"], "/orders", "{http:#?}");
    child_of(&trace, http, "orders", "insert_order");
    let sent = child_of(&trace, http, "orders", "send initiate_payment");
    assert_eq!(sent.attributes["order_id"], order_id);
    let initiate = child_of(&trace, sent, "payments", "answer messages from Orders");
    let methods = child_of(&trace, initiate, "orders", "apply messages from Payments");
    let select = child_of(&trace, methods, "payments", "answer messages from Orders");
    let page = child_of(&trace, select, "orders", "apply messages from Payments");
    for batch in [initiate, methods, select, page] {
        assert_eq!(batch.attributes["order_id"], order_id, "{batch:#?}");
    }

    let pay = one(spans, "the Pay's HTTP span", |s| {
        s.service == "payments" && s.parent_span_id.is_none() && !s.links.is_empty()
    });
    assert!(
        pay.links.iter().any(|(t, _)| t == TRACE),
        "the Pay links to the order's trace: {pay:#?}"
    );
    assert_ne!(pay.trace_id, TRACE, "the Pay is a trace of its own");
    assert_eq!(pay.name, "POST /pay/{payment_id}/complete", "{pay:#?}");
    pay.trace_id.clone()
}

/// The Pay's trace: Payments' HTTP span → … → the delivery → Orders' batch that
/// fulfils → Payments' batch that applies the ack.
fn assert_the_pay_trace(spans: &[Span], pay_trace: &str, order_id: &str) {
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == pay_trace)
        .cloned()
        .collect();
    let delivery = one(&trace, "the delivery", |s| {
        s.name == "deliver payment_state"
    });
    assert_eq!(delivery.service, "payments");
    assert_eq!(delivery.attributes["order_id"], order_id);
    let fulfil = child_of(&trace, delivery, "orders", "apply messages from Payments");
    assert_eq!(fulfil.attributes["order_id"], order_id);
    child_of(&trace, fulfil, "payments", "answer messages from Orders");
}
