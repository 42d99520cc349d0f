//! The partial-JSON matcher `json_includes!`: on the typed layer, on raw JSON
//! (`serde_json::Value`), in rules, with no type annotations.

mod common;

use common::*;
use fake_ws_server::{FakeServer, Rule, json_includes};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn it_matches_typed_messages_by_a_subset_of_their_json() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &Up::Ack { id: 3 }).await;
    send(&mut client, &subscribe("btc")).await;
    // No annotation: the connection says what `In` is.
    let got = conn.expect(json_includes!({"type": "subscribe"})).await;
    assert_eq!(got, subscribe("btc"));
    let got = conn.expect(json_includes!({"id": 3})).await;
    assert_eq!(got, Up::Ack { id: 3 });
}

#[tokio::test]
async fn it_matches_raw_json_and_answers_in_rules() {
    let fake: FakeServer<Value, Value> = FakeServer::builder()
        .rule(
            Rule::when(
                json_includes!({"op": "subscribe", "args": {"channel": "ticker"}}),
                |m: &Value| vec![json!({"event": "subscribed", "id": m["id"]})],
            )
            .times(1),
        )
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let message =
        json!({"op": "subscribe", "id": 1, "args": {"channel": "ticker", "symbol": "BTC"}});
    client
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        conn.expect(json_includes!({"args": {"symbol": "BTC"}}))
            .await,
        message
    );
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn a_non_matching_message_is_left_alone() {
    let fake = Fake::builder().lenient().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &subscribe("eth")).await;
    let message = panic_message(async move {
        conn.expect_within(
            json_includes!({"type": "subscribe", "topic": "btc"}),
            std::time::Duration::from_millis(200),
        )
        .await;
    })
    .await;
    assert!(
        message.contains(r#"expected a message including {"topic":"btc","type":"subscribe"}"#),
        "{message}"
    );
}

#[test]
fn objects_match_a_subset_of_keys_recursively_and_arrays_and_scalars_exactly() {
    let actual = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": null});
    assert!(json_includes(&actual, &json!({})));
    assert!(json_includes(&actual, &json!({"a": {"b": 1}})));
    assert!(json_includes(
        &actual,
        &json!({"a": {"c": [1, 2]}, "e": null})
    ));
    assert!(
        !json_includes(&actual, &json!({"a": {"c": [1]}})),
        "arrays are equal or not"
    );
    assert!(!json_includes(&actual, &json!({"a": {"b": "1"}})));
    assert!(
        !json_includes(&actual, &json!({"f": null})),
        "a missing key is not null"
    );
    assert!(json_includes(&json!(5), &json!(5)));
    assert!(!json_includes(
        &json!([{"a": 1, "b": 2}]),
        &json!([{"a": 1}])
    ));
}

#[test]
#[allow(deprecated)]
fn json_contains_is_the_old_name_of_json_includes() {
    let actual = json!({"type": "subscribe", "topic": "btc"});
    assert!(fake_ws_server::json_contains(
        &actual,
        &json!({"type": "subscribe"})
    ));
    assert!(!fake_ws_server::json_contains(
        &actual,
        &json!({"type": "ack"})
    ));
}
