//! The order state machine's table (`orders::domain::OrderStatus::next`) against the
//! store's SQL: for every (status, event) pair, an order is brought to the status through
//! the real store on real PostgreSQL, the event is applied through the store method
//! that handles it, and both whether it applied and the status it left must be what the
//! table says. The SQL's `WHERE status IN (…)` conditions are string literals the table
//! cannot reach, so this is what keeps the two in agreement.

use chrono::Utc;
use orders::domain::{NewOrder, OrderEvent, OrderStatus};
use orders::store::{Applied, CancelRequest, Inserted, MethodChoice, PageRecorded, Refusal, Store};
use shared_protocol::{Amount, CancelReason, Currency, OrderId, PaymentId, PaymentOutcome};
use test_harness::postgres::TestDatabase;

/// A new order, brought to `status` the way the link would bring it there.
async fn order_in(store: &Store, status: OrderStatus, payment: PaymentId) -> OrderId {
    let new = NewOrder {
        amount: Amount::new(1999).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        description: None,
    };
    let Inserted::Created(order) = store.insert_order(&new, None).await.unwrap() else {
        panic!("a new order");
    };
    let id = order.id;
    let mut conn = store.pool().acquire().await.unwrap();
    if status != OrderStatus::PendingPayment {
        let page = format!("http://pay.example/pay/{}", payment.0);
        Store::record_pages(&mut conn, &[(id, payment, page.as_str(), Utc::now())])
            .await
            .unwrap();
    }
    if let Some(outcome) = match status {
        OrderStatus::Fulfilled => Some(PaymentOutcome::Fulfill),
        OrderStatus::Cancelled => Some(PaymentOutcome::Cancel),
        _ => None,
    } {
        let reason = (outcome == PaymentOutcome::Cancel).then_some(CancelReason::Customer);
        Store::apply_outcomes(&mut conn, &[(id, payment, outcome, reason)])
            .await
            .unwrap();
    }
    let reached = store.order(id).await.unwrap().unwrap().status;
    assert_eq!(reached, status, "the setup did not reach {status:?}");
    id
}

/// Applies `event` through the store; whether the store says it applied.
async fn apply(store: &Store, id: OrderId, payment: PaymentId, event: OrderEvent) -> bool {
    let mut conn = store.pool().acquire().await.unwrap();
    match event {
        OrderEvent::MethodsOffered => {
            let methods = vec!["credit_card".to_owned()];
            let choice = Store::choose_methods(&mut conn, &[(id, methods.as_slice())])
                .await
                .unwrap();
            matches!(choice[..], [MethodChoice::Select(_)])
        }
        OrderEvent::PageReceived => {
            let page = format!("http://pay.example/pay/{}/again", payment.0);
            let recorded =
                Store::record_pages(&mut conn, &[(id, payment, page.as_str(), Utc::now())])
                    .await
                    .unwrap();
            matches!(recorded[..], [PageRecorded::Recorded])
        }
        OrderEvent::Outcome(outcome) => {
            let reason = (outcome == PaymentOutcome::Cancel).then_some(CancelReason::Expired);
            let applied = Store::apply_outcomes(&mut conn, &[(id, payment, outcome, reason)])
                .await
                .unwrap();
            matches!(applied[..], [Applied::Transitioned { .. }])
        }
        OrderEvent::CancelRequested => matches!(
            store.request_cancel(id).await.unwrap(),
            CancelRequest::Requested(_)
        ),
        OrderEvent::Refused => {
            let refusals = Store::record_refusals(
                &mut conn,
                &[(id, "conflict: refused".to_owned())],
                store.max_payment_attempts(),
            )
            .await
            .unwrap();
            !matches!(refusals[..], [Refusal::Ignored])
        }
    }
}

#[tokio::test]
async fn the_store_moves_orders_exactly_as_the_status_table_says() {
    let db = TestDatabase::create("orders").await;
    let store = Store::connect(db.url()).await.unwrap();
    let mut disagreements = Vec::new();
    for status in OrderStatus::ALL {
        for event in OrderEvent::ALL {
            let payment = PaymentId(uuid::Uuid::new_v4());
            let id = order_in(&store, status, payment).await;
            let applied = apply(&store, id, payment, event).await;
            let after = store.order(id).await.unwrap().unwrap().status;
            let table = status.next(event);
            if applied != table.is_some() || after != table.unwrap_or(status) {
                disagreements.push(format!(
                    "{status:?} on {event:?}: the table says {table:?}, the store applied={applied} and left {after:?}"
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the store and OrderStatus::next disagree:\n{}",
        disagreements.join("\n")
    );
}
