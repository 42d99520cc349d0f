//! The database cannot be held by a request (issue 18): every pooled session has a
//! statement, lock and idle-transaction timeout; a request that finds no pool
//! connection in time, or whose statement waited too long for a lock, is refused with
//! 503 and `Retry-After`, not failed with 500.

mod helpers;

use std::time::Duration;

use helpers::TestApp;
use serde_json::json;

const NOWHERE: &str = "ws://127.0.0.1:9/ws";

#[tokio::test]
async fn every_pooled_session_has_its_timeouts() {
    let app = TestApp::spawn_with(NOWHERE, |config| {
        let db = &mut config.common.database;
        db.db_statement_timeout = Duration::from_millis(1500);
        db.db_lock_timeout = Duration::from_millis(700);
        db.db_idle_in_transaction_timeout = Duration::from_secs(3);
    })
    .await;
    let mut conn = app.store.pool().acquire().await.unwrap();
    for (setting, want) in [
        ("statement_timeout", "1500ms"),
        ("lock_timeout", "700ms"),
        ("idle_in_transaction_session_timeout", "3s"),
        // The server default is on: a generic plan costed high was JIT-compiled on
        // every execution (service_kit::database, DatabaseConfig::session_options).
        ("jit", "off"),
    ] {
        let got: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(got, want, "{setting}");
    }
}

#[tokio::test]
async fn a_request_that_finds_no_pool_connection_is_a_503_to_retry() {
    let app = TestApp::spawn_with(NOWHERE, |config| {
        config.common.database.db_pool_size = 2;
        config.common.database.db_acquire_timeout = Duration::from_millis(300);
    })
    .await;
    // The order writer keeps one connection of the pool; take the other.
    let order = app.create_order(1999, "EUR").await;
    let held = helpers::wait_until(helpers::DEADLINE, || async {
        app.store.pool().acquire().await.ok()
    })
    .await
    .expect("the pool's second connection");
    let response = app.get(&format!("/orders/{}", order.id())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    drop(held);
    assert_eq!(
        app.get(&format!("/orders/{}", order.id())).await.status(),
        200
    );
}

#[tokio::test]
async fn a_request_stuck_behind_a_lock_is_a_503_after_the_lock_timeout() {
    let app = TestApp::spawn_with(NOWHERE, |config| {
        config.common.database.db_lock_timeout = Duration::from_millis(300);
    })
    .await;
    let order = app.create_order(1999, "EUR").await;
    // Another session holds the order's row, as a long transaction would.
    let pool = app.db.pool().await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
        .bind(order.id().0)
        .execute(&mut *holder)
        .await
        .unwrap();
    let response = app
        .client
        .post(app.url(&format!("/orders/{}/cancel", order.id())))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    holder.rollback().await.unwrap();
    // Nothing was written; with the lock gone the same request goes through.
    assert_eq!(app.order(order.id()).await.0["status"], "pending_payment");
    let again = app.post(&format!("/orders/{}/cancel", order.id())).await;
    assert_eq!(again.status(), 202);
}
