//! The payment page over plain HTTP: what it shows, its two POSTs (303), final states,
//! 404s, and that nothing from the URL is reflected unescaped.

mod helpers;

use helpers::{TestApp, page_path};
use shared_protocol::{OrderId, PaymentOutcome, ServerMessage};
use test_harness::postgres::TestDatabase;

#[tokio::test]
async fn the_page_shows_the_payment_and_paying_fulfils_it_once() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let page = client.start_payment(order, 1999, "EUR").await;
    let path = page_path(&page);

    let response = app.get(&path).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    for needle in [
        "€19.99",
        "EUR",
        "Credit card",
        &order.to_string(),
        r#"id="pay""#,
        r#"id="cancel""#,
    ] {
        assert!(html.contains(needle), "{needle} missing from the page");
    }

    let paid = app.post(&format!("{path}/complete")).await;
    assert_eq!(paid.status(), 303);
    assert_eq!(paid.headers()["location"], path.as_str());
    let event = client.recv().await;
    assert!(
        matches!(event, ServerMessage::PaymentState { state: PaymentOutcome::Fulfill, order_id, .. } if order_id == order)
    );

    let html = app.get(&path).await.text().await.unwrap();
    assert!(html.contains("Paid"), "{html}");
    assert!(
        !html.contains(r#"id="pay""#),
        "a paid page still offers to pay"
    );

    // Posting again changes nothing and still answers 303.
    assert_eq!(app.post(&format!("{path}/complete")).await.status(), 303);
    assert_eq!(app.post(&format!("{path}/cancel")).await.status(), 303);
    assert!(app.get(&path).await.text().await.unwrap().contains("Paid"));
    client.send(&helpers::initiate(order, 1999, "EUR")).await;
    assert_eq!(client.recv().await, event, "still the one event");
}

#[tokio::test]
async fn cancelling_on_the_page_cancels_with_reason_customer() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&client.start_payment(order, 500, "USD").await);
    assert_eq!(app.post(&format!("{path}/cancel")).await.status(), 303);
    let event = client.recv().await;
    assert!(
        matches!(
            event,
            ServerMessage::PaymentState {
                state: PaymentOutcome::Cancel,
                reason: Some(shared_protocol::CancelReason::Customer),
                ..
            }
        ),
        "{event:?}"
    );
    let html = app.get(&path).await.text().await.unwrap();
    assert!(html.contains("Payment cancelled"), "{html}");
}

#[tokio::test]
async fn unknown_payments_get_a_404_page_that_reflects_nothing() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    for path in [
        format!("/pay/{}", uuid::Uuid::new_v4()),
        "/pay/not-a-uuid".to_owned(),
        "/pay/%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned(),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 404, "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains("Payment not found"));
        assert!(!html.contains("<script>"), "{html}");
        assert_eq!(app.post(&format!("{path}/complete")).await.status(), 404);
    }
}

#[tokio::test]
async fn a_session_without_a_method_shows_it_is_not_ready_and_cannot_be_paid() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    client.send(&helpers::initiate(order, 1999, "EUR")).await;
    assert!(matches!(
        client.recv().await,
        ServerMessage::PaymentMethods { .. }
    ));
    // Its id is only handed out with a page; a test can read it from the database.
    let payment_id: uuid::Uuid =
        sqlx::query_scalar("SELECT payment_id FROM payment_sessions WHERE order_id = $1")
            .bind(order.0)
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    let path = format!("/pay/{payment_id}");

    let response = app.get(&path).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("Choose a payment method"), "{html}");
    assert!(!html.contains(r#"id="pay""#), "offers to pay: {html}");

    // Paying is refused quietly (303, nothing changes, no event).
    assert_eq!(app.post(&format!("{path}/complete")).await.status(), 303);
    assert_eq!(
        client.try_recv(std::time::Duration::from_millis(400)).await,
        None
    );
    assert!(
        app.get(&path)
            .await
            .text()
            .await
            .unwrap()
            .contains("Choose a payment method")
    );
}

/// The page's security headers, on every kind of answer under `/pay/`.
fn assert_page_headers(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "style-src 'sha256-",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: {directive} missing from {csp}"
        );
    }
}

#[tokio::test]
async fn every_page_answer_is_uncached_unframeable_and_scriptless() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let path = page_path(&client.start_payment(OrderId::new(), 1999, "EUR").await);

    assert_page_headers(&app.get(&path).await, "the page");
    assert_page_headers(
        &app.get(&format!("/pay/{}", uuid::Uuid::new_v4())).await,
        "a 404",
    );
    let forged = app
        .http
        .post(app.url(&format!("{path}/cancel")))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_page_headers(&forged, "a 403");
    let paid = app.post(&format!("{path}/complete")).await;
    assert_eq!(paid.status(), 303);
    assert_page_headers(&paid, "a 303");
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused_and_changes_nothing() {
    let db = TestDatabase::create("payments").await;
    let app = TestApp::spawn(&db).await;
    let mut client = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&client.start_payment(order, 1999, "EUR").await);

    let post = |action: &'static str, name: &'static str, value: &'static str| {
        app.http
            .post(app.url(&format!("{path}/{action}")))
            .header(name, value)
            .send()
    };
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "http://127.0.0.1.evil.example"),
        ("origin", "file://"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        for action in ["complete", "cancel"] {
            let response = post(action, name, value).await.unwrap();
            assert_eq!(response.status(), 403, "{action} with {name}: {value}");
            let html = response.text().await.unwrap();
            assert!(html.contains("Request refused"), "{html}");
        }
    }
    assert_eq!(
        client.try_recv(std::time::Duration::from_millis(300)).await,
        None,
        "a refused form produced an outcome"
    );
    let html = app.get(&path).await.text().await.unwrap();
    assert!(html.contains(r#"id="pay""#), "no longer payable: {html}");

    // What a browser sends for the page's own forms (under no-referrer) is let through;
    // the unit tests of `cross_site` go through every combination.
    let paid = app
        .http
        .post(app.url(&format!("{path}/complete")))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    assert!(matches!(
        client.recv().await,
        ServerMessage::PaymentState { state: PaymentOutcome::Fulfill, order_id, .. } if order_id == order
    ));
}
