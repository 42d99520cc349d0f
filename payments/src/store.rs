//! All the SQL of the Payments service, in one place.
//!
//! Each state change and its outcome event are written in ONE transaction, as a
//! conditional `UPDATE … WHERE state IN (…)` followed by the event's `INSERT`; a
//! trigger on the events table NOTIFYs every instance when it commits. Zero rows
//! updated is a normal answer: someone else got there first, or the session is final.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::{
    Amount, CancelReason, Currency, EventId, OrderId, PaymentId, PaymentOutcome, ServerMessage,
};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

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

/// Where a payment session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Initiated,
    MethodSelected,
    Fulfilled,
    Cancelled,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Initiated => "initiated",
            SessionState::MethodSelected => "method_selected",
            SessionState::Fulfilled => "fulfilled",
            SessionState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "initiated" => SessionState::Initiated,
            "method_selected" => SessionState::MethodSelected,
            "fulfilled" => SessionState::Fulfilled,
            "cancelled" => SessionState::Cancelled,
            other => return Err(StoreError::Corrupt(format!("session state {other:?}"))),
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, SessionState::Fulfilled | SessionState::Cancelled)
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
            state: SessionState::parse(&r.state)?,
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

/// The answer to `initiate_payment`.
#[derive(Debug)]
pub enum Initiated {
    /// The session (new or existing) as it stands, with its final event if any.
    Session(Session, Option<Event>),
    /// The order has a session with another amount or currency.
    Conflict(Session),
}

/// The answer to `select_payment_method`.
#[derive(Debug)]
pub enum Selected {
    /// The session has this method (now, or already): send the page.
    Page(Session),
    /// Another method was selected before.
    Conflict(Session),
    /// The session is final.
    Final(Session, Event),
    UnknownOrder,
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

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        let pool =
            service_kit::database::open(database_url, &sqlx::migrate!("../migrations/payments"))
                .await?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Starts the session of an order, or finds the one it has; records `connection`
    /// as the one to send its outcome to.
    pub async fn initiate(
        &self,
        order_id: OrderId,
        amount: Amount,
        currency: Currency,
        ttl: Duration,
        connection: Uuid,
    ) -> Result<Initiated, StoreError> {
        let ttl_secs = ttl.as_secs_f64();
        sqlx::query!(
            "INSERT INTO payment_sessions (payment_id, order_id, amount, currency, expires_at, last_connection) \
             VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5), $6) \
             ON CONFLICT (order_id) DO UPDATE SET last_connection = EXCLUDED.last_connection",
            Uuid::new_v4(),
            order_id.0,
            amount.minor(),
            currency.as_str(),
            ttl_secs,
            connection,
        )
        .execute(&self.pool)
        .await?;
        let session = self
            .session_by_order(order_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("session of {order_id} vanished")))?;
        if session.amount != amount.minor() || session.currency != currency.as_str() {
            return Ok(Initiated::Conflict(session));
        }
        let event = if session.state.is_final() {
            self.event_of(session.payment_id).await?
        } else {
            None
        };
        Ok(Initiated::Session(session, event))
    }

    /// Selects a method for an order's session.
    pub async fn select_method(
        &self,
        order_id: OrderId,
        method: &str,
        connection: Uuid,
    ) -> Result<Selected, StoreError> {
        let updated = sqlx::query_as!(
            SessionRow,
            "UPDATE payment_sessions SET state = 'method_selected', method = $2, \
                 last_connection = $3, updated_at = clock_timestamp() \
             WHERE order_id = $1 AND state = 'initiated' \
             RETURNING payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at",
            order_id.0,
            method,
            connection,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = updated {
            return Ok(Selected::Page(row.try_into()?));
        }
        let Some(session) = self.touch(order_id, connection).await? else {
            return Ok(Selected::UnknownOrder);
        };
        if session.state.is_final() {
            return Ok(match self.event_of(session.payment_id).await? {
                Some(event) => Selected::Final(session, event),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "final session {} has no event",
                        session.payment_id
                    )));
                }
            });
        }
        Ok(if session.method.as_deref() == Some(method) {
            Selected::Page(session)
        } else {
            Selected::Conflict(session)
        })
    }

    /// Cancels an order's open session (`cancel_payment`).
    pub async fn cancel_by_order(
        &self,
        order_id: OrderId,
        connection: Uuid,
    ) -> Result<Finished, StoreError> {
        let Some(session) = self.touch(order_id, connection).await? else {
            return Ok(Finished::Unknown);
        };
        // Answered on the requesting connection at once: already dispatched.
        self.finish(
            session.payment_id,
            PaymentOutcome::Cancel,
            Some(CancelReason::OrdersCancelled),
            true,
        )
        .await
    }

    /// The customer paid on the page.
    pub async fn complete(&self, payment_id: PaymentId) -> Result<Finished, StoreError> {
        self.finish(payment_id, PaymentOutcome::Fulfill, None, false)
            .await
    }

    /// The customer gave up on the page.
    pub async fn cancel_by_customer(&self, payment_id: PaymentId) -> Result<Finished, StoreError> {
        self.finish(
            payment_id,
            PaymentOutcome::Cancel,
            Some(CancelReason::Customer),
            false,
        )
        .await
    }

    /// Moves a session to its final state and writes its event, in one transaction.
    async fn finish(
        &self,
        payment_id: PaymentId,
        outcome: PaymentOutcome,
        reason: Option<CancelReason>,
        dispatched: bool,
    ) -> Result<Finished, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Paying needs a selected method and a session that has not expired; cancelling
        // applies to any open session.
        let moved = match outcome {
            PaymentOutcome::Fulfill => sqlx::query_scalar!(
                "UPDATE payment_sessions SET state = 'fulfilled', updated_at = clock_timestamp() \
                 WHERE payment_id = $1 AND state = 'method_selected' AND expires_at > clock_timestamp() \
                 RETURNING order_id",
                payment_id.0,
            )
            .fetch_optional(&mut *tx)
            .await?,
            PaymentOutcome::Cancel => sqlx::query_scalar!(
                "UPDATE payment_sessions SET state = 'cancelled', cancel_reason = $2, \
                     updated_at = clock_timestamp() \
                 WHERE payment_id = $1 AND state IN ('initiated', 'method_selected') \
                 RETURNING order_id",
                payment_id.0,
                reason.map(CancelReason::as_str),
            )
            .fetch_optional(&mut *tx)
            .await?,
        };
        let Some(order_id) = moved else {
            drop(tx);
            let Some(session) = self.session_by_payment(payment_id).await? else {
                return Ok(Finished::Unknown);
            };
            return Ok(match self.event_of(payment_id).await? {
                Some(event) => Finished::Already(event),
                None => Finished::NotApplicable(session.state),
            });
        };
        let event = insert_event(
            &mut tx,
            payment_id,
            OrderId(order_id),
            outcome,
            reason,
            dispatched,
        )
        .await?;
        tx.commit().await?;
        Ok(Finished::Now(event))
    }

    /// Cancels every open session past its deadline, with reason `expired`.
    pub async fn expire(&self) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            r#"WITH expired AS (
                 UPDATE payment_sessions SET state = 'cancelled', cancel_reason = 'expired',
                     updated_at = clock_timestamp()
                 WHERE state IN ('initiated', 'method_selected') AND expires_at <= clock_timestamp()
                 RETURNING payment_id, order_id)
             INSERT INTO payment_events (payment_id, order_id, state, reason)
             SELECT payment_id, order_id, 'CANCEL', 'expired' FROM expired
             RETURNING event_id, order_id, payment_id, state, reason"#,
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

    /// Records `connection` as the one that last spoke about the order.
    async fn touch(
        &self,
        order_id: OrderId,
        connection: Uuid,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query_as!(
            SessionRow,
            "UPDATE payment_sessions SET last_connection = $2 WHERE order_id = $1 \
             RETURNING payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at",
            order_id.0,
            connection,
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

    /// Orders acked the event. Unknown or already-acked ids are harmless.
    pub async fn ack(&self, event_id: EventId) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "UPDATE payment_events SET acked_at = clock_timestamp() WHERE event_id = $1 AND acked_at IS NULL",
            event_id.0,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every unacked event, oldest first: what a new connection receives.
    pub async fn unacked(&self) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            "SELECT event_id, order_id, payment_id, state, reason FROM payment_events \
             WHERE acked_at IS NULL ORDER BY event_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Event::try_from).collect()
    }

    /// Unacked events to send now, with the connection each should go to first: those
    /// no instance has sent yet, and those sent more than `redeliver_after` ago and still
    /// unacked (the connection they went to may have died with them in its buffers).
    pub async fn undelivered(&self, redeliver_after: Duration) -> Result<Vec<Pending>, StoreError> {
        let rows = sqlx::query!(
            "SELECT e.event_id, e.order_id, e.payment_id, e.state, e.reason, s.last_connection \
             FROM payment_events e JOIN payment_sessions s USING (payment_id) \
             WHERE e.acked_at IS NULL AND (e.dispatched_at IS NULL \
                 OR e.dispatched_at < clock_timestamp() - make_interval(secs => $1)) \
             ORDER BY e.event_id",
            redeliver_after.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Pending {
                    event: EventRow {
                        event_id: r.event_id,
                        order_id: r.order_id,
                        payment_id: r.payment_id,
                        state: r.state,
                        reason: r.reason,
                    }
                    .try_into()?,
                    owner: r.last_connection,
                })
            })
            .collect()
    }

    /// Claims a delivery of an event (the first, or a redelivery once the last one is
    /// older than `redeliver_after`); of all instances trying, exactly one gets `true`.
    pub async fn claim(
        &self,
        event_id: EventId,
        redeliver_after: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query!(
            "UPDATE payment_events SET dispatched_at = clock_timestamp() \
             WHERE event_id = $1 AND acked_at IS NULL AND (dispatched_at IS NULL \
                 OR dispatched_at < clock_timestamp() - make_interval(secs => $2))",
            event_id.0,
            redeliver_after.as_secs_f64(),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that an unacked event was just sent (to a connection that opened), so
    /// the periodic redelivery waits a full `redeliver_after` from now.
    pub async fn mark_sent(&self, event_id: EventId) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE payment_events SET dispatched_at = clock_timestamp() \
             WHERE event_id = $1 AND acked_at IS NULL",
            event_id.0,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The number of unacked events and the age of the oldest, for metrics.
    pub async fn backlog(&self) -> Result<(i64, f64), StoreError> {
        let row = sqlx::query!(
            r#"SELECT count(*) AS "count!",
                 coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS "oldest!"
             FROM payment_events WHERE acked_at IS NULL"#,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.count, row.oldest))
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
            "DELETE FROM ws_connections WHERE seen_at < clock_timestamp() - make_interval(secs => $1)",
            stale_after.as_secs_f64(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a connection is open on some instance (its heartbeat is fresh).
    pub async fn connection_alive(
        &self,
        connection: Uuid,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        let alive = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM ws_connections WHERE connection_id = $1
                 AND seen_at >= clock_timestamp() - make_interval(secs => $2)) AS "alive!""#,
            connection,
            stale_after.as_secs_f64(),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(alive)
    }

    /// Forgets every connection of this instance (on shutdown).
    pub async fn unregister_instance(&self, instance: Uuid) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM ws_connections WHERE instance_id = $1",
            instance
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    payment_id: PaymentId,
    order_id: OrderId,
    outcome: PaymentOutcome,
    reason: Option<CancelReason>,
    dispatched: bool,
) -> Result<Event, StoreError> {
    let state = match outcome {
        PaymentOutcome::Fulfill => "FULFILL",
        PaymentOutcome::Cancel => "CANCEL",
    };
    let event_id = sqlx::query_scalar!(
        "INSERT INTO payment_events (payment_id, order_id, state, reason, dispatched_at) \
         VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN clock_timestamp() END) RETURNING event_id",
        payment_id.0,
        order_id.0,
        state,
        reason.map(CancelReason::as_str),
        dispatched,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Event {
        event_id: EventId(event_id),
        order_id,
        payment_id,
        state: outcome,
        reason,
    })
}
