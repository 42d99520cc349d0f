//! Timing assertions on one connection: the intervals between the client's pings, or
//! between its messages that match a matcher (a heartbeat), on the test's clock.

use std::fmt;
use std::panic::Location;
use std::time::Duration;

use super::Connection;
use crate::matcher::Matcher;
use crate::timing::{Tolerance, gap_table};
use crate::transcript::{Direction, FrameKind};

impl<In, Out> Connection<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// Fails the test unless the client's pings on this connection so far came every
    /// `every`, within `tolerance`: `assert_ping_interval(Duration::from_secs(30),
    /// Tolerance::percent(10))`. At least two pings are needed (one interval). The
    /// failure shows expected against actual, interval by interval, and the transcript.
    ///
    /// Times are on the test's clock: with paused time, 30 s heartbeats run at once.
    #[track_caller]
    pub fn assert_ping_interval(&self, every: Duration, tolerance: Tolerance) {
        let caller = Location::caller();
        let times = self.times_of(|frame, _| matches!(frame, FrameKind::Ping(_)));
        self.assert_intervals(caller, "pings", &times, every, tolerance);
    }

    /// [`Connection::assert_ping_interval`] for the client's messages that `matcher`
    /// matches (an application-level heartbeat): they came every `every`, within
    /// `tolerance`.
    #[track_caller]
    pub fn assert_interval(&self, matcher: Matcher<In>, every: Duration, tolerance: Tolerance) {
        let caller = Location::caller();
        let times = self.times_of(|_, message| message.is_some_and(|m| matcher.matches(m)));
        let what = format!("messages matching {}", matcher.description());
        self.assert_intervals(caller, &what, &times, every, tolerance);
    }

    /// When the client sent the frames that `wanted` takes (given the frame and, for a
    /// message, what it decoded to), since the connection was accepted.
    fn times_of(&self, wanted: impl Fn(&FrameKind, Option<&In>) -> bool) -> Vec<Duration> {
        let state = self.inner.shared.lock();
        let connection = &state.connections[self.index()];
        let decoded = |entry: usize| {
            connection
                .inbound
                .iter()
                .find(|inbound| inbound.entry == entry)
                .and_then(|inbound| inbound.message.as_ref())
        };
        connection
            .transcript
            .iter()
            .enumerate()
            .filter(|(_, e)| e.direction == Direction::FromClient)
            .filter(|(n, e)| wanted(&e.frame, decoded(*n)))
            .map(|(_, e)| e.at)
            .collect()
    }

    /// Fails the test at `caller` unless the intervals between `times` are `every`
    /// within `tolerance`.
    fn assert_intervals(
        &self,
        caller: &Location<'_>,
        what: &str,
        times: &[Duration],
        every: Duration,
        tolerance: Tolerance,
    ) {
        let intervals: Vec<_> = times
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect();
        let failure = if intervals.is_empty() {
            Some(format!(
                "{caller}: expected {what} every {every:?} {tolerance}, but the client sent {}, no interval to check",
                times.len()
            ))
        } else {
            let pairs = intervals.iter().map(|actual| (every, *actual));
            gap_table("interval", pairs, tolerance).map(|table| {
                format!("{caller}: the client's {what} did not come every {every:?} {tolerance}:\n{table}")
            })
        };
        if let Some(message) = failure {
            let state = self.inner.shared.lock();
            let message = state.connections[self.index()].failure(message);
            drop(state);
            panic!("{message}");
        }
    }
}
