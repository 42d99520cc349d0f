//! Samples, HdrHistogram percentiles and per-second bins.
//!
//! Every measured latency is a [`Sample`]: when the step completed (seconds since the
//! scenario's start) and how long it took (µs). Samples are kept (a few hundred
//! thousand at most, a few MB), so the same data gives the overall percentiles and
//! the percentiles and throughput of each second for the plot.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// One measured step.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the step completed, in seconds since the scenario's start.
    pub at: f64,
    /// How long it took, in microseconds.
    pub micros: u64,
}

/// A named stage and its samples.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    /// How the latency is measured, for the report.
    pub how: String,
    pub samples: Vec<Sample>,
}

/// The clock of one scenario: a monotonic start and the wall-clock time of that start,
/// so database timestamps (wall clock, same machine) and `Instant`s can be compared.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub t0: Instant,
    pub t0_wall: DateTime<Utc>,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            t0: Instant::now(),
            t0_wall: Utc::now(),
        }
    }

    /// Seconds since the start.
    pub fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// Seconds between the start and a wall-clock (database) time.
    pub fn secs_wall(&self, at: DateTime<Utc>) -> f64 {
        micros_between(self.t0_wall, at) as f64 / 1e6
    }

    /// The wall-clock time of an `Instant`.
    pub fn wall(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.t0);
        self.t0_wall + chrono::Duration::from_std(since).unwrap_or_default()
    }
}

/// Microseconds from `from` to `to`, 0 when `to` is earlier.
pub fn micros_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    (to - from).num_microseconds().unwrap_or(0).max(0) as u64
}

/// Collects samples of several stages from many tasks, and error counts.
#[derive(Debug, Default)]
pub struct Recorder {
    stages: Mutex<Vec<Stage>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    /// Declares a stage (in report order) with how it is measured.
    pub fn stage(&self, name: &str, how: &str) {
        let mut stages = lock(&self.stages);
        if !stages.iter().any(|s| s.name == name) {
            stages.push(Stage {
                name: name.into(),
                how: how.into(),
                samples: Vec::new(),
            });
        }
    }

    pub fn record(&self, name: &str, at: f64, micros: u64) {
        let mut stages = lock(&self.stages);
        match stages.iter_mut().find(|s| s.name == name) {
            Some(stage) => stage.samples.push(Sample { at, micros }),
            None => stages.push(Stage {
                name: name.into(),
                how: String::new(),
                samples: vec![Sample { at, micros }],
            }),
        }
    }

    /// A step that began at `from` and ends now, on `clock`.
    pub fn record_until_now(&self, name: &str, clock: &Clock, from: Instant) {
        let now = Instant::now();
        self.record(name, clock.secs(now), (now - from).as_micros() as u64);
    }

    /// A step between two database (wall-clock) times, on `clock`.
    pub fn record_wall(&self, name: &str, clock: &Clock, from: DateTime<Utc>, to: DateTime<Utc>) {
        self.record(name, clock.secs_wall(to), micros_between(from, to));
    }

    pub fn error(&self, kind: impl Into<String>) {
        *lock(&self.errors).entry(kind.into()).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    pub fn stages(&self) -> Vec<Stage> {
        lock(&self.stages).clone()
    }

    pub fn count(&self, name: &str) -> usize {
        lock(&self.stages)
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.samples.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StageStats {
    pub name: String,
    pub how: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A histogram from 1 µs to 1 hour with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn summarize(stage: &Stage) -> StageStats {
    let mut h = histogram();
    for s in &stage.samples {
        h.saturating_record(s.micros.max(1));
    }
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    StageStats {
        name: stage.name.clone(),
        how: stage.how.clone(),
        count: h.len(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1000.0
        },
    }
}

/// One time bin of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    /// Start of the bin, seconds since the scenario's start.
    pub t: f64,
    /// Steps completed in the bin, per second.
    pub per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The per-bin throughput and latency of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub stage: String,
    pub bins: Vec<Bin>,
}

/// Bins a stage's samples by completion time, `width` seconds each.
pub fn series(stage: &Stage, width: f64) -> Series {
    let mut bins: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for s in &stage.samples {
        let key = (s.at.max(0.0) / width) as u64;
        bins.entry(key)
            .or_insert_with(histogram)
            .saturating_record(s.micros.max(1));
    }
    let last = bins.keys().next_back().copied().unwrap_or(0);
    let bins = (0..=last)
        .filter(|_| !stage.samples.is_empty())
        .map(|k| match bins.get(&k) {
            Some(h) => Bin {
                t: k as f64 * width,
                per_s: h.len() as f64 / width,
                p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                p90_ms: h.value_at_quantile(0.9) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            },
            None => Bin {
                t: k as f64 * width,
                per_s: 0.0,
                p50_ms: f64::NAN,
                p90_ms: f64::NAN,
                p99_ms: f64::NAN,
                max_ms: f64::NAN,
            },
        })
        .collect();
    Series {
        stage: stage.name.clone(),
        bins,
    }
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_samples() {
        let stage = Stage {
            name: "x".into(),
            how: String::new(),
            samples: (1..=1000)
                .map(|i| Sample {
                    at: i as f64 / 1000.0,
                    micros: i * 1000,
                })
                .collect(),
        };
        let s = summarize(&stage);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn bins_count_per_second_and_keep_empty_seconds() {
        let stage = Stage {
            name: "x".into(),
            how: String::new(),
            samples: vec![
                Sample { at: 0.1, micros: 5 },
                Sample { at: 0.2, micros: 5 },
                Sample { at: 2.5, micros: 5 },
            ],
        };
        let s = series(&stage, 1.0);
        assert_eq!(s.bins.len(), 3);
        assert_eq!(s.bins[0].per_s, 2.0);
        assert_eq!(s.bins[1].per_s, 0.0);
        assert_eq!(s.bins[2].per_s, 1.0);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
