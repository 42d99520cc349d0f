//! `POST /orders` inserts are group-committed: one statement for every request that
//! waited. These tests apply batches directly, on a real database, and check that each
//! request of a batch gets the answer it would get alone: a key used twice in ONE batch
//! included, which no HTTP test can arrange on purpose.

use orders::domain::NewOrder;
use orders::store::{InsertRequest, Inserted, OrderInserts, Store};
use serde_json::json;
use service_kit::group_commit::Batch;
use shared_protocol::OrderId;
use test_harness::postgres::TestDatabase;
use uuid::Uuid;

fn new_order(amount: i64, description: Option<&str>) -> NewOrder {
    let body = json!({"amount": amount, "currency": "EUR", "description": description});
    NewOrder::parse(body.as_object().unwrap()).unwrap()
}

fn request(amount: i64, key: Option<&str>) -> InsertRequest {
    InsertRequest {
        id: OrderId(Uuid::new_v4()),
        new: new_order(amount, None),
        key: key.map(str::to_owned),
    }
}

#[tokio::test]
async fn each_request_of_a_batch_gets_its_own_answer() {
    let db = TestDatabase::create("orders").await;
    let store = Store::connect(db.url()).await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();

    // An order that already holds key "old".
    let earlier = OrderInserts
        .apply(&mut conn, &[request(500, Some("old"))])
        .await
        .unwrap();
    let Inserted::Created(old) = &earlier[0] else {
        panic!("expected a new order, got {earlier:?}");
    };

    let batch = [
        request(100, Some("k1")),  // new
        request(200, None),        // new, no key
        request(100, Some("k1")),  // same key, same body, same batch: replay of the first
        request(999, Some("k1")),  // same key, another body: refused
        request(500, Some("old")), // key of an earlier order, same body: replay
        request(501, Some("old")), // key of an earlier order, another body: refused
        request(300, Some("k2")),  // new
    ];
    let answers = OrderInserts.apply(&mut conn, &batch).await.unwrap();
    assert_eq!(answers.len(), batch.len());

    let Inserted::Created(k1) = &answers[0] else {
        panic!("first k1: {:?}", answers[0]);
    };
    assert_eq!(k1.amount.minor(), 100);
    assert!(matches!(&answers[1], Inserted::Created(o) if o.amount.minor() == 200));
    assert!(
        matches!(&answers[2], Inserted::Replayed(o) if o.id == k1.id),
        "second k1: {:?}",
        answers[2]
    );
    assert!(
        matches!(answers[3], Inserted::KeyReused),
        "{:?}",
        answers[3]
    );
    assert!(
        matches!(&answers[4], Inserted::Replayed(o) if o.id == old.id),
        "{:?}",
        answers[4]
    );
    assert!(
        matches!(answers[5], Inserted::KeyReused),
        "{:?}",
        answers[5]
    );
    assert!(matches!(&answers[6], Inserted::Created(o) if o.amount.minor() == 300));

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, 4, "old, k1, the keyless one and k2");
}

/// The writer applies a failed batch's requests again, one by one, and the first
/// attempt may have committed with its answer lost: the same request applied twice
/// answers the same order, created once.
#[tokio::test]
async fn a_request_applied_again_gets_the_order_it_created() {
    let db = TestDatabase::create("orders").await;
    let store = Store::connect(db.url()).await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let keyless = request(100, None);
    let keyed = request(200, Some("k"));
    let first = OrderInserts
        .apply(&mut conn, &[keyless, keyed])
        .await
        .unwrap();
    let again = OrderInserts
        .apply(
            &mut conn,
            &[
                InsertRequest {
                    id: first_id(&first[0]),
                    new: new_order(100, None),
                    key: None,
                },
                InsertRequest {
                    id: first_id(&first[1]),
                    new: new_order(200, None),
                    key: Some("k".into()),
                },
            ],
        )
        .await
        .unwrap();
    for (a, b) in first.iter().zip(&again) {
        assert!(
            matches!(b, Inserted::Created(o) if o.id == first_id(a)),
            "{b:?}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

fn first_id(inserted: &Inserted) -> OrderId {
    match inserted {
        Inserted::Created(o) => o.id,
        other => panic!("expected a new order, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_inserts_through_the_store_all_land_once() {
    let db = TestDatabase::create("orders").await;
    let store = Store::connect(db.url()).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("key-{}", i % 100);
                store
                    .insert_order(&new_order(1000 + i % 100, None), Some(&key))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    let mut replayed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Inserted::Created(_) => created += 1,
            Inserted::Replayed(_) => replayed += 1,
            Inserted::KeyReused => panic!("the bodies match: never a reused key"),
        }
    }
    assert_eq!((created, replayed), (100, 100));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 100);
}
