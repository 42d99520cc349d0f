//! Dead letters: an outcome event sent MAX_DELIVERY_ATTEMPTS times without an ack is
//! dead-lettered (never sent again, counted, out of the backlog gauges) until an
//! operator retries it; an acked event never is.

mod helpers;

use std::time::Duration;

use helpers::{ADMIN_TOKEN, TOKEN, TestApp, page_path, seed_unacked_events, wait_for_count};
use payments::Application;
use serde_json::Value;
use shared_protocol::{ClientMessage, EventId, OrderId, ServerMessage};
use test_harness::postgres::TestDatabase;

const REDELIVER_AFTER: Duration = Duration::from_millis(300);
/// Long enough for several redelivery periods (plus a delivery scan).
const QUIET: Duration = Duration::from_millis(1500);
const WAIT: Duration = Duration::from_secs(10);

fn event_id(message: &ServerMessage) -> EventId {
    match message {
        ServerMessage::PaymentState { event_id, .. } => *event_id,
        other => panic!("expected a payment_state, got {other:?}"),
    }
}

async fn spawn(db: &TestDatabase, max_attempts: u32, redeliver_after: Duration) -> TestApp {
    TestApp::spawn_with(db, |c| {
        c.max_delivery_attempts = max_attempts;
        c.redeliver_after = redeliver_after;
    })
    .await
}

/// A value of the instance's `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    (status, json)
}

async fn retry(app: &TestApp, event: i64, token: Option<&str>) -> (u16, Value) {
    admin(
        app,
        reqwest::Method::POST,
        &format!("/admin/events/{event}/retry"),
        token,
    )
    .await
}

async fn dead_letters(app: &TestApp, query: &str) -> (u16, Value) {
    admin(
        app,
        reqwest::Method::GET,
        &format!("/admin/dead-letters{query}"),
        Some(ADMIN_TOKEN),
    )
    .await
}

async fn scalar(db: &TestDatabase, query: &'static str, event: i64) -> Option<i64> {
    sqlx::query_scalar(query)
        .bind(event)
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_never_acked_is_sent_max_times_then_dead_lettered() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 3, REDELIVER_AFTER).await;
    let mut orders = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&orders.start_payment(order, 100, "EUR").await);
    assert_eq!(app.post(&format!("{path}/complete")).await.status(), 303);

    // Never acked (as for an order Orders does not know): the first send and two
    // redeliveries, then no more.
    let event = orders.recv().await;
    let id = event_id(&event).0;
    for copy in 2..=3 {
        assert_eq!(orders.recv().await, event, "copy {copy}");
    }
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE dead_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    assert_eq!(orders.try_recv(QUIET).await, None, "sent after 3 attempts");
    assert_eq!(
        scalar(
            &db,
            "SELECT delivery_attempts::bigint FROM payment_events WHERE event_id = $1",
            id
        )
        .await,
        Some(3)
    );
    // Nor does a new connection get it.
    let mut other = app.connect().await;
    assert_eq!(
        other.try_recv(Duration::from_millis(600)).await,
        None,
        "a dead letter was resent on connect"
    );

    assert_eq!(
        metric(&app, "payments_events_dead_lettered_total").await,
        1.0
    );
    assert_eq!(metric(&app, "payments_dead_letter_events").await, 1.0);
    assert_eq!(metric(&app, "payments_unacked_events").await, 0.0);
    assert_eq!(
        metric(&app, "payments_oldest_unacked_event_age_seconds").await,
        0.0
    );

    // An ack that comes late (Orders learnt of the order after all) still settles it.
    orders
        .send(&ClientMessage::Ack {
            event_id: EventId(id),
        })
        .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE acked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    assert_eq!(metric(&app, "payments_dead_letter_events").await, 0.0);
    assert_eq!(
        metric(&app, "payments_events_dead_lettered_total").await,
        1.0
    );
    let (status, list) = dead_letters(&app, "").await;
    assert_eq!(status, 200);
    assert_eq!(list["events"], serde_json::json!([]));
}

/// The attempts of `event`, and whether it is dead-lettered.
async fn attempts_of(db: &TestDatabase, event: i64) -> (Option<i64>, bool) {
    let attempts = scalar(
        db,
        "SELECT delivery_attempts::bigint FROM payment_events WHERE event_id = $1",
        event,
    )
    .await;
    let dead = scalar(
        db,
        "SELECT count(*) FROM payment_events WHERE event_id = $1 AND dead_at IS NOT NULL",
        event,
    )
    .await;
    (attempts, dead == Some(1))
}

/// Ten reconnects in a row (a link that flaps) each get the unacked event again, and
/// count one delivery attempt between them: an attempt is a send after the last one had
/// REDELIVER_AFTER to be acked, not a connect.
#[tokio::test]
async fn ten_link_flaps_resend_the_event_but_dead_letter_nothing() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 3, Duration::from_secs(3600)).await;
    let ids = seed_unacked_events(&db, 1).await;
    for flap in 1..=10 {
        let mut orders = app.connect().await;
        let message = orders.recv().await;
        assert_eq!(event_id(&message).0, ids[0], "flap {flap}");
        drop(orders);
    }
    assert_eq!(attempts_of(&db, ids[0]).await, (Some(1), false));
    assert_eq!(
        metric(&app, "payments_events_dead_lettered_total").await,
        0.0
    );
}

/// Ten Orders instances reconnecting at once after a Payments restart: each gets the
/// event, and it counts one attempt.
#[tokio::test]
async fn ten_connections_opening_at_once_count_one_attempt() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 3, Duration::from_secs(3600)).await;
    let ids = seed_unacked_events(&db, 1).await;
    let mut instances = Vec::new();
    for _ in 0..10 {
        instances.push(app.connect().await);
    }
    for (i, orders) in instances.iter_mut().enumerate() {
        assert_eq!(event_id(&orders.recv().await).0, ids[0], "instance {i}");
    }
    assert_eq!(attempts_of(&db, ids[0]).await, (Some(1), false));
}

/// Once REDELIVER_AFTER has passed since the last attempt, a resend to a new connection
/// is an attempt again: an event never acked is still dead-lettered in time when it
/// only ever goes out on reconnects.
#[tokio::test]
async fn a_resend_on_connect_counts_once_redeliver_after_has_passed() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 2, REDELIVER_AFTER).await;
    let ids = seed_unacked_events(&db, 1).await;
    // The last attempt is REDELIVER_AFTER old.
    assert_eq!(REDELIVER_AFTER, Duration::from_millis(300));
    let due = "SELECT count(*) FROM payment_events \
               WHERE dispatched_at <= clock_timestamp() - interval '300 milliseconds'";
    let mut first = app.connect().await;
    assert_eq!(event_id(&first.recv().await).0, ids[0]);
    drop(first);
    wait_for_count(&db, due, 1, WAIT).await;
    let mut second = app.connect().await;
    assert_eq!(event_id(&second.recv().await).0, ids[0]);
    drop(second);
    assert_eq!(attempts_of(&db, ids[0]).await, (Some(2), false));
    wait_for_count(&db, due, 1, WAIT).await;
    let mut third = app.connect().await;
    assert_eq!(third.try_recv(QUIET).await, None, "sent a third time");
    assert_eq!(attempts_of(&db, ids[0]).await, (Some(2), true));
}

#[tokio::test]
async fn an_operator_retry_sends_a_dead_letter_again_and_an_ack_settles_it() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 1, REDELIVER_AFTER).await;
    let mut orders = app.connect().await;
    let order = OrderId::new();
    let path = page_path(&orders.start_payment(order, 100, "EUR").await);
    assert_eq!(app.post(&format!("{path}/complete")).await.status(), 303);
    let event = orders.recv().await;
    let id = event_id(&event).0;
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE dead_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;

    // The operator finds it.
    for query in ["", "?limit=1", "?limit=500"] {
        let (status, list) = dead_letters(&app, query).await;
        assert_eq!(status, 200, "{query}: {list}");
        let events = list["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{list}");
        assert_eq!(events[0]["event_id"], id);
        assert_eq!(events[0]["order_id"], order.to_string());
        assert_eq!(events[0]["delivery_attempts"], 1);
        assert!(events[0]["dead_at"].is_string(), "{list}");
    }
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?limit=-3", "?limit="] {
        let (status, body) = dead_letters(&app, bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_limit");
    }

    // Only with the admin token: the link's token is not an operator's.
    for token in [None, Some("wrong-token"), Some(""), Some(TOKEN)] {
        let (status, body) = retry(&app, id, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, body) = admin(&app, reqwest::Method::GET, "/admin/dead-letters", token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM payment_events WHERE event_id = $1 AND dead_at IS NOT NULL",
            id
        )
        .await,
        Some(1),
        "a refused retry changed the event"
    );
    // No such event; not an event id; not a POST.
    for path in [
        format!("/admin/events/{}/retry", id + 1000),
        "/admin/events/not-a-number/retry".to_owned(),
        "/admin/events/-1/retry".to_owned(),
        "/admin/events/99999999999999999999999/retry".to_owned(),
    ] {
        let (status, body) = admin(&app, reqwest::Method::POST, &path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, body) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/events/{id}/retry"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    // Without the token, not even which methods a route takes is told.
    let (status, _) = admin(&app, reqwest::Method::DELETE, "/admin/dead-letters", None).await;
    assert_eq!(status, 401);
    let delete = admin(
        &app,
        reqwest::Method::DELETE,
        "/admin/dead-letters",
        Some(ADMIN_TOKEN),
    );
    assert_eq!(delete.await.0, 405);

    // The retry: attempts from zero, and it goes out again at once.
    let (status, body) = retry(&app, id, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], id);
    assert_eq!(body["order_id"], order.to_string());
    assert_eq!(body["state"], "FULFILL");
    assert_eq!(body["delivery_attempts"], 0);
    assert_eq!(body["dead_at"], Value::Null);
    assert_eq!(orders.recv().await, event, "not sent again after the retry");
    orders
        .send(&ClientMessage::Ack {
            event_id: EventId(id),
        })
        .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE acked_at IS NOT NULL AND dead_at IS NULL",
        1,
        WAIT,
    )
    .await;
    assert_eq!(orders.try_recv(QUIET).await, None, "sent after its ack");

    // Settled: nothing to retry any more.
    let (status, body) = retry(&app, id, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (_, list) = dead_letters(&app, "").await;
    assert_eq!(list["events"], serde_json::json!([]));
    assert_eq!(metric(&app, "payments_dead_letter_events").await, 0.0);
    assert_eq!(metric(&app, "payments_unacked_events").await, 0.0);
}

#[tokio::test]
async fn retrying_an_event_still_being_delivered_is_a_conflict() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 3, Duration::from_secs(3600)).await;
    let ids = seed_unacked_events(&db, 1).await;
    let (status, body) = retry(&app, ids[0], Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(
        scalar(
            &db,
            "SELECT delivery_attempts::bigint FROM payment_events WHERE event_id = $1",
            ids[0]
        )
        .await,
        Some(0)
    );
    assert_eq!(metric(&app, "payments_unacked_events").await, 1.0);
    assert_eq!(metric(&app, "payments_dead_letter_events").await, 0.0);
}

#[tokio::test]
async fn an_acked_event_is_never_dead_lettered() {
    let db = TestDatabase::create("payments").await;
    let app = spawn(&db, 2, Duration::from_millis(400)).await;
    let mut orders = app.connect().await;
    // Paid on the page (delivered by the dispatcher) and cancelled at Orders' request
    // (answered on the connection at once): each acked as soon as it arrives.
    let mut acked = Vec::new();
    for _ in 0..3 {
        let order = OrderId::new();
        let path = page_path(&orders.start_payment(order, 100, "EUR").await);
        assert_eq!(app.post(&format!("{path}/complete")).await.status(), 303);
        let event = orders.recv().await;
        orders
            .send(&ClientMessage::Ack {
                event_id: event_id(&event),
            })
            .await;
        acked.push(event);
    }
    let order = OrderId::new();
    orders.send(&helpers::initiate(order, 100, "EUR")).await;
    assert!(matches!(
        orders.recv().await,
        ServerMessage::PaymentMethods { .. }
    ));
    orders
        .send(&ClientMessage::CancelPayment { order_id: order })
        .await;
    let cancelled = orders.recv().await;
    orders
        .send(&ClientMessage::Ack {
            event_id: event_id(&cancelled),
        })
        .await;
    acked.push(cancelled);
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE acked_at IS NOT NULL",
        4,
        WAIT,
    )
    .await;

    // Several redelivery periods: nothing is sent again, nothing dies.
    while let Some(again) = orders.try_recv(QUIET).await {
        // Only a copy claimed before its ack arrived may still come.
        assert!(acked.contains(&again), "{again:?}");
    }
    let mut other = app.connect().await;
    assert_eq!(other.try_recv(Duration::from_millis(600)).await, None);
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE dead_at IS NOT NULL",
        0,
        WAIT,
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM payment_events WHERE delivery_attempts BETWEEN 1 AND 2",
        4,
        WAIT,
    )
    .await;
    assert_eq!(
        metric(&app, "payments_events_dead_lettered_total").await,
        0.0
    );
    assert_eq!(metric(&app, "payments_dead_letter_events").await, 0.0);
    assert_eq!(metric(&app, "payments_unacked_events").await, 0.0);
}

#[tokio::test]
async fn max_delivery_attempts_must_be_at_least_one() {
    let db = TestDatabase::create("payments").await;
    let mut config = helpers::test_config(&db);
    config.max_delivery_attempts = 0;
    let error = Application::build(config)
        .await
        .err()
        .expect("started with MAX_DELIVERY_ATTEMPTS=0");
    assert!(
        error.to_string().contains("MAX_DELIVERY_ATTEMPTS"),
        "{error}"
    );
}
