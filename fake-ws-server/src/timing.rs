//! Timing expectations: [`Backoff`], the delays a reconnecting client should wait,
//! and [`Tolerance`], how far a measured gap may stray from the expected one; and the
//! table a timing failure shows.

use std::fmt;
use std::time::Duration;

/// The delays a client should wait between connection attempts, for
/// [`FakeServer::assert_backoff`](crate::FakeServer::assert_backoff): the `n`th gap
/// (from 0) is `initial × factor^n`, at most `cap`.
///
/// `Backoff::exponential(Duration::from_millis(100)).factor(2.0).cap(Duration::from_secs(10))`
/// expects 100 ms, 200 ms, 400 ms, … 10 s, 10 s; `Backoff::constant(d)` expects `d`
/// every time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    factor: f64,
    cap: Option<Duration>,
}

impl Backoff {
    /// Gaps starting at `initial`, doubling each time (change with
    /// [`Backoff::factor`]), without a cap (set one with [`Backoff::cap`]).
    pub fn exponential(initial: Duration) -> Self {
        Backoff {
            initial,
            factor: 2.0,
            cap: None,
        }
    }

    /// The same gap every time.
    pub fn constant(every: Duration) -> Self {
        Backoff {
            initial: every,
            factor: 1.0,
            cap: None,
        }
    }

    /// Each gap is the one before times `factor` (2.0 unless set).
    #[track_caller]
    pub fn factor(self, factor: f64) -> Self {
        assert!(
            factor.is_finite() && factor >= 1.0,
            "Backoff::factor({factor}): the factor must be finite and at least 1"
        );
        Backoff { factor, ..self }
    }

    /// No gap longer than `cap`.
    pub fn cap(self, cap: Duration) -> Self {
        Backoff {
            cap: Some(cap),
            ..self
        }
    }

    /// The expected `n`th gap (from 0).
    pub fn gap(&self, n: usize) -> Duration {
        let power = i32::try_from(n).unwrap_or(i32::MAX);
        let seconds = self.initial.as_secs_f64() * self.factor.powi(power);
        let cap = self.cap.unwrap_or(Duration::MAX).as_secs_f64();
        Duration::try_from_secs_f64(seconds.min(cap)).unwrap_or(Duration::MAX)
    }
}

impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} × {}", self.initial, self.factor)?;
        if let Some(cap) = self.cap {
            write!(f, " (at most {cap:?})")?;
        }
        Ok(())
    }
}

/// How far a measured gap may stray from the expected one:
/// [`Tolerance::percent`] of it, or a fixed [`Tolerance::absolute`] amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance(Slack);

/// A [`Tolerance`]'s slack; private, so that a percentage is always checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slack {
    /// Within this percentage of the expected gap, either way.
    Percent(f64),
    /// Within this much of the expected gap, either way.
    Absolute(Duration),
}

impl Tolerance {
    /// Within `percent` % of the expected gap, either way: `percent(10)` takes 27 s
    /// to 33 s for 30 s.
    #[track_caller]
    pub fn percent(percent: impl Into<f64>) -> Self {
        let percent = percent.into();
        assert!(
            percent.is_finite() && percent >= 0.0,
            "Tolerance::percent({percent}): the percentage must be finite and not negative"
        );
        Tolerance(Slack::Percent(percent))
    }

    /// Within `slack` of the expected gap, either way.
    pub fn absolute(slack: Duration) -> Self {
        Tolerance(Slack::Absolute(slack))
    }

    /// The gaps that meet `expected` with this tolerance, both ends included.
    pub fn bounds(&self, expected: Duration) -> (Duration, Duration) {
        let slack = match self.0 {
            Slack::Percent(percent) => {
                Duration::try_from_secs_f64(expected.as_secs_f64() * percent / 100.0)
                    .unwrap_or(Duration::MAX)
            }
            Slack::Absolute(slack) => slack,
        };
        (
            expected.saturating_sub(slack),
            expected.saturating_add(slack),
        )
    }

    /// Whether `actual` meets `expected` with this tolerance.
    pub fn accepts(&self, expected: Duration, actual: Duration) -> bool {
        let (low, high) = self.bounds(expected);
        (low..=high).contains(&actual)
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Slack::Percent(percent) => write!(f, "± {percent} %"),
            Slack::Absolute(slack) => write!(f, "± {slack:?}"),
        }
    }
}

/// The table of a timing check: one row a gap, expected and actual, out-of-tolerance
/// rows marked; `None` when every gap is within tolerance.
pub(crate) fn gap_table(
    what: &str,
    pairs: impl Iterator<Item = (Duration, Duration)>,
    tolerance: Tolerance,
) -> Option<String> {
    let mut failed = false;
    let mut rows = vec![format!(
        "    {what:<12} {:>12} {:>12}  ({tolerance})",
        "expected", "actual"
    )];
    for (n, (expected, actual)) in pairs.enumerate() {
        let ok = tolerance.accepts(expected, actual);
        failed |= !ok;
        let mark = if ok { "ok" } else { "OUT OF TOLERANCE" };
        rows.push(format!(
            "    {:<12} {:>12} {:>12}  {mark}",
            n + 1,
            format!("{expected:.3?}"),
            format!("{actual:.3?}")
        ));
    }
    failed.then(|| rows.join("\n"))
}
