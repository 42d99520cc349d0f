//! Deadlines: every wait takes the server's default deadline (`default_deadline`, 5 s
//! unless set), or its own with `_within`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_ws_server::DEFAULT_DEADLINE;

const SHORT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn the_default_deadline_is_five_seconds_unless_the_builder_says() {
    assert_eq!(DEFAULT_DEADLINE, Duration::from_secs(5));
    assert_eq!(
        Fake::builder().start().await.default_deadline(),
        DEFAULT_DEADLINE
    );
    let fake = Fake::builder().default_deadline(SHORT).start().await;
    assert_eq!(fake.default_deadline(), SHORT);
}

#[tokio::test]
async fn recv_fails_when_nothing_comes_within_the_default_deadline() {
    let message = panic_message(async {
        let fake = Fake::builder().default_deadline(SHORT).start().await;
        let _client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        let got = conn.recv().await;
        unreachable!("recv returned {got:?}");
    })
    .await;
    assert!(
        message.contains("expected a message (or the end) of connection 0 within 200ms"),
        "{message}"
    );
    assert!(message.contains("deadlines.rs"), "{message}");
}

#[tokio::test]
async fn recv_returns_none_once_the_connection_ended_and_nothing_is_left() {
    let fake = Fake::builder().default_deadline(SHORT).start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, &subscribe("a")).await;
    client.close(None).await.unwrap();
    assert_eq!(conn.recv().await, Some(subscribe("a")));
    assert_eq!(conn.recv().await, None);
}

#[tokio::test]
async fn every_wait_takes_the_default_deadline() {
    async fn fails_within_the_default<F>(wait: impl FnOnce(Fake) -> F + Send + 'static) -> String
    where
        F: std::future::Future<Output = ()> + Send,
    {
        let started = Instant::now();
        let message = panic_message(async move {
            let fake = Fake::builder().default_deadline(SHORT).start().await;
            wait(fake).await;
        })
        .await;
        // Generous: far less than the 5 s it would have taken without the builder's say.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(message.contains("200ms"), "{message}");
        message
    }
    fails_within_the_default(|fake| async move {
        fake.next_connection().await;
    })
    .await;
    for which in 0..4 {
        fails_within_the_default(move |fake| async move {
            let _client = connect(&fake.url()).await;
            let conn = fake.next_connection().await;
            match which {
                0 => drop(conn.expect(subscribe_to("a")).await),
                1 => drop(conn.expect_next(subscribe_to("a")).await),
                2 => drop(conn.expect_invalid().await),
                _ => conn.wait_for_frames(1).await,
            }
        })
        .await;
    }
    fails_within_the_default(|fake| async move {
        let _client = connect(&fake.url()).await;
        let conn = fake.next_connection().await;
        conn.wait_closed().await;
    })
    .await;
}

#[tokio::test]
async fn a_within_overrides_the_default() {
    let fake = Fake::builder().default_deadline(SHORT).start().await;
    let url = fake.url();
    let client = tokio::spawn(async move {
        // Later than the default deadline, well within the override.
        tokio::time::sleep(SHORT * 3).await;
        let mut client = connect(&url).await;
        send(&mut client, &subscribe("late")).await;
        client
    });
    let conn = fake.next_connection_within(Duration::from_secs(10)).await;
    conn.expect_within(subscribe_to("late"), Duration::from_secs(10))
        .await;
    drop(client.await.unwrap());
}
