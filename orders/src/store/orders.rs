//! The HTTP API's reads and writes: one order, the list, cancel requests, invoices,
//! incidents and an operator's retry.

use chrono::{DateTime, Utc};
use shared_protocol::OrderId;

use super::{OpenKey, OpenOrder, OrderRow, Store, StoreError, parse_amount, parse_currency};
use crate::domain::{Incident, Invoice, Order, OrderStatus, invoice_number};

/// The answer to a cancel request from the API.
#[derive(Debug)]
pub enum CancelRequest {
    /// Recorded; the link will ask Payments.
    Requested(Order),
    /// The order is already fulfilled or cancelled.
    Final(Order),
    NotFound,
}
/// The answer to an operator's retry of an order.
#[derive(Debug)]
pub enum Retried {
    /// Unparked; its requests are to be sent again.
    Unparked(Order, OpenOrder),
    /// The order is not parked (it is being handled, or it is final).
    NotParked(Order),
    NotFound,
}
/// The most incidents `GET /orders/{id}/incidents` returns (the oldest first).
pub const INCIDENTS_LIMIT: i64 = 100;
/// One page of `GET /orders`.
#[derive(Debug)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// The cursor of the next page, when there is one.
    pub next: Option<OrderId>,
}
/// The time a UUIDv7 holds (milliseconds since the epoch), if `id` is one.
fn time_of(id: OrderId) -> Option<DateTime<Utc>> {
    if id.0.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.0.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

impl Store {
    pub async fn order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        let row = query_orders!("SELECT", "FROM orders WHERE id = $1", id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Order::try_from).transpose()
    }

    /// Orders newest first, optionally of one status, after the cursor `after`.
    /// Returns `None` when `after` names no order.
    pub async fn list(
        &self,
        status: Option<OrderStatus>,
        limit: u32,
        after: Option<OrderId>,
    ) -> Result<Option<OrderPage>, StoreError> {
        let cursor = match after {
            None => None,
            Some(id) => {
                let found = sqlx::query!("SELECT created_at, id FROM orders WHERE id = $1", id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                match found {
                    Some(row) => Some((row.created_at, row.id)),
                    // An id no order has: a UUIDv7 stands for its time (order ids are
                    // v7, so it falls where such an order would); any other is no
                    // cursor at all.
                    None => match time_of(id) {
                        Some(at) => Some((at, id.0)),
                        None => return Ok(None),
                    },
                }
            }
        };
        let rows = query_orders!(
            "SELECT",
            "FROM orders \
             WHERE ($1::text IS NULL OR status = $1) \
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid)) \
             ORDER BY created_at DESC, id DESC \
             LIMIT $4",
            status.map(OrderStatus::as_str),
            cursor.map(|c| c.0),
            cursor.map(|c| c.1),
            i64::from(limit) + 1,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut orders = rows
            .into_iter()
            .map(Order::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if orders.len() > limit as usize {
            orders.truncate(limit as usize);
            orders.last().map(|o| o.id)
        } else {
            None
        };
        Ok(Some(OrderPage { orders, next }))
    }

    /// Records that the customer wants to cancel an open order.
    pub async fn request_cancel(&self, id: OrderId) -> Result<CancelRequest, StoreError> {
        let row = query_orders!(
            "UPDATE orders SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp()) \
             WHERE id = $1 AND status IN ('pending_payment', 'awaiting_payment') \
             RETURNING",
            "",
            id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(CancelRequest::Requested(row.try_into()?));
        }
        Ok(match self.order(id).await? {
            Some(order) => CancelRequest::Final(order),
            None => CancelRequest::NotFound,
        })
    }

    pub async fn invoice(&self, order_id: OrderId) -> Result<Option<Invoice>, StoreError> {
        let row = sqlx::query!(
            "SELECT number, order_id, amount, currency, issued_at FROM invoices WHERE order_id = $1",
            order_id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Invoice {
                number: invoice_number(r.number),
                order_id: OrderId(r.order_id),
                amount: parse_amount(r.amount)?,
                currency: parse_currency(&r.currency)?,
                issued_at: r.issued_at,
            })
        })
        .transpose()
    }
    /// The incidents of an order, oldest first (at most [`INCIDENTS_LIMIT`]); `None`
    /// when there is no such order.
    pub async fn incidents(&self, id: OrderId) -> Result<Option<Vec<Incident>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let exists = sqlx::query_scalar!("SELECT 1 FROM orders WHERE id = $1", id.0)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query!(
            "SELECT kind, event_id, detail, created_at FROM order_incidents \
             WHERE order_id = $1 ORDER BY id LIMIT $2",
            id.0,
            INCIDENTS_LIMIT,
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.into_iter()
                .map(|r| Incident {
                    kind: r.kind,
                    event_id: r.event_id,
                    detail: r.detail,
                    created_at: r.created_at,
                })
                .collect(),
        ))
    }

    /// An operator's retry of a parked order: unparks it and resets its attempts, so
    /// the link sends its request again (the caller sends it at once).
    pub async fn retry(&self, id: OrderId) -> Result<Retried, StoreError> {
        let row = sqlx::query!(
            r#"UPDATE orders SET parked_at = NULL, payment_attempts = 0,
                   updated_at = clock_timestamp()
               WHERE id = $1 AND parked_at IS NOT NULL
                 AND status IN ('pending_payment', 'awaiting_payment')
               RETURNING created_at, payment_expires_at,
                   cancel_requested_at IS NOT NULL AS "cancel_requested!""#,
            id.0,
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(order) = self.order(id).await? else {
            return Ok(Retried::NotFound);
        };
        Ok(match row {
            Some(row) => {
                let open = OpenOrder {
                    key: OpenKey {
                        created_at: row.created_at,
                        id,
                    },
                    amount: order.amount,
                    currency: order.currency,
                    status: order.status,
                    cancel_requested: row.cancel_requested,
                    expires_at: row.payment_expires_at,
                };
                Retried::Unparked(order, open)
            }
            None => Retried::NotParked(order),
        })
    }
}
