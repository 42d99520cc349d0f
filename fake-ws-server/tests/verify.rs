//! Verification at drop: what the client sent and nobody looked at fails the test,
//! with the transcript, pointing at the test; never a second panic.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn an_unread_message_fails_the_test_at_drop() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &subscribe("btc")).await;
    send(&mut client, &Up::Ack { id: 3 }).await;
    conn.expect(ack_of(3)).await;
    let message = panic_message(async move { drop(fake) }).await;
    assert!(
        message.contains("no expectation or rule looked at"),
        "{message}"
    );
    assert!(message.contains("subscribe"), "{message}");
    assert!(
        message.contains("verify.rs"),
        "does not point at where the fake started: {message}"
    );
}

#[tokio::test]
async fn a_frame_outside_the_protocol_is_a_contract_violation_even_when_lenient() {
    let fake = Fake::builder().lenient().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    client
        .send(Message::Text(json!({"type": "refund"}).to_string().into()))
        .await
        .unwrap();
    client.send(Message::Binary(vec![0].into())).await.unwrap();
    conn.wait_for_frames(2).await;
    let problems = fake.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("contract violation") && problems[0].contains("refund"));
    assert!(problems[1].contains("binary"));
    let message = panic_message(async move { drop(fake) }).await;
    assert!(message.contains("contract violation"), "{message}");
}

#[tokio::test]
async fn a_failing_test_is_not_masked_by_a_second_panic_at_drop() {
    // Had the fake panicked again while unwinding, the process would abort here.
    let message = panic_message(async {
        let fake = Fake::builder().start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        send(&mut client, &subscribe("btc")).await;
        conn.wait_for_frames(1).await;
        assert!(!fake.problems().is_empty());
        panic!("the test's own failure");
    })
    .await;
    assert_eq!(message, "the test's own failure");
}

#[tokio::test]
async fn dropping_the_last_connection_handle_reports_its_unread_frames_once() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let line = line!() - 1;
    let clone = conn.clone();
    send(&mut client, &subscribe("btc")).await;
    conn.wait_for_frames(1).await;
    drop(clone);
    let message = panic_message(async move { drop(conn) }).await;
    assert!(
        message.contains("no expectation or rule looked at"),
        "{message}"
    );
    assert!(
        message.contains(&format!("verify.rs:{line}:")),
        "does not point at next_connection: {message}"
    );
    // Already reported: the fake itself has nothing more to say.
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}
