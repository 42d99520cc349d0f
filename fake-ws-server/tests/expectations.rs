//! Expectations: `expect`, `expect_silence`, `expect_invalid`, `recv`, `allow`, and
//! what a failed one says.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{FrameKind, Matcher};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn expect_times_out_with_the_matcher_the_deadline_and_the_transcript() {
    let message = panic_message(async {
        let fake = Fake::builder().start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        send(&mut client, &Up::Ack { id: 9 }).await;
        conn.expect_within(subscribe_to("btc"), Duration::from_millis(300))
            .await;
    })
    .await;
    assert!(
        message.contains("expected subscribe to btc within 300ms"),
        "{message}"
    );
    assert!(
        message.contains(r#"{"type":"ack","id":9}"#),
        "no transcript in: {message}"
    );
    assert!(
        message.contains("expectations.rs"),
        "does not point at the test: {message}"
    );
}

#[tokio::test]
async fn expect_silence_fails_when_the_client_speaks() {
    let fake = Fake::builder().lenient().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.expect_silence(Duration::from_millis(200)).await;

    let message = panic_message(async move {
        let speaker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            send(&mut client, &Up::Ack { id: 1 }).await;
            client
        });
        conn.expect_silence(Duration::from_secs(3)).await;
        drop(speaker);
    })
    .await;
    assert!(message.contains("expected silence"), "{message}");
}

#[tokio::test]
async fn expect_takes_the_first_match_and_leaves_earlier_frames_for_later() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &subscribe("a")).await;
    send(&mut client, &subscribe("b")).await;
    conn.expect(subscribe_to("b")).await;
    assert_eq!(conn.expect(Matcher::any()).await, subscribe("a"));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn allowed_messages_and_recv_keep_a_strict_fake_quiet() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    conn.allow(subscribe_to("btc"));
    send(&mut client, &subscribe("btc")).await;
    send(
        &mut client,
        &Up::Unsubscribe {
            topic: "btc".into(),
        },
    )
    .await;
    assert_eq!(conn.recv().await, Some(subscribe("btc")));
    assert_eq!(
        conn.recv().await,
        Some(Up::Unsubscribe {
            topic: "btc".into()
        })
    );
    drop(client);
    assert_eq!(conn.recv().await, None, "closed and drained");
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn an_invalid_frame_can_be_expected_instead_of_failing_the_test() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    client
        .send(Message::Text(r#"{"type":"refund"}"#.into()))
        .await
        .unwrap();
    client.send(Message::Binary(vec![7].into())).await.unwrap();
    let first = conn.expect_invalid().await;
    assert_eq!(first.frame, FrameKind::Text(r#"{"type":"refund"}"#.into()));
    assert!(!first.error.is_empty());
    assert_eq!(
        conn.expect_invalid().await.frame,
        FrameKind::Binary(vec![7])
    );
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn expect_next_takes_messages_in_their_order() {
    let fake = Fake::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &subscribe("a")).await;
    client
        .send(Message::Text("not a message".into()))
        .await
        .unwrap();
    send(&mut client, &subscribe("b")).await;
    assert_eq!(conn.expect_next(subscribe_to("a")).await, subscribe("a"));
    // An invalid frame is not a message: not in the way.
    assert_eq!(conn.expect_next(subscribe_to("b")).await, subscribe("b"));
    conn.expect_invalid().await;
}

#[tokio::test]
async fn expect_next_fails_at_once_showing_what_came_instead() {
    let message = panic_message(async {
        let fake = Fake::builder().lenient().start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        send(&mut client, &subscribe("a")).await;
        send(&mut client, &subscribe("b")).await;
        // `expect` would find it; `expect_next` insists on the order.
        conn.expect_next(subscribe_to("b")).await;
    })
    .await;
    assert!(
        message
            .contains("expected the next message on connection 0 to be subscribe to b, but it was"),
        "{message}"
    );
    assert!(
        message.contains(r#"but it was:"#)
            && message.contains(r#"{"type":"subscribe","topic":"a"}"#),
        "{message}"
    );
    assert!(message.contains("expectations.rs"), "{message}");
}

#[tokio::test]
async fn a_failed_expectation_shows_a_diff_against_the_closest_message() {
    let message = panic_message(async {
        let fake = Fake::builder().lenient().start().await;
        let mut client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        send(&mut client, &Up::Ack { id: 1 }).await;
        send(&mut client, &subscribe("eth")).await;
        send(&mut client, &Up::Ack { id: 2 }).await;
        conn.expect_within(
            fake_ws_server::json_includes!({"type": "subscribe", "topic": "btc"}),
            Duration::from_millis(300),
        )
        .await;
    })
    .await;
    // The transcript, and the closest message (the subscribe, not an ack) diffed.
    assert!(message.contains("transcript:"), "{message}");
    assert!(
        message.contains("the closest message not yet taken"),
        "{message}"
    );
    assert!(message.contains(r#"-   "topic": "btc","#), "{message}");
    assert!(message.contains(r#"+   "topic": "eth","#), "{message}");
    assert!(message.contains(r#"    "type": "subscribe""#), "{message}");
    assert!(
        !message.contains(r#""id": 1"#),
        "diffed against an ack: {message}"
    );
}

#[tokio::test]
async fn a_server_wide_allow_covers_every_connection() {
    let fake = Fake::builder().start().await;
    fake.allow(ack_of(1));
    let (mut first, conn) = open(&fake).await;
    let (mut second, other) = open(&fake).await;
    send(&mut first, &Up::Ack { id: 1 }).await;
    send(&mut second, &Up::Ack { id: 1 }).await;
    send(&mut second, &Up::Ack { id: 2 }).await;
    conn.wait_for_frames(1).await;
    other.wait_for_frames(2).await;
    let problems = fake.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(r#""id":2"#), "{problems:?}");
    other.expect(ack_of(2)).await;
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}
