//! The server's log of connection attempts, seen from the [`FakeServer`] handle: the
//! attempts themselves, the gaps between them, the log as text, and waits and
//! assertions on the attempts and connections to come, none of which hands out a
//! connection (for a test of a client's
//! reconnects and backoff).
//!
//! The accept loop (`accept`) records every attempt in the shared state (`state`);
//! this file only reads and waits on it.

use std::fmt;
use std::panic::Location;
use std::time::Duration;

use super::FakeServer;
use super::handshake::{Attempt, render_attempts};
use super::state::{State, fail_at_await, wait_for, wait_or_fail, without_location};
use crate::timing::{Backoff, Tolerance, gap_table};

/// The attempts' log of the server whose state is `state`: one attempt a line, times
/// since the server started, the gaps, and how every accepted connection stands.
pub(super) fn attempt_log<In, Out>(state: &State<In, Out>) -> String {
    let closed: Vec<_> = state.connections.iter().map(|c| c.closed.clone()).collect();
    render_attempts(&state.attempts, &closed)
}

impl<In, Out> FakeServer<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// Every handshake attempt so far, oldest first, accepted ones included.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.lock().attempts.clone()
    }

    /// The time between each attempt and the one before it (one fewer than the
    /// attempts): a client's backoff, to assert on.
    pub fn attempt_gaps(&self) -> Vec<Duration> {
        let state = self.shared.lock();
        state
            .attempts
            .windows(2)
            .map(|w| w[1].at.saturating_duration_since(w[0].at))
            .collect()
    }

    /// The attempts so far as failure messages show them, one a line: the time since
    /// the server started, the outcome and request, the gap since the attempt before,
    /// and for an accepted one its connection and whether it is open or how it closed:
    ///
    /// ```text
    ///     +0.000s Accepted GET /ws → connection 0, closed: the client dropped it without a close frame
    ///     +0.051s Refused (reset before the handshake) (gap 51 ms)
    ///     +0.153s Accepted GET /ws (gap 102 ms) → connection 1, open
    /// ```
    pub fn attempt_log(&self) -> String {
        attempt_log(&self.shared.lock())
    }

    /// Waits (up to the server's default deadline) until at least `n` connection
    /// attempts were recorded **since the server started**, whatever their outcome
    /// (accepted connections count too: a client that connected once and then retried
    /// twice made 3), and returns them all, oldest first. To wait for `n` more than
    /// now, add `fake.attempts().len()`.
    #[track_caller]
    pub fn wait_for_attempts(
        &self,
        n: usize,
    ) -> impl std::future::Future<Output = Vec<Attempt>> + Send + '_ {
        self.wait_for_attempts_within(n, self.shared.config.deadline)
    }

    /// [`FakeServer::wait_for_attempts`] with a deadline of your choosing.
    #[track_caller]
    pub fn wait_for_attempts_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Vec<Attempt>> + Send + '_ {
        fail_at_await(self.attempts_attempt(n, deadline))
    }

    /// [`FakeServer::wait_for_attempts_within`] that returns the failure (`Err`, with
    /// the attempts' log and without the caller's location) instead of failing the
    /// test.
    #[track_caller]
    pub fn try_wait_for_attempts_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<Attempt>, String>> + Send + '_ {
        without_location(Location::caller(), self.attempts_attempt(n, deadline))
    }

    #[track_caller]
    fn attempts_attempt(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<Attempt>, String>> + Send + '_ {
        let caller = Location::caller();
        wait_or_fail(
            &self.shared,
            &self.runtime,
            caller,
            deadline,
            move |state| (state.attempts.len() >= n).then(|| state.attempts.clone()),
            move |state| {
                format!(
                    "expected {n} connection attempts (since the server started) within {deadline:?}, got {}:\n{}",
                    state.attempts.len(),
                    attempt_log(state)
                )
            },
        )
    }

    /// Waits (up to the server's default deadline) until at least `n` WebSocket
    /// connections were accepted **since the server started**, without handing any out:
    /// "wait for the reconnect". Unlike `fake.next_connection().await;`, which hands out
    /// a [`Connection`](super::Connection) whose drop, at the end of that statement,
    /// checks the connection at once (and fails when the client already sent
    /// something), this leaves every connection to a later
    /// [`FakeServer::next_connection`], or to the server's own check at drop.
    #[track_caller]
    pub fn wait_for_connections(
        &self,
        n: usize,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.wait_for_connections_within(n, self.shared.config.deadline)
    }

    /// [`FakeServer::wait_for_connections`] with a deadline of your choosing.
    #[track_caller]
    pub fn wait_for_connections_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        fail_at_await(self.connections_attempt(n, deadline))
    }

    /// [`FakeServer::wait_for_connections_within`] that returns the failure (`Err`,
    /// with the attempts' log and without the caller's location) instead of failing
    /// the test.
    #[track_caller]
    pub fn try_wait_for_connections_within(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + '_ {
        without_location(Location::caller(), self.connections_attempt(n, deadline))
    }

    #[track_caller]
    fn connections_attempt(
        &self,
        n: usize,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + '_ {
        let caller = Location::caller();
        wait_or_fail(
            &self.shared,
            &self.runtime,
            caller,
            deadline,
            move |state| (state.connections.len() >= n).then_some(()),
            move |state| {
                format!(
                    "expected {n} WebSocket connections (since the server started) within {deadline:?}, got {}; the attempts:\n{}",
                    state.connections.len(),
                    attempt_log(state)
                )
            },
        )
    }

    /// Fails the test if the client tries to connect (any attempt, whatever its
    /// outcome) within `duration` from now: a client that should have given up, or
    /// should still be backing off.
    #[track_caller]
    pub fn expect_no_attempt_within(
        &self,
        duration: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.expect_none_within(duration, "attempt", |state| state.attempts.len())
    }

    /// Fails the test if a WebSocket connection is accepted within `duration` from now
    /// (attempts that are refused, rejected or hung do not count).
    #[track_caller]
    pub fn expect_no_connection_within(
        &self,
        duration: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.expect_none_within(duration, "connection", |state| state.connections.len())
    }

    /// Fails the test if `count` grows within `duration`.
    #[track_caller]
    fn expect_none_within(
        &self,
        duration: Duration,
        what: &'static str,
        count: fn(&State<In, Out>) -> usize,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        let caller = Location::caller();
        let before = count(&self.shared.lock());
        fail_at_await(async move {
            let came = wait_for(&self.shared, &self.runtime, Some(duration), |state| {
                (count(state) > before).then_some(())
            })
            .await;
            match came {
                None => Ok(()),
                Some(()) => Err(format!(
                    "{caller}: expected no new {what} within {duration:?}, but one came; the attempts:\n{}",
                    self.attempt_log()
                )),
            }
        })
    }
}

impl<In, Out> FakeServer<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// Fails the test unless every gap between attempts so far
    /// ([`FakeServer::attempt_gaps`]) is `backoff`'s, within `tolerance`: the `n`th gap
    /// against [`Backoff::gap`]`(n)`. At least two attempts are needed (one gap). The
    /// failure shows expected against actual, gap by gap, and the attempts' log.
    ///
    /// Gaps are on the test's clock: with paused time, the client's virtual delays.
    #[track_caller]
    pub fn assert_backoff(&self, backoff: Backoff, tolerance: Tolerance) {
        let caller = Location::caller();
        let gaps = self.attempt_gaps();
        let failure = if gaps.is_empty() {
            Some(format!(
                "{caller}: expected a backoff of {backoff}, but there were {} attempts, no gap to check; the attempts:\n{}",
                self.attempts().len(),
                self.attempt_log()
            ))
        } else {
            let pairs = gaps
                .iter()
                .enumerate()
                .map(|(n, gap)| (backoff.gap(n), *gap));
            gap_table("gap", pairs, tolerance).map(|table| {
                format!(
                    "{caller}: the gaps between attempts are not a backoff of {backoff} {tolerance}:\n{table}\nthe attempts:\n{}",
                    self.attempt_log()
                )
            })
        };
        if let Some(message) = failure {
            panic!("{message}");
        }
    }
}
