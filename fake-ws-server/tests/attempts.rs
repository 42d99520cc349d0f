//! The attempts' log: times since the server started, gaps, how each connection
//! stands; waits on attempts (counted from the start) and assertions that none come.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{AttemptOutcome, render_transcript};

const SHORT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn the_log_shows_times_since_the_start_gaps_and_each_connection() {
    let fake = Fake::builder().start().await;
    // The client stays: stop() resets its connection, the fake's own doing.
    let (_first, _conn) = open(&fake).await;
    fake.stop().await;
    assert!(try_connect(&fake.url()).await.is_err());
    fake.restart().await;
    let (_client, _second) = open(&fake).await;

    let attempts = fake.wait_for_attempts(3).await;
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].since_start() <= w[1].since_start())
    );
    assert!(attempts[2].since_start() < Duration::from_secs(5));
    let gaps = fake.attempt_gaps();
    assert_eq!(gaps.len(), 2);
    assert_eq!(gaps[0] + gaps[1], attempts[2].at() - attempts[0].at());

    let log = fake.attempt_log();
    let lines: Vec<_> = log.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].starts_with("+0.0"), "{log}");
    assert!(
        lines[0].contains("Accepted GET /ws → connection 0, closed: the fake aborted it"),
        "{log}"
    );
    assert!(
        lines[1].contains("Refused") && lines[1].contains("(gap "),
        "{log}"
    );
    assert!(lines[2].ends_with("→ connection 1, open"), "{log}");
    assert!(!log.contains("Instant"), "{log}");
}

#[tokio::test]
async fn a_failed_next_connection_shows_the_log_not_instants() {
    let message = panic_message(async {
        let fake = Fake::builder().start().await;
        fake.reject_next_handshakes(1, 401);
        assert!(try_connect(&fake.url()).await.is_err());
        fake.next_connection_within(SHORT).await;
    })
    .await;
    assert!(message.contains("Rejected 401 GET /ws"), "{message}");
    assert!(message.contains("    +0.0"), "{message}");
    assert!(!message.contains("Instant"), "{message}");
}

#[tokio::test]
async fn wait_for_attempts_counts_from_the_start_accepted_ones_included() {
    let fake = Fake::builder().start().await;
    let (_client, _conn) = open(&fake).await;
    fake.stop().await;
    for _ in 0..2 {
        assert!(try_connect(&fake.url()).await.is_err());
    }
    let attempts = fake.wait_for_attempts(3).await;
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome().clone()).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Accepted,
            AttemptOutcome::Refused,
            AttemptOutcome::Refused
        ]
    );
    let message = panic_message(async move {
        fake.wait_for_attempts_within(4, SHORT).await;
    })
    .await;
    assert!(
        message.contains(
            "expected 4 connection attempts (since the server started) within 200ms, got 3"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn expect_no_attempt_within_fails_when_the_client_tries() {
    let fake = Fake::builder().start().await;
    fake.expect_no_attempt_within(Duration::from_millis(50))
        .await;
    let message = panic_message(async move {
        fake.refuse_connections();
        let url = fake.url();
        let quiet = fake.expect_no_attempt_within(Duration::from_secs(5));
        let _ = tokio::join!(quiet, try_connect(&url));
    })
    .await;
    assert!(
        message.contains("expected no new attempt within 5s, but one came"),
        "{message}"
    );
    assert!(message.contains("Refused"), "{message}");
}

#[tokio::test]
async fn expect_no_connection_within_lets_refused_attempts_pass() {
    let fake = Fake::builder().start().await;
    fake.refuse_connections();
    let quiet = fake.expect_no_connection_within(SHORT);
    let (_, refused) = tokio::join!(quiet, try_connect(fake.url()));
    assert!(refused.is_err());
    assert_eq!(fake.attempts().len(), 1);
    let message = panic_message(async move {
        fake.accept_connections();
        let quiet = fake.expect_no_connection_within(Duration::from_secs(5));
        let _ = tokio::join!(quiet, connect(fake.url()));
    })
    .await;
    assert!(
        message.contains("expected no new connection within 5s, but one came"),
        "{message}"
    );
}

#[tokio::test]
async fn the_transcript_renders_as_failure_messages_show_it() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    send(&mut client, &subscribe("btc")).await;
    conn.expect(subscribe_to("btc")).await;
    let rendered = render_transcript(&conn.transcript());
    assert!(
        rendered.contains(r#"client → fake  text {"type":"subscribe","topic":"btc"}"#),
        "{rendered}"
    );
}

#[tokio::test]
async fn wait_for_connections_waits_for_the_reconnect_without_checking_it() {
    let fake = Fake::builder().start().await;
    let (_first, conn) = open(&fake).await;
    conn.abort().await;
    // The client reconnects and resubscribes at once.
    let mut second = connect(&fake.url()).await;
    send(&mut second, &subscribe("btc")).await;
    fake.wait_for_connections(2).await;
    assert_eq!(fake.connection_count(), 2);
    // Nothing was handed out, so nothing was checked yet: the test takes it now.
    let reconnected = fake.next_connection().await;
    assert_eq!(reconnected.index(), 1);
    reconnected.expect(subscribe_to("btc")).await;

    let message = panic_message(async move {
        fake.wait_for_connections_within(3, SHORT).await;
    })
    .await;
    assert!(
        message.contains(
            "expected 3 WebSocket connections (since the server started) within 200ms, got 2"
        ),
        "{message}"
    );
}
