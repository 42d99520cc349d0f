//! Orders' link over TLS (issue 19): `wss://` to a FakePayments that serves TLS with a
//! root of its own, trusted through `PAYMENTS_CA`; the link stays down (and says why)
//! when the root is not trusted.

mod helpers;

use helpers::TestApp;
use test_harness::payments::FakePayments;
use test_harness::tls::TempDir;

#[tokio::test]
async fn orders_links_over_wss_trusting_payments_ca() {
    let fake = FakePayments::builder().tls().start().await;
    assert!(fake.url().starts_with("wss://"), "{}", fake.url());
    let dir = TempDir::new("orders-tls");
    let ca = dir.write("payments-ca.crt", &fake.root_certificate_pem());
    let app = TestApp::spawn_with(&fake.url(), move |config| {
        config.payments_ca = Some(ca);
    })
    .await;
    let conn = fake.next_connection().await;
    app.wait_connected().await;
    let order = app.order_awaiting_payment(&conn, 1999, "EUR").await;
    assert_eq!(order.status(), "awaiting_payment");
}

#[tokio::test]
async fn a_payments_certificate_orders_does_not_trust_keeps_the_link_down() {
    let fake = FakePayments::builder().tls().lenient().start().await;
    // No PAYMENTS_CA: the fake's root is in no trust store.
    let app = TestApp::spawn(&fake.url()).await;
    let attempts = helpers::wait_until(helpers::DEADLINE, || async {
        let attempts = fake.attempts();
        (attempts.len() >= 2).then_some(attempts)
    })
    .await
    .expect("Orders never tried to connect");
    assert!(!app.link.is_connected());
    // Each attempt ended in the TLS handshake, before any WebSocket.
    for attempt in &attempts {
        assert!(
            !matches!(attempt.outcome(), test_harness::AttemptOutcome::Accepted),
            "{attempt:?}"
        );
    }
}
