//! What the link logs, read from a captured subscriber (this binary's only test, since
//! the subscriber is process-global and the link logs from its own thread).

mod helpers;

use helpers::TestApp;
use test_harness::logs::CapturedLogs;
use test_harness::payments::FakePayments;

#[tokio::test]
async fn a_refused_handshake_and_each_attempt_are_logged() {
    let captured = CapturedLogs::default();
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
