//! The contract from an AsyncAPI 3 document (feature `asyncapi`): this repository's
//! `docs/asyncapi.yaml` and the `protocol.schema.json` it references, copied to
//! `tests/fixtures/asyncapi/` (the packaged crate cannot reach `../docs`; a workspace
//! test in e2e keeps the copies equal to the originals).

use std::path::{Path, PathBuf};

use fake_ws_server::testing::{connect, panic_message, send_frame};
use fake_ws_server::{AsyncApi, FakeServer, FrameKind, json_includes};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/asyncapi")
        .join(name)
}

/// The Payments link's contract, from Orders' side: its `send` operations are what
/// the client (Orders) sends.
fn payments_link() -> AsyncApi {
    AsyncApi::from_path(fixture("asyncapi.yaml"))
        .expect("the fixture loads")
        .describing_the_client()
}

fn initiate_payment() -> Value {
    json!({
        "type": "initiate_payment",
        "order_id": "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f",
        "amount": 1999,
        "currency": "EUR"
    })
}

async fn fake_with(contract: AsyncApi) -> FakeServer<Value, Value> {
    FakeServer::json()
        .path("/ws")
        .asyncapi(contract)
        .start()
        .await
}

#[tokio::test]
async fn a_message_the_document_allows_reaches_the_test() {
    let fake = fake_with(payments_link()).await;
    let mut client = connect(fake.url()).await;
    let conn = fake.next_connection().await;
    send_frame(&mut client, Message::text(initiate_payment().to_string())).await;
    send_frame(
        &mut client,
        Message::text(r#"{"type":"ack","event_id":42}"#),
    )
    .await;
    conn.expect(json_includes!({"type": "initiate_payment", "amount": 1999}))
        .await;
    conn.expect(json_includes!({"type": "ack"})).await;
}

#[tokio::test]
async fn a_malformed_message_is_a_contract_violation_naming_the_schema_error() {
    let fake = fake_with(payments_link()).await;
    let mut client = connect(fake.url()).await;
    let conn = fake.next_connection().await;
    let mut no_amount = initiate_payment();
    no_amount.as_object_mut().unwrap().remove("amount");
    send_frame(&mut client, Message::text(no_amount.to_string())).await;

    let invalid = conn.expect_invalid().await;
    assert_eq!(invalid.frame, FrameKind::Text(no_amount.to_string()));
    let error = &invalid.error;
    assert!(error.contains(r#"channel "payments""#), "{error}");
    assert!(error.contains("initiate_payment: "), "{error}");
    assert!(
        error.contains(r#""amount" is a required property"#),
        "{error}"
    );
}

#[tokio::test]
async fn a_message_only_the_server_sends_is_a_violation_from_the_client() {
    let fake = fake_with(payments_link()).await;
    let mut client = connect(fake.url()).await;
    let conn = fake.next_connection().await;
    let state = json!({"type": "payment_state", "event_id": 1,
        "order_id": "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f", "state": "paid"});
    send_frame(&mut client, Message::text(state.to_string())).await;
    let error = conn.expect_invalid().await.error;
    assert!(error.contains("fits no message a client sends"), "{error}");
    // Each of the four messages Orders may send was tried.
    for name in [
        "initiate_payment",
        "select_payment_method",
        "cancel_payment",
        "ack",
    ] {
        assert!(
            error.contains(&format!("{name}: ")),
            "{name} not tried: {error}"
        );
    }
    assert!(!error.contains("payment_state: "), "{error}");
}

#[tokio::test]
async fn the_side_the_document_describes_decides_which_messages_are_the_clients() {
    // Read as a server's document (the default), its `receive` operations are what a
    // client sends: payment_methods is then allowed, initiate_payment is not.
    let server_view = AsyncApi::from_path(fixture("asyncapi.yaml")).unwrap();
    let fake = fake_with(server_view).await;
    let mut client = connect(fake.url()).await;
    let conn = fake.next_connection().await;
    send_frame(&mut client, Message::text(initiate_payment().to_string())).await;
    let methods = json!({"type": "payment_methods",
        "order_id": "7d3c1e2a-5b6f-4c1d-9e8f-0a1b2c3d4e5f", "methods": ["card"]});
    send_frame(&mut client, Message::text(methods.to_string())).await;
    let error = conn.expect_invalid().await.error;
    assert!(error.contains("fits no message a client sends"), "{error}");
    assert!(error.contains("payment_methods: "), "{error}");
    assert!(!error.contains("initiate_payment: "), "{error}");
    conn.expect(json_includes!({"type": "payment_methods"}))
        .await;
}

#[tokio::test]
async fn an_untaken_violation_fails_the_drop_check() {
    let message = panic_message(async {
        let fake = fake_with(payments_link()).await;
        let mut client = connect(fake.url()).await;
        let conn = fake.next_connection().await;
        send_frame(&mut client, Message::text(r#"{"type":"ack"}"#)).await;
        conn.wait_for_frames(1).await;
        drop(conn);
        drop(fake);
    })
    .await;
    assert!(message.contains("contract violation"), "{message}");
    assert!(
        message.contains(r#""event_id" is a required property"#),
        "{message}"
    );
}

#[tokio::test]
async fn a_path_no_channel_has_is_a_violation_listing_the_addresses() {
    let fake = FakeServer::json()
        .path("/ws")
        .also_path("/other")
        .asyncapi(payments_link())
        .start()
        .await;
    let mut client = connect(fake.url_for("/other")).await;
    let conn = fake.next_connection().await;
    send_frame(&mut client, Message::text(initiate_payment().to_string())).await;
    let error = conn.expect_invalid().await.error;
    assert!(
        error.contains(
            r#"no channel of the AsyncAPI document has the address "/other" (addresses: "/ws")"#
        ),
        "{error}"
    );
}

#[test]
fn a_channel_address_matches_its_parameters_as_one_segment() {
    let document = r#"
asyncapi: 3.0.0
info: {title: rooms, version: 1.0.0}
channels:
  room:
    address: /rooms/{room}
    messages:
      say: {$ref: '#/components/messages/say'}
components:
  messages:
    say:
      payload: {type: object, required: [text], properties: {text: {type: string}}}
"#;
    let api = AsyncApi::from_yaml_str(document).expect("loads");
    assert_eq!(api.check("/rooms/rust", r#"{"text":"hi"}"#), Ok(()));
    assert_eq!(api.check("/rooms/rust?token=1", r#"{"text":"hi"}"#), Ok(()));
    assert!(
        api.check("/rooms/rust", r#"{"text":1}"#)
            .unwrap_err()
            .contains("at /text")
    );
    assert!(api.check("/rooms", r#"{"text":"hi"}"#).is_err());
    assert!(api.check("/rooms/a/b", r#"{"text":"hi"}"#).is_err());
    assert!(
        api.check("/rooms/rust", "not json")
            .unwrap_err()
            .contains("not JSON")
    );
}

#[test]
fn documents_it_cannot_take_are_refused_with_the_reason() {
    let cases = [
        ("channels: [", "the document:"),
        (
            "asyncapi: 2.6.0\nchannels: {}",
            "an AsyncAPI 2.6.0 document; this fake reads AsyncAPI 3",
        ),
        ("openapi: 3.1.0", "no `asyncapi` version field"),
        (
            "asyncapi: 3.0.0\nchannels:\n  c:\n    address: /c\n    messages:\n      m: {$ref: '#/components/messages/missing'}",
            "$ref #/components/messages/missing points at nothing",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  c:\n    address: /c\n    messages:\n      m: {$ref: '#/components/messages/m'}\ncomponents:\n  messages:\n    m:\n      payload: {$ref: './elsewhere.json#/x'}",
            "its payload schema does not compile",
        ),
    ];
    for (document, expected) in cases {
        let error = AsyncApi::from_yaml_str(document).unwrap_err().to_string();
        assert!(error.contains(expected), "{document:?}: {error}");
    }
    let missing = AsyncApi::from_path(fixture("no-such-file.yaml")).unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}
