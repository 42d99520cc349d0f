//! The customer's Pay and the delivery of its outcome in traces (issue 21), on the
//! `payments` binary with traces on (`OTEL_EXPORTER_OTLP_ENDPOINT` set: to a port where
//! nothing listens, as the spans themselves are not what is checked here, but the
//! contexts Payments stores and sends). The session keeps the trace of the message that
//! initiated it; the Pay, a request of its own, starts another trace, stored on its
//! event; and the `payment_state` that delivers the event carries a span of that trace,
//! the child of the Pay's span. The spans name the payment id, the page's capability,
//! which still stays out of the logs. The spans, and the Pay's link to the order's
//! trace, are checked end to end in `e2e/tests/traces.rs`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use shared_protocol::{
    Amount, ClientMessage, Currency, OrderId, PaymentId, SUBPROTOCOL, ServerMessage, TraceContext,
};
use sqlx::Connection;
use test_harness::postgres::TestDatabase;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "traces-test-token";
const DEADLINE: Duration = Duration::from_secs(20);
/// The order's trace, as Orders would send it on `initiate_payment`.
const ORDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ORDER_PARENT: &str = "00f067aa0ba902b7";

/// The binary with traces on, stopped (killed) when dropped.
struct Payments {
    child: Child,
    port: u16,
    db: TestDatabase,
    /// Its logs (stdout), read until it exits.
    logs: Option<std::thread::JoinHandle<String>>,
}

impl Payments {
    fn start() -> Payments {
        let db = TestDatabase::unborn("payments_traces");
        let port = test_harness::process::free_port();
        let nowhere = test_harness::process::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_payments"))
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{port}"))
            .env("PAYMENTS_TOKEN", TOKEN)
            .env("LOG_FORMAT", "json")
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{nowhere}"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let logs = std::thread::spawn(move || {
            let mut logs = String::new();
            let _ = stdout.read_to_string(&mut logs);
            logs
        });
        Payments {
            child,
            port,
            db,
            logs: Some(logs),
        }
    }

    /// Stops it; returns its logs.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs.take().unwrap().join().unwrap()
    }

    /// A WebSocket to it, retried while it starts.
    async fn connect(&self) -> Ws {
        let mut request = format!("ws://127.0.0.1:{}/ws", self.port)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        headers.insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
        let end = Instant::now() + DEADLINE;
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
}

impl Drop for Payments {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(ws: &mut Ws, message: &ClientMessage, trace: Option<&TraceContext>) {
    let text = shared_protocol::encode_traced(message, trace);
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// The next protocol message and the trace context it carried.
async fn recv(ws: &mut Ws) -> (ServerMessage, Option<TraceContext>) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let frame = tokio::time::timeout_at(end, ws.next())
            .await
            .expect("no message in time")
            .expect("the socket ended")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return shared_protocol::decode_traced(text.as_str()).expect("a ServerMessage");
        }
    }
}

/// The `trace-id` and `parent-id` of a `traceparent`.
fn ids(traceparent: &str) -> (&str, &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1], parts[2])
}

/// initiate (in the order's trace) → methods → select → page; returns the page.
async fn start_payment(ws: &mut Ws, order_id: OrderId) -> ServerMessage {
    let order_trace =
        TraceContext::parse(&format!("00-{ORDER_TRACE}-{ORDER_PARENT}-01"), None).unwrap();
    let initiate = ClientMessage::InitiatePayment {
        order_id,
        amount: Amount::new(1999).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
    };
    send(ws, &initiate, Some(&order_trace)).await;
    let (methods, _) = recv(ws).await;
    assert!(
        matches!(methods, ServerMessage::PaymentMethods { .. }),
        "{methods:?}"
    );
    let select = ClientMessage::SelectPaymentMethod {
        order_id,
        method: "credit_card".into(),
    };
    send(ws, &select, Some(&order_trace)).await;
    let (page, _) = recv(ws).await;
    assert!(
        matches!(page, ServerMessage::PaymentPage { .. }),
        "{page:?}"
    );
    page
}

/// The `traceparent` stored on the row of `table` (`payment_sessions` or
/// `payment_events`) of the payment.
async fn stored(payments: &Payments, table: &str, payment_id: PaymentId) -> Option<String> {
    let mut db = sqlx::PgConnection::connect(payments.db.url())
        .await
        .unwrap();
    let sql = format!("SELECT traceparent FROM {table} WHERE payment_id = $1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(payment_id.0)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// The customer pays on the page (a plain POST: no trace context of its own).
async fn pay(payments: &Payments, payment_id: PaymentId) {
    let url = format!(
        "http://127.0.0.1:{}/pay/{payment_id}/complete",
        payments.port
    );
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(url)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
}

#[tokio::test]
async fn the_pay_starts_a_trace_that_its_delivery_continues() {
    let payments = Payments::start();
    let mut ws = payments.connect().await;
    let order_id = OrderId::new();
    let ServerMessage::PaymentPage { payment_id, .. } = start_payment(&mut ws, order_id).await
    else {
        unreachable!()
    };
    let session = stored(&payments, "payment_sessions", payment_id)
        .await
        .expect("the session keeps the trace that initiated it");
    assert_eq!(ids(&session).0, ORDER_TRACE, "{session}");

    pay(&payments, payment_id).await;
    let (state, trace) = recv(&mut ws).await;
    assert!(
        matches!(state, ServerMessage::PaymentState { order_id: o, .. } if o == order_id),
        "{state:?}"
    );
    let event = stored(&payments, "payment_events", payment_id)
        .await
        .expect("the event keeps the Pay's trace");
    let (pay_trace, pay_span) = ids(&event);
    assert_ne!(pay_trace, ORDER_TRACE, "the Pay is a trace of its own");
    let trace = trace.expect("payment_state carries a trace context");
    let (delivery_trace, delivery_span) = ids(trace.traceparent());
    assert_eq!(
        delivery_trace, pay_trace,
        "the delivery is in the Pay's trace"
    );
    assert_ne!(
        delivery_span, pay_span,
        "the delivery has a span of its own"
    );

    let logs = payments.stop();
    assert!(logs.contains("customer finished the payment"), "{logs}");
    assert!(
        !logs.contains(&payment_id.to_string()),
        "the payment id is in the logs:\n{logs}"
    );
}
