//! Where sessions and events keep their W3C `traceparent` (issue 21), on real
//! PostgreSQL with the service's migrations: a new session stores the one of the batch
//! that starts it and keeps it, the page's Pay and Cancel store the request's on their
//! event and hand back the session's (for the request's span link), delivery reads the
//! event's, and expiry stores none. The store takes the strings it is given: these
//! tests run without an exporter, so no span has a context of its own.

use std::time::Duration;

use payments::store::{Attempts, Finished, PageFinished, Store};
use shared_protocol::{Amount, Currency, OrderId, PaymentId};
use test_harness::postgres::TestDatabase;
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(600);
/// The trace of the batch that initiated the order (made up, well formed).
const ORDER_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The trace of the customer's request on the page.
const PAY_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A session initiated in a batch whose span had `traceparent`; with a method selected
/// when `select`.
async fn initiated(store: &Store, traceparent: Option<&str>, select: bool) -> (OrderId, PaymentId) {
    let order = OrderId(Uuid::new_v4());
    let connection = Uuid::new_v4();
    let mut batch = store.batch().await.unwrap();
    let (session, _) = batch
        .initiate(&[(order, amount(), eur())], TTL, connection, traceparent)
        .await
        .unwrap()
        .remove(0);
    if select {
        batch
            .select(&[(order, "credit_card".to_owned())], connection)
            .await
            .unwrap();
    }
    batch.commit().await.unwrap();
    (order, session.payment_id)
}

fn amount() -> Amount {
    Amount::new(1999).unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

async fn session_traceparent(store: &Store, payment: PaymentId) -> Option<String> {
    sqlx::query_scalar("SELECT traceparent FROM payment_sessions WHERE payment_id = $1")
        .bind(payment.0)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn event_traceparent(store: &Store, payment: PaymentId) -> Option<String> {
    sqlx::query_scalar("SELECT traceparent FROM payment_events WHERE payment_id = $1")
        .bind(payment.0)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pay_stores_its_traceparent_and_hands_back_the_sessions() {
    let db = TestDatabase::create("payments_traces").await;
    let store = Store::connect(db.url()).await.unwrap();
    let (_, payment) = initiated(&store, Some(ORDER_TRACE), true).await;
    assert_eq!(
        session_traceparent(&store, payment).await.as_deref(),
        Some(ORDER_TRACE)
    );

    let PageFinished {
        finished,
        session_traceparent,
    } = store
        .complete(payment, Some(PAY_TRACE.to_owned()))
        .await
        .unwrap();
    let Finished::Now(event) = finished else {
        panic!("{finished:?}");
    };
    assert_eq!(event.traceparent.as_deref(), Some(PAY_TRACE));
    assert_eq!(session_traceparent.as_deref(), Some(ORDER_TRACE));
    assert_eq!(
        event_traceparent(&store, payment).await.as_deref(),
        Some(PAY_TRACE)
    );
    let stored = store.event_of(payment).await.unwrap().unwrap();
    assert_eq!(stored, event);

    // Delivery reads it with the event it claims.
    let attempts = Attempts {
        max: 5,
        redeliver_after: Duration::from_secs(60),
    };
    let claimed = store
        .claim(&[], Duration::from_secs(30), attempts, 10)
        .await
        .unwrap();
    assert_eq!(claimed.send.len(), 1, "{claimed:?}");
    assert_eq!(claimed.send[0].event, event);

    // A second Pay (a reload) changes nothing and hands back no link.
    let again = store
        .complete(payment, Some(ORDER_TRACE.to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(&again.finished, Finished::Already(e) if e.traceparent.as_deref() == Some(PAY_TRACE)),
        "{again:?}"
    );
    assert_eq!(again.session_traceparent, None);
}

#[tokio::test]
async fn a_cancel_on_the_page_stores_its_traceparent_and_expiry_none() {
    let db = TestDatabase::create("payments_traces").await;
    let store = Store::connect(db.url()).await.unwrap();
    let (_, cancelled) = initiated(&store, Some(ORDER_TRACE), false).await;
    let answer = store
        .cancel_by_customer(cancelled, Some(PAY_TRACE.to_owned()))
        .await
        .unwrap();
    assert!(
        matches!(&answer.finished, Finished::Now(e) if e.traceparent.as_deref() == Some(PAY_TRACE)),
        "{answer:?}"
    );
    assert_eq!(answer.session_traceparent.as_deref(), Some(ORDER_TRACE));

    let (_, expiring) = initiated(&store, Some(ORDER_TRACE), true).await;
    sqlx::query(
        "UPDATE payment_sessions SET expires_at = clock_timestamp() - interval '1 second' \
         WHERE payment_id = $1",
    )
    .bind(expiring.0)
    .execute(store.pool())
    .await
    .unwrap();
    let expired = store.expire().await.unwrap();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].traceparent, None);
    assert_eq!(event_traceparent(&store, expiring).await, None);
}

/// Traces off: nothing stored, nothing handed back.
#[tokio::test]
async fn without_traces_nothing_is_stored() {
    let db = TestDatabase::create("payments_traces").await;
    let store = Store::connect(db.url()).await.unwrap();
    let (_, payment) = initiated(&store, None, true).await;
    let answer = store.complete(payment, None).await.unwrap();
    assert!(matches!(answer.finished, Finished::Now(ref e) if e.traceparent.is_none()));
    assert_eq!(answer.session_traceparent, None);
    assert_eq!(session_traceparent(&store, payment).await, None);
    assert_eq!(event_traceparent(&store, payment).await, None);
}

/// `initiate_payment` again (a retry, in another trace) finds the session and leaves
/// its traceparent as it was: the Pay links to the trace that started it.
#[tokio::test]
async fn an_existing_session_keeps_its_traceparent() {
    let db = TestDatabase::create("payments_traces").await;
    let store = Store::connect(db.url()).await.unwrap();
    let (order, payment) = initiated(&store, Some(ORDER_TRACE), false).await;
    let mut batch = store.batch().await.unwrap();
    let found = batch
        .initiate(
            &[(order, amount(), eur())],
            TTL,
            Uuid::new_v4(),
            Some(PAY_TRACE),
        )
        .await
        .unwrap();
    batch.commit().await.unwrap();
    assert_eq!(found[0].0.payment_id, payment);
    assert_eq!(
        session_traceparent(&store, payment).await.as_deref(),
        Some(ORDER_TRACE)
    );
}

/// The columns hold at most 128 characters, and the bounds are validated (the second
/// migration ran).
#[tokio::test]
async fn the_columns_are_bounded_and_their_checks_validated() {
    let db = TestDatabase::create("payments_traces").await;
    let store = Store::connect(db.url()).await.unwrap();
    let validated: Vec<(String, bool)> = sqlx::query_as(
        "SELECT conname::text, convalidated FROM pg_constraint \
         WHERE conname IN ('payment_sessions_traceparent_length', \
             'payment_events_traceparent_length') ORDER BY conname",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        validated,
        [
            ("payment_events_traceparent_length".to_owned(), true),
            ("payment_sessions_traceparent_length".to_owned(), true),
        ]
    );
    let too_long = "x".repeat(129);
    let mut batch = store.batch().await.unwrap();
    let refused = batch
        .initiate(
            &[(OrderId(Uuid::new_v4()), amount(), eur())],
            TTL,
            Uuid::new_v4(),
            Some(&too_long),
        )
        .await;
    assert!(refused.is_err(), "a 129-character traceparent was stored");
}
