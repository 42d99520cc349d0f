//! The rule count has its own name, `times`, and the builder's modifiers apply to the
//! rule mounted just before them, of either kind: a handshake rule gets its count
//! (checked at drop) and its name, and a modifier only message rules have panics
//! after a handshake rule instead of changing an earlier rule.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use common::*;
use fake_ws_server::{HandshakeRule, Rule};
use tokio_tungstenite::tungstenite::Error as WsError;

#[tokio::test]
async fn times_after_a_handshake_rule_counts_that_rule() {
    let fake = Fake::builder()
        .on(any_subscribe(), subscribed)
        .handshake_rule(HandshakeRule::reject(401).up_to_n_times(1))
        .times(1)
        .start()
        .await;
    match try_connect(&fake.url()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // The message rule was given no count: it never fired, and that is fine.
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn a_handshake_rule_that_did_not_answer_often_enough_fails_at_drop() {
    let fake = Fake::builder()
        .handshake_rule(HandshakeRule::reject(503))
        .named("busy")
        .times(1..)
        .start()
        .await;
    let problems = fake.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(r#"the handshake rule "busy" rejecting with 503"#)
            && problems[0].contains("answered 0 times, expected at least 1"),
        "{problems:?}"
    );
    assert!(problems[0].contains("rule_counts.rs"), "{problems:?}");
    let message = panic_message(async move { drop(fake) }).await;
    assert!(message.contains("answered 0 times"), "{message}");

    // Mounted on the running server, with the rule's own `times`.
    let fake = Fake::builder().start().await;
    fake.mount_handshake_rule(HandshakeRule::reject(401).times(2));
    assert!(try_connect(&fake.url()).await.is_err());
    assert!(fake.problems()[0].contains("answered 1 times, expected 2"));
    assert!(try_connect(&fake.url()).await.is_err());
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[test]
fn a_modifier_of_message_rules_after_a_handshake_rule_panics_at_the_call() {
    let panic = catch_unwind(AssertUnwindSafe(|| {
        let _ = Fake::builder()
            .on(any_subscribe(), subscribed)
            .handshake_rule(HandshakeRule::reject(401))
            .delay(Duration::from_millis(10));
    }))
    .expect_err("delay after a handshake rule");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("delay applies to message rules"),
        "{message}"
    );
    let panic = catch_unwind(AssertUnwindSafe(|| drop(Fake::builder().times(1))))
        .expect_err("times before any rule");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("mount one with `on`, `rule` or `handshake_rule` first"));
}

#[tokio::test]
async fn times_on_the_builder_and_on_a_rule_set_the_count() {
    let fake = Fake::builder()
        .on(subscribe_to("btc"), subscribed)
        .times(2)
        .rule(Rule::when(subscribe_to("eth"), subscribed).times(0))
        .start()
        .await;
    let (mut client, _conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    receive(&mut client).await;
    let problems = fake.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("fired 1 times, expected 2"),
        "{problems:?}"
    );
    send(&mut client, &subscribe("btc")).await;
    receive(&mut client).await;
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
#[allow(deprecated)]
async fn expect_is_still_the_count_for_one_release() {
    let fake = Fake::builder()
        .on(subscribe_to("btc"), subscribed)
        .expect(1)
        .rule(Rule::when(subscribe_to("eth"), subscribed).expect(1))
        .start()
        .await;
    assert_eq!(fake.problems().len(), 2, "{:?}", fake.problems());
    let message = panic_message(async move { drop(fake) }).await;
    assert!(message.contains("fired 0 times, expected 1"), "{message}");
}
