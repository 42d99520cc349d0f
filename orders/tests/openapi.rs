//! The OpenAPI document: served, complete against HTTP-API.md, and the committed
//! snapshot under `docs/` kept current.

mod helpers;

use std::path::PathBuf;

use helpers::TestApp;
use serde_json::Value;

const UPDATE: &str = "UPDATE_DOCS=1 cargo test -p orders --test openapi";

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/orders-openapi.json")
}

#[test]
fn the_committed_snapshot_is_current() {
    let generated = orders::openapi::document() + "\n";
    let path = snapshot_path();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `{UPDATE}` and commit it",
        path.display()
    );
}

#[tokio::test]
async fn every_route_of_the_api_is_in_the_served_document() {
    let app = TestApp::spawn("ws://127.0.0.1:9/ws").await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("/orders", "post"),
        ("/orders", "get"),
        ("/orders/{id}", "get"),
        ("/orders/{id}/cancel", "post"),
        ("/orders/{id}/invoice", "get"),
        ("/orders/{id}/retry", "post"),
        ("/orders/{id}/incidents", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is missing"
        );
    }
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        expected.len(),
        "undocumented extras: {:?}",
        paths.keys()
    );
    // Each error answer points at the one error shape.
    let create = &doc["paths"]["/orders"]["post"]["responses"];
    for status in ["400", "409", "413", "415", "422"] {
        assert_eq!(
            create[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "POST /orders {status}"
        );
    }
    assert!(doc["components"]["schemas"]["Order"]["properties"]["status"].is_object());
}
