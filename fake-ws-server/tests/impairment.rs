//! Network impairment: latency, a bandwidth limit, and a blackhole that can be healed,
//! against a real client. Timings are asserted as lower bounds only (a slow machine
//! only makes things later), with the window of silence a condition with a deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_ws_server::{Direction, FrameKind, Impairment};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Timer granularity: a delay may end this much before its nominal time.
const SLACK: Duration = Duration::from_millis(5);

fn price(price: u64) -> Down {
    Down::Price {
        topic: "btc".into(),
        price,
    }
}

#[tokio::test]
async fn latency_delays_what_the_fake_sends_by_at_least_the_latency() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    let latency = Duration::from_millis(150);
    conn.impair(Impairment::latency(latency).jitter(Duration::from_millis(30)));

    let sent = Instant::now();
    conn.send(price(1)).await.unwrap();
    // A send does not wait out the latency: the link holds the frame.
    assert!(sent.elapsed() < latency, "{:?}", sent.elapsed());
    assert_eq!(receive(&mut client).await, price(1));
    let took = sent.elapsed();
    assert!(took + SLACK >= latency, "arrived after {took:?}");
}

#[tokio::test]
async fn latency_delays_what_the_client_sends_and_both_ways_add_up_for_a_ping() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    let latency = Duration::from_millis(100);
    conn.impair(Impairment::latency(latency));

    let sent = Instant::now();
    send(&mut client, &subscribe("btc")).await;
    conn.expect(subscribe_to("btc")).await;
    assert!(sent.elapsed() + SLACK >= latency, "{:?}", sent.elapsed());

    // One way each: the pong comes back after at least twice the latency.
    let pinged = Instant::now();
    client
        .send(Message::Ping(b"rtt".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
    assert!(matches!(pong, Ok(Some(Ok(Message::Pong(_))))), "{pong:?}");
    assert!(
        pinged.elapsed() + SLACK >= 2 * latency,
        "{:?}",
        pinged.elapsed()
    );

    // Cleared: traffic flows straight through again.
    conn.clear_impairment();
    conn.send(price(2)).await.unwrap();
    assert_eq!(receive(&mut client).await, price(2));
}

#[tokio::test]
async fn a_bandwidth_limit_makes_a_large_message_take_at_least_size_over_rate() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    let rate = 1_000_000; // bytes a second
    let size = 300_000;
    conn.impair(Impairment::default().bandwidth(rate));

    let sent = Instant::now();
    conn.send_text("x".repeat(size)).await.unwrap();
    let text = receive_text(&mut client).await;
    let took = sent.elapsed();
    assert_eq!(text.len(), size);
    let least = Duration::from_secs_f64(size as f64 / rate as f64);
    assert!(
        took + SLACK >= least,
        "{size} bytes at {rate} B/s took {took:?}"
    );
}

#[tokio::test]
async fn a_blackhole_passes_nothing_either_way_and_never_closes_until_healed() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.blackhole();

    client
        .send(Message::Ping(b"anyone?".to_vec().into()))
        .await
        .unwrap();
    send(&mut client, &subscribe("btc")).await;
    conn.send(price(1)).await.unwrap();
    // Nothing comes: no pong, no price, no close frame, no EOF, no error, within the
    // window (a frame, an end or an error would all end the wait early).
    let silence = tokio::time::timeout(Duration::from_millis(400), client.next()).await;
    assert!(
        silence.is_err(),
        "the client saw {silence:?} through a blackhole"
    );
    // And the client's frames did not reach the fake.
    conn.expect_silence(Duration::from_millis(100)).await;
    assert!(
        !conn
            .transcript()
            .iter()
            .any(|e| e.direction == Direction::FromClient),
        "{:?}",
        conn.transcript()
    );
    assert!(conn.is_open());

    conn.heal();
    // What was held goes on, in order: the price first (the fake's), then the pong to
    // the ping the fake reads only now.
    assert_eq!(receive(&mut client).await, price(1));
    let pong = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
    assert!(
        matches!(&pong, Ok(Some(Ok(Message::Pong(p)))) if p.as_ref() == b"anyone?"),
        "{pong:?}"
    );
    conn.expect(subscribe_to("btc")).await;
    // And traffic flows again.
    conn.send(price(2)).await.unwrap();
    assert_eq!(receive(&mut client).await, price(2));
    send(&mut client, &subscribe("eth")).await;
    conn.expect(subscribe_to("eth")).await;
}

#[tokio::test]
async fn a_blackhole_sends_no_fin_so_the_client_can_still_write() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.blackhole();
    conn.close(1000, "held").await.unwrap();
    // Not even the close frame gets out, so the client neither sees it nor an EOF,
    // and its writes still succeed (a FIN or RST would make them fail in time).
    for i in 0..20 {
        send(&mut client, &Up::Ack { id: i }).await;
    }
    let silence = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(
        silence.is_err(),
        "the client saw {silence:?} through a blackhole"
    );
    assert!(!conn.transcript().iter().any(
        |e| matches!(e.frame, FrameKind::Close { .. }) && e.direction == Direction::FromClient
    ));
    conn.heal();
    let frame = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
    assert!(
        matches!(frame, Ok(Some(Ok(Message::Close(Some(_)))))),
        "{frame:?}"
    );
    for i in 0..20 {
        conn.expect(ack_of(i)).await;
    }
}

#[tokio::test]
async fn heal_gets_through_while_a_send_waits_on_a_full_blackhole() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.blackhole();
    // Over the 1 MiB the link holds: the send waits until the heal.
    let big = "y".repeat(1_200_000);
    let mut sending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.send_text(big).await }
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut sending).await;
    assert!(
        waited.is_err(),
        "a send past the hold limit returned during the blackhole: {waited:?}"
    );
    conn.heal();
    let text = receive_text(&mut client).await;
    assert_eq!(text.len(), 1_200_000);
    tokio::time::timeout(Duration::from_secs(5), sending)
        .await
        .expect("the send returned after the heal")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_connection_that_stops_reading_still_lets_out_what_the_link_holds() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.impair(Impairment::latency(Duration::from_millis(100)));
    conn.stop_reading().await;
    // Not reading, so only the task's wait on the link lets the frame out.
    conn.send(price(1)).await.unwrap();
    assert_eq!(receive(&mut client).await, price(1));
}

#[tokio::test]
async fn the_close_handshake_completes_through_latency() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.impair(Impairment::latency(Duration::from_millis(100)));
    client.close(None).await.unwrap();
    // The fake's answer is held in the link when its WebSocket ends: it still goes
    // out, and the client sees a close frame, then the end.
    let frame = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
    assert!(
        matches!(frame, Ok(Some(Ok(Message::Close(_))))),
        "{frame:?}"
    );
    assert_eq!(
        conn.wait_closed().await,
        fake_ws_server::Closed::FrameWithoutCode
    );
}

#[tokio::test]
async fn the_builders_impairment_slows_every_connection_after_its_handshake() {
    // Long enough that a handshake through it (two round trips' worth) stands out
    // from a slow machine's.
    let latency = Duration::from_millis(300);
    let fake = Fake::builder()
        .impairment(Impairment::latency(latency))
        .start()
        .await;
    for _ in 0..2 {
        let connecting = Instant::now();
        let (mut client, conn) = open(&fake).await;
        // The handshake is not slowed (it would take twice the latency).
        assert!(
            connecting.elapsed() < 2 * latency,
            "{:?}",
            connecting.elapsed()
        );
        let sent = Instant::now();
        conn.send(price(1)).await.unwrap();
        assert_eq!(receive(&mut client).await, price(1));
        assert!(sent.elapsed() + SLACK >= latency, "{:?}", sent.elapsed());
    }
}
