//! What the link logs, read from a captured subscriber (this binary's only test, since
//! the subscriber is process-global and the link logs from its own thread).

mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use helpers::TestApp;
use test_harness::payments::FakePayments;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

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
async fn a_refused_handshake_and_each_attempt_are_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("orders=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let fake = FakePayments::start().await;
    fake.reject_next_handshakes(2, 401);
    let app = TestApp::spawn(&fake.url()).await;
    let _conn = fake.next_connection().await;
    // The fake accepts before the client has read the 101: wait for the client's side.
    app.wait_connected().await;

    let logs = captured.text();
    assert_eq!(
        logs.matches("Payments answered 401 Unauthorized: check PAYMENTS_TOKEN")
            .count(),
        2,
        "{logs}"
    );
    for attempt in 1..=3 {
        assert!(
            logs.contains(&format!("attempt={attempt}")),
            "attempt {attempt} not logged:\n{logs}"
        );
    }
    assert!(logs.contains("connected to Payments"), "{logs}");

    // Plain ws:// to a Payments that serves TLS: each attempt fails with a line that
    // says what to change (issue 19).
    let tls = FakePayments::builder().tls().lenient().start().await;
    let plain = tls.url().replacen("wss://", "ws://", 1);
    let _app = TestApp::spawn(&plain).await;
    let seen = helpers::wait_until(helpers::DEADLINE, || async {
        let logs = captured.text();
        logs.contains("the URL must be wss://").then_some(logs)
    })
    .await;
    assert!(
        seen.is_some(),
        "no hint to use wss://:\n{}",
        captured.text()
    );
}
