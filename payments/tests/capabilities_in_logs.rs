//! A payment id is the bearer capability in a payment page's URL: Payments logs it at
//! no level from `info` up, whether the customer opens the page, pays or cancels
//! (issue 18: Pay and Cancel logged it at INFO). Read from a captured subscriber (this
//! binary's only test: the subscriber is process-global).

mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use helpers::{TestApp, page_path};
use shared_protocol::{OrderId, ServerMessage};
use test_harness::postgres::TestDatabase;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_payment_id_is_logged_at_info_or_above() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut orders = app.connect().await;
    let mut ids = Vec::new();
    for action in ["complete", "cancel"] {
        let page = orders.start_payment(OrderId::new(), 100, "EUR").await;
        let ServerMessage::PaymentPage { payment_id, .. } = &page else {
            unreachable!()
        };
        ids.push(payment_id.to_string());
        let path = page_path(&page);
        assert_eq!(app.get(&path).await.status(), 200);
        assert_eq!(app.post(&format!("{path}/{action}")).await.status(), 303);
        assert!(matches!(
            orders.recv().await,
            ServerMessage::PaymentState { .. }
        ));
    }

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert_eq!(
        logs.matches("customer finished the payment").count(),
        2,
        "{logs}"
    );
    for id in &ids {
        assert!(!logs.contains(id.as_str()), "{id} in the logs:\n{logs}");
    }
}
