//! Each service owns its database and creates it at start-up when the server does not
//! have it yet, so a fresh PostgreSQL (or a fresh test database name) just works.

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Creates the database named in `options` when it does not exist. Another instance
/// creating it at the same moment is fine.
pub async fn create_if_missing(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // Quoted as an identifier above; CREATE DATABASE takes no bind parameters.
        match sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{quoted}""#)))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // duplicate_database: another instance created it between our check and CREATE
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    let _ = conn.close().await;
    Ok(())
}
