//! The admin API's OpenAPI document: the committed `openapi.json` is what the code
//! generates, and what the binary serves.

mod common;

use std::path::PathBuf;

use common::Fake;

const UPDATE: &str = "UPDATE_DOCS=1 cargo test -p fake-ws-server-cli --test openapi";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn the_committed_document_is_current() {
    let generated = fake_ws_server_cli::openapi::document() + "\n";
    let path = committed_path();
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
async fn the_binary_serves_it() {
    let fake = Fake::spawn(&[]).await;
    let (status, served) = fake.get("/openapi.json").await;
    assert_eq!(status, 200);
    let generated: serde_json::Value =
        serde_json::from_str(&fake_ws_server_cli::openapi::document()).unwrap();
    assert_eq!(served, generated);
    assert!(served["paths"]["/connections/{id}/expect"]["post"].is_object());
}
