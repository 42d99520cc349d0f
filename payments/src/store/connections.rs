//! Liveness of the WebSocket connections: each instance registers its connections and
//! refreshes their heartbeat; delivery treats a connection without a fresh heartbeat as
//! gone and sends its events from any instance.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{SCAN_LIMIT, Store, StoreError};

impl Store {
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
