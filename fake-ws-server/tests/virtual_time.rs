//! Virtual time: attempts and transcripts are stamped on the test's tokio clock, so a
//! test with paused time (`start_paused = true`) sees a client's virtual delays as the
//! gaps, over a real socket, in (real) milliseconds.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{Backoff, Direction, FrameKind, Tolerance};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// How far a recorded gap may be from the virtual delay: the timer wheel rounds a
/// sleep's deadline up to the millisecond.
const TICK: Duration = Duration::from_millis(2);

/// A client that tries to connect, and after each failure sleeps the next of `delays`
/// (on the test's clock); it returns the connection if one attempt succeeds.
async fn reconnect(url: String, delays: Vec<Duration>) -> Option<Client> {
    for delay in delays {
        if let Ok(client) = try_connect(&url).await {
            return Some(client);
        }
        tokio::time::sleep(delay).await;
    }
    try_connect(&url).await.ok()
}

#[tokio::test(start_paused = true)]
async fn the_gaps_are_the_clients_virtual_delays() {
    let fake = Fake::builder().start().await;
    fake.refuse_connections();
    let delays: Vec<_> = [1, 2, 4, 8].map(Duration::from_secs).into();
    let real = std::time::Instant::now();
    let client = tokio::spawn(reconnect(fake.url(), delays.clone()));

    fake.wait_for_attempts(5).await;
    assert!(client.await.unwrap().is_none());

    let gaps = fake.attempt_gaps();
    assert_eq!(gaps.len(), delays.len(), "{}", fake.attempt_log());
    for (gap, delay) in gaps.iter().zip(&delays) {
        assert!(gap.abs_diff(*delay) <= TICK, "{gap:?} for {delay:?}");
    }
    // 15 s of backoff on the test's clock, well under that on the wall clock.
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "{:?}",
        real.elapsed()
    );
    let log = fake.attempt_log();
    assert!(log.contains("+15.0"), "{log}");
    fake.assert_backoff(
        Backoff::exponential(Duration::from_secs(1)),
        Tolerance::absolute(TICK),
    );
}

#[tokio::test(start_paused = true)]
async fn a_capped_backoff_that_ends_in_a_connection_passes() {
    let fake = Fake::builder().start().await;
    fake.reject_next_handshakes(4, 503);
    let delays: Vec<_> = [100, 300, 500, 500].map(Duration::from_millis).into();
    let client = tokio::spawn(reconnect(fake.url(), delays));

    let _conn = fake.next_connection().await;
    assert!(client.await.unwrap().is_some());
    fake.assert_backoff(
        Backoff::exponential(Duration::from_millis(100))
            .factor(3.0)
            .cap(Duration::from_millis(500)),
        Tolerance::percent(20),
    );
}

#[tokio::test(start_paused = true)]
async fn a_backoff_that_does_not_grow_fails_with_a_table_and_the_log() {
    let fake = Fake::builder().start().await;
    fake.refuse_connections();
    let delays = vec![Duration::from_secs(1); 3];
    tokio::spawn(reconnect(fake.url(), delays));
    fake.wait_for_attempts(4).await;

    let line = line!() + 2;
    let message = panic_of(|| {
        fake.assert_backoff(
            Backoff::exponential(Duration::from_secs(1)),
            Tolerance::percent(20),
        )
    });
    assert!(
        message.starts_with(&format!("{}:{line}:", file!())),
        "{message}"
    );
    assert!(
        message.contains("not a backoff of 1s × 2 ± 20 %"),
        "{message}"
    );
    let rows: Vec<_> = message.lines().map(str::split_whitespace).collect();
    let row = |n: usize| rows[n].clone().collect::<Vec<_>>().join(" ");
    assert_eq!(row(1), "gap expected actual (± 20 %)", "{message}");
    assert_eq!(row(2), "1 1.000s 1.000s ok", "{message}");
    assert_eq!(row(3), "2 2.000s 1.000s OUT OF TOLERANCE", "{message}");
    assert_eq!(row(4), "3 4.000s 1.000s OUT OF TOLERANCE", "{message}");
    assert!(message.contains("the attempts:\n"), "{message}");
    assert_eq!(message.matches("Refused").count(), 4, "{message}");
}

#[tokio::test]
async fn a_backoff_needs_two_attempts() {
    let fake = Fake::builder().start().await;
    let _client = connect(&fake.url()).await;
    fake.wait_for_attempts(1).await;
    let message = panic_of(|| {
        fake.assert_backoff(
            Backoff::constant(Duration::from_secs(1)),
            Tolerance::percent(10),
        )
    });
    assert!(
        message.contains("there were 1 attempts, no gap to check"),
        "{message}"
    );
    assert!(message.contains("Accepted GET /ws"), "{message}");
}

/// A heartbeat: a ping, then the wait for its pong, at each of `every` (on the test's
/// clock); then a `subscribe` to say it is done. Waiting for the pong is what keeps the
/// times exact: see the README's caveats.
async fn heartbeat(mut client: Client, every: Vec<Duration>) -> Client {
    for delay in every {
        tokio::time::sleep(delay).await;
        send_frame(&mut client, Message::Ping(Vec::new().into())).await;
        while !matches!(client.next().await, Some(Ok(Message::Pong(_))) | None) {}
    }
    send(&mut client, &subscribe("done")).await;
    client
}

#[tokio::test(start_paused = true)]
async fn pings_every_30_seconds_pass_at_once() {
    let fake = Fake::builder().start().await;
    let (client, conn) = open(&fake).await;
    let real = std::time::Instant::now();
    let _client = tokio::spawn(heartbeat(client, vec![Duration::from_secs(30); 4]));

    conn.expect(any_subscribe()).await;
    conn.assert_ping_interval(Duration::from_secs(30), Tolerance::percent(10));
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "{:?}",
        real.elapsed()
    );
    let pings: Vec<_> = conn
        .transcript()
        .into_iter()
        .filter(|e| e.direction == Direction::FromClient && matches!(e.frame, FrameKind::Ping(_)))
        .map(|e| e.at)
        .collect();
    assert_eq!(pings.len(), 4);
    assert!(
        pings[3].abs_diff(Duration::from_secs(120)) <= TICK,
        "{pings:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_ping_fails_with_the_intervals_and_the_transcript() {
    let fake = Fake::builder().start().await;
    let (client, conn) = open(&fake).await;
    let every = [30, 30, 45].map(Duration::from_secs).into();
    let _client = tokio::spawn(heartbeat(client, every));
    conn.expect(any_subscribe()).await;

    let line = line!() + 2;
    let message =
        panic_of(|| conn.assert_ping_interval(Duration::from_secs(30), Tolerance::percent(10)));
    assert!(
        message.starts_with(&format!("{}:{line}:", file!())),
        "{message}"
    );
    assert!(
        message.contains("the client's pings did not come every 30s ± 10 %"),
        "{message}"
    );
    let rows: Vec<_> = message.lines().map(str::split_whitespace).collect();
    let row = |n: usize| rows[n].clone().collect::<Vec<_>>().join(" ");
    assert_eq!(row(2), "1 30.000s 30.000s ok", "{message}");
    assert_eq!(row(3), "2 30.000s 45.000s OUT OF TOLERANCE", "{message}");
    assert!(message.contains("transcript:\n"), "{message}");
    assert!(message.contains("client → fake  ping"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_message_can_be_timed_too() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    for id in 0..3 {
        send(&mut client, &Up::Ack { id }).await;
        // The fake stamps the message when it reads it: wait for that before sleeping.
        conn.expect(fake_ws_server::Matcher::new("that ack", move |m| {
            *m == Up::Ack { id }
        }))
        .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let acks = fake_ws_server::Matcher::new("any ack", |m| matches!(m, Up::Ack { .. }));
    conn.assert_interval(
        acks.clone(),
        Duration::from_secs(10),
        Tolerance::absolute(TICK),
    );
    let message = panic_of(|| {
        conn.assert_interval(
            acks.clone(),
            Duration::from_secs(20),
            Tolerance::percent(10),
        )
    });
    assert!(
        message.contains("the client's messages matching any ack did not come every 20s"),
        "{message}"
    );
}

/// The message of the panic `f` raises.
fn panic_of(f: impl FnOnce()) -> String {
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("should have failed");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}
