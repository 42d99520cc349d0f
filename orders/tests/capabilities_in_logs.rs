//! A payment id is the bearer capability in a payment page's URL: whoever has it can
//! pay or cancel. Orders logs neither the URL nor a payment id at `info` or above, not
//! even when Payments reports an outcome for another payment than the order's (issue
//! 18: that one was logged at ERROR). Read from a captured subscriber (this binary's
//! only test: the subscriber is process-global, and the link logs from its own thread).

mod helpers;

use helpers::TestApp;
use shared_protocol::{EventId, PaymentId, PaymentOutcome, ServerMessage};
use test_harness::logs::CapturedLogs;
use test_harness::payments::{FakePayments, ack_of};

#[tokio::test]
async fn no_payment_id_or_page_url_is_logged_at_info_or_above() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let fake = FakePayments::start().await;
    let app = TestApp::spawn(&fake.url()).await;
    let conn = fake.next_connection().await;
    let order = app.order_awaiting_payment(&conn, 1999, "EUR").await;
    let own = fake.payment_id(order.id());
    let stranger = PaymentId::new();
    conn.send(ServerMessage::PaymentState {
        event_id: EventId(4242),
        order_id: order.id(),
        payment_id: stranger,
        state: PaymentOutcome::Fulfill,
        reason: None,
    })
    .await
    .unwrap();
    conn.expect(ack_of(EventId(4242))).await;
    let fulfilled = fake.fulfill(&conn, order.id()).await.unwrap();
    conn.expect(ack_of(fulfilled)).await;
    app.wait_for_status(order.id(), "fulfilled").await;

    let logs = captured.text();
    assert!(
        logs.contains("another payment than the order's"),
        "the mismatch was not logged:\n{logs}"
    );
    for secret in [own.to_string(), stranger.to_string(), "/pay/".to_owned()] {
        assert!(!logs.contains(&secret), "{secret} in the logs:\n{logs}");
    }
}
