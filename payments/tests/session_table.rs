//! The session state machine's table (`payments::domain::SessionState::next`) against
//! the store's SQL: for every (state, event) pair, a session is brought to the state
//! through the real store on real PostgreSQL, the event is applied through the store
//! method that handles it, and both whether it applied and the state it left must be
//! what the table says. The SQL's conditions (`state = …`, and the generated column
//! `is_open` of the migrations) are text the table cannot reach, so this is what keeps
//! the two in agreement.

use std::time::Duration;

use payments::domain::{SessionEvent, SessionState};
use payments::store::{Finished, Store};
use shared_protocol::{Amount, Currency, OrderId, PaymentId};
use test_harness::postgres::TestDatabase;
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(600);

/// A new session, brought to `state` the way Orders and the page would bring it there.
async fn session_in(store: &Store, connection: Uuid, state: SessionState) -> (OrderId, PaymentId) {
    let order = OrderId(Uuid::new_v4());
    let mut batch = store.batch().await.unwrap();
    let amount = Amount::new(1999).unwrap();
    let currency = Currency::parse("EUR").unwrap();
    let (session, _) = batch
        .initiate(&[(order, amount, currency)], TTL, connection, None)
        .await
        .unwrap()
        .remove(0);
    if state != SessionState::Initiated {
        batch
            .select(&[(order, "credit_card".to_owned())], connection)
            .await
            .unwrap();
    }
    batch.commit().await.unwrap();
    let finished = match state {
        SessionState::Fulfilled => Some(store.complete(session.payment_id, None).await.unwrap()),
        SessionState::Cancelled => Some(
            store
                .cancel_by_customer(session.payment_id, None)
                .await
                .unwrap(),
        ),
        _ => None,
    };
    assert!(
        finished
            .as_ref()
            .is_none_or(|f| matches!(f.finished, Finished::Now(_))),
        "{finished:?}"
    );
    let reached = store.session_by_order(order).await.unwrap().unwrap().state;
    assert_eq!(reached, state, "the setup did not reach {state:?}");
    (order, session.payment_id)
}

/// Applies `event` through the store; whether the store says it applied.
async fn apply(
    store: &Store,
    connection: Uuid,
    order: OrderId,
    payment: PaymentId,
    event: SessionEvent,
) -> bool {
    match event {
        SessionEvent::SelectMethod => {
            // Another method than the setup's: it is stored only if the select applied.
            let mut batch = store.batch().await.unwrap();
            let sessions = batch
                .select(&[(order, "bank_transfer".to_owned())], connection)
                .await
                .unwrap();
            batch.commit().await.unwrap();
            sessions[0].0.method.as_deref() == Some("bank_transfer")
        }
        SessionEvent::Pay => matches!(
            store.complete(payment, None).await.unwrap().finished,
            Finished::Now(_)
        ),
        SessionEvent::CancelByCustomer => matches!(
            store
                .cancel_by_customer(payment, None)
                .await
                .unwrap()
                .finished,
            Finished::Now(_)
        ),
        SessionEvent::CancelByOrders => {
            let mut batch = store.batch().await.unwrap();
            let finished = batch.cancel(order, connection).await.unwrap();
            batch.commit().await.unwrap();
            matches!(finished, Finished::Now(_))
        }
        SessionEvent::Expire => {
            sqlx::query(
                "UPDATE payment_sessions SET expires_at = clock_timestamp() - interval '1 second' \
                 WHERE payment_id = $1",
            )
            .bind(payment.0)
            .execute(store.pool())
            .await
            .unwrap();
            let expired = store.expire().await.unwrap();
            expired.iter().any(|e| e.payment_id == payment)
        }
    }
}

#[tokio::test]
async fn the_store_moves_sessions_exactly_as_the_state_table_says() {
    let db = TestDatabase::create("payments").await;
    let store = Store::connect(db.url()).await.unwrap();
    let connection = Uuid::new_v4();
    store
        .register_connection(connection, Uuid::new_v4())
        .await
        .unwrap();
    let mut disagreements = Vec::new();
    for state in SessionState::ALL {
        for event in SessionEvent::ALL {
            let (order, payment) = session_in(&store, connection, state).await;
            let applied = apply(&store, connection, order, payment, event).await;
            let after = store.session_by_order(order).await.unwrap().unwrap().state;
            let table = state.next(event);
            if applied != table.is_some() || after != table.unwrap_or(state) {
                disagreements.push(format!(
                    "{state:?} on {event:?}: the table says {table:?}, the store applied={applied} and left {after:?}"
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the store and SessionState::next disagree:\n{}",
        disagreements.join("\n")
    );
}
