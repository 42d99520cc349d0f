//! Each service runs as a role of its own, owner of its database and of nothing else
//! (issue 18): `deploy/postgres/roles.sh`, which docker-compose.yml runs when the
//! postgres container first starts, makes the roles, and the whole flow (migrations
//! included) works as them, while neither may enter the other's database. Against the
//! local server as a superuser, with names of this test's own, dropped after.

use std::process::Command;

use e2e::Stack;
use sqlx::{Connection, PgConnection};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Drops the test's databases and roles, whatever happened.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("psql")
                .args([&format!("{SERVER}/postgres"), "-q", "-c"])
                .arg(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .arg("-c")
                .arg(format!(r#"DROP ROLE IF EXISTS "{name}""#))
                .status();
        }
    }
}

fn roles_script(orders: &str, payments: &str) -> std::process::ExitStatus {
    Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/postgres/roles.sh"
        ))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "5432")
        .env("PGUSER", "postgres")
        .env("ORDERS_DB_NAME", orders)
        .env("PAYMENTS_DB_NAME", payments)
        .env("ORDERS_DB_PASSWORD", "orders-pa55")
        .env("PAYMENTS_DB_PASSWORD", "payments-pa55")
        .status()
        .expect("run deploy/postgres/roles.sh")
}

#[tokio::test]
async fn each_service_runs_as_the_owner_of_its_database_and_nothing_else() {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (orders, payments) = (format!("orders_{suffix}"), format!("payments_{suffix}"));
    let _cleanup = Cleanup(vec![orders.clone(), payments.clone()]);
    // Twice: it is idempotent.
    for _ in 0..2 {
        assert!(roles_script(&orders, &payments).success());
    }

    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres"))
        .await
        .unwrap();
    for name in [&orders, &payments] {
        let (superuser, createdb, createrole, owner): (bool, bool, bool, String) = sqlx::query_as(
            "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, pg_get_userbyid(d.datdba)::text
             FROM pg_roles r JOIN pg_database d ON d.datname = r.rolname
             WHERE r.rolname = $1",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            (superuser, createdb, createrole),
            (false, false, false),
            "{name}"
        );
        assert_eq!(&owner, name);
    }

    let orders_url = format!("postgres://{orders}:orders-pa55@127.0.0.1:5432/{orders}");
    let payments_url = format!("postgres://{payments}:payments-pa55@127.0.0.1:5432/{payments}");
    {
        let stack = Stack::spawn_on(&orders_url, &payments_url).await;
        let order = stack.create_order(1999, "EUR").await;
        let page = stack.payment_url(order).await;
        stack.press(&page, "complete").await;
        stack.wait_status(order, "fulfilled").await;
        let invoice = stack
            .http
            .get(stack.orders_url(&format!("/orders/{order}/invoice")))
            .send()
            .await
            .unwrap();
        assert_eq!(invoice.status(), 200);
    }

    // Neither role may enter the other's database.
    for (role, password, database) in [
        (&orders, "orders-pa55", &payments),
        (&payments, "payments-pa55", &orders),
    ] {
        let url = format!("postgres://{role}:{password}@127.0.0.1:5432/{database}");
        let refused = PgConnection::connect(&url).await.expect_err("connected");
        assert!(
            refused
                .to_string()
                .contains("permission denied for database"),
            "{refused}"
        );
    }
}
