//! Rules: automatic replies, how often they must fire, and how late they answer.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{Matcher, Rule};

#[tokio::test]
async fn a_rule_answers_and_its_expected_count_is_checked() {
    let fake = Fake::builder()
        .rule(Rule::when(subscribe_to("btc"), subscribed).times(1))
        .start()
        .await;
    let (mut client, _conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    assert_eq!(
        receive(&mut client).await,
        Down::Subscribed {
            topic: "btc".into()
        }
    );
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());

    // A rule that should have fired twice is reported.
    let strict = Fake::builder()
        .rule(Rule::when(Matcher::any(), |_| Vec::new()).times(2))
        .start()
        .await;
    let (mut client, conn) = open(&strict).await;
    send(&mut client, &subscribe("btc")).await;
    conn.wait_for_frames(1).await;
    drop(client);
    let message = panic_message(async move { drop(strict) }).await;
    assert!(message.contains("fired 1 times, expected 2"), "{message}");
}

#[tokio::test]
async fn a_delayed_rule_answers_later() {
    let fake = Fake::builder()
        .rule(Rule::when(subscribe_to("btc"), subscribed).delay(Duration::from_millis(300)))
        .start()
        .await;
    let (mut client, _conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    assert_no_frame(
        &mut client,
        Duration::from_millis(100),
        "answered before the delay",
    )
    .await;
    assert!(matches!(
        receive(&mut client).await,
        Down::Subscribed { .. }
    ));
}

#[tokio::test]
async fn builder_shorthands_count_and_delay_the_rule_just_mounted() {
    let fake = Fake::builder()
        .on(subscribe_to("btc"), subscribed)
        .times(2)
        .delay(Duration::from_millis(200))
        .start()
        .await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    assert_no_frame(
        &mut client,
        Duration::from_millis(50),
        "answered before the delay",
    )
    .await;
    assert!(matches!(
        receive(&mut client).await,
        Down::Subscribed { .. }
    ));
    conn.wait_for_frames(2).await;
    assert_eq!(fake.problems().len(), 1, "{:?}", fake.problems());
    send(&mut client, &subscribe("btc")).await;
    receive(&mut client).await;
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn a_message_a_rule_answered_is_passed_over_by_expect_next_and_recv() {
    let fake = Fake::builder()
        .on(subscribe_to("btc"), subscribed)
        .start()
        .await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    send(&mut client, &Up::Ack { id: 1 }).await;
    send(&mut client, &subscribe("btc")).await;
    send(&mut client, &Up::Ack { id: 2 }).await;
    receive(&mut client).await;
    // The answered subscribe is the rule's: the next message is the ack.
    assert_eq!(conn.expect_next(ack_of(1)).await, Up::Ack { id: 1 });
    assert_eq!(conn.recv().await, Some(Up::Ack { id: 2 }));
    // `expect` can still take an answered message, to assert that it came.
    assert_eq!(conn.expect(subscribe_to("btc")).await, subscribe("btc"));
    client.close(None).await.unwrap();
    assert_eq!(conn.recv().await, None);
}
