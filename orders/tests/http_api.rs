//! The HTTP API of HTTP-API.md, request by request: shapes, statuses, every error of
//! its table, idempotency and pagination. Payments is unreachable here on purpose:
//! the API must answer without it.

mod helpers;

use helpers::TestApp;
use serde_json::{Value, json};

/// A WebSocket URL where nothing listens: the link keeps retrying in the background.
const NOWHERE: &str = "ws://127.0.0.1:9/ws";

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(content_type.as_deref(), Some("application/json"), "{body}");
    (
        status,
        body["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .expect("error.message")
            .to_owned(),
    )
}

#[tokio::test]
async fn creating_an_order_returns_it_with_its_location() {
    let app = TestApp::spawn(NOWHERE).await;
    let response = app
        .post_order(&json!({"amount": 1999, "currency": "eur", "description": "2 × coffee"}))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/orders/{}", order["id"].as_str().unwrap())
    );
    assert_eq!(order["amount"], 1999);
    assert_eq!(order["currency"], "EUR", "currency is stored upper case");
    assert_eq!(order["description"], "2 × coffee");
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["payment_method"], Value::Null);
    assert_eq!(order["payment_url"], Value::Null);
    assert_eq!(order["cancel_reason"], Value::Null);
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(order["updated_at"].is_string());

    let fetched = app.get(&location).await;
    assert_eq!(fetched.status(), 200);
    let fetched: Value = fetched.json().await.unwrap();
    assert_eq!(fetched, order);
}

#[tokio::test]
async fn every_bad_request_gets_its_status_and_code_and_writes_nothing() {
    let app = TestApp::spawn(NOWHERE).await;
    let post = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut request = app.client.post(app.url("/orders")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let json_ct = Some("application/json");
    /// body, Content-Type, expected status, expected code, a word the message must hold
    type Case = (
        Vec<u8>,
        Option<&'static str>,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            b"{not json".to_vec(),
            json_ct,
            400,
            "malformed_json",
            "JSON",
        ),
        (b"".to_vec(), json_ct, 400, "malformed_json", "JSON"),
        (b"[1, 2]".to_vec(), json_ct, 400, "malformed_json", "object"),
        (b"\"x\"".to_vec(), json_ct, 400, "malformed_json", "object"),
        (
            br#"{"amount": 1, "currency": "EUR"}"#.to_vec(),
            None,
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            br#"{"amount": 1, "currency": "EUR"}"#.to_vec(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            vec![b' '; 16 * 1024 + 1],
            json_ct,
            413,
            "payload_too_large",
            "16384",
        ),
        (
            br#"{"currency": "EUR"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "amount",
        ),
        (
            br#"{"amount": "12", "currency": "EUR"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "amount",
        ),
        (
            br#"{"amount": 0, "currency": "EUR"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "amount",
        ),
        (
            br#"{"amount": 100000001, "currency": "EUR"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "amount",
        ),
        (
            br#"{"amount": 12.5, "currency": "EUR"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "amount",
        ),
        (
            br#"{"amount": 1}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "currency",
        ),
        (
            br#"{"amount": 1, "currency": "EU"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "currency",
        ),
        (
            br#"{"amount": 1, "currency": "ABC"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "currency",
        ),
        (
            br#"{"amount": 1, "currency": "XAU"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "currency",
        ),
        (
            br#"{"amount": 1, "currency": "XXX"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "currency",
        ),
        (
            br#"{"amount": 1, "currency": "DEM"}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "currency",
        ),
        (
            br#"{"amount": 1, "currency": "EUR", "description": 7}"#.to_vec(),
            json_ct,
            422,
            "validation_failed",
            "description",
        ),
        (
            format!(
                r#"{{"amount": 1, "currency": "EUR", "description": "{}"}}"#,
                "d".repeat(501)
            )
            .into_bytes(),
            json_ct,
            422,
            "validation_failed",
            "description",
        ),
    ];
    for (body, content_type, status, code, mentions) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (got_status, got_code, message) =
            error_of(post(body, content_type).await.unwrap()).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{shown} ({content_type:?}): {message}"
        );
        assert!(
            message.contains(mentions),
            "{shown}: message {message:?} should mention {mentions:?}"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM orders").await,
        0,
        "a rejected request wrote a row"
    );
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_are_json_errors() {
    let app = TestApp::spawn(NOWHERE).await;
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/orders/{unknown}"),
        "/orders/not-a-uuid".to_owned(),
        format!("/orders/{unknown}/invoice"),
        "/nope".to_owned(),
    ] {
        let (status, code, _) = error_of(app.get(&path).await).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "GET {path}");
    }
    let (status, code, _) = error_of(app.post(&format!("/orders/{unknown}/cancel")).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = error_of(app.post("/orders/not-a-uuid/cancel").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));

    let response = app.client.delete(app.url("/orders")).send().await.unwrap();
    // RFC 9110: a 405 lists what the resource allows.
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let response = app
        .client
        .put(app.url(&format!("/orders/{unknown}")))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let response = app.get(&format!("/orders/{unknown}/cancel")).await;
    assert_eq!(response.headers()["allow"], "POST");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["allow"], "GET, HEAD", "{path}");
        let (status, _, _) = error_of(response).await;
        assert_eq!(status, 405, "{path}");
    }
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_order_and_refuses_another_body() {
    let app = TestApp::spawn(NOWHERE).await;
    let send = |key: String, body: Value| {
        app.client
            .post(app.url("/orders"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"amount": 500, "currency": "USD", "description": "tea"});
    let first = send("key-1".into(), body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    let again = send("key-1".into(), body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let (status, code, _) = error_of(
        send(
            "key-1".into(),
            json!({"amount": 501, "currency": "USD", "description": "tea"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "conflict"));

    let (status, code, message) =
        error_of(send("k".repeat(256), body.clone()).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (422, "validation_failed"));
    assert!(message.contains("Idempotency-Key"));
    assert_eq!(
        send("k".repeat(255), body.clone()).await.unwrap().status(),
        201
    );

    // Another key is another order.
    assert_eq!(send("key-2".into(), body).await.unwrap().status(), 201);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 3);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_create_one_order() {
    let app = TestApp::spawn(NOWHERE).await;
    let body = json!({"amount": 700, "currency": "EUR"});
    let requests = (0..8).map(|_| {
        app.client
            .post(app.url("/orders"))
            .header("idempotency-key", "same")
            .json(&body)
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for response in responses {
        let response = response.unwrap();
        if response.status() == 201 {
            created += 1;
        } else {
            assert_eq!(response.status(), 200);
        }
        let order: Value = response.json().await.unwrap();
        ids.insert(order["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
}

/// Order ids are time-ordered UUIDs (version 7), so the orders' primary key and the
/// other indexes keyed by order id (Payments' sessions, the invoices) grow at their
/// right edge instead of at random pages: bench/README.md measures what that saves.
#[tokio::test]
async fn order_ids_are_time_ordered_uuids() {
    let app = TestApp::spawn(NOWHERE).await;
    let mut ids = Vec::new();
    for amount in 1..=3 {
        ids.push(app.create_order(amount, "EUR").await.id().0);
    }
    for id in &ids {
        assert_eq!(id.get_version_num(), 7, "{id}");
    }
    assert!(
        ids.is_sorted(),
        "ids of orders created one after another: {ids:?}"
    );
}

#[tokio::test]
async fn orders_are_listed_newest_first_in_pages() {
    let app = TestApp::spawn(NOWHERE).await;
    let mut created = Vec::new();
    for amount in 1..=5 {
        created.push(app.create_order(amount, "EUR").await.id().to_string());
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut path = "/orders?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        let orders = page["orders"].as_array().unwrap();
        assert!(orders.len() <= 2);
        seen.extend(orders.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/orders?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, created);

    let page: Value = app.get("/orders").await.json().await.unwrap();
    assert_eq!(page["orders"].as_array().unwrap().len(), 5);
    assert_eq!(page["next"], Value::Null);
    let page: Value = app
        .get("/orders?status=fulfilled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["orders"].as_array().unwrap().len(), 0);
    let page: Value = app
        .get("/orders?status=pending_payment&limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["orders"].as_array().unwrap().len(), 5);
}

/// `after` may be any UUIDv7, as the document says: one that names no order stands
/// for its time (order ids are v7), so the page holds the orders created before it.
#[tokio::test]
async fn an_unknown_uuid_v7_cursor_stands_for_its_time() {
    let app = TestApp::spawn(NOWHERE).await;
    let before = uuid::Uuid::now_v7();
    // v7 ids are ordered by their millisecond: let the clock move past `before`.
    let mut created = Vec::new();
    let mut last_created_at = String::new();
    for _ in 0..3 {
        let order = app.create_order(1999, "EUR").await;
        last_created_at = order.0["created_at"].as_str().unwrap().to_owned();
        created.push(order.id());
    }
    let last: chrono::DateTime<chrono::Utc> = last_created_at.parse().unwrap();
    // A UUIDv7 holds milliseconds: wait for one past the last order's creation.
    let now = helpers::wait_until(helpers::DEADLINE, || async {
        let now = uuid::Uuid::now_v7();
        let (secs, nanos) = now.get_timestamp().unwrap().to_unix();
        let at = chrono::DateTime::from_timestamp(secs as i64, nanos).unwrap();
        (at > last).then_some(now)
    })
    .await
    .unwrap();
    let page: Value = app
        .get(&format!("/orders?after={now}"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<String> = created.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(ids, newest_first);
    let page: Value = app
        .get(&format!("/orders?after={before}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["orders"],
        json!([]),
        "orders created after the cursor's time"
    );
}

#[tokio::test]
async fn bad_list_parameters_are_validation_errors() {
    let app = TestApp::spawn(NOWHERE).await;
    for (query, mentions) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=paid", "status"),
        ("after=xyz", "after"),
        (&*format!("after={}", uuid::Uuid::new_v4()), "after"),
    ] {
        let (status, code, message) = error_of(app.get(&format!("/orders?{query}")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "validation_failed"),
            "{query}"
        );
        assert!(message.contains(mentions), "{query}: {message}");
    }
}

#[tokio::test]
async fn an_invoice_is_not_found_before_the_order_is_fulfilled() {
    let app = TestApp::spawn(NOWHERE).await;
    let order = app.create_order(100, "EUR").await;
    let (status, code, message) =
        error_of(app.get(&format!("/orders/{}/invoice", order.id())).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert!(message.contains("pending_payment"), "{message}");
}

#[tokio::test]
/// Readiness is "can take requests": the database and the order writer. Without its
/// link to Payments an instance still takes orders, which wait in the database, so a
/// load balancer must not take every instance out during a Payments outage; the link's
/// state is in /healthz's body (and the metrics).
async fn readiness_leaves_the_payments_link_out_and_health_tells_it() {
    let app = TestApp::spawn(NOWHERE).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["payments_link"], "disconnected");
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "up");
    assert_eq!(body["payments_link"], "disconnected");
    assert_eq!(body["order_writer"], "running");
    assert_eq!(
        app.create_order(1999, "EUR").await.status(),
        "pending_payment"
    );
}

/// A link whose thread died (here by a zero heartbeat, which tokio's interval panics
/// on: the configuration refuses it, but any bug could end the thread) never comes back
/// by itself: /healthz says so with 503, for the orchestrator to restart the process.
/// It used to stay green.
#[tokio::test]
async fn health_fails_when_the_links_thread_dies() {
    let fake = test_harness::payments::FakePayments::start().await;
    let app = TestApp::spawn_with(&fake.url(), |c| {
        c.common.heartbeat_interval = std::time::Duration::ZERO;
    })
    .await;
    let died = helpers::wait_until(helpers::DEADLINE, || async {
        let response = app.get("/healthz").await;
        (response.status() == 503).then_some(response)
    })
    .await
    .expect("/healthz stayed green with the link's thread dead");
    let body: Value = died.json().await.unwrap();
    assert_eq!(body["payments_link"], "died");
    // Readiness leaves the link out (orders wait in the database), and says where it
    // stands.
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["payments_link"], "died");
    assert!(app.link.died());
}

#[tokio::test]
async fn the_service_creates_its_database_when_missing() {
    // TestApp::spawn uses a database name that does not exist yet.
    let app = TestApp::spawn(NOWHERE).await;
    let order = app.create_order(100, "EUR").await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    assert_eq!(order.status(), "pending_payment");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_orders_by_transition() {
    let app = TestApp::spawn(NOWHERE).await;
    let order = app.create_order(100, "EUR").await;
    app.order(order.id()).await;
    assert_eq!(app.get("/orders/not-a-uuid").await.status(), 404);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        r#"orders_http_requests_total{method="POST",route="/orders",status="201"} 1"#,
        r#"orders_http_requests_total{method="GET",route="/orders/{id}",status="200"} 1"#,
        r#"orders_http_requests_total{method="GET",route="/orders/{id}",status="404"} 1"#,
        r#"orders_order_transitions_total{to="pending_payment"} 1"#,
        "orders_payments_link_connected 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains("orders_http_request_duration_seconds_bucket{"),
        "{text}"
    );
}

/// The lines of the request counter in a scrape: one per series.
fn request_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("orders_http_requests_total{"))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn no_method_or_path_a_client_makes_up_adds_a_metric_series() {
    let app = TestApp::spawn(NOWHERE).await;
    let made_up = |n: usize| {
        let address = app.address.clone();
        async move {
            for _ in 0..n {
                let (method, path) = test_harness::http::made_up_request();
                test_harness::http::request(&address, &method, &path, &[], "").await;
            }
        }
    };
    made_up(1000).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let after = request_series(&text);
    // A label per method or path would make hundreds; a fixed set makes a handful per
    // status (seven method labels, one route).
    for series in &after {
        let method = series
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert!(
            ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "_OTHER"].contains(&method),
            "{series}"
        );
        assert!(
            series.contains("route=\"unmatched\"") || series.contains("route=\"/"),
            "{series}"
        );
    }
    assert!(
        after.len() <= 7 * 3 + 1,
        "{} series: {after:#?}",
        after.len()
    );
}

#[tokio::test]
async fn with_an_api_token_every_orders_route_needs_it_and_nothing_else_does() {
    let app = TestApp::spawn_with(NOWHERE, |config| {
        config.orders_api_token = Some("api-s3cr3t".into());
    })
    .await;
    let id = uuid::Uuid::new_v4();
    let order = json!({"amount": 1999, "currency": "EUR"});
    let requests = |auth: Option<&'static str>| {
        let client = &app.client;
        let with = move |request: reqwest::RequestBuilder| match auth {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        [
            with(client.post(app.url("/orders")).json(&order)),
            with(client.get(app.url("/orders"))),
            with(client.get(app.url(&format!("/orders/{id}")))),
            with(client.post(app.url(&format!("/orders/{id}/cancel")))),
            with(client.get(app.url(&format!("/orders/{id}/invoice")))),
            with(client.get(app.url("/orders/no/such/route"))),
        ]
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer api-s3cr3"),
        Some("Bearer api-s3cr3tt"),
        Some("Basic api-s3cr3t"),
        Some("api-s3cr3t"),
    ] {
        for request in requests(auth) {
            let response = request.send().await.unwrap();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer")
            );
            let (status, code, _) = error_of(response).await;
            assert_eq!((status, code.as_str()), (401, "unauthorized"), "{auth:?}");
        }
    }
    let pool = app.db.pool().await;
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "a refused POST wrote an order");

    // Probes, scrapers and the document carry no token.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let status = app.get(path).await.status().as_u16();
        assert_ne!(status, 401, "{path}");
    }

    // With the token, the API answers as without one configured.
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for request in requests(Some("Bearer api-s3cr3t")) {
            statuses.push(request.send().await.unwrap().status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [201, 200, 404, 404, 404, 404]);
}

#[tokio::test]
async fn an_empty_api_token_is_refused_at_start() {
    let db = test_harness::postgres::TestDatabase::unborn("orders");
    let mut config = helpers::test_config(NOWHERE, &db);
    config.orders_api_token = Some(" ".into());
    let error = orders::Application::build(config)
        .await
        .err()
        .expect("started with an empty API token");
    assert!(error.to_string().contains("ORDERS_API_TOKEN"), "{error}");
}
