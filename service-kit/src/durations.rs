//! Durations in settings: clap's parsers of every duration setting, and a duration
//! as PostgreSQL reads a time setting. A leaf: the settings' modules import it.

use std::time::Duration;

/// The shortest duration a setting takes: zero would make a timer that never waits
/// (tokio's `interval` panics on it, and took the link's thread with it).
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest: a week is past any sensible timeout or TTL, and far from the point
/// where adding it to the clock overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// clap's parser of `DRAIN_PERIOD`: `0s` (no drain) to a minute.
pub fn drain_period(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if value > Duration::from_secs(60) {
        return Err(format!(
            "{text} is out of range: give a duration from 0s to 1m"
        ));
    }
    Ok(value)
}

/// clap's parser of every duration setting: humantime's syntax (`200ms`, `30s`,
/// `15m`), from [`MIN_DURATION`] to [`MAX_DURATION`].
pub fn duration(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if value < MIN_DURATION || value > MAX_DURATION {
        return Err(format!(
            "{text} is out of range: give a duration from {} to {}",
            humantime::format_duration(MIN_DURATION),
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(value)
}

/// A duration as PostgreSQL reads a time setting: whole milliseconds, at least 1 (0
/// would mean "no limit").
pub(crate) fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_is_from_a_millisecond_to_a_week() {
        assert_eq!(duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("7days"), Ok(MAX_DURATION));
        for bad in [
            "0", "0s", "0ms", "8days", "100years", "10", "-1s", "", "soon",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            duration("0s").unwrap_err(),
            "0s is out of range: give a duration from 1ms to 7days"
        );
    }
}
