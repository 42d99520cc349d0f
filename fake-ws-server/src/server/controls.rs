//! Protocol controls of a [`Connection`]: a ping from the fake and the client's pong
//! ([`Connection::ping`], [`Connection::expect_pong`]), and a message sent as fragments
//! ([`Connection::send_fragmented`]).
//!
//! More methods of the handle, kept apart from the everyday ones (`connection`): they
//! go through the same [`Command`] channel, and the connection's task (`connection_task`)
//! writes the frames.

use std::fmt;
use std::panic::Location;
use std::time::Duration;

use tokio::sync::oneshot;

use super::command::Command;
use super::connection::Connection;
use super::state::{ConnState, fail_at_await, without_location};
use crate::codec::Payload;
use crate::transcript::{Direction, FrameKind};

/// Why a pong cannot be waited for.
const NO_PING: &str = "expect_pong needs a ping waiting for its pong: call `conn.ping(payload).await` first (the pings of ping_every are not awaited)";

/// The most a control frame (a ping) may carry (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

impl<In, Out> Connection<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// Sends a ping frame carrying `payload` (at most 125 bytes) and returns once it is
    /// written; [`Connection::expect_pong`] then waits for the client's answer. Pings
    /// are answered in the order they were sent.
    ///
    /// Panics when `payload` is longer than 125 bytes, which no ping may carry.
    #[track_caller]
    pub fn ping(&self, payload: impl Into<Vec<u8>>) -> impl Future<Output = ()> + Send + '_ {
        let payload = payload.into();
        let caller = Location::caller();
        assert!(
            payload.len() <= MAX_CONTROL_PAYLOAD,
            "{caller}: a ping carries at most {MAX_CONTROL_PAYLOAD} bytes, not {}: send a shorter payload",
            payload.len()
        );
        async move {
            let (done, entry) = oneshot::channel();
            if let Some(commands) = &self.inner.commands
                && commands.send(Command::Ping(payload, done)).is_ok()
                && let Ok(entry) = entry.await
            {
                self.inner
                    .pings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(entry);
            }
        }
    }

    /// Waits (up to the server's default deadline) for the client's pong to the oldest ping of
    /// [`Connection::ping`] not yet answered (a pong after it, with the same payload), and
    /// returns the round-trip time: from the ping's entry in the transcript to the pong's.
    /// A missing pong fails the test with the transcript.
    ///
    /// Panics when no ping of [`Connection::ping`] is waiting for its pong.
    #[track_caller]
    pub fn expect_pong(&self) -> impl Future<Output = Duration> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.expect_pong_within(self.inner.shared.config.deadline)
    }

    /// [`Connection::expect_pong`] with a deadline of your choosing.
    #[track_caller]
    pub fn expect_pong_within(
        &self,
        deadline: Duration,
    ) -> impl Future<Output = Duration> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        let Some(ping) = self.oldest_unanswered_ping() else {
            panic!("{caller}: {NO_PING}");
        };
        fail_at_await(self.pong_attempt(ping, deadline))
    }

    /// [`Connection::expect_pong_within`] that returns the failure (`Err`, with the
    /// transcript and without the caller's location) instead of failing the test, and
    /// an `Err` too when no ping is waiting for its pong.
    #[track_caller]
    pub fn try_expect_pong_within(
        &self,
        deadline: Duration,
    ) -> impl Future<Output = Result<Duration, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        let caller = Location::caller();
        // Called here, not in the async block or a closure, for `pong_attempt` to see
        // our caller.
        #[expect(clippy::manual_map, reason = "a closure would hide the caller")]
        let attempt = match self.oldest_unanswered_ping() {
            Some(ping) => Some(self.pong_attempt(ping, deadline)),
            None => None,
        };
        async move {
            match attempt {
                Some(attempt) => without_location(caller, attempt).await,
                None => Err(NO_PING.to_owned()),
            }
        }
    }

    /// The transcript entry of the oldest ping of [`Connection::ping`] not yet
    /// answered, taken off the queue.
    fn oldest_unanswered_ping(&self) -> Option<usize> {
        self.inner
            .pings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    #[track_caller]
    fn pong_attempt(
        &self,
        ping: usize,
        deadline: Duration,
    ) -> impl Future<Output = Result<Duration, String>> + Send + '_
    where
        In: Sync,
        Out: Sync,
    {
        self.try_wait(
            deadline,
            move |conn| pong_to(conn, ping),
            move |id| {
                format!(
                    "expected a pong to the ping of entry {ping} within {deadline:?} on connection {id}, but none came."
                )
            },
        )
    }

    /// Sends a typed message, encoded by the server's codec, as fragments of at most
    /// `fragment_size` bytes: a first text or binary frame, then continuation frames, the
    /// last one final. The transcript holds it once, noted with how many fragments.
    ///
    /// Panics when `fragment_size` is 0 or the codec cannot encode the message.
    #[track_caller]
    pub fn send_fragmented(
        &self,
        message: Out,
        fragment_size: usize,
    ) -> impl Future<Output = ()> + Send + '_ {
        let caller = Location::caller();
        let payload = self
            .inner
            .shared
            .config
            .codec
            .encode(&message)
            .unwrap_or_else(|e| {
                panic!(
                    "{caller}: the fake's codec could not encode the message to send: {e}; send raw text with send_text_fragmented instead"
                )
            });
        self.send_payload_fragmented(payload, fragment_size, caller)
    }

    /// Sends raw `text` as fragments of at most `fragment_size` bytes (a fragment may end
    /// inside a UTF-8 character: only the whole message must be valid UTF-8).
    ///
    /// Panics when `fragment_size` is 0.
    #[track_caller]
    pub fn send_text_fragmented(
        &self,
        text: impl Into<String>,
        fragment_size: usize,
    ) -> impl Future<Output = ()> + Send + '_ {
        let caller = Location::caller();
        self.send_payload_fragmented(Payload::Text(text.into()), fragment_size, caller)
    }

    #[track_caller]
    fn send_payload_fragmented(
        &self,
        payload: Payload,
        fragment_size: usize,
        caller: &'static Location<'static>,
    ) -> impl Future<Output = ()> + Send + '_ {
        assert!(
            fragment_size > 0,
            "{caller}: a fragment carries at least one byte: pass a fragment_size of 1 or more"
        );
        self.command(move |done| Command::Fragmented(payload, fragment_size, done))
    }
}

/// The transcript entry of the first pong after the ping at entry `ping` with the same
/// payload, and the time between them.
fn pong_to<In>(conn: &mut ConnState<In>, ping: usize) -> Option<Duration> {
    let sent = conn.transcript.get(ping)?;
    let FrameKind::Ping(payload) = &sent.frame else {
        return None;
    };
    conn.transcript[ping + 1..]
        .iter()
        .find(|e| {
            e.direction == Direction::FromClient
                && matches!(&e.frame, FrameKind::Pong(p) if p == payload)
        })
        .map(|pong| pong.at.saturating_sub(sent.at))
}
