//! Sessions: what the protocol and the page read, the expiry scan, and the page's Pay
//! and Cancel (group-committed by [`PageFinishes`]). A state change that makes a session
//! final writes its outcome event in the same transaction ([`finish_in`]). The protocol's
//! batch transaction is in [`batch`]. Every query that returns sessions goes through
//! `query_sessions!`, which holds the one list of a session's columns.

/// A query returning [`SessionRow`]s: `$sessions` is a string literal, a `WITH` clause
/// whose last query `u` yields `payment_sessions` rows (`SELECT *` or `RETURNING *`), and
/// the arguments bind its parameters. The session's columns and the lookup of its event
/// are written here once, for every query that returns sessions, and each such query is
/// still checked at compile time (sqlx joins the literals: `"…" + "…"`). A view would
/// hold the list too, but a `RETURNING` of an `INSERT` or `UPDATE` cannot read a view.
macro_rules! query_sessions {
    ($sessions:tt, $($arg:expr),* $(,)?) => {
        sqlx::query_as!(
            SessionRow,
            $sessions
                + r#"
             SELECT u.payment_id AS "payment_id!", u.order_id AS "order_id!",
                 u.amount AS "amount!", u.currency AS "currency!", u.state AS "state!",
                 u.method AS "method?", u.cancel_reason AS "cancel_reason?",
                 u.expires_at AS "expires_at!",
                 e.event_id AS "event_id?", e.state AS "event_state?", e.reason AS "event_reason?",
                 e.traceparent AS "event_traceparent?"
             FROM u LEFT JOIN LATERAL (
                 SELECT event_id, state, reason, traceparent FROM payment_events
                 WHERE payment_id = u.payment_id LIMIT 1) e ON true"#,
            $($arg),*
        )
    };
}

pub(super) mod batch;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use service_kit::group_commit::{self, BoxFuture};
use shared_protocol::{
    Amount, CancelReason, Currency, EventId, OrderId, PaymentId, PaymentOutcome,
};
use sqlx::PgConnection;
use uuid::Uuid;

use self::batch::Batch;
use super::outbox::{Event, EventRow, parse_reason};
use super::{SCAN_LIMIT, SessionState, Store, StoreError};

fn parse_state(s: &str) -> Result<SessionState, StoreError> {
    SessionState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("session state {s:?}")))
}

/// A payment session.
#[derive(Debug, Clone)]
pub struct Session {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: Amount,
    pub currency: Currency,
    pub state: SessionState,
    pub method: Option<String>,
    pub cancel_reason: Option<CancelReason>,
    pub expires_at: DateTime<Utc>,
}

/// A session as the store reads it, with its final event if it has one.
struct SessionRow {
    payment_id: Uuid,
    order_id: Uuid,
    amount: i64,
    currency: String,
    state: String,
    method: Option<String>,
    cancel_reason: Option<String>,
    expires_at: DateTime<Utc>,
    event_id: Option<i64>,
    event_state: Option<String>,
    event_reason: Option<String>,
    event_traceparent: Option<String>,
}

impl SessionRow {
    /// The session and its event, each value parsed into its type once, here.
    fn split(self) -> Result<(Session, Option<Event>), StoreError> {
        let event = match (self.event_id, self.event_state) {
            (Some(event_id), Some(state)) => Some(Event::try_from(EventRow {
                event_id,
                order_id: self.order_id,
                payment_id: self.payment_id,
                state,
                reason: self.event_reason,
                traceparent: self.event_traceparent,
            })?),
            _ => None,
        };
        let session = Session {
            payment_id: PaymentId(self.payment_id),
            order_id: OrderId(self.order_id),
            amount: Amount::new(self.amount)
                .map_err(|_| StoreError::Corrupt(format!("session amount {}", self.amount)))?,
            currency: Currency::from_stored(&self.currency).map_err(|_| {
                StoreError::Corrupt(format!("session currency {:?}", self.currency))
            })?,
            state: parse_state(&self.state)?,
            method: self.method,
            cancel_reason: parse_reason(self.cancel_reason.as_deref())?,
            expires_at: self.expires_at,
        };
        Ok((session, event))
    }
}

/// The answer to a state change that makes a session final.
#[derive(Debug)]
pub enum Finished {
    /// This call moved the session; here is its event.
    Now(Event),
    /// It was already final; here is the event it has.
    Already(Event),
    /// Not in a state this change applies to (for example, no method selected yet).
    NotApplicable(SessionState),
    Unknown,
}

/// The answer to the page's Pay or Cancel.
#[derive(Debug)]
pub struct PageFinished {
    pub finished: Finished,
    /// The `traceparent` stored on the session at `initiate_payment` (the order's
    /// trace), when this request moved the session and it has one: what the request's
    /// span links to.
    pub session_traceparent: Option<String>,
}

impl Store {
    /// The customer paid on the page; `traceparent` is the request's, stored on the
    /// event. Concurrent Pays and Cancels share one statement and one commit
    /// ([`PageFinishes`]).
    pub async fn complete(
        &self,
        payment_id: PaymentId,
        traceparent: Option<String>,
    ) -> Result<PageFinished, StoreError> {
        let finish = PageFinish {
            payment_id,
            outcome: PaymentOutcome::Fulfill,
            reason: None,
            traceparent,
        };
        Ok(self.finishes.submit(finish).await?)
    }

    /// The customer gave up on the page (`traceparent` as for [`Store::complete`]).
    pub async fn cancel_by_customer(
        &self,
        payment_id: PaymentId,
        traceparent: Option<String>,
    ) -> Result<PageFinished, StoreError> {
        let finish = PageFinish {
            payment_id,
            outcome: PaymentOutcome::Cancel,
            reason: Some(CancelReason::Customer),
            traceparent,
        };
        Ok(self.finishes.submit(finish).await?)
    }

    /// Cancels up to [`SCAN_LIMIT`] open sessions past their deadline, with reason
    /// `expired`; the caller repeats while a full batch comes back.
    pub async fn expire(&self) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            r#"WITH due AS (
                 SELECT payment_id FROM payment_sessions
                 WHERE is_open AND expires_at <= clock_timestamp()
                 ORDER BY expires_at LIMIT $1
                 FOR UPDATE SKIP LOCKED),
             expired AS (
                 UPDATE payment_sessions s SET state = 'cancelled', cancel_reason = 'expired',
                     updated_at = clock_timestamp()
                 FROM due WHERE s.payment_id = due.payment_id
                     AND s.is_open
                 RETURNING s.payment_id, s.order_id)
             INSERT INTO payment_events (payment_id, order_id, state, reason)
             SELECT payment_id, order_id, 'CANCEL', 'expired' FROM expired
             RETURNING event_id, order_id, payment_id, state, reason, traceparent"#,
            SCAN_LIMIT,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Event::try_from).collect()
    }

    pub async fn session_by_order(&self, order_id: OrderId) -> Result<Option<Session>, StoreError> {
        let row = query_sessions!(
            "WITH u AS (SELECT * FROM payment_sessions WHERE order_id = $1)",
            order_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(SessionRow::split).transpose()?.map(|(s, _)| s))
    }

    pub async fn session_by_payment(
        &self,
        payment_id: PaymentId,
    ) -> Result<Option<Session>, StoreError> {
        let row = query_sessions!(
            "WITH u AS (SELECT * FROM payment_sessions WHERE payment_id = $1)",
            payment_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(SessionRow::split).transpose()?.map(|(s, _)| s))
    }

    pub async fn event_of(&self, payment_id: PaymentId) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query_as!(
            EventRow,
            "SELECT event_id, order_id, payment_id, state, reason, traceparent FROM payment_events WHERE payment_id = $1",
            payment_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(Event::try_from).transpose()
    }

    /// Starts a transaction for a batch of messages from one connection, that looks
    /// rows up by key ([`service_kit::database::begin_batch`]).
    pub async fn batch(&self) -> Result<Batch, StoreError> {
        Ok(Batch {
            tx: service_kit::database::begin_batch(&self.pool).await?,
        })
    }
}

/// A change that makes a session final, as [`finish_in`] applies it: the page's Pay
/// or Cancel, or Orders' `cancel_payment`.
struct Finish<'a> {
    payment_id: PaymentId,
    outcome: PaymentOutcome,
    reason: Option<CancelReason>,
    /// Stored on the event ([`Event::traceparent`]).
    traceparent: Option<&'a str>,
    /// The event goes out at once (on the requesting connection): it is dispatched.
    dispatched: bool,
}

async fn insert_event(
    conn: &mut PgConnection,
    order_id: OrderId,
    finish: &Finish<'_>,
) -> Result<Event, StoreError> {
    let event_id = sqlx::query_scalar!(
        "INSERT INTO payment_events (payment_id, order_id, state, reason, dispatched_at, \
             delivery_attempts, traceparent) \
         VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN clock_timestamp() END, \
             CASE WHEN $5 THEN 1 ELSE 0 END, $6) RETURNING event_id",
        finish.payment_id.0,
        order_id.0,
        finish.outcome.as_str(),
        finish.reason.map(CancelReason::as_str),
        finish.dispatched,
        finish.traceparent,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Event {
        event_id: EventId(event_id),
        order_id,
        payment_id: finish.payment_id,
        state: finish.outcome,
        reason: finish.reason,
        traceparent: finish.traceparent.map(str::to_owned),
    })
}

/// Moves a session to its final state and writes its event, inside `tx`.
async fn finish_in(conn: &mut PgConnection, finish: &Finish<'_>) -> Result<Finished, StoreError> {
    let moved = move_session(conn, finish.payment_id, finish.outcome, finish.reason).await?;
    let Some(order_id) = moved else {
        return unmoved(conn, finish.payment_id).await;
    };
    let event = insert_event(conn, OrderId(order_id), finish).await?;
    Ok(Finished::Now(event))
}

/// The conditional UPDATE to the outcome's final state; returns the session's order if
/// it moved.
async fn move_session(
    conn: &mut PgConnection,
    payment_id: PaymentId,
    outcome: PaymentOutcome,
    reason: Option<CancelReason>,
) -> Result<Option<Uuid>, StoreError> {
    // Paying needs a selected method and a session that has not expired; cancelling
    // applies to any open session.
    Ok(match outcome {
        PaymentOutcome::Fulfill => sqlx::query_scalar!(
            "UPDATE payment_sessions SET state = 'fulfilled', updated_at = clock_timestamp() \
             WHERE payment_id = $1 AND state = 'method_selected' AND expires_at > clock_timestamp() \
             RETURNING order_id",
            payment_id.0,
        )
        .fetch_optional(&mut *conn)
        .await?,
        PaymentOutcome::Cancel => sqlx::query_scalar!(
            "UPDATE payment_sessions SET state = 'cancelled', cancel_reason = $2, \
                 updated_at = clock_timestamp() \
             WHERE payment_id = $1 AND is_open \
             RETURNING order_id",
            payment_id.0,
            reason.map(CancelReason::as_str),
        )
        .fetch_optional(&mut *conn)
        .await?,
    })
}

/// The answer for a session that did not move: unknown, already final (with its
/// event), or in a state the change does not apply to.
async fn unmoved(conn: &mut PgConnection, payment_id: PaymentId) -> Result<Finished, StoreError> {
    let state = sqlx::query_scalar!(
        "SELECT state FROM payment_sessions WHERE payment_id = $1",
        payment_id.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(state) = state else {
        return Ok(Finished::Unknown);
    };
    let event = sqlx::query_as!(
        EventRow,
        "SELECT event_id, order_id, payment_id, state, reason, traceparent FROM payment_events WHERE payment_id = $1",
        payment_id.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match event {
        Some(event) => Finished::Already(event.try_into()?),
        None => Finished::NotApplicable(parse_state(&state)?),
    })
}

/// One Pay or Cancel of the payment page, for the page writer.
#[derive(Debug)]
pub struct PageFinish {
    pub payment_id: PaymentId,
    pub outcome: PaymentOutcome,
    pub reason: Option<CancelReason>,
    /// The request's `traceparent`, stored on the event it makes (`None` when traces
    /// are off).
    pub traceparent: Option<String>,
}

impl PageFinish {
    /// The change as [`finish_in`] applies it: the page answers with a redirect, and
    /// the event goes out by delivery, not dispatched yet.
    fn finish(&self) -> Finish<'_> {
        Finish {
            payment_id: self.payment_id,
            outcome: self.outcome,
            reason: self.reason,
            traceparent: self.traceparent.as_deref(),
            dispatched: false,
        }
    }
}

/// Writes a batch of the page's Pays and Cancels with ONE statement: the conditional
/// session UPDATEs (pay needs a selected method and an unexpired session; cancel, any
/// open session) and the events of the sessions that moved, in one commit. A request
/// whose session did not move (unknown, already final, no method yet, or a second
/// request for one session in the same batch) is answered as one at a time would be,
/// by `finish_in` in its own transaction.
#[derive(Debug)]
pub struct PageFinishes;

impl group_commit::Batch for PageFinishes {
    type Item = PageFinish;
    type Output = PageFinished;
    type Error = StoreError;

    fn apply<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        items: &'c [PageFinish],
    ) -> BoxFuture<'c, Result<Vec<PageFinished>, StoreError>> {
        Box::pin(finish_page_batch(conn, items))
    }
}

/// Applies a batch of the page's Pays and Cancels: one statement for the sessions that
/// move, then each other request in its own transaction, answered in the items' order.
async fn finish_page_batch(
    conn: &mut PgConnection,
    items: &[PageFinish],
) -> Result<Vec<PageFinished>, StoreError> {
    let mut moved = move_page_sessions(conn, items).await?;
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        // The first request for a session that moved gets its event; any other is
        // answered from the database as it now stands.
        if let Some(row) = moved.remove(&item.payment_id.0) {
            answers.push(row.answer()?);
            continue;
        }
        answers.push(PageFinished {
            finished: finish_alone(conn, item).await?,
            session_traceparent: None,
        });
    }
    Ok(answers)
}

/// An event the page batch's statement wrote, and the `traceparent` of its session.
struct MovedRow {
    event_id: i64,
    order_id: Uuid,
    payment_id: Uuid,
    state: String,
    reason: Option<String>,
    traceparent: Option<String>,
    session_traceparent: Option<String>,
}

impl MovedRow {
    /// The answer to the request that moved the session.
    fn answer(self) -> Result<PageFinished, StoreError> {
        let event = EventRow {
            event_id: self.event_id,
            order_id: self.order_id,
            payment_id: self.payment_id,
            state: self.state,
            reason: self.reason,
            traceparent: self.traceparent,
        };
        Ok(PageFinished {
            finished: Finished::Now(event.try_into()?),
            session_traceparent: self.session_traceparent,
        })
    }
}

/// The columns of a page batch, one array each, in the order of the requests.
struct PageColumns<'a> {
    ids: Vec<Uuid>,
    states: Vec<&'static str>,
    reasons: Vec<Option<&'static str>>,
    traceparents: Vec<Option<&'a str>>,
}

impl PageColumns<'_> {
    fn of(items: &[PageFinish]) -> PageColumns<'_> {
        PageColumns {
            ids: items.iter().map(|i| i.payment_id.0).collect(),
            states: items.iter().map(|i| i.outcome.as_str()).collect(),
            reasons: items
                .iter()
                .map(|i| i.reason.map(CancelReason::as_str))
                .collect(),
            traceparents: items.iter().map(|i| i.traceparent.as_deref()).collect(),
        }
    }
}

/// The one statement of a page batch, committed: moves the sessions it can and writes
/// their events (with the requests' `traceparent`); returns those events, and their
/// sessions' `traceparent`, by payment id.
async fn move_page_sessions(
    conn: &mut PgConnection,
    items: &[PageFinish],
) -> Result<HashMap<Uuid, MovedRow>, StoreError> {
    let columns = PageColumns::of(items);
    // A transaction only for its plan (see `BATCH_BEGIN`): it is one statement.
    let mut batch =
        sqlx::Connection::begin_with(&mut *conn, service_kit::database::BATCH_BEGIN).await?;
    let rows = sqlx::query_as!(
        MovedRow,
        r#"WITH req AS (
             SELECT DISTINCT ON (payment_id) payment_id, state, reason, traceparent
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
                 AS r(payment_id, state, reason, traceparent, n)
             ORDER BY payment_id, n),
         moved AS (
             UPDATE payment_sessions s SET
                 state = CASE r.state WHEN 'FULFILL' THEN 'fulfilled' ELSE 'cancelled' END,
                 cancel_reason = r.reason,
                 updated_at = clock_timestamp()
             FROM req r
             WHERE s.payment_id = r.payment_id
               AND CASE r.state
                     WHEN 'FULFILL' THEN s.state = 'method_selected'
                         AND s.expires_at > clock_timestamp()
                     ELSE s.is_open END
             RETURNING s.payment_id, s.order_id, r.state, r.reason, r.traceparent,
                 s.traceparent AS session_traceparent),
         inserted AS (
             INSERT INTO payment_events (payment_id, order_id, state, reason, traceparent)
             SELECT payment_id, order_id, state, reason, traceparent FROM moved
             RETURNING event_id, order_id, payment_id, state, reason, traceparent)
         SELECT i.event_id AS "event_id!", i.order_id AS "order_id!",
             i.payment_id AS "payment_id!", i.state AS "state!", i.reason AS "reason?",
             i.traceparent AS "traceparent?", m.session_traceparent AS "session_traceparent?"
         FROM inserted i JOIN moved m USING (payment_id)"#,
        &columns.ids,
        &columns.states as &[&str],
        &columns.reasons as &[Option<&str>],
        &columns.traceparents as &[Option<&str>],
    )
    .fetch_all(&mut *batch)
    .await?;
    batch.commit().await?;
    Ok(rows.into_iter().map(|r| (r.payment_id, r)).collect())
}

/// One page request, as one at a time would be: `finish_in` in its own transaction.
async fn finish_alone(conn: &mut PgConnection, item: &PageFinish) -> Result<Finished, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let finished = finish_in(&mut tx, &item.finish()).await?;
    tx.commit().await?;
    Ok(finished)
}
