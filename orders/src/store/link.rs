//! The batch statements of the payments link's flow, each inside the caller's
//! transaction: method choices, payment pages, outcomes, refusals and incidents.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use shared_protocol::{CancelReason, OrderId, PaymentId, PaymentOutcome};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreError, parse_status};
use crate::domain::{OrderStatus, invoice_number};

/// What the link should do after Payments offered methods.
#[derive(Debug, PartialEq, Eq)]
pub enum MethodChoice {
    /// Select this method (the first offered, or the one chosen earlier).
    Select(String),
    /// The order has moved on (page known, or final): nothing to do.
    NotPending(OrderStatus),
    UnknownOrder,
}

/// What applying a `payment_state` event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The order moved to its final state (with an invoice when fulfilled).
    Transitioned {
        status: OrderStatus,
        invoice: Option<String>,
    },
    /// The order was already final: nothing changed.
    AlreadyFinal(OrderStatus),
    /// The order holds another payment than the event's: nothing changed.
    PaymentMismatch {
        status: OrderStatus,
        stored: PaymentId,
    },
    UnknownOrder,
}

/// What counting a refusal from Payments did to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Counted; the order's request will be re-sent.
    Counted { attempts: i32 },
    /// Counted, and that was the last attempt: the order is parked.
    Parked { attempts: i32 },
    /// Not counted: no such order, it is final, or it is parked already.
    Ignored,
}
/// An incident to record on an order (see `order_incidents`).
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub order_id: OrderId,
    /// `contradicting_outcome` or `payment_id_mismatch`.
    pub kind: &'static str,
    pub event_id: i64,
    pub detail: String,
}
/// What recording a payment page did.
#[derive(Debug, PartialEq, Eq)]
pub enum PageRecorded {
    /// The order now awaits payment at this page.
    Recorded,
    /// Nothing changed: the same page again, or the order is final.
    Unchanged(OrderStatus),
    UnknownOrder,
}
impl Store {
    /// Starts a transaction for a batch of messages from Payments, that looks rows up by
    /// key ([`service_kit::database::begin_batch`]).
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(service_kit::database::begin_batch(&self.pool).await?)
    }

    /// Payments offered methods (non-empty) for these orders (one offer per order): pick
    /// the first, once, in one statement inside the caller's transaction. The answers are in the order of `offers`.
    pub async fn choose_methods(
        conn: &mut PgConnection,
        offers: &[(OrderId, &[String])],
    ) -> Result<Vec<MethodChoice>, StoreError> {
        if offers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = offers.iter().map(|(id, _)| id.0).collect();
        let firsts: Vec<String> = offers
            .iter()
            .map(|(_, m)| m.first().cloned().unwrap_or_default())
            .collect();
        let offered: Vec<String> = offers
            .iter()
            .map(|(_, m)| serde_json::to_string(m).unwrap_or_else(|_| "[]".into()))
            .collect();
        // Keep a method chosen earlier if it is still offered, so a repeated offer never
        // makes us ask for a second one (Payments would answer `conflict`).
        let rows = sqlx::query!(
            r#"UPDATE orders o SET payment_method = CASE
                   WHEN o.payment_method IS NOT NULL AND u.offered::jsonb ? o.payment_method
                   THEN o.payment_method ELSE u.first END,
                 updated_at = clock_timestamp()
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, first, offered)
               WHERE o.id = u.id
                 AND (o.status = 'pending_payment') IS TRUE
                 AND u.first <> ''
               RETURNING o.id, o.payment_method AS "payment_method!""#,
            &ids,
            &firsts,
            &offered,
        )
        .fetch_all(&mut *conn)
        .await?;
        let chosen: HashMap<Uuid, String> =
            rows.into_iter().map(|r| (r.id, r.payment_method)).collect();
        let statuses = Self::statuses_of_missing(conn, &ids, |id| chosen.contains_key(id)).await?;
        Ok(ids
            .iter()
            .map(|id| match chosen.get(id) {
                Some(method) => MethodChoice::Select(method.clone()),
                None => match statuses.get(id) {
                    Some(status) => MethodChoice::NotPending(*status),
                    None => MethodChoice::UnknownOrder,
                },
            })
            .collect())
    }

    /// Payments sent these pages: the orders now await the customer's payment. One
    /// statement inside the caller's transaction. The answers are in the order of `pages`.
    pub async fn record_pages(
        conn: &mut PgConnection,
        pages: &[(OrderId, PaymentId, &str, DateTime<Utc>)],
    ) -> Result<Vec<PageRecorded>, StoreError> {
        if pages.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = pages.iter().map(|p| p.0.0).collect();
        let payment_ids: Vec<Uuid> = pages.iter().map(|p| p.1.0).collect();
        let urls: Vec<String> = pages.iter().map(|p| p.2.to_owned()).collect();
        let expiries: Vec<DateTime<Utc>> = pages.iter().map(|p| p.3).collect();
        let recorded: HashSet<Uuid> = sqlx::query_scalar!(
            "UPDATE orders o SET status = 'awaiting_payment', payment_id = u.payment_id, \
                 payment_url = u.url, payment_expires_at = u.expires_at, \
                 updated_at = clock_timestamp() \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) \
                 AS u(id, payment_id, url, expires_at) \
             WHERE o.id = u.id \
               AND (o.status IN ('pending_payment', 'awaiting_payment')) IS TRUE \
               AND o.payment_url IS DISTINCT FROM u.url \
             RETURNING o.id",
            &ids,
            &payment_ids,
            &urls,
            &expiries,
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let statuses = Self::statuses_of_missing(conn, &ids, |id| recorded.contains(id)).await?;
        Ok(ids
            .iter()
            .map(|id| {
                if recorded.contains(id) {
                    PageRecorded::Recorded
                } else {
                    match statuses.get(id) {
                        Some(status) => PageRecorded::Unchanged(*status),
                        None => PageRecorded::UnknownOrder,
                    }
                }
            })
            .collect())
    }

    /// Applies final outcomes from Payments: one UPDATE for the transitions and one
    /// INSERT for the invoices (one per fulfilled order, at most), numbered from the
    /// counter row in the same statement, inside the caller's transaction, so the batch
    /// commits (or not) as one, and its invoice numbers with it. The answers are in the
    /// order of `outcomes`.
    pub async fn apply_outcomes(
        conn: &mut PgConnection,
        outcomes: &[Outcome],
    ) -> Result<Vec<Applied>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let finalized = finalize_orders(conn, outcomes).await?;
        let invoices = number_invoices(conn, &finalized).await?;
        let moved: HashMap<Uuid, OrderStatus> = finalized
            .iter()
            .map(|r| Ok((r.id, parse_status(&r.status)?)))
            .collect::<Result<_, StoreError>>()?;
        let others = unmoved_orders(conn, outcomes, &moved).await?;
        Ok(outcomes
            .iter()
            .map(
                |&(OrderId(id), PaymentId(payment_id), _, _)| match moved.get(&id) {
                    Some(status) => Applied::Transitioned {
                        status: *status,
                        invoice: invoices.get(&id).map(|n| invoice_number(*n)),
                    },
                    None => match others.get(&id) {
                        Some((status, Some(stored))) if *stored != payment_id => {
                            Applied::PaymentMismatch {
                                status: *status,
                                stored: PaymentId(*stored),
                            }
                        }
                        Some((status, _)) => Applied::AlreadyFinal(*status),
                        None => Applied::UnknownOrder,
                    },
                },
            )
            .collect())
    }

    /// Counts refusals from Payments (`(order, "code: message")`), in the caller's
    /// transaction, with one UPDATE: each open, unparked order's attempts go up by one
    /// and its last error is kept; the one that reaches the store's maximum is parked.
    /// The answers are in the order of `refusals`.
    pub async fn record_refusals(
        conn: &mut PgConnection,
        refusals: &[(OrderId, String)],
        max_attempts: i32,
    ) -> Result<Vec<Refusal>, StoreError> {
        if refusals.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = refusals.iter().map(|r| r.0.0).collect();
        let errors: Vec<String> = refusals
            .iter()
            .map(|r| r.1.chars().take(1000).collect())
            .collect();
        let counted: HashMap<Uuid, (i32, bool)> = sqlx::query!(
            r#"UPDATE orders o SET payment_attempts = o.payment_attempts + 1,
                   last_payment_error = u.error,
                   parked_at = CASE WHEN o.payment_attempts + 1 >= $3 THEN clock_timestamp() END
               FROM (SELECT DISTINCT ON (id) id, error
                     FROM unnest($1::uuid[], $2::text[]) AS r(id, error)) AS u
               WHERE o.id = u.id
                 AND (o.status IN ('pending_payment', 'awaiting_payment')) IS TRUE
                 AND o.parked_at IS NULL
               RETURNING o.id, o.payment_attempts, o.parked_at IS NOT NULL AS "parked!""#,
            &ids,
            &errors,
            max_attempts,
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.id, (r.payment_attempts, r.parked)))
        .collect();
        Ok(ids
            .iter()
            .map(|id| match counted.get(id) {
                Some(&(attempts, true)) => Refusal::Parked { attempts },
                Some(&(attempts, false)) => Refusal::Counted { attempts },
                None => Refusal::Ignored,
            })
            .collect())
    }

    /// Counts one refusal outside any batch (a message that could not be applied).
    pub async fn record_refusal(
        &self,
        order: OrderId,
        error: String,
    ) -> Result<Refusal, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut refusals =
            Self::record_refusals(&mut conn, &[(order, error)], self.max_payment_attempts).await?;
        Ok(refusals.pop().unwrap_or(Refusal::Ignored))
    }

    /// Records incidents in the caller's transaction (one per order, kind and event,
    /// however often the event comes) and counts them on their orders. Returns those
    /// that were new.
    pub async fn record_incidents<'i>(
        conn: &mut PgConnection,
        incidents: &'i [NewIncident],
    ) -> Result<Vec<&'i NewIncident>, StoreError> {
        if incidents.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = incidents.iter().map(|i| i.order_id.0).collect();
        let kinds: Vec<String> = incidents.iter().map(|i| i.kind.to_owned()).collect();
        let events: Vec<i64> = incidents.iter().map(|i| i.event_id).collect();
        let details: Vec<String> = incidents
            .iter()
            .map(|i| i.detail.chars().take(1000).collect())
            .collect();
        let rows = sqlx::query!(
            "WITH new AS ( \
                 INSERT INTO order_incidents (order_id, kind, event_id, detail) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[]) \
                 ON CONFLICT DO NOTHING \
                 RETURNING order_id, kind, event_id), \
             counted AS (UPDATE orders o SET incidents = o.incidents + c.n \
                 FROM (SELECT order_id, count(*)::int AS n FROM new GROUP BY order_id) c \
                 WHERE o.id = c.order_id) \
             SELECT order_id AS \"order_id!\", kind AS \"kind!\", event_id AS \"event_id!\" FROM new",
            &ids,
            &kinds,
            &events,
            &details,
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(incidents
            .iter()
            .filter(|i| {
                rows.iter().any(|r| {
                    r.order_id == i.order_id.0 && r.kind == i.kind && r.event_id == i.event_id
                })
            })
            .collect())
    }
    /// The status of each of `ids` that `done` leaves out (one query; none when all done).
    async fn statuses_of_missing(
        conn: &mut PgConnection,
        ids: &[Uuid],
        done: impl Fn(&Uuid) -> bool,
    ) -> Result<HashMap<Uuid, OrderStatus>, StoreError> {
        let missing: Vec<Uuid> = ids.iter().copied().filter(|id| !done(id)).collect();
        if missing.is_empty() {
            return Ok(HashMap::new());
        }
        sqlx::query!("SELECT id, status FROM orders WHERE id = ANY($1)", &missing)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| Ok((r.id, parse_status(&r.status)?)))
            .collect()
    }
}

/// An outcome from Payments: the order, its payment, the state and why.
pub type Outcome = (OrderId, PaymentId, PaymentOutcome, Option<CancelReason>);

/// An order that an outcome made final.
struct Finalized {
    id: Uuid,
    status: String,
    amount: i64,
    currency: String,
}

/// Moves each open order that holds the outcome's payment (or none yet) to its final
/// state, in one UPDATE; returns the orders it moved.
async fn finalize_orders(
    conn: &mut PgConnection,
    outcomes: &[Outcome],
) -> Result<Vec<Finalized>, StoreError> {
    let ids: Vec<Uuid> = outcomes.iter().map(|o| o.0.0).collect();
    let payment_ids: Vec<Uuid> = outcomes.iter().map(|o| o.1.0).collect();
    let statuses: Vec<String> = outcomes
        .iter()
        .map(|o| OrderStatus::after(o.2).as_str().to_owned())
        .collect();
    // '' stands for no reason (NULLIF below): a fulfilled order has none.
    let reasons: Vec<String> = outcomes
        .iter()
        .map(|o| match o.2 {
            PaymentOutcome::Fulfill => String::new(),
            PaymentOutcome::Cancel => o.3.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        })
        .collect();
    let rows = sqlx::query!(
        "UPDATE orders o SET status = u.status, cancel_reason = NULLIF(u.reason, ''), \
             payment_id = coalesce(o.payment_id, u.payment_id), \
             updated_at = clock_timestamp() \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[]) \
             AS u(id, status, reason, payment_id) \
         WHERE o.id = u.id \
           AND (o.status IN ('pending_payment', 'awaiting_payment')) IS TRUE \
           AND (o.payment_id IS NULL OR o.payment_id = u.payment_id) \
         RETURNING o.id, o.status, o.amount, o.currency",
        &ids,
        &statuses,
        &reasons,
        &payment_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Finalized {
            id: r.id,
            status: r.status,
            amount: r.amount,
            currency: r.currency,
        })
        .collect())
}

/// Writes the invoices of the fulfilled orders among `finalized`; returns each one's
/// number.
async fn number_invoices(
    conn: &mut PgConnection,
    finalized: &[Finalized],
) -> Result<HashMap<Uuid, i64>, StoreError> {
    let fulfilled: Vec<_> = finalized
        .iter()
        .filter(|r| r.status == OrderStatus::Fulfilled.as_str())
        .collect();
    if fulfilled.is_empty() {
        return Ok(HashMap::new());
    }
    let invoice_orders: Vec<Uuid> = fulfilled.iter().map(|r| r.id).collect();
    let amounts: Vec<i64> = fulfilled.iter().map(|r| r.amount).collect();
    let currencies: Vec<String> = fulfilled.iter().map(|r| r.currency.clone()).collect();
    // The batch's numbers with ONE update of the counter row, held until the
    // batch commits: no gap if it does not, and numbers in commit order.
    Ok(sqlx::query!(
        r#"WITH taken AS (
                       UPDATE invoice_counter SET last = last + cardinality($1::uuid[])
                       RETURNING last - cardinality($1::uuid[]) AS before)
                   INSERT INTO invoices (number, order_id, amount, currency)
                   SELECT taken.before + i.n, i.order_id, i.amount, i.currency
                   FROM taken, unnest($1::uuid[], $2::bigint[], $3::text[])
                       WITH ORDINALITY AS i(order_id, amount, currency, n)
                   RETURNING order_id, number"#,
        &invoice_orders,
        &amounts,
        &currencies,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (r.order_id, r.number))
    .collect())
}

/// The status and payment of each outcome's order that did not move (final already,
/// or holding another payment); an unknown order is absent.
async fn unmoved_orders(
    conn: &mut PgConnection,
    outcomes: &[Outcome],
    moved: &HashMap<Uuid, OrderStatus>,
) -> Result<HashMap<Uuid, (OrderStatus, Option<Uuid>)>, StoreError> {
    let missing: Vec<Uuid> = outcomes
        .iter()
        .map(|o| o.0.0)
        .filter(|id| !moved.contains_key(id))
        .collect();
    if missing.is_empty() {
        return Ok(HashMap::new());
    }
    sqlx::query!(
        "SELECT id, status, payment_id FROM orders WHERE id = ANY($1)",
        &missing
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| Ok((r.id, (parse_status(&r.status)?, r.payment_id))))
    .collect()
}
