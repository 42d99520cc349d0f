//! The database cannot be held by a request (issue 18): every pooled session has its
//! timeouts, a request that finds no pool connection in time is refused with 503 and
//! `Retry-After`, and scrapes of `/metrics` (which need no token) make the database
//! count the backlog at most once per `BACKLOG_GAUGE_MAX_AGE`.

mod helpers;

use std::time::Duration;

use helpers::{ADMIN_TOKEN, TestApp, page_path, seed_unacked_events};
use shared_protocol::OrderId;
use test_harness::postgres::TestDatabase;

async fn gauge(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_pooled_session_has_its_timeouts() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn_with(&db, |config| {
        let db = &mut config.common.database;
        db.db_statement_timeout = Duration::from_millis(2500);
        db.db_lock_timeout = Duration::from_millis(400);
        db.db_idle_in_transaction_timeout = Duration::from_secs(4);
    })
    .await;
    let mut conn = app.store.pool().acquire().await.unwrap();
    for (setting, want) in [
        ("statement_timeout", "2500ms"),
        ("lock_timeout", "400ms"),
        ("idle_in_transaction_session_timeout", "4s"),
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
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn_with(&db, |config| {
        config.common.database.db_pool_size = 2;
        config.common.database.db_acquire_timeout = Duration::from_millis(300);
    })
    .await;
    let mut orders = app.connect().await;
    let path = page_path(&orders.start_payment(OrderId::new(), 100, "EUR").await);
    // The page writer keeps one connection of the pool; take the other.
    let end = tokio::time::Instant::now() + helpers::DEADLINE;
    let held = loop {
        if let Ok(conn) = app.store.pool().acquire().await {
            break conn;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never got a pool connection"
        );
    };
    let page = app.get(&path).await;
    assert_eq!(page.status(), 503);
    assert_eq!(page.headers()["retry-after"], "1");
    let admin = app
        .http
        .get(app.url("/admin/dead-letters"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 503);
    assert_eq!(admin.headers()["retry-after"], "1");
    drop(held);
    assert_eq!(app.get(&path).await.status(), 200);
}

#[tokio::test]
async fn scrapes_read_the_backlog_at_most_once_per_max_age() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn_with(&db, |config| {
        config.backlog_gauge_max_age = Duration::from_secs(3600);
    })
    .await;
    assert_eq!(gauge(&app, "payments_unacked_events").await, 0.0);
    seed_unacked_events(&db, 3).await;
    for _ in 0..20 {
        assert_eq!(
            gauge(&app, "payments_unacked_events").await,
            0.0,
            "a scrape counted the backlog again"
        );
    }

    // With a short max age, the gauge follows the database.
    let fresh = TestApp::spawn_with(&db, |config| {
        config.backlog_gauge_max_age = Duration::from_millis(1);
    })
    .await;
    assert_eq!(gauge(&fresh, "payments_unacked_events").await, 3.0);
}
