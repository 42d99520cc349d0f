//! All the SQL of the Payments service, in one place.
//!
//! Each state change and its outcome event are written in ONE transaction, as a
//! conditional `UPDATE … WHERE state IN (…)` followed by the event's `INSERT`; a
//! trigger on the events table NOTIFYs every instance when it commits. Zero rows
//! updated is a normal answer: someone else got there first, or the session is final.
//!
//! Batch statements join their rows as arrays (`FROM unnest($1, …) AS u`) and also say
//! `key = ANY($1)`: the planner guesses 100 rows for an `unnest` and would then hash-join
//! against a scan of a whole index (or table) for a batch of three; with `= ANY` it looks
//! the rows up by key, whatever the table's size. Joins to a row per batch row are
//! `LATERAL … LIMIT 1` lookups for the same reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use service_kit::group_commit::{self, BoxFuture, GroupCommit, Limits};
use shared_protocol::{
    Amount, CancelReason, Currency, EventId, OrderId, PaymentId, PaymentOutcome, ServerMessage,
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use crate::domain::SessionState;

fn parse_state(s: &str) -> Result<SessionState, StoreError> {
    SessionState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("session state {s:?}")))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the database")]
    Open(#[from] service_kit::database::OpenError),
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    #[error("row holds a value the code does not know: {0}")]
    Corrupt(String),
    #[error("the service is stopping")]
    Stopping,
    #[error("the page writer is unavailable")]
    Writer(#[source] group_commit::Error<std::convert::Infallible>),
}

impl From<group_commit::Error<StoreError>> for StoreError {
    fn from(e: group_commit::Error<StoreError>) -> StoreError {
        match e {
            group_commit::Error::Apply(e) => e,
            group_commit::Error::Busy { writer, waited } => {
                StoreError::Writer(group_commit::Error::Busy { writer, waited })
            }
            group_commit::Error::Timeout { writer, waited } => {
                StoreError::Writer(group_commit::Error::Timeout { writer, waited })
            }
            group_commit::Error::Stopped(_) => StoreError::Stopping,
        }
    }
}

/// Runs store work as a tokio task and waits for it. HTTP handlers run on actix
/// arbiters, which drop their unfinished local tasks outside any runtime when they stop
/// (a stop that outlasts the shutdown timeout), and a pool connection dropped there
/// panics ("this functionality requires a Tokio context"); tokio drops its own tasks
/// inside the runtime, where a pool connection goes back (or away) cleanly.
pub async fn off_arbiter<T, F>(work: F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Stopping),
    }
}

/// A payment session.
#[derive(Debug, Clone)]
pub struct Session {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: i64,
    pub currency: String,
    pub state: SessionState,
    pub method: Option<String>,
    pub cancel_reason: Option<CancelReason>,
    pub expires_at: DateTime<Utc>,
}

struct SessionRow {
    payment_id: Uuid,
    order_id: Uuid,
    amount: i64,
    currency: String,
    state: String,
    method: Option<String>,
    cancel_reason: Option<String>,
    expires_at: DateTime<Utc>,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Session, StoreError> {
        Ok(Session {
            payment_id: PaymentId(r.payment_id),
            order_id: OrderId(r.order_id),
            amount: r.amount,
            currency: r.currency,
            state: parse_state(&r.state)?,
            method: r.method,
            cancel_reason: r.cancel_reason.as_deref().and_then(CancelReason::parse),
            expires_at: r.expires_at,
        })
    }
}

/// An outcome event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: EventId,
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub state: PaymentOutcome,
    pub reason: Option<CancelReason>,
}

impl Event {
    pub fn message(&self) -> ServerMessage {
        ServerMessage::PaymentState {
            event_id: self.event_id,
            order_id: self.order_id,
            payment_id: self.payment_id,
            state: self.state,
            reason: self.reason,
        }
    }
}

struct EventRow {
    event_id: i64,
    order_id: Uuid,
    payment_id: Uuid,
    state: String,
    reason: Option<String>,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Event, StoreError> {
        Ok(Event {
            event_id: EventId(r.event_id),
            order_id: OrderId(r.order_id),
            payment_id: PaymentId(r.payment_id),
            state: match r.state.as_str() {
                "FULFILL" => PaymentOutcome::Fulfill,
                "CANCEL" => PaymentOutcome::Cancel,
                other => return Err(StoreError::Corrupt(format!("event state {other:?}"))),
            },
            reason: r.reason.as_deref().and_then(CancelReason::parse),
        })
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

/// An undelivered event and the connection it should go to first.
#[derive(Debug)]
pub struct Pending {
    pub event: Event,
    pub owner: Option<Uuid>,
}

/// What one claim took: events to send now, and events that used up their delivery
/// attempts and were dead-lettered instead (not to be sent).
#[derive(Debug, Default)]
pub struct Claimed {
    pub send: Vec<Pending>,
    pub dead: Vec<Dead>,
}

/// An event dead-lettered just now: sent `attempts` times, never acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub event: Event,
    pub attempts: i32,
}

/// A page of the resume of a new connection.
#[derive(Debug, Default)]
pub struct Resumed {
    /// To send on the new connection, oldest first.
    pub send: Vec<Event>,
    /// Dead-lettered instead of sent: they had used up their delivery attempts.
    pub dead: Vec<Dead>,
    /// The last event id the page looked at, when the page was full (more may follow).
    pub next: Option<i64>,
}

/// An event as the admin endpoints show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    pub event_id: i64,
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub state: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it was last sent (claimed for sending), if ever.
    pub dispatched_at: Option<DateTime<Utc>>,
    pub acked_at: Option<DateTime<Utc>>,
    pub delivery_attempts: i32,
    pub dead_at: Option<DateTime<Utc>>,
}

/// The answer to an operator's retry of a dead letter.
#[derive(Debug)]
pub enum Retry {
    /// Back in delivery: attempts reset, sent again at the next dispatch.
    Retried(EventRecord),
    /// Not dead-lettered (acked, or still being delivered): nothing changed.
    NotDead(EventRecord),
    Unknown,
}

/// The event backlog, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Unacked events still being delivered (dead letters excluded).
    pub unacked: i64,
    /// Age of the oldest of those, in seconds (0 when there is none).
    pub oldest_seconds: f64,
    /// Dead letters not acked (waiting for an operator).
    pub dead: i64,
}

/// The most rows one scan reads or one batch statement claims.
pub const SCAN_LIMIT: i64 = 1000;

/// The session store: a connection pool on this service's database, and the
/// group-commit writer of the payment page's Pay and Cancel on it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    finishes: GroupCommit<PageFinishes>,
}

/// How many Pay/Cancel of the page are written together, at most, and how many may wait.
pub const FINISH_LIMITS: Limits = Limits {
    max_batch: 256,
    queue: 4096,
    queue_wait: Duration::from_secs(5),
    apply_timeout: Duration::from_secs(10),
    answer_wait: Duration::from_secs(30),
};

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        let pool =
            service_kit::database::open(database_url, &sqlx::migrate!("../migrations/payments"))
                .await?;
        Ok(Store::new(pool))
    }

    /// A store on `pool`; starts the page writer on the current tokio runtime.
    pub fn new(pool: PgPool) -> Store {
        let finishes = GroupCommit::start("page", pool.clone(), PageFinishes, FINISH_LIMITS);
        Store { pool, finishes }
    }

    /// Whether the page's Pay/Cancel writer task runs (for `/readyz`).
    pub fn writer_running(&self) -> bool {
        self.finishes.is_running()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The customer paid on the page. Concurrent Pays and Cancels share one statement
    /// and one commit ([`PageFinishes`]).
    pub async fn complete(&self, payment_id: PaymentId) -> Result<Finished, StoreError> {
        let finish = PageFinish {
            payment_id,
            outcome: PaymentOutcome::Fulfill,
            reason: None,
        };
        Ok(self.finishes.submit(finish).await?)
    }

    /// The customer gave up on the page.
    pub async fn cancel_by_customer(&self, payment_id: PaymentId) -> Result<Finished, StoreError> {
        let finish = PageFinish {
            payment_id,
            outcome: PaymentOutcome::Cancel,
            reason: Some(CancelReason::Customer),
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
                 WHERE state IN ('initiated', 'method_selected') AND expires_at <= clock_timestamp()
                 ORDER BY expires_at LIMIT $1
                 FOR UPDATE SKIP LOCKED),
             expired AS (
                 UPDATE payment_sessions s SET state = 'cancelled', cancel_reason = 'expired',
                     updated_at = clock_timestamp()
                 FROM due WHERE s.payment_id = due.payment_id
                     AND s.state IN ('initiated', 'method_selected')
                 RETURNING s.payment_id, s.order_id)
             INSERT INTO payment_events (payment_id, order_id, state, reason)
             SELECT payment_id, order_id, 'CANCEL', 'expired' FROM expired
             RETURNING event_id, order_id, payment_id, state, reason"#,
            SCAN_LIMIT,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Event::try_from).collect()
    }

    pub async fn session_by_order(&self, order_id: OrderId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query_as!(
            SessionRow,
            "SELECT payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at \
             FROM payment_sessions WHERE order_id = $1",
            order_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(Session::try_from).transpose()
    }

    pub async fn session_by_payment(
        &self,
        payment_id: PaymentId,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query_as!(
            SessionRow,
            "SELECT payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at \
             FROM payment_sessions WHERE payment_id = $1",
            payment_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(Session::try_from).transpose()
    }

    pub async fn event_of(&self, payment_id: PaymentId) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query_as!(
            EventRow,
            "SELECT event_id, order_id, payment_id, state, reason FROM payment_events WHERE payment_id = $1",
            payment_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(Event::try_from).transpose()
    }

    /// Live (unacked, not dead-lettered) events after `after` (keyset), oldest first,
    /// at most `limit`: a page of what a new connection receives, in ONE statement. Each
    /// is marked sent now and counts a delivery attempt, so the periodic redelivery
    /// waits a full `redeliver_after` from here; one that has had `max_attempts` already
    /// is dead-lettered instead of sent.
    pub async fn resume_page(
        &self,
        after: i64,
        limit: i64,
        max_attempts: i32,
    ) -> Result<Resumed, StoreError> {
        let limit = limit.clamp(1, SCAN_LIMIT);
        // Every row of the page comes back, also one acked (or dead-lettered elsewhere)
        // since the page was read, which the UPDATE skips: so a full page still says
        // whether more may follow.
        let rows = sqlx::query!(
            r#"WITH page AS (
                 SELECT event_id FROM payment_events
                 WHERE acked_at IS NULL AND dead_at IS NULL AND event_id > $1
                 ORDER BY event_id LIMIT $2),
             sent AS (
                 UPDATE payment_events e SET
                     dispatched_at = CASE WHEN e.delivery_attempts < $3 THEN clock_timestamp()
                         ELSE e.dispatched_at END,
                     delivery_attempts = CASE WHEN e.delivery_attempts < $3
                         THEN e.delivery_attempts + 1 ELSE e.delivery_attempts END,
                     dead_at = CASE WHEN e.delivery_attempts >= $3 THEN clock_timestamp() END
                 FROM page
                 WHERE e.event_id = page.event_id AND e.acked_at IS NULL AND e.dead_at IS NULL
                 RETURNING e.event_id, e.order_id, e.payment_id, e.state, e.reason,
                     e.delivery_attempts, e.dead_at IS NOT NULL AS dead)
             SELECT page.event_id AS "event_id!", sent.order_id AS "order_id?",
                 sent.payment_id AS "payment_id?", sent.state AS "state?", sent.reason,
                 sent.delivery_attempts AS "delivery_attempts?", sent.dead AS "dead?"
             FROM page LEFT JOIN sent ON sent.event_id = page.event_id
             ORDER BY page.event_id"#,
            after,
            limit,
            max_attempts,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut resumed = Resumed {
            next: match rows.last() {
                Some(last) if rows.len() as i64 == limit => Some(last.event_id),
                _ => None,
            },
            ..Resumed::default()
        };
        for r in rows {
            let (Some(order_id), Some(payment_id), Some(state), Some(attempts), Some(dead)) = (
                r.order_id,
                r.payment_id,
                r.state,
                r.delivery_attempts,
                r.dead,
            ) else {
                continue; // acked (or dead-lettered) since the page was read
            };
            let event = Event::try_from(EventRow {
                event_id: r.event_id,
                order_id,
                payment_id,
                state,
                reason: r.reason,
            })?;
            if dead {
                resumed.dead.push(Dead { event, attempts });
            } else {
                resumed.send.push(event);
            }
        }
        Ok(resumed)
    }

    /// Claims up to `limit` events for this instance to send, in ONE statement: those no
    /// instance has sent yet, and those sent more than `redeliver_after` ago and still
    /// unacked (the connection they went to may have died with them in its buffers).
    /// Only events whose order's connection is one of `local` (this instance's), or is
    /// gone (no fresh heartbeat within `stale_after`, or none at all) qualify: the others
    /// are their own instance's to send. `FOR UPDATE SKIP LOCKED` and the re-checked
    /// condition make exactly one instance claim each delivery.
    ///
    /// Each claim counts a delivery attempt; an event that had `max_attempts` already
    /// (all unacked) is dead-lettered in the same statement instead of claimed, and
    /// leaves the scans: it is sent again only after an operator's [`Store::retry`].
    pub async fn claim(
        &self,
        local: &[Uuid],
        stale_after: Duration,
        redeliver_after: Duration,
        limit: i64,
        max_attempts: i32,
    ) -> Result<Claimed, StoreError> {
        let rows = sqlx::query!(
            r#"WITH picked AS (
                 SELECT e.event_id, s.last_connection
                 FROM payment_events e JOIN payment_sessions s USING (payment_id)
                 WHERE e.acked_at IS NULL AND e.dead_at IS NULL
                   AND (e.dispatched_at IS NULL
                        OR e.dispatched_at < clock_timestamp() - make_interval(secs => $2))
                   AND (s.last_connection IS NULL OR s.last_connection = ANY($1)
                        OR NOT EXISTS (SELECT 1 FROM ws_connections c
                            WHERE c.connection_id = s.last_connection
                              AND c.seen_at >= clock_timestamp() - make_interval(secs => $3)))
                 ORDER BY e.event_id
                 LIMIT $4
                 FOR UPDATE OF e SKIP LOCKED)
             UPDATE payment_events e SET
                 dispatched_at = CASE WHEN e.delivery_attempts < $5 THEN clock_timestamp()
                     ELSE e.dispatched_at END,
                 delivery_attempts = CASE WHEN e.delivery_attempts < $5
                     THEN e.delivery_attempts + 1 ELSE e.delivery_attempts END,
                 dead_at = CASE WHEN e.delivery_attempts >= $5 THEN clock_timestamp() END
             FROM picked WHERE e.event_id = picked.event_id
             RETURNING e.event_id, e.order_id, e.payment_id, e.state, e.reason,
                 e.delivery_attempts, e.dead_at IS NOT NULL AS "dead!", picked.last_connection"#,
            local,
            redeliver_after.as_secs_f64(),
            stale_after.as_secs_f64(),
            limit.clamp(1, SCAN_LIMIT),
            max_attempts,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Claimed::default();
        for r in rows {
            let event = Event::try_from(EventRow {
                event_id: r.event_id,
                order_id: r.order_id,
                payment_id: r.payment_id,
                state: r.state,
                reason: r.reason,
            })?;
            if r.dead {
                claimed.dead.push(Dead {
                    event,
                    attempts: r.delivery_attempts,
                });
            } else {
                claimed.send.push(Pending {
                    event,
                    owner: r.last_connection,
                });
            }
        }
        claimed.send.sort_by_key(|p| p.event.event_id);
        claimed.dead.sort_by_key(|d| d.event.event_id);
        Ok(claimed)
    }

    /// Gives claimed events back unsent (no connection had room): the next dispatch
    /// claims them again, and the claim's delivery attempt is taken back.
    pub async fn release(&self, event_ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE payment_events SET dispatched_at = NULL, \
                 delivery_attempts = greatest(delivery_attempts - 1, 0) \
             WHERE event_id = ANY($1) AND acked_at IS NULL AND dead_at IS NULL",
            event_ids,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Starts a transaction for a batch of messages from one connection.
    pub async fn batch(&self) -> Result<Batch, StoreError> {
        Ok(Batch {
            tx: self.pool.begin().await?,
        })
    }

    /// For metrics: the number of live (unacked, not dead-lettered) events, the age of
    /// the oldest, and the number of dead letters (unacked).
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let row = sqlx::query!(
            r#"SELECT live.count AS "unacked!", live.oldest AS "oldest!", dead.count AS "dead!"
             FROM (SELECT count(*) AS count,
                       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
                           AS oldest
                   FROM payment_events WHERE acked_at IS NULL AND dead_at IS NULL) live,
                  (SELECT count(*) AS count FROM payment_events
                   WHERE dead_at IS NOT NULL AND acked_at IS NULL) dead"#,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            unacked: row.unacked,
            oldest_seconds: row.oldest,
            dead: row.dead,
        })
    }

    /// Dead letters waiting for an operator (unacked), oldest first, at most `limit`.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        Ok(sqlx::query_as!(
            EventRecord,
            "SELECT event_id, order_id, payment_id, state, reason, created_at, dispatched_at, \
                 acked_at, delivery_attempts, dead_at \
             FROM payment_events WHERE dead_at IS NOT NULL AND acked_at IS NULL \
             ORDER BY event_id LIMIT $1",
            limit.clamp(1, SCAN_LIMIT),
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// An operator retries a dead letter: its attempts start again from zero and it is
    /// due at once (`dispatched_at` cleared); the same statement NOTIFYs every instance,
    /// so one with a connection sends it at its next dispatch. An event that is not
    /// dead-lettered (acked, or still being delivered) is left as it is.
    pub async fn retry(&self, event_id: i64) -> Result<Retry, StoreError> {
        let retried = sqlx::query_as!(
            EventRecord,
            r#"WITH retried AS (
                 UPDATE payment_events SET dead_at = NULL, delivery_attempts = 0,
                     dispatched_at = NULL
                 WHERE event_id = $1 AND dead_at IS NOT NULL AND acked_at IS NULL
                 RETURNING event_id, order_id, payment_id, state, reason, created_at,
                     dispatched_at, acked_at, delivery_attempts, dead_at),
             woken AS (SELECT pg_notify('payment_events', '') FROM retried)
             SELECT r.event_id AS "event_id!", r.order_id AS "order_id!",
                 r.payment_id AS "payment_id!", r.state AS "state!", r.reason,
                 r.created_at AS "created_at!", r.dispatched_at, r.acked_at,
                 r.delivery_attempts AS "delivery_attempts!", r.dead_at
             FROM retried r CROSS JOIN woken"#,
            event_id,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(event) = retried {
            return Ok(Retry::Retried(event));
        }
        let found = sqlx::query_as!(
            EventRecord,
            "SELECT event_id, order_id, payment_id, state, reason, created_at, dispatched_at, \
                 acked_at, delivery_attempts, dead_at \
             FROM payment_events WHERE event_id = $1",
            event_id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match found {
            Some(event) => Retry::NotDead(event),
            None => Retry::Unknown,
        })
    }

    pub async fn register_connection(
        &self,
        connection: Uuid,
        instance: Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO ws_connections (connection_id, instance_id) VALUES ($1, $2)",
            connection,
            instance,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn unregister_connection(&self, connection: Uuid) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM ws_connections WHERE connection_id = $1",
            connection
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Refreshes the heartbeat of this instance's connections; forgets dead instances'.
    pub async fn heartbeat(&self, instance: Uuid, stale_after: Duration) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE ws_connections SET seen_at = clock_timestamp() WHERE instance_id = $1",
            instance,
        )
        .execute(&self.pool)
        .await?;
        sqlx::query!(
            "DELETE FROM ws_connections WHERE connection_id IN (SELECT connection_id FROM ws_connections \
                 WHERE seen_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2)",
            stale_after.as_secs_f64(),
            SCAN_LIMIT,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets every connection of this instance (on shutdown).
    ///
    /// It runs while the service stops, on a connection of its own: a pooled one may have
    /// been opened by an HTTP worker, whose runtime (its socket's reactor) is gone by then
    /// ("a Tokio context was found, but it is being shutdown").
    pub async fn unregister_instance(&self, instance: Uuid) -> Result<(), StoreError> {
        use sqlx::Connection;
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        sqlx::query!(
            "DELETE FROM ws_connections WHERE instance_id = $1",
            instance
        )
        .execute(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(())
    }
}

async fn insert_event(
    conn: &mut PgConnection,
    payment_id: PaymentId,
    order_id: OrderId,
    outcome: PaymentOutcome,
    reason: Option<CancelReason>,
    dispatched: bool,
) -> Result<Event, StoreError> {
    let state = outcome.as_str();
    let event_id = sqlx::query_scalar!(
        "INSERT INTO payment_events (payment_id, order_id, state, reason, dispatched_at, \
             delivery_attempts) \
         VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN clock_timestamp() END, \
             CASE WHEN $5 THEN 1 ELSE 0 END) RETURNING event_id",
        payment_id.0,
        order_id.0,
        state,
        reason.map(CancelReason::as_str),
        dispatched,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Event {
        event_id: EventId(event_id),
        order_id,
        payment_id,
        state: outcome,
        reason,
    })
}

/// Moves a session to its final state and writes its event, inside `tx`.
async fn finish_in(
    conn: &mut PgConnection,
    payment_id: PaymentId,
    outcome: PaymentOutcome,
    reason: Option<CancelReason>,
    dispatched: bool,
) -> Result<Finished, StoreError> {
    // Paying needs a selected method and a session that has not expired; cancelling
    // applies to any open session.
    let moved = match outcome {
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
             WHERE payment_id = $1 AND state IN ('initiated', 'method_selected') \
             RETURNING order_id",
            payment_id.0,
            reason.map(CancelReason::as_str),
        )
        .fetch_optional(&mut *conn)
        .await?,
    };
    let Some(order_id) = moved else {
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
            "SELECT event_id, order_id, payment_id, state, reason FROM payment_events WHERE payment_id = $1",
            payment_id.0,
        )
        .fetch_optional(&mut *conn)
        .await?;
        return Ok(match event {
            Some(event) => Finished::Already(event.try_into()?),
            None => Finished::NotApplicable(parse_state(&state)?),
        });
    };
    let event = insert_event(
        conn,
        payment_id,
        OrderId(order_id),
        outcome,
        reason,
        dispatched,
    )
    .await?;
    Ok(Finished::Now(event))
}

/// A session as a batch statement returns it, with its final event if it has one.
struct SessionEventRow {
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
}

impl SessionEventRow {
    fn split(self) -> Result<(Session, Option<Event>), StoreError> {
        let event = match (self.event_id, self.event_state) {
            (Some(event_id), Some(state)) => Some(Event::try_from(EventRow {
                event_id,
                order_id: self.order_id,
                payment_id: self.payment_id,
                state,
                reason: self.event_reason,
            })?),
            _ => None,
        };
        let session = Session::try_from(SessionRow {
            payment_id: self.payment_id,
            order_id: self.order_id,
            amount: self.amount,
            currency: self.currency,
            state: self.state,
            method: self.method,
            cancel_reason: self.cancel_reason,
            expires_at: self.expires_at,
        })?;
        Ok((session, event))
    }
}

/// One transaction over a batch of messages from one connection (group commit): each
/// kind of message is applied with ONE statement over arrays (`unnest`), whatever the
/// batch size, and nothing is visible to anyone until [`Batch::commit`]. The caller
/// keeps at most one message per order in each statement, so a statement never touches
/// a row twice, and applies the statements in the order of the messages.
pub struct Batch {
    tx: Transaction<'static, Postgres>,
}

impl Batch {
    /// `initiate_payment` for each order (distinct): starts its session, or finds the
    /// one it has, and records `connection` as the one to send its outcome to. Returns
    /// each order's session as it now stands, with its final event if any; the caller
    /// compares amount and currency.
    pub async fn initiate(
        &mut self,
        orders: &[(OrderId, Amount, Currency)],
        ttl: Duration,
        connection: Uuid,
    ) -> Result<Vec<(Session, Option<Event>)>, StoreError> {
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
        let rows = sqlx::query_as!(
            SessionEventRow,
            r#"WITH upserted AS (
                 INSERT INTO payment_sessions
                     (payment_id, order_id, amount, currency, expires_at, last_connection)
                 SELECT i.payment_id, i.order_id, i.amount, i.currency,
                     clock_timestamp() + make_interval(secs => $5), $6
                 FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[])
                     AS i(payment_id, order_id, amount, currency)
                 ON CONFLICT (order_id) DO UPDATE SET last_connection = EXCLUDED.last_connection
                 RETURNING payment_id, order_id, amount, currency, state, method, cancel_reason,
                     expires_at)
             SELECT u.payment_id AS "payment_id!", u.order_id AS "order_id!",
                 u.amount AS "amount!", u.currency AS "currency!", u.state AS "state!",
                 u.method, u.cancel_reason, u.expires_at AS "expires_at!",
                 e.event_id AS "event_id?", e.state AS "event_state?", e.reason AS "event_reason?"
             FROM upserted u LEFT JOIN LATERAL (
                 SELECT event_id, state, reason FROM payment_events
                 WHERE payment_id = u.payment_id LIMIT 1) e ON true"#,
            &payment_ids,
            &order_ids,
            &amounts,
            &currencies,
            ttl.as_secs_f64(),
            connection,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter().map(SessionEventRow::split).collect()
    }

    /// `select_payment_method` for each order (distinct): a session still `initiated`
    /// takes the method; every session found records `connection`. Returns each found
    /// session as it now stands (the caller compares the method), with its final event
    /// if any; unknown orders are missing from the answer.
    pub async fn select(
        &mut self,
        choices: &[(OrderId, String)],
        connection: Uuid,
    ) -> Result<Vec<(Session, Option<Event>)>, StoreError> {
        let mut sorted: Vec<_> = choices.to_vec();
        sorted.sort_by_key(|(order_id, _)| *order_id);
        let order_ids: Vec<Uuid> = sorted.iter().map(|(o, _)| o.0).collect();
        let methods: Vec<String> = sorted.iter().map(|(_, m)| m.clone()).collect();
        let rows = sqlx::query_as!(
            SessionEventRow,
            r#"WITH updated AS (
                 UPDATE payment_sessions s SET
                     state = CASE WHEN s.state = 'initiated' THEN 'method_selected' ELSE s.state END,
                     method = CASE WHEN s.state = 'initiated' THEN i.method ELSE s.method END,
                     updated_at = CASE WHEN s.state = 'initiated' THEN clock_timestamp()
                         ELSE s.updated_at END,
                     last_connection = $3
                 FROM unnest($1::uuid[], $2::text[]) AS i(order_id, method)
                 WHERE s.order_id = i.order_id AND s.order_id = ANY($1)
                 RETURNING s.payment_id, s.order_id, s.amount, s.currency, s.state, s.method,
                     s.cancel_reason, s.expires_at)
             SELECT u.payment_id AS "payment_id!", u.order_id AS "order_id!",
                 u.amount AS "amount!", u.currency AS "currency!", u.state AS "state!",
                 u.method, u.cancel_reason, u.expires_at AS "expires_at!",
                 e.event_id AS "event_id?", e.state AS "event_state?", e.reason AS "event_reason?"
             FROM updated u LEFT JOIN LATERAL (
                 SELECT event_id, state, reason FROM payment_events
                 WHERE payment_id = u.payment_id LIMIT 1) e ON true"#,
            &order_ids,
            &methods,
            connection,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter().map(SessionEventRow::split).collect()
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
        // Answered on the requesting connection at once: already dispatched.
        finish_in(
            &mut self.tx,
            PaymentId(payment_id),
            PaymentOutcome::Cancel,
            Some(CancelReason::OrdersCancelled),
            true,
        )
        .await
    }

    /// Orders acked these events: ONE statement. Returns the ids acked now (unknown
    /// or already-acked ids are harmless and left out).
    pub async fn ack(&mut self, event_ids: &[EventId]) -> Result<Vec<EventId>, StoreError> {
        let mut ids: Vec<i64> = event_ids.iter().map(|e| e.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let acked = sqlx::query_scalar!(
            "UPDATE payment_events SET acked_at = clock_timestamp() \
             WHERE event_id = ANY($1) AND acked_at IS NULL RETURNING event_id",
            &ids,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(acked.into_iter().map(EventId).collect())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// One Pay or Cancel of the payment page, for the page writer.
#[derive(Debug)]
pub struct PageFinish {
    pub payment_id: PaymentId,
    pub outcome: PaymentOutcome,
    pub reason: Option<CancelReason>,
}

/// Writes a batch of the page's Pays and Cancels with ONE statement: the conditional
/// session UPDATEs (pay needs a selected method and an unexpired session; cancel, any
/// open session) and the events of the sessions that moved, in one commit. A request
/// whose session did not move (unknown, already final, no method yet, or a second
/// request for one session in the same batch) is answered as one at a time would be,
/// by [`finish_in`] in its own transaction.
#[derive(Debug)]
pub struct PageFinishes;

impl group_commit::Batch for PageFinishes {
    type Item = PageFinish;
    type Output = Finished;
    type Error = StoreError;

    fn apply<'c>(
        &'c self,
        conn: &'c mut PgConnection,
        items: &'c [PageFinish],
    ) -> BoxFuture<'c, Result<Vec<Finished>, StoreError>> {
        Box::pin(finish_page_batch(conn, items))
    }
}

async fn finish_page_batch(
    conn: &mut PgConnection,
    items: &[PageFinish],
) -> Result<Vec<Finished>, StoreError> {
    let ids: Vec<Uuid> = items.iter().map(|i| i.payment_id.0).collect();
    let states: Vec<String> = items
        .iter()
        .map(|i| i.outcome.as_str().to_owned())
        .collect();
    let reasons: Vec<Option<String>> = items
        .iter()
        .map(|i| i.reason.map(|r| r.as_str().to_owned()))
        .collect();
    let rows = sqlx::query_as!(
        EventRow,
        r#"WITH req AS (
             SELECT DISTINCT ON (payment_id) payment_id, state, reason
             FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY
                 AS r(payment_id, state, reason, n)
             ORDER BY payment_id, n),
         moved AS (
             UPDATE payment_sessions s SET
                 state = CASE r.state WHEN 'FULFILL' THEN 'fulfilled' ELSE 'cancelled' END,
                 cancel_reason = r.reason,
                 updated_at = clock_timestamp()
             FROM req r
             WHERE s.payment_id = r.payment_id AND s.payment_id = ANY($1)
               AND CASE r.state
                     WHEN 'FULFILL' THEN s.state = 'method_selected'
                         AND s.expires_at > clock_timestamp()
                     ELSE s.state IN ('initiated', 'method_selected') END
             RETURNING s.payment_id, s.order_id, r.state, r.reason)
         INSERT INTO payment_events (payment_id, order_id, state, reason)
         SELECT payment_id, order_id, state, reason FROM moved
         RETURNING event_id, order_id, payment_id, state, reason"#,
        &ids,
        &states,
        &reasons as &[Option<String>],
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut moved: std::collections::HashMap<Uuid, EventRow> =
        rows.into_iter().map(|r| (r.payment_id, r)).collect();
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        // The first request for a session that moved gets its event; any other is
        // answered from the database as it now stands.
        if let Some(row) = moved.remove(&item.payment_id.0) {
            answers.push(Finished::Now(row.try_into()?));
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let finished =
            finish_in(&mut tx, item.payment_id, item.outcome, item.reason, false).await?;
        tx.commit().await?;
        answers.push(finished);
    }
    Ok(answers)
}
