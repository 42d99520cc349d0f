//! Network impairment of one connection: [`Impairment`] (latency, jitter, a bandwidth
//! limit) with [`Connection::impair`], and a blackhole, a cable unplugged, with
//! [`Connection::blackhole`] and [`Connection::heal`]. The handle changes the
//! connection's link (`link`) directly, not through its task: a heal gets through
//! even while the task waits on a send the blackhole holds.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use super::connection::Connection;
use super::link::LinkControl;

/// The longest a link delays anything, whatever the settings: a day (so no setting
/// overflows a clock).
const MAX_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Latency, jitter and a bandwidth limit for a connection's traffic, both ways
/// ([`Connection::impair`]). Built from [`Impairment::latency`] (or
/// `Impairment::default()`, a clean link), then [`Impairment::jitter`] and
/// [`Impairment::bandwidth`].
///
/// Each direction (the fake's writes to the client, the client's bytes to the fake)
/// is delayed on its own: a byte goes on once the link carried it at the bandwidth
/// (bytes queue behind one another, as on a wire) and then `latency` plus a random
/// extra of up to `jitter` passed. Order is kept, as on TCP: no byte overtakes one
/// before it. The latency is one-way, so a ping's round trip takes at least twice it.
/// Each delay (the wire's, and latency with jitter) is capped at a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Impairment {
    latency: Duration,
    jitter: Duration,
    /// Bytes a second; `None`: no limit.
    bandwidth: Option<u64>,
}

impl Impairment {
    /// A link that delays every byte, each way, by `latency`.
    pub fn latency(latency: Duration) -> Self {
        Impairment {
            latency,
            ..Impairment::default()
        }
    }

    /// Adds to each delay a random extra between zero and `jitter` (uniform), so the
    /// latency is a lower bound and `latency + jitter` an upper one (with no bandwidth
    /// limit). Order is kept: a byte that drew a short delay waits for the ones before.
    pub fn jitter(self, jitter: Duration) -> Self {
        Impairment { jitter, ..self }
    }

    /// Limits each direction to `bytes_per_sec` bytes a second: a message of `n`
    /// bytes takes at least `n / bytes_per_sec` to go through, on top of the latency.
    ///
    /// Panics when `bytes_per_sec` is 0, which would carry nothing: use
    /// [`Connection::blackhole`] for that.
    #[track_caller]
    pub fn bandwidth(self, bytes_per_sec: u64) -> Self {
        assert!(
            bytes_per_sec > 0,
            "{}: a bandwidth of 0 carries nothing: use conn.blackhole() for a dead link",
            Location::caller()
        );
        Impairment {
            bandwidth: Some(bytes_per_sec),
            ..self
        }
    }

    /// How long the wire takes to carry `bytes` bytes.
    pub(super) fn transmit_time(&self, bytes: usize) -> Duration {
        match self.bandwidth {
            Some(rate) => Duration::try_from_secs_f64(bytes as f64 / rate as f64)
                .map_or(MAX_DELAY, |time| time.min(MAX_DELAY)),
            None => Duration::ZERO,
        }
    }

    /// The delay of one segment after the wire carried it: the latency and a draw of
    /// the jitter.
    pub(super) fn delay(&self) -> Duration {
        let jitter = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            rand::random_range(0..=jitter)
        };
        self.latency
            .saturating_add(Duration::from_nanos(extra))
            .min(MAX_DELAY)
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "latency {:?}, jitter {:?}", self.latency, self.jitter)?;
        match self.bandwidth {
            Some(rate) => write!(f, ", {rate} bytes/s"),
            None => f.write_str(", no bandwidth limit"),
        }
    }
}

impl<In, Out> Connection<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// The connection's link.
    fn link(&self) -> Arc<LinkControl> {
        self.inner.shared.lock().connections[self.index()]
            .link
            .clone()
    }

    /// From now on the connection's traffic goes through a slow link, both ways: see
    /// [`Impairment`] for what each setting does. Takes effect at once (no awaiting):
    /// for every byte written or read from now on; what was already written to the
    /// socket is not called back. Replaces any impairment set before. Independent of
    /// [`Connection::blackhole`], [`Connection::stop_reading`] and
    /// [`Connection::stop_answering_pings`], which still do what they do (a pong the
    /// fake does send goes through the slow link). Each direction holds at most 1 MiB
    /// in flight; past that, a send waits for room (as one to a full socket does), and
    /// the fake stops reading the socket until there is room (so the client's writes
    /// block once the kernel's buffers fill).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use fake_ws_server::{FakeServer, Impairment};
    /// use futures_util::StreamExt;
    /// use serde_json::{Value, json};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// let conn = fake.next_connection().await;
    ///
    /// conn.impair(Impairment::latency(Duration::from_millis(100)).jitter(Duration::from_millis(20)));
    /// let sent = Instant::now();
    /// conn.send(json!({"type": "price"})).await.unwrap();
    /// client.next().await.unwrap().unwrap();
    /// assert!(sent.elapsed() >= Duration::from_millis(100));
    /// # }
    /// ```
    pub fn impair(&self, impairment: Impairment) {
        self.link().impair(Some(impairment));
    }

    /// Back to a clean link after [`Connection::impair`]: what it still holds goes on
    /// at once, in order, and then bytes pass straight through. A blackhole stays until
    /// [`Connection::heal`].
    pub fn clear_impairment(&self) {
        self.link().impair(None);
    }

    /// Unplugs the cable, in one call: from now on nothing passes either way, and
    /// nothing says so. The fake sends no FIN and no RST (the socket stays open), no
    /// close frame, and answers no ping (it does not even read them); the client sees
    /// silence, and only its own heartbeat or timeout can tell. Takes effect at once
    /// (no awaiting), for what is written or read from now on.
    ///
    /// What is sent meanwhile is held, as TCP holds unacknowledged data to send again:
    /// the fake's sends (its pings, pongs and frames, even a close) return as usual but
    /// wait in the link, and the client's bytes wait unread in the socket. On
    /// [`Connection::heal`] both go on, in order. If the client gives up and closes or
    /// drops the connection meanwhile, the fake finds out only after the heal. At most
    /// 1 MiB of the fake's sends is held: past it a send waits until the heal (so does
    /// every command behind it, but not `heal`). What the client sends waits in the
    /// kernel's buffers, so its writes block once they are full, as they would. A reset
    /// ([`Connection::abort`]) still resets, dropping what is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use fake_ws_server::FakeServer;
    /// use futures_util::{SinkExt, StreamExt};
    /// use serde_json::{Value, json};
    /// use tokio_tungstenite::tungstenite::Message;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fake = FakeServer::<Value, Value>::builder().start().await;
    /// let (mut client, _) = tokio_tungstenite::connect_async(fake.url()).await.unwrap();
    /// let conn = fake.next_connection().await;
    ///
    /// conn.blackhole();
    /// client.send(Message::Ping(b"anyone?".to_vec().into())).await.unwrap();
    /// conn.send(json!({"type": "price"})).await.unwrap();
    /// // No pong, no price, no close, no EOF: silence.
    /// let silence = tokio::time::timeout(Duration::from_millis(200), client.next()).await;
    /// assert!(silence.is_err());
    ///
    /// conn.heal();
    /// // What was held comes through: the price, then the pong to the ping the fake
    /// // reads only now.
    /// assert!(matches!(client.next().await, Some(Ok(Message::Text(_)))));
    /// assert!(matches!(client.next().await, Some(Ok(Message::Pong(_)))));
    /// # }
    /// ```
    pub fn blackhole(&self) {
        self.link().blackhole(true);
    }

    /// Plugs the cable back in after [`Connection::blackhole`]: what was held both
    /// ways goes on, in order (through the [`Impairment`], if one is set), and traffic
    /// flows again. Does nothing on a link that is not blackholed.
    pub fn heal(&self) {
        self.link().blackhole(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delays_stay_within_the_settings_and_a_day() {
        let impairment = Impairment::latency(Duration::from_millis(10))
            .jitter(Duration::from_millis(5))
            .bandwidth(1000);
        for _ in 0..100 {
            let delay = impairment.delay();
            assert!(delay >= Duration::from_millis(10) && delay <= Duration::from_millis(15));
        }
        assert_eq!(impairment.transmit_time(500), Duration::from_millis(500));
        let extreme = Impairment::latency(Duration::MAX)
            .jitter(Duration::MAX)
            .bandwidth(1);
        assert_eq!(extreme.delay(), MAX_DELAY);
        assert_eq!(extreme.transmit_time(usize::MAX), MAX_DELAY);
    }
}
