//! `Backoff` and `Tolerance` on their own: the gaps a backoff expects, what a tolerance
//! accepts, and the settings that can never be met.

use std::time::Duration;

use fake_ws_server::{Backoff, Tolerance};

const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn an_exponential_backoff_grows_by_its_factor_up_to_its_cap() {
    let backoff = Backoff::exponential(MS(100)).factor(2.0).cap(MS(1000));
    let gaps: Vec<_> = (0..6).map(|n| backoff.gap(n)).collect();
    assert_eq!(gaps, [100, 200, 400, 800, 1000, 1000].map(MS));
    assert_eq!(backoff.to_string(), "100ms × 2 (at most 1s)");
}

#[test]
fn a_constant_backoff_and_a_huge_attempt_number_do_not_overflow() {
    assert_eq!(Backoff::constant(MS(250)).gap(7), MS(250));
    assert_eq!(Backoff::exponential(MS(1)).gap(100_000), Duration::MAX);
    let capped = Backoff::exponential(MS(1)).cap(Duration::from_secs(30));
    assert_eq!(capped.gap(usize::MAX), Duration::from_secs(30));
}

#[test]
fn a_tolerance_accepts_both_ends_and_nothing_past_them() {
    let ten = Tolerance::percent(10);
    assert_eq!(
        ten.bounds(Duration::from_secs(30)),
        (Duration::from_secs(27), Duration::from_secs(33))
    );
    assert!(ten.accepts(Duration::from_secs(30), Duration::from_secs(33)));
    assert!(!ten.accepts(Duration::from_secs(30), MS(33_001)));
    let slack = Tolerance::absolute(MS(5));
    assert!(slack.accepts(MS(3), MS(0)));
    assert!(!slack.accepts(MS(100), MS(94)));
    assert_eq!(ten.to_string(), "± 10 %");
    assert_eq!(slack.to_string(), "± 5ms");
}

#[test]
#[should_panic(expected = "Backoff::factor(0.5): the factor must be finite and at least 1")]
fn a_shrinking_factor_is_refused() {
    let _ = Backoff::exponential(MS(100)).factor(0.5);
}

#[test]
#[should_panic(expected = "Tolerance::percent(-1): the percentage must be finite and not negative")]
fn a_negative_tolerance_is_refused() {
    let _ = Tolerance::percent(-1);
}
