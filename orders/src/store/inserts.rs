//! The group-commit writer of `POST /orders`: concurrent inserts share one statement
//! and one commit.

use std::collections::HashMap;
use std::time::Duration;

use service_kit::group_commit::{Batch, BoxFuture, Limits};
use shared_protocol::OrderId;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{OrderRow, Store, StoreError};
use crate::domain::{NewOrder, Order};

/// How many `POST /orders` are inserted together, at most, and how many may wait.
pub const INSERT_LIMITS: Limits = Limits {
    max_batch: 256,
    queue: 4096,
    queue_wait: Duration::from_secs(5),
    apply_timeout: Duration::from_secs(10),
    answer_wait: Duration::from_secs(30),
};

/// The answer to an insert with an optional idempotency key.
#[derive(Debug)]
pub enum Inserted {
    /// A new order.
    Created(Order),
    /// The key was used before with the same request: the first order.
    Replayed(Order),
    /// The key was used before with another request.
    KeyReused,
}
impl Store {
    /// Inserts a new order in `pending_payment`, honouring an idempotency key. Concurrent
    /// inserts share one statement and one commit ([`OrderInserts`]).
    pub async fn insert_order(
        &self,
        new: &NewOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let request = InsertRequest {
            // Time-ordered (v7): consecutive orders land on the right edge of every
            // index keyed by order id (here and in Payments) rather than on random
            // pages; resume of 100,000 went 8 % faster (bench/README.md). The id shows
            // when the order was made, which `created_at` shows anyway.
            id: OrderId(Uuid::now_v7()),
            new: new.clone(),
            key: idempotency_key.map(str::to_owned),
        };
        Ok(self.inserts.submit(request).await?)
    }
}

/// One `POST /orders` for the insert writer.
#[derive(Debug)]
pub struct InsertRequest {
    /// The new order's id, chosen once per request, so that applying the request again
    /// (after an attempt whose answer was lost) finds the order it created.
    pub id: OrderId,
    pub new: NewOrder,
    pub key: Option<String>,
}

/// Inserts a batch of new orders with ONE statement (`INSERT … SELECT FROM unnest …
/// ON CONFLICT DO NOTHING`), so concurrent `POST /orders` share a commit. A request
/// whose order already exists (its id: a repeated attempt after a lost answer) gets it
/// as created; one whose key is taken (by an earlier order, or by an earlier request of
/// the same batch) gets the order holding it: a replay when the bodies match, a reused
/// key when not, exactly as one insert at a time would answer.
#[derive(Debug)]
pub struct OrderInserts;

impl Batch for OrderInserts {
    type Item = InsertRequest;
    type Output = Inserted;
    type Error = StoreError;

    fn apply<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        items: &'c [InsertRequest],
    ) -> BoxFuture<'c, Result<Vec<Inserted>, StoreError>> {
        Box::pin(insert_orders(conn, items))
    }
}

/// Inserts the batch's orders, then answers each request: created, replayed, or its
/// key reused.
async fn insert_orders(
    conn: &mut PgConnection,
    items: &[InsertRequest],
) -> Result<Vec<Inserted>, StoreError> {
    let mut created = insert_new(conn, items).await?;
    find_made_earlier(conn, items, &mut created).await?;
    let holders = key_holders(conn, items, &created).await?;
    items
        .iter()
        .map(|item| answer(item, &mut created, &holders))
        .collect()
}

/// The one INSERT of the batch; returns the orders it made, by id.
async fn insert_new(
    conn: &mut PgConnection,
    items: &[InsertRequest],
) -> Result<HashMap<Uuid, OrderRow>, StoreError> {
    let ids: Vec<Uuid> = items.iter().map(|i| i.id.0).collect();
    let amounts: Vec<i64> = items.iter().map(|i| i.new.amount.minor()).collect();
    let currencies: Vec<String> = items
        .iter()
        .map(|i| i.new.currency.as_str().to_owned())
        .collect();
    let descriptions: Vec<Option<String>> =
        items.iter().map(|i| i.new.description.clone()).collect();
    let keys: Vec<Option<String>> = items.iter().map(|i| i.key.clone()).collect();
    // WITH ORDINALITY and ORDER BY: rows go in in request order, so of two requests of
    // one batch with the same key, the first one's order holds it.
    let rows = query_orders!(
        "INSERT INTO orders (id, amount, currency, description, idempotency_key)
           SELECT id, amount, currency, description, key
           FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[])
               WITH ORDINALITY AS r(id, amount, currency, description, key, n)
           ORDER BY n
           ON CONFLICT DO NOTHING
           RETURNING",
        "",
        &ids,
        &amounts,
        &currencies,
        &descriptions as &[Option<String>],
        &keys as &[Option<String>],
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

/// Adds to `created` the orders whose insert was skipped because their id exists: an
/// earlier attempt of this request made the order (ids are fresh UUIDs, chosen per
/// request).
async fn find_made_earlier(
    conn: &mut PgConnection,
    items: &[InsertRequest],
    created: &mut HashMap<Uuid, OrderRow>,
) -> Result<(), StoreError> {
    let skipped: Vec<Uuid> = items
        .iter()
        .map(|i| i.id.0)
        .filter(|id| !created.contains_key(id))
        .collect();
    if !skipped.is_empty() {
        let rows = query_orders!("SELECT", "FROM orders WHERE id = ANY($1)", &skipped,)
            .fetch_all(&mut *conn)
            .await?;
        created.extend(rows.into_iter().map(|r| (r.id, r)));
    }
    Ok(())
}

/// Otherwise only a key conflict skips an insert: the orders holding those keys.
async fn key_holders(
    conn: &mut PgConnection,
    items: &[InsertRequest],
    created: &HashMap<Uuid, OrderRow>,
) -> Result<HashMap<String, OrderRow>, StoreError> {
    let taken: Vec<String> = items
        .iter()
        .filter(|item| !created.contains_key(&item.id.0))
        .filter_map(|item| item.key.clone())
        .collect();
    let mut holders: HashMap<String, OrderRow> = HashMap::new();
    if !taken.is_empty() {
        let rows = query_orders!(
            "SELECT",
            "FROM orders WHERE idempotency_key = ANY($1)",
            &taken,
        )
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            if let Some(key) = r.idempotency_key.clone() {
                holders.insert(key, r);
            }
        }
    }
    Ok(holders)
}

/// The answer to one request: its order, or the order holding its key (a replay when
/// the bodies match, a reused key when not).
fn answer(
    item: &InsertRequest,
    created: &mut HashMap<Uuid, OrderRow>,
    holders: &HashMap<String, OrderRow>,
) -> Result<Inserted, StoreError> {
    if let Some(row) = created.remove(&item.id.0) {
        return Ok(Inserted::Created(row.try_into()?));
    }
    let holder = item.key.as_ref().and_then(|k| holders.get(k));
    let Some(existing) = holder else {
        return Err(StoreError::Corrupt(
            "an order insert was skipped but no order holds its key".into(),
        ));
    };
    let same = existing.amount == item.new.amount.minor()
        && existing.currency == item.new.currency.as_str()
        && existing.description == item.new.description;
    Ok(if same {
        Inserted::Replayed(existing.clone().try_into()?)
    } else {
        Inserted::KeyReused
    })
}
