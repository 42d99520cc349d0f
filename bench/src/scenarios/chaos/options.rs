//! The options of `chaos`.

use std::time::Duration;

use clap::Args;

use crate::scenarios::Common;

#[derive(Debug, Clone, Args)]
pub struct ChaosOptions {
    /// Orders to create, at a steady rate.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Orders created per second (the load lasts orders ÷ rate).
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Shortest pause between two faults.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub fault_min: Duration,
    /// Longest pause between two faults.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub fault_max: Duration,
    /// The share of the load run with one instance of each service; then a second
    /// instance of each starts on the same databases (1: never).
    #[arg(long, default_value_t = 0.5)]
    pub single_phase: f64,
    /// Weights of the actions: pay on the page, cancel on the page, cancel through
    /// the API.
    #[arg(long, default_value = "50,25,25")]
    pub mix: String,
    /// After the faults stop: how long every order may take to settle (nothing
    /// pending_payment, every answered action final, no unacked event).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// How long one call (create, cancel, a page button) is retried while its service
    /// is down.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,
    /// How long an order to pay or cancel on its page waits for the page.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub page_wait: Duration,
    /// Seed of every random choice (default: the time); it is in the report.
    #[arg(long)]
    pub seed: Option<u64>,
    /// PostgreSQL major version of the run's own cluster (default: the newest installed).
    #[arg(long)]
    pub pg_version: Option<String>,
    /// Period of the query that finds the orders' pages.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub watch: Duration,
    /// At most this many orders in flight (created, not yet acted on).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// (`--database-url` is not used: chaos runs on a PostgreSQL cluster of its own.)
    #[command(flatten)]
    pub common: Common,
}

impl ChaosOptions {
    /// The weights of `--mix`, and the options checked before anything starts.
    pub fn mix(&self) -> anyhow::Result<[u64; 3]> {
        anyhow::ensure!(self.rate > 0.0, "--rate must be positive");
        anyhow::ensure!(
            self.fault_min <= self.fault_max && !self.fault_max.is_zero(),
            "--fault-min must not exceed --fault-max"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.single_phase),
            "--single-phase is a fraction of the load, 0 to 1"
        );
        parse_mix(&self.mix)
    }

    /// How long the load lasts.
    pub fn load_for(&self) -> Duration {
        Duration::from_secs_f64(self.orders as f64 / self.rate)
    }
}

fn parse_mix(mix: &str) -> anyhow::Result<[u64; 3]> {
    let parts: Vec<u64> = mix
        .split(',')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--mix is three integers: pay,page-cancel,api-cancel"))?;
    anyhow::ensure!(
        parts.len() == 3 && parts.iter().sum::<u64>() > 0,
        "--mix is three integers (pay,page-cancel,api-cancel), not all zero"
    );
    Ok([parts[0], parts[1], parts[2]])
}

#[cfg(test)]
mod tests {
    use super::parse_mix;

    #[test]
    fn mix_is_three_integers() {
        assert_eq!(parse_mix("50,25,25").unwrap(), [50, 25, 25]);
        assert!(parse_mix("1,2").is_err());
        assert!(parse_mix("0,0,0").is_err());
    }
}
