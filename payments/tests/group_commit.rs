//! The payment page's Pay and Cancel are group-committed: one statement for every
//! request that waited. These tests apply batches directly, on a real database, and
//! check that each request gets the answer it would get alone, including two requests
//! for one session in ONE batch (a double click), which no HTTP test can arrange on
//! purpose.

use payments::store::{Finished, PageFinish, PageFinished, PageFinishes, SessionState, Store};
use service_kit::group_commit::Batch;
use shared_protocol::{CancelReason, PaymentId, PaymentOutcome};
use sqlx::PgPool;
use test_harness::postgres::TestDatabase;
use uuid::Uuid;

/// A session in `state` (with a method when one is needed), expiring in `expires_in_s`.
async fn session(pool: &PgPool, state: &str, expires_in_s: f64) -> PaymentId {
    let payment_id = Uuid::new_v4();
    let method = (state != "initiated").then_some("credit_card");
    let reason = (state == "cancelled").then_some("customer");
    sqlx::query(
        "INSERT INTO payment_sessions \
             (payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at) \
         VALUES ($1, $2, 100, 'EUR', $3, $4, $5, clock_timestamp() + make_interval(secs => $6))",
    )
    .bind(payment_id)
    .bind(Uuid::new_v4())
    .bind(state)
    .bind(method)
    .bind(reason)
    .bind(expires_in_s)
    .execute(pool)
    .await
    .unwrap();
    PaymentId(payment_id)
}

fn pay(payment_id: PaymentId) -> PageFinish {
    PageFinish {
        payment_id,
        outcome: PaymentOutcome::Fulfill,
        reason: None,
        traceparent: None,
    }
}

fn cancel(payment_id: PaymentId) -> PageFinish {
    PageFinish {
        payment_id,
        outcome: PaymentOutcome::Cancel,
        reason: Some(CancelReason::Customer),
        traceparent: None,
    }
}

/// The store's answers, without the sessions' trace contexts.
fn finished(answers: Vec<PageFinished>) -> Vec<Finished> {
    answers.into_iter().map(|a| a.finished).collect()
}

#[tokio::test]
async fn each_request_of_a_batch_gets_its_own_answer() {
    let db = TestDatabase::create("payments").await;
    let store = Store::connect(db.url()).await.unwrap();
    let pool = store.pool().clone();
    let selected = session(&pool, "method_selected", 600.0).await;
    let initiated = session(&pool, "initiated", 600.0).await;
    let to_cancel = session(&pool, "initiated", 600.0).await;
    let expired = session(&pool, "method_selected", -1.0).await;
    let paid_before = session(&pool, "method_selected", 600.0).await;
    let unknown = PaymentId(Uuid::new_v4());
    let mut conn = pool.acquire().await.unwrap();
    let first = finished(
        PageFinishes
            .apply(&mut conn, &[pay(paid_before)])
            .await
            .unwrap(),
    );
    let Finished::Now(earlier_event) = &first[0] else {
        panic!("{first:?}");
    };

    let batch = [
        pay(selected),    // pays
        pay(selected),    // double click in the same batch: the same event
        cancel(selected), // too late: the same event
        pay(initiated),   // no method selected yet
        cancel(to_cancel),
        pay(expired), // past its deadline
        pay(unknown),
        pay(paid_before), // paid in an earlier batch
    ];
    let answers = finished(PageFinishes.apply(&mut conn, &batch).await.unwrap());
    assert_eq!(answers.len(), batch.len());

    let Finished::Now(paid) = &answers[0] else {
        panic!("{:?}", answers[0]);
    };
    assert_eq!(paid.payment_id, selected);
    assert_eq!(paid.state, PaymentOutcome::Fulfill);
    for again in &answers[1..3] {
        assert!(
            matches!(again, Finished::Already(e) if e.event_id == paid.event_id),
            "{again:?}"
        );
    }
    assert!(
        matches!(answers[3], Finished::NotApplicable(SessionState::Initiated)),
        "{:?}",
        answers[3]
    );
    assert!(
        matches!(&answers[4], Finished::Now(e) if e.payment_id == to_cancel
            && e.state == PaymentOutcome::Cancel
            && e.reason == Some(CancelReason::Customer)),
        "{:?}",
        answers[4]
    );
    assert!(
        matches!(
            answers[5],
            Finished::NotApplicable(SessionState::MethodSelected)
        ),
        "{:?}",
        answers[5]
    );
    assert!(matches!(answers[6], Finished::Unknown), "{:?}", answers[6]);
    assert!(
        matches!(&answers[7], Finished::Already(e) if e.event_id == earlier_event.event_id),
        "{:?}",
        answers[7]
    );

    // One event per session that moved, and the sessions' states match.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 3, "paid_before, selected and to_cancel");
    let states: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT payment_id, state FROM payment_sessions ORDER BY payment_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, state) in states {
        let want = if id == selected.0 || id == paid_before.0 {
            "fulfilled"
        } else if id == to_cancel.0 {
            "cancelled"
        } else if id == initiated.0 {
            "initiated"
        } else {
            "method_selected"
        };
        assert_eq!(state, want, "session {id}");
    }
}

#[tokio::test]
async fn concurrent_pays_and_cancels_of_one_session_make_one_event() {
    let db = TestDatabase::create("payments").await;
    let store = Store::connect(db.url()).await.unwrap();
    let pool = store.pool().clone();
    let sessions: Vec<PaymentId> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(session(&pool, "method_selected", 600.0).await);
        }
        v
    };
    let mut tasks = Vec::new();
    for (i, id) in sessions.iter().copied().enumerate() {
        for attempt in 0..5 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if (i + attempt) % 3 == 0 {
                    store.cancel_by_customer(id, None).await.unwrap().finished
                } else {
                    store.complete(id, None).await.unwrap().finished
                }
            }));
        }
    }
    let mut moved = 0;
    for task in tasks {
        if let Finished::Now(_) = task.await.unwrap() {
            moved += 1;
        }
    }
    assert_eq!(
        moved,
        sessions.len(),
        "exactly one request moved each session"
    );
    let (events, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT payment_id) FROM payment_events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((events, distinct), (20, 20));
}
