//! [`Times`]: how often a rule must fire, an exact count or a range.

use std::fmt;
use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

/// How many times a rule must fire, checked when the server (or, for a rule scoped to
/// one connection, that connection's handle) is dropped: an exact count or a range.
///
/// Made from a `usize` or any range of `usize`, so [`Rule::times`](crate::Rule::times)
/// reads like wiremock's `expect`: `times(2)`, `times(1..)`, `times(..=3)`,
/// `times(2..=4)`, `times(2..5)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    min: usize,
    /// Inclusive; `None`: no upper bound.
    max: Option<usize>,
}

impl Times {
    /// Whether a rule that fired `hits` times meets this expectation.
    pub fn contains(&self, hits: usize) -> bool {
        hits >= self.min && self.max.is_none_or(|max| hits <= max)
    }
}

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (min, Some(max)) if min == max => write!(f, "{min}"),
            (0, None) => f.write_str("any number of times"),
            (min, None) => write!(f, "at least {min}"),
            (0, Some(max)) => write!(f, "at most {max}"),
            (min, Some(max)) => write!(f, "between {min} and {max}"),
        }
    }
}

impl From<usize> for Times {
    fn from(n: usize) -> Self {
        Times {
            min: n,
            max: Some(n),
        }
    }
}

impl From<Range<usize>> for Times {
    #[track_caller]
    fn from(range: Range<usize>) -> Self {
        assert!(
            range.start < range.end,
            "times({range:?}) can never be met: the range is empty; use an exact count or a range such as 1..=3"
        );
        Times {
            min: range.start,
            max: Some(range.end - 1),
        }
    }
}

impl From<RangeInclusive<usize>> for Times {
    #[track_caller]
    fn from(range: RangeInclusive<usize>) -> Self {
        assert!(
            range.start() <= range.end(),
            "times({range:?}) can never be met: the range is empty; use an exact count or a range such as 1..=3"
        );
        Times {
            min: *range.start(),
            max: Some(*range.end()),
        }
    }
}

impl From<RangeFrom<usize>> for Times {
    fn from(range: RangeFrom<usize>) -> Self {
        Times {
            min: range.start,
            max: None,
        }
    }
}

impl From<RangeTo<usize>> for Times {
    #[track_caller]
    fn from(range: RangeTo<usize>) -> Self {
        assert!(
            range.end > 0,
            "times(..0) can never be met: use times(0) for a rule that must not fire"
        );
        Times {
            min: 0,
            max: Some(range.end - 1),
        }
    }
}

impl From<RangeToInclusive<usize>> for Times {
    fn from(range: RangeToInclusive<usize>) -> Self {
        Times {
            min: 0,
            max: Some(range.end),
        }
    }
}

impl From<RangeFull> for Times {
    fn from(_: RangeFull) -> Self {
        Times { min: 0, max: None }
    }
}
