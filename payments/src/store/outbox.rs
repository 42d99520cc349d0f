//! The outbox: the outcome events and their delivery. Delivery claims events to send
//! (or resumes them on a new connection), gives back what it could not send, and
//! dead-letters what used up its attempts; Orders acks them; operators list and retry
//! dead letters; metrics read the backlog.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared_protocol::{CancelReason, EventId, OrderId, PaymentId, PaymentOutcome, ServerMessage};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Batch, SCAN_LIMIT, Store, StoreError};

/// An outcome event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: EventId,
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub state: PaymentOutcome,
    pub reason: Option<CancelReason>,
    /// The W3C `traceparent` of the request that made the event (the customer's Pay or
    /// Cancel on the page), when traces were exported then: its delivery continues that
    /// trace ([`Event::frame`]). `None` for expired sessions' events and Orders'
    /// cancels.
    pub traceparent: Option<String>,
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

    /// The event as delivery sends it, a `payment_state` frame. When traces are
    /// exported, it carries the context of a "deliver payment_state" span, the child of
    /// the request that made the event ([`Event::traceparent`]; a trace of its own
    /// without one), so Orders' handling of the outcome and its ack join that trace.
    /// When that request's trace was not sampled, no span is made and the frame carries
    /// the stored context, unsampled. Otherwise the plain message: no span made,
    /// nothing formatted.
    pub fn frame(&self) -> String {
        let delivery = service_kit::trace_context::traced_from(self.traceparent.as_deref(), || {
            // It names the order and the event, never the payment id (the page's
            // capability: whoever has it can pay or cancel) nor the page URL.
            tracing::info_span!(
                parent: None,
                "deliver payment_state",
                order_id = %self.order_id,
                event_id = %self.event_id,
            )
        });
        shared_protocol::encode_traced(&self.message(), delivery.context.as_ref())
    }
}

/// A stored cancel reason: absent, or one the code knows.
pub(super) fn parse_reason(reason: Option<&str>) -> Result<Option<CancelReason>, StoreError> {
    reason
        .map(|r| {
            CancelReason::parse(r)
                .ok_or_else(|| StoreError::Corrupt(format!("cancel reason {r:?}")))
        })
        .transpose()
}

pub(super) struct EventRow {
    pub(super) event_id: i64,
    pub(super) order_id: Uuid,
    pub(super) payment_id: Uuid,
    pub(super) state: String,
    pub(super) reason: Option<String>,
    pub(super) traceparent: Option<String>,
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
            reason: parse_reason(r.reason.as_deref())?,
            traceparent: r.traceparent,
        })
    }
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

/// When a send counts as a delivery attempt, and how many an event gets.
///
/// An attempt is a send after the last counted one has had `redeliver_after` to be
/// acked: the first send, a redelivery, or a resend to a new connection once that
/// long has passed. A resend to a connection that opens sooner (a link that flaps,
/// several Orders instances reconnecting after a Payments restart) goes out but does
/// not count, nor does it move the time of the last attempt. So an event Orders never
/// acks is dead-lettered after about `max_attempts × redeliver_after`, however often
/// the link reconnects meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Counted sends without an ack after which an event is dead-lettered (at least 1).
    pub max: i32,
    /// How long a counted send has to be acked before the next send counts again.
    pub redeliver_after: Duration,
}

impl Store {
    /// Live (unacked, not dead-lettered) events after `after` (keyset), oldest first,
    /// at most `limit`: a page of what a new connection receives, in ONE transaction.
    /// A resend counts a delivery attempt only when the last one is `redeliver_after`
    /// old ([`Attempts`], `count_attempts`); one that has used up its attempts then is
    /// dead-lettered instead of sent.
    pub async fn resume_page(
        &self,
        after: i64,
        limit: i64,
        attempts: Attempts,
    ) -> Result<Resumed, StoreError> {
        let limit = limit.clamp(1, SCAN_LIMIT);
        let mut tx = service_kit::database::begin_batch(&self.pool).await?;
        let page = sqlx::query_scalar!(
            "SELECT event_id FROM payment_events \
             WHERE acked_at IS NULL AND dead_at IS NULL AND event_id > $1 \
             ORDER BY event_id LIMIT $2",
            after,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        // An event acked (or dead-lettered elsewhere) since the page was read is not
        // counted; a full page still says whether more may follow.
        let attempts = count_attempts(&mut tx, &page, attempts).await?;
        tx.commit().await?;
        let mut resumed = Resumed {
            next: match page.last() {
                Some(last) if page.len() as i64 == limit => Some(*last),
                _ => None,
            },
            ..Resumed::default()
        };
        for attempt in attempts {
            match attempt {
                Attempt::Send(event) => resumed.send.push(event),
                Attempt::Dead(dead) => resumed.dead.push(dead),
            }
        }
        Ok(resumed)
    }

    /// Claims up to `limit` events for this instance to send, in ONE transaction: those
    /// no instance has sent yet, and those sent more than `redeliver_after` ago and still
    /// unacked (the connection they went to may have died with them in its buffers).
    /// Only events whose order's connection is one of `local` (this instance's), or is
    /// gone (no fresh heartbeat within `stale_after`, or none at all) qualify: the others
    /// are their own instance's to send. `FOR UPDATE SKIP LOCKED` and the re-checked
    /// condition make exactly one instance claim each delivery.
    ///
    /// Each claim counts a delivery attempt (`count_attempts`: what it claims is never
    /// sent or last counted `redeliver_after` ago); an event that used up its attempts
    /// is dead-lettered in the same transaction instead of claimed, and leaves the scans:
    /// it is sent again only after an operator's [`Store::retry`].
    pub async fn claim(
        &self,
        local: &[Uuid],
        stale_after: Duration,
        attempts: Attempts,
        limit: i64,
    ) -> Result<Claimed, StoreError> {
        let mut tx = service_kit::database::begin_batch(&self.pool).await?;
        let picked = sqlx::query!(
            r#"SELECT e.event_id, s.last_connection
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
               FOR UPDATE OF e SKIP LOCKED"#,
            local,
            attempts.redeliver_after.as_secs_f64(),
            stale_after.as_secs_f64(),
            limit.clamp(1, SCAN_LIMIT),
        )
        .fetch_all(&mut *tx)
        .await?;
        let owners: HashMap<i64, Option<Uuid>> = picked
            .iter()
            .map(|p| (p.event_id, p.last_connection))
            .collect();
        let ids: Vec<i64> = picked.iter().map(|p| p.event_id).collect();
        let attempts = count_attempts(&mut tx, &ids, attempts).await?;
        tx.commit().await?;
        let mut claimed = Claimed::default();
        for attempt in attempts {
            match attempt {
                Attempt::Send(event) => {
                    let owner = owners.get(&event.event_id.0).copied().flatten();
                    claimed.send.push(Pending { event, owner });
                }
                Attempt::Dead(dead) => claimed.dead.push(dead),
            }
        }
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
}

impl Batch {
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
}

/// One delivery attempt of an event: sent, or dead-lettered instead.
enum Attempt {
    Send(Event),
    Dead(Dead),
}

/// Sends each of these events that is still live (unacked, not dead-lettered), and
/// counts the send as a delivery attempt when [`Attempts`] says it is one: marks it
/// sent now with one more attempt, or dead-letters it when it had `max` already. A
/// send that does not count changes nothing. The one place that decides what an
/// attempt is, for a new connection's resume and for the dispatcher's claims. The
/// events are updated by key as an array (`= ANY($1)`), never by joining a page back
/// to the table: with statistics that said one unacked event, such a join ran the page
/// once per unacked event (3.7 million comparisons, 0.5-2.7 s per page of 256, in
/// `loadgen backlog`). Oldest first.
async fn count_attempts(
    conn: &mut PgConnection,
    event_ids: &[i64],
    attempts: Attempts,
) -> Result<Vec<Attempt>, StoreError> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    // `due`: the last counted send (if any) has had its time to be acked. Written out
    // in each CASE (the SET list reads the row as it was): a join to a subquery that
    // names it once is the plan trap described above.
    let mut rows = sqlx::query!(
        r#"UPDATE payment_events SET
               dispatched_at = CASE WHEN delivery_attempts < $2
                   AND (dispatched_at IS NULL
                        OR dispatched_at <= clock_timestamp() - make_interval(secs => $3))
                   THEN clock_timestamp() ELSE dispatched_at END,
               delivery_attempts = CASE WHEN delivery_attempts < $2
                   AND (dispatched_at IS NULL
                        OR dispatched_at <= clock_timestamp() - make_interval(secs => $3))
                   THEN delivery_attempts + 1 ELSE delivery_attempts END,
               dead_at = CASE WHEN delivery_attempts >= $2
                   AND (dispatched_at IS NULL
                        OR dispatched_at <= clock_timestamp() - make_interval(secs => $3))
                   THEN clock_timestamp() END
           WHERE event_id = ANY($1) AND acked_at IS NULL AND dead_at IS NULL
           RETURNING event_id, order_id, payment_id, state, reason, traceparent,
               delivery_attempts, dead_at IS NOT NULL AS "dead!""#,
        event_ids,
        attempts.max,
        attempts.redeliver_after.as_secs_f64(),
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.sort_by_key(|r| r.event_id);
    rows.into_iter()
        .map(|r| {
            let event = Event::try_from(EventRow {
                event_id: r.event_id,
                order_id: r.order_id,
                payment_id: r.payment_id,
                state: r.state,
                reason: r.reason,
                traceparent: r.traceparent,
            })?;
            Ok(if r.dead {
                Attempt::Dead(Dead {
                    event,
                    attempts: r.delivery_attempts,
                })
            } else {
                Attempt::Send(event)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use shared_protocol::{EventId, OrderId, PaymentId, PaymentOutcome};

    use super::Event;

    /// Without an exporter, delivery sends the message as it always did, whatever the
    /// event's stored trace: no span, no trace context on the frame.
    #[test]
    fn without_traces_a_frame_is_the_plain_message() {
        let event = Event {
            event_id: EventId(7),
            order_id: OrderId::new(),
            payment_id: PaymentId(uuid::Uuid::new_v4()),
            state: PaymentOutcome::Fulfill,
            reason: None,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        assert!(!service_kit::trace_context::enabled());
        assert_eq!(event.frame(), shared_protocol::encode(&event.message()));
    }
}
