//! A JSON price-feed client that reconnects and resubscribes, and its tests against
//! the fake.
//!
//! The client (written with tokio-tungstenite, knowing nothing of the fake) connects,
//! sends `{"type": "subscribe", "topic": ...}` for each of its topics, and hands every
//! `{"type": "price", ...}` the server sends to its caller. When the connection drops
//! (or cannot be made) it waits, doubling the wait from `initial` up to `max` (reset
//! after a connection succeeds), reconnects and subscribes again. A connection that
//! stays silent for `idle` is taken for dead too: an unplugged cable sends no FIN, and
//! a client that only waits for the next frame would wait forever. The tests below put
//! the fake in the server's place: they drop the connection and see the client come
//! back and send its subscriptions again, unplug the cable (the fake's blackhole) and
//! see the client notice the silence, and take the server down for a while and
//! measure the client's backoff from the fake's log of attempts; and, with paused
//! tokio time, check the whole backoff schedule (50 ms doubling to 400 ms) with
//! `assert_backoff`, in virtual time.
//!
//! Run the client against a server of your own:
//! `cargo run -p fake-ws-server --example price_feed -- ws://127.0.0.1:9000/ws BTC-USD`.
//! Its tests run with `cargo test -p fake-ws-server` (and CI's `scripts/test`, which
//! runs `cargo test --workspace`), as the `[[example]]` entry of the crate's Cargo.toml
//! sets `test = true`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Send the prices of `topic`.
    Subscribe { topic: String },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// A price of `topic`.
    Price { topic: String, price: f64 },
}

/// How long the client waits before reconnecting: `initial`, doubled after each
/// failure up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// The client's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The waits between tries.
    pub backoff: Backoff,
    /// How long a connection may stay silent (no frame at all) before the client takes
    /// it for dead and reconnects; `None`: as long as it likes.
    pub idle: Option<Duration>,
}

/// Runs the client until the receiver of `prices` is dropped: connects to `url`,
/// subscribes to `topics`, sends every price to `prices`, and reconnects (with
/// `timing.backoff`) and resubscribes whenever the connection drops or stays silent
/// for `timing.idle`.
pub async fn run(url: String, topics: Vec<String>, timing: Timing, prices: mpsc::Sender<Update>) {
    let backoff = timing.backoff;
    let mut wait = backoff.initial;
    loop {
        match session(&url, &topics, timing.idle, &prices).await {
            // The caller is gone: so is the client.
            Ok(Ended::Unwanted) => return,
            // It was connected: the next failure starts the backoff over.
            Ok(Ended::Dropped) => wait = backoff.initial,
            Err(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(backoff.max);
    }
}

/// How a session that got connected ended.
enum Ended {
    /// The connection dropped or closed: reconnect.
    Dropped,
    /// Nobody wants the prices any more.
    Unwanted,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One connection: subscribe, then forward prices until it ends or is silent for
/// `idle`.
async fn session(
    url: &str,
    topics: &[String],
    idle: Option<Duration>,
    prices: &mpsc::Sender<Update>,
) -> Result<Ended, Error> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    for topic in topics {
        let subscribe = Request::Subscribe {
            topic: topic.clone(),
        };
        ws.send(Message::Text(serde_json::to_string(&subscribe)?.into()))
            .await?;
    }
    // A timeout (silence) ends the session like a drop does.
    while let Some(Some(frame)) = next_within(&mut ws, idle).await {
        let Ok(Message::Text(text)) = frame else {
            // Pings are answered by tungstenite; an error ends the session.
            if frame.is_err() {
                break;
            }
            continue;
        };
        // A message the client does not know is skipped, not fatal.
        if let Ok(update) = serde_json::from_str::<Update>(text.as_str())
            && prices.send(update).await.is_err()
        {
            return Ok(Ended::Unwanted);
        }
    }
    Ok(Ended::Dropped)
}

/// The next frame of `ws`, or `None` after `idle` of silence.
async fn next_within<S: StreamExt + Unpin>(
    ws: &mut S,
    idle: Option<Duration>,
) -> Option<Option<S::Item>> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, ws.next()).await.ok(),
        None => Some(ws.next().await),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9000/ws".into());
    let topics: Vec<String> = args.collect();
    let (tx, mut rx) = mpsc::channel(64);
    let timing = Timing {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        },
        idle: Some(Duration::from_secs(30)),
    };
    tokio::spawn(run(url, topics, timing, tx));
    while let Some(Update::Price { topic, price }) = rx.recv().await {
        println!("{topic} {price}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake_ws_server::{
        AttemptOutcome, Backoff as ExpectedBackoff, Connection, FakeServer, Tolerance,
        json_includes,
    };

    type Fake = FakeServer<Request, Update>;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };

    /// Short, so that a test of a silent connection is quick; the fake sends a price
    /// only when a test says so, so the tests that keep a connection wait less than it.
    const IDLE: Option<Duration> = Some(Duration::from_millis(1500));

    /// Starts the client against `fake`; the prices it receives come out of the receiver.
    fn start_client(fake: &Fake) -> mpsc::Receiver<Update> {
        start_client_idle(fake, IDLE)
    }

    /// [`start_client`] with its idle timeout.
    fn start_client_idle(fake: &Fake, idle: Option<Duration>) -> mpsc::Receiver<Update> {
        let (tx, rx) = mpsc::channel(16);
        let topics = vec!["BTC-USD".to_owned(), "ETH-USD".to_owned()];
        let timing = Timing {
            backoff: BACKOFF,
            idle,
        };
        tokio::spawn(run(fake.url(), topics, timing, tx));
        rx
    }

    /// The client subscribes to both topics, in order, and gets a price through.
    async fn subscribed_and_served(
        conn: &Connection<Request, Update>,
        rx: &mut mpsc::Receiver<Update>,
    ) {
        conn.expect_next(json_includes!({"type": "subscribe", "topic": "BTC-USD"}))
            .await;
        conn.expect_next(json_includes!({"type": "subscribe", "topic": "ETH-USD"}))
            .await;
        let price = Update::Price {
            topic: "BTC-USD".into(),
            price: 101.5,
        };
        conn.send(price.clone())
            .await
            .expect("the client is connected");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a price within 5 s");
        assert_eq!(got, Some(price));
    }

    #[tokio::test]
    async fn after_a_drop_it_reconnects_and_subscribes_again() {
        let fake = Fake::builder().start().await;
        let mut rx = start_client(&fake);
        let first = fake.next_connection().await;
        subscribed_and_served(&first, &mut rx).await;

        // The server drops the connection without a close frame.
        first.abort().await;
        let second = fake.next_connection().await;
        assert_eq!(second.index(), 1);
        subscribed_and_served(&second, &mut rx).await;
    }

    #[tokio::test]
    async fn when_the_cable_is_pulled_it_notices_the_silence_and_reconnects() {
        let fake = Fake::builder().start().await;
        let mut rx = start_client(&fake);
        let first = fake.next_connection().await;
        subscribed_and_served(&first, &mut rx).await;

        // Unplugged: nothing passes either way, and no FIN, RST or close frame tells
        // the client. Only its idle timeout can: it reconnects on a second connection
        // while the first one is still open on the fake's side.
        first.blackhole();
        let second = fake.next_connection().await;
        assert_eq!(second.index(), 1);
        subscribed_and_served(&second, &mut rx).await;
        // Plugged back in: the first connection's end (the client gave up on it) now
        // reaches the fake.
        first.heal();
        first.wait_closed().await;
    }

    #[tokio::test]
    async fn through_an_outage_it_backs_off_and_comes_back() {
        let fake = Fake::builder().start().await;
        let mut rx = start_client(&fake);
        let first = fake.next_connection().await;
        subscribed_and_served(&first, &mut rx).await;

        // Down: the connection is reset and every try fails, until the fake is back.
        fake.stop().await;
        let attempts = fake.wait_for_attempts(5).await;
        let refused: Vec<_> = attempts[1..]
            .iter()
            .filter(|a| *a.outcome() == AttemptOutcome::Refused)
            .collect();
        assert_eq!(refused.len(), 4, "{attempts:#?}");
        // Each wait at least the backoff of its turn: 50, 100, 200 ms (generous: only
        // lower bounds, and the client's own time on top).
        for (i, pair) in refused.windows(2).enumerate() {
            let gap = pair[1].at() - pair[0].at();
            let least = BACKOFF.initial * 2u32.pow(i as u32 + 1);
            assert!(
                gap >= least.min(BACKOFF.max),
                "wait {i} was {gap:?}: {attempts:#?}"
            );
        }

        fake.restart().await;
        let back = fake.next_connection().await;
        subscribed_and_served(&back, &mut rx).await;
    }

    /// With paused time the client's sleeps pass at once, and the fake stamps attempts
    /// on the test's (virtual) clock: the gaps are the backoff to the millisecond, so
    /// the tolerance can be tight without making the test flaky.
    #[tokio::test(start_paused = true)]
    async fn its_backoff_doubles_up_to_the_cap_in_virtual_time() {
        let fake = Fake::builder().start().await;
        fake.refuse_connections();
        // No idle timeout: a paused runtime moves its clock to the next timer whenever
        // it waits, so the timeout would fire while the fake is still reading the
        // subscriptions, and the client would reconnect.
        let _rx = start_client_idle(&fake, None);
        // Refused, then 50, 100, 200, 400, 400 ms later: refused again.
        fake.wait_for_attempts(6).await;
        fake.assert_backoff(
            ExpectedBackoff::exponential(BACKOFF.initial)
                .factor(2.0)
                .cap(BACKOFF.max),
            Tolerance::percent(5),
        );

        fake.accept_connections();
        let back = fake.next_connection().await;
        back.expect_next(json_includes!({"type": "subscribe", "topic": "BTC-USD"}))
            .await;
        back.expect_next(json_includes!({"type": "subscribe", "topic": "ETH-USD"}))
            .await;
    }
}
