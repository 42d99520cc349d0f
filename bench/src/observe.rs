//! Reading the services' databases: progress while a scenario runs, timestamps after.
//!
//! While a scenario runs, progress is ONE cheap query per poll (every 1 s by default)
//! on the Orders database, such as `SELECT count(*) FROM orders WHERE status =
//! 'pending_payment'`, which the `orders_by_status_newest` index answers by reading the
//! remaining orders only. Nothing polls the HTTP API per order. Per-order latencies come
//! from the services' own timestamps, read once the measured interval is over:
//! `orders.created_at` (the insert of `POST /orders`), `orders.updated_at` (the last
//! transition: the page while an order awaits payment), `invoices.issued_at` (the
//! fulfilment transaction), `payment_sessions.created_at` (Payments stored the
//! `initiate_payment`), `payment_events.created_at` / `dispatched_at` / `acked_at`
//! (the payment, its first delivery claim, Orders' ack) and `ws_connections.opened_at`
//! (the link connected). All are `clock_timestamp()` of the same machine's clock.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::db::connect_options;

/// Pools on the Orders and Payments databases of one stack.
#[derive(Debug, Clone)]
pub struct Observer {
    pub orders: PgPool,
    pub payments: PgPool,
}

/// An order as the database has it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub status: String,
    pub payment_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
}

/// An outcome event as the Payments database has it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub order_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub acked_at: Option<DateTime<Utc>>,
}

/// Invoices and what they cover.
#[derive(Debug, Clone, Copy)]
pub struct InvoiceCounts {
    pub invoices: i64,
    pub orders_invoiced: i64,
    pub fulfilled: i64,
}

impl Observer {
    pub fn connect_lazy(orders_url: &str, payments_url: &str) -> anyhow::Result<Observer> {
        let pool = |url: &str| -> anyhow::Result<PgPool> {
            Ok(PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                // No ping per checkout: one query per poll is the whole cost.
                .test_before_acquire(false)
                // Lookups by key, as the services' batches do (BATCH_BEGIN): with the
                // default costs the watcher's `id = ANY($1)` seq-scanned the orders
                // table on every call (2,731 scans, 6.8 million rows read in 5,000
                // flows), PostgreSQL time taken from the services being measured.
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::Executor::execute(conn, "SET enable_seqscan = off").await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(connect_options(url)?))
        };
        Ok(Observer {
            orders: pool(orders_url)?,
            payments: pool(payments_url)?,
        })
    }

    pub async fn close(self) {
        self.orders.close().await;
        self.payments.close().await;
    }

    /// Orders in `status`.
    pub async fn count_status(&self, status: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = $1")
            .bind(status)
            .fetch_one(&self.orders)
            .await
    }

    /// Unacked outcome events (the `payment_events_unacked` partial index).
    pub async fn unacked(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE acked_at IS NULL")
            .fetch_one(&self.payments)
            .await
    }

    /// When the oldest open WebSocket connection was registered, if one is open.
    pub async fn link_opened_at(&self) -> sqlx::Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar("SELECT min(opened_at) FROM ws_connections")
            .fetch_one(&self.payments)
            .await
    }

    /// The given orders (by primary key) with their invoice times.
    pub async fn orders_by_id(&self, ids: &[Uuid]) -> sqlx::Result<Vec<OrderRow>> {
        sqlx::query_as(
            // The invoice as a per-order subquery: a lookup by invoices_order_id_key. As
            // a join, the generic plan hashes a scan of ALL invoices on every call, and
            // this query runs every 5 ms on the database being measured.
            "SELECT o.id, o.status, o.payment_url, o.created_at, o.updated_at, \
                 (SELECT i.issued_at FROM invoices i WHERE i.order_id = o.id) AS issued_at \
             FROM orders o WHERE o.id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.orders)
        .await
    }

    /// Every order with its invoice time (after the measured interval only).
    pub async fn all_orders(&self) -> sqlx::Result<Vec<OrderRow>> {
        sqlx::query_as(
            "SELECT o.id, o.status, o.payment_url, o.created_at, o.updated_at, i.issued_at \
             FROM orders o LEFT JOIN invoices i ON i.order_id = o.id",
        )
        .fetch_all(&self.orders)
        .await
    }

    /// When Payments stored each order's session (`initiate_payment` handled).
    pub async fn sessions(&self) -> sqlx::Result<HashMap<Uuid, DateTime<Utc>>> {
        let rows: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT order_id, created_at FROM payment_sessions")
                .fetch_all(&self.payments)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Every outcome event, by order.
    pub async fn all_events(&self) -> sqlx::Result<HashMap<Uuid, EventRow>> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT order_id, created_at, dispatched_at, acked_at FROM payment_events",
        )
        .fetch_all(&self.payments)
        .await?;
        Ok(rows.into_iter().map(|r| (r.order_id, r)).collect())
    }

    pub async fn invoice_counts(&self) -> sqlx::Result<InvoiceCounts> {
        let (invoices, orders_invoiced, fulfilled): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM invoices), \
                    (SELECT count(DISTINCT order_id) FROM invoices), \
                    (SELECT count(*) FROM orders WHERE status = 'fulfilled')",
        )
        .fetch_one(&self.orders)
        .await?;
        Ok(InvoiceCounts {
            invoices,
            orders_invoiced,
            fulfilled,
        })
    }
}
