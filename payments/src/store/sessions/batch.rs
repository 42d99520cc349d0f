//! The protocol's batch: one transaction over a batch of messages from one connection.

use std::time::Duration;

use shared_protocol::{Amount, CancelReason, Currency, OrderId, PaymentId, PaymentOutcome};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::super::StoreError;
use super::super::outbox::Event;
use super::{Finish, Finished, Session, SessionRow, finish_in};

/// One transaction over a batch of messages from one connection (group commit): each
/// kind of message is applied with ONE statement over arrays (`unnest`), whatever the
/// batch size, and nothing is visible to anyone until [`Batch::commit`]. The caller
/// keeps at most one message per order in each statement, so a statement never touches
/// a row twice, and applies the statements in the order of the messages.
pub struct Batch {
    pub(in crate::store) tx: Transaction<'static, Postgres>,
}

/// The columns of the sessions `initiate` inserts, one array each, in order of the
/// order id.
struct NewSessions {
    payment_ids: Vec<Uuid>,
    order_ids: Vec<Uuid>,
    amounts: Vec<i64>,
    currencies: Vec<String>,
}

impl NewSessions {
    /// The orders' new sessions, each with a fresh payment id, sorted by order id.
    fn sorted(orders: &[(OrderId, Amount, Currency)]) -> NewSessions {
        let mut sorted: Vec<_> = orders.to_vec();
        // One lock order for every batch, so two batches never wait on each other in a cycle.
        sorted.sort_by_key(|(order_id, _, _)| *order_id);
        let payment_ids: Vec<Uuid> = sorted.iter().map(|_| Uuid::new_v4()).collect();
        let order_ids: Vec<Uuid> = sorted.iter().map(|(o, _, _)| o.0).collect();
        let amounts: Vec<i64> = sorted.iter().map(|(_, a, _)| a.minor()).collect();
        let currencies: Vec<String> = sorted
            .iter()
            .map(|(_, _, c)| c.as_str().to_owned())
            .collect();
        NewSessions {
            payment_ids,
            order_ids,
            amounts,
            currencies,
        }
    }
}

impl Batch {
    /// `initiate_payment` for each order (distinct): starts its session, or finds the
    /// one it has, and records `connection` as the one to send its outcome to, unless
    /// the session has another amount or currency (a request answered with `conflict`
    /// changes nothing: it must not reroute the order's outcome). Returns each order's
    /// session as it now stands, with its final event if any; the caller compares
    /// amount and currency. A new session stores `traceparent` (the trace of the
    /// batch that starts it, which the customer's Pay links to); one that exists keeps
    /// its own.
    pub async fn initiate(
        &mut self,
        orders: &[(OrderId, Amount, Currency)],
        ttl: Duration,
        connection: Uuid,
        traceparent: Option<&str>,
    ) -> Result<Vec<(Session, Option<Event>)>, StoreError> {
        let new = NewSessions::sorted(orders);
        let mut sessions = self
            .insert_sessions(&new, ttl, connection, traceparent)
            .await?;
        if sessions.len() < new.order_ids.len() {
            // The conflicting ones, as they are (a statement of its own, which sees
            // rows other transactions committed while the insert waited on them).
            let conflicting = self.conflicting(&new.order_ids, &sessions).await?;
            sessions.extend(conflicting);
        }
        Ok(sessions)
    }

    /// Inserts the sessions (with `traceparent`, one for all), or records `connection`
    /// on the ones that exist with the same amount and currency; returns those, as they
    /// now stand.
    async fn insert_sessions(
        &mut self,
        new: &NewSessions,
        ttl: Duration,
        connection: Uuid,
        traceparent: Option<&str>,
    ) -> Result<Vec<(Session, Option<Event>)>, StoreError> {
        let rows = query_sessions!(
            "WITH u AS (
                 INSERT INTO payment_sessions
                     (payment_id, order_id, amount, currency, expires_at, last_connection,
                      traceparent)
                 SELECT i.payment_id, i.order_id, i.amount, i.currency,
                     clock_timestamp() + make_interval(secs => $5), $6, $7
                 FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[])
                     AS i(payment_id, order_id, amount, currency)
                 ON CONFLICT (order_id) DO UPDATE SET last_connection = EXCLUDED.last_connection
                     WHERE payment_sessions.amount = EXCLUDED.amount
                       AND payment_sessions.currency = EXCLUDED.currency
                 RETURNING *)",
            &new.payment_ids,
            &new.order_ids,
            &new.amounts,
            &new.currencies,
            ttl.as_secs_f64(),
            connection,
            traceparent,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter().map(SessionRow::split).collect()
    }

    /// The sessions of the orders `insert_sessions` did not answer for, as they are.
    async fn conflicting(
        &mut self,
        order_ids: &[Uuid],
        answered: &[(Session, Option<Event>)],
    ) -> Result<Vec<(Session, Option<Event>)>, StoreError> {
        let answered: std::collections::HashSet<OrderId> =
            answered.iter().map(|(s, _)| s.order_id).collect();
        let conflicting: Vec<Uuid> = order_ids
            .iter()
            .copied()
            .filter(|id| !answered.contains(&OrderId(*id)))
            .collect();
        let rows = query_sessions!(
            "WITH u AS (SELECT * FROM payment_sessions WHERE order_id = ANY($1))",
            &conflicting,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter().map(SessionRow::split).collect()
    }

    /// `select_payment_method` for each order (distinct): a session still `initiated`
    /// takes the method; every session found records `connection`, unless it pays with
    /// another method already (the request is answered with `conflict` and changes
    /// nothing). Returns each found session as it now stands (the caller compares the
    /// method), with its final event if any; unknown orders are missing from the answer.
    pub async fn select(
        &mut self,
        choices: &[(OrderId, String)],
        connection: Uuid,
    ) -> Result<Vec<(Session, Option<Event>)>, StoreError> {
        let mut sorted: Vec<_> = choices.to_vec();
        sorted.sort_by_key(|(order_id, _)| *order_id);
        let order_ids: Vec<Uuid> = sorted.iter().map(|(o, _)| o.0).collect();
        let methods: Vec<String> = sorted.iter().map(|(_, m)| m.clone()).collect();
        let rows = query_sessions!(
            "WITH u AS (
                 UPDATE payment_sessions s SET
                     state = CASE WHEN s.state = 'initiated' THEN 'method_selected' ELSE s.state END,
                     method = CASE WHEN s.state = 'initiated' THEN i.method ELSE s.method END,
                     updated_at = CASE WHEN s.state = 'initiated' THEN clock_timestamp()
                         ELSE s.updated_at END,
                     last_connection = CASE
                         WHEN s.state = 'method_selected' AND s.method <> i.method
                         THEN s.last_connection ELSE $3 END
                 FROM unnest($1::uuid[], $2::text[]) AS i(order_id, method)
                 WHERE s.order_id = i.order_id
                 RETURNING s.*)",
            &order_ids,
            &methods,
            connection,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter().map(SessionRow::split).collect()
    }

    /// Which of these orders have a session.
    pub async fn known(&mut self, order_ids: &[OrderId]) -> Result<Vec<OrderId>, StoreError> {
        let ids: Vec<Uuid> = order_ids.iter().map(|o| o.0).collect();
        let rows = sqlx::query_scalar!(
            "SELECT order_id FROM payment_sessions WHERE order_id = ANY($1)",
            &ids,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.into_iter().map(OrderId).collect())
    }

    /// `cancel_payment`: cancels the order's open session (recording `connection`), or
    /// finds the final event it has.
    pub async fn cancel(
        &mut self,
        order_id: OrderId,
        connection: Uuid,
    ) -> Result<Finished, StoreError> {
        let payment_id = sqlx::query_scalar!(
            "UPDATE payment_sessions SET last_connection = $2 WHERE order_id = $1 RETURNING payment_id",
            order_id.0,
            connection,
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(payment_id) = payment_id else {
            return Ok(Finished::Unknown);
        };
        let finish = Finish {
            payment_id: PaymentId(payment_id),
            outcome: PaymentOutcome::Cancel,
            reason: Some(CancelReason::OrdersCancelled),
            // Answered in the batch's trace, on the requesting connection: nothing to
            // continue in a later delivery.
            traceparent: None,
            // Answered on the requesting connection at once: already dispatched.
            dispatched: true,
        };
        finish_in(&mut self.tx, &finish).await
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shared_protocol::{Amount, Currency, OrderId};
    use test_harness::postgres::TestDatabase;
    use uuid::Uuid;

    use crate::store::Store;

    /// How many updates of payment_sessions this transaction made, and how many of them
    /// were HOT (no index entry written). `pg_stat_xact_user_tables` counts the current
    /// transaction's own work, so the answer is exact, with no wait for the stats flush.
    async fn updates(batch: &mut super::Batch) -> (i64, i64) {
        sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables \
             WHERE relname = 'payment_sessions'",
        )
        .fetch_one(&mut *batch.tx)
        .await
        .unwrap()
    }

    /// Selecting the method (initiated → method_selected) changes no indexed column, so
    /// PostgreSQL updates the row in place (HOT): one of the two per-flow updates of a
    /// session writes no index entry. An index that names `state` (in its key or its
    /// predicate) would make this fail.
    #[tokio::test]
    async fn selecting_a_method_writes_no_index_entry() {
        let db = TestDatabase::create("payments_hot").await;
        let store = Store::connect(db.url()).await.unwrap();
        let connection = Uuid::new_v4();
        let orders: Vec<_> = (0..20)
            .map(|_| {
                let amount = Amount::new(1999).unwrap();
                (
                    OrderId(Uuid::new_v4()),
                    amount,
                    Currency::parse("EUR").unwrap(),
                )
            })
            .collect();
        let mut batch = store.batch().await.unwrap();
        let ttl = std::time::Duration::from_secs(600);
        batch
            .initiate(&orders, ttl, connection, None)
            .await
            .unwrap();
        batch.commit().await.unwrap();

        let choices: Vec<_> = orders
            .iter()
            .map(|(order, _, _)| (*order, "credit_card".to_owned()))
            .collect();
        let mut batch = store.batch().await.unwrap();
        let selected = batch.select(&choices, connection).await.unwrap();
        assert_eq!(selected.len(), orders.len());
        assert_eq!(
            updates(&mut batch).await,
            (20, 20),
            "(updates, of which HOT)"
        );
        batch.commit().await.unwrap();
    }
}
