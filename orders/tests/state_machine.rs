//! The order state machine, as a property over real PostgreSQL: for ANY sequence of
//! messages from Payments about an order (offers, pages, outcomes either way, for its
//! payment or another, repeated, errors) mixed with cancel requests and retries, a final
//! status never changes, an order never goes back from `awaiting_payment` to
//! `pending_payment`, and an order has exactly one invoice when fulfilled and none
//! otherwise. proptest generates the sequences; each case is a new order in one
//! database (the store is the real one; only the WebSocket is left out).

use std::sync::Arc;

use orders::domain::{NewOrder, OrderStatus};
use orders::flow;
use orders::metrics::Metrics;
use orders::store::{Inserted, Store};
use proptest::prelude::*;
use shared_protocol::{
    Amount, CancelReason, Currency, ErrorCode, EventId, OrderId, PaymentId, PaymentOutcome,
    ServerMessage,
};
use test_harness::postgres::TestDatabase;

#[derive(Debug, Clone)]
enum Step {
    Methods(Vec<String>),
    /// A page, for the order's payment (`true`) or another one.
    Page(bool),
    /// An outcome, for the order's payment (`true`) or another one, with an event id
    /// from a small range so that repeats happen.
    Outcome(PaymentOutcome, bool, i64),
    Refused(ErrorCode),
    /// The customer asks to cancel (POST /orders/{id}/cancel).
    CancelRequest,
    /// An operator retries (POST /orders/{id}/retry).
    Retry,
    /// Several messages in one batch (distinct kinds, as the link batches them).
    Batch(Vec<Step>),
}

fn single() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::vec("[a-z_]{1,12}", 1..3).prop_map(Step::Methods),
        any::<bool>().prop_map(Step::Page),
        (
            prop_oneof![Just(PaymentOutcome::Fulfill), Just(PaymentOutcome::Cancel)],
            prop::bool::weighted(0.8),
            1i64..6,
        )
            .prop_map(|(o, mine, e)| Step::Outcome(o, mine, e)),
        prop_oneof![
            Just(ErrorCode::Conflict),
            Just(ErrorCode::UnknownMethod),
            Just(ErrorCode::Internal)
        ]
        .prop_map(Step::Refused),
        Just(Step::CancelRequest),
        Just(Step::Retry),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => single(),
        1 => proptest::collection::vec(single(), 2..4).prop_map(Step::Batch),
    ]
}

struct World {
    runtime: tokio::runtime::Runtime,
    store: Store,
    metrics: Arc<Metrics>,
    _db: TestDatabase,
}

fn world() -> World {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, db) = runtime.block_on(async {
        let db = TestDatabase::unborn("orders");
        let store = Store::connect(db.url())
            .await
            .unwrap()
            .with_max_payment_attempts(2);
        (store, db)
    });
    World {
        runtime,
        store,
        metrics: Metrics::new(),
        _db: db,
    }
}

fn message(order: OrderId, mine: PaymentId, step: &Step) -> Option<ServerMessage> {
    let other = PaymentId(uuid::Uuid::from_u128(7));
    Some(match step {
        Step::Methods(methods) => ServerMessage::PaymentMethods {
            order_id: order,
            methods: methods.clone(),
        },
        Step::Page(is_mine) => {
            let payment_id = if *is_mine { mine } else { other };
            ServerMessage::PaymentPage {
                order_id: order,
                payment_id,
                url: format!("http://pay.example/pay/{payment_id}"),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
            }
        }
        Step::Outcome(state, is_mine, event) => ServerMessage::PaymentState {
            event_id: EventId(*event),
            order_id: order,
            payment_id: if *is_mine { mine } else { other },
            state: *state,
            reason: matches!(state, PaymentOutcome::Cancel).then_some(CancelReason::Customer),
        },
        Step::Refused(code) => ServerMessage::Error {
            order_id: Some(order),
            code: *code,
            message: "refused".into(),
        },
        Step::CancelRequest | Step::Retry | Step::Batch(_) => return None,
    })
}

async fn status_and_invoices(store: &Store, order: OrderId) -> (OrderStatus, i64) {
    let status = store.order(order).await.unwrap().expect("the order").status;
    let (invoices,): (i64,) = sqlx::query_as("SELECT count(*) FROM invoices WHERE order_id = $1")
        .bind(order.0)
        .fetch_one(store.pool())
        .await
        .unwrap();
    (status, invoices)
}

async fn run(world: &World, steps: &[Step]) -> Result<(), TestCaseError> {
    let store = &world.store;
    let new = NewOrder {
        amount: Amount::new(1999).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        description: None,
    };
    let Inserted::Created(order) = store.insert_order(&new, None).await.unwrap() else {
        panic!("a new order");
    };
    let order = order.id;
    let mine = PaymentId(uuid::Uuid::new_v4());
    let mut seen_final: Option<OrderStatus> = None;
    let mut seen_awaiting = false;
    for step in steps {
        match step {
            Step::CancelRequest => {
                store.request_cancel(order).await.unwrap();
            }
            Step::Retry => {
                store.retry(order).await.unwrap();
            }
            Step::Batch(steps) => {
                // The link never batches two messages about one order: one per kind
                // here stands for messages the link would have put in separate batches.
                let messages: Vec<ServerMessage> = steps
                    .iter()
                    .filter_map(|s| message(order, mine, s))
                    .take(1)
                    .collect();
                flow::handle_batch(store, &world.metrics, messages)
                    .await
                    .unwrap();
            }
            single => {
                if let Some(message) = message(order, mine, single) {
                    flow::handle(store, &world.metrics, message).await.unwrap();
                }
            }
        }
        let (status, invoices) = status_and_invoices(store, order).await;
        if let Some(final_status) = seen_final {
            prop_assert_eq!(
                status,
                final_status,
                "a final status changed after {:?}",
                step
            );
        }
        if status.is_final() {
            seen_final = Some(status);
        }
        if seen_awaiting {
            prop_assert_ne!(
                status,
                OrderStatus::PendingPayment,
                "back to pending after {:?}",
                step
            );
        }
        seen_awaiting |= status == OrderStatus::AwaitingPayment;
        let expected = i64::from(status == OrderStatus::Fulfilled);
        prop_assert_eq!(
            invoices,
            expected,
            "{:?} with {} invoices after {:?}",
            status,
            invoices,
            step
        );
    }
    Ok(())
}

#[test]
fn no_sequence_of_messages_moves_a_final_order_or_duplicates_an_invoice() {
    let world = world();
    let config = ProptestConfig {
        cases: 96,
        // Shrinking re-runs against the database: keep it bounded.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..16))| {
        world.runtime.block_on(run(&world, &steps))?;
    });
}
