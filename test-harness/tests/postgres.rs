use test_harness::postgres::TestDatabase;

#[tokio::test]
async fn a_test_database_is_fresh_and_dropped_afterwards() {
    let db = TestDatabase::create("harness").await;
    let name = db.name().to_owned();
    let pool = db.pool().await;
    let (current,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, name);
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    pool.close().await;
    drop(db);

    let admin = sqlx::PgPool::connect(test_harness::postgres::DEFAULT_SERVER_URL)
        .await
        .unwrap();
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!exists, "database {name} was not dropped");
}
