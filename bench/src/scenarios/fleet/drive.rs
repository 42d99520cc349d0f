//! `drive`: the fleet's customer journeys against a fleet that runs elsewhere
//! (`scripts/compose-smoke` restarts its containers meanwhile): a number of journeys at
//! a rate, through the URL given, every call once; what the clients saw.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use super::journey::{CALLS, CALLS_HOW, Journeys, client_checks, tally};
use crate::api::Api;
use crate::report::Report;
use crate::scenarios::{Outputs, publish};
use crate::stats::{Clock, Recorder};

#[derive(Debug, Clone, Args)]
pub struct DriveOptions {
    /// The fleet's Orders API (its load balancer).
    #[arg(long)]
    pub orders_url: String,
    /// Customer journeys to run.
    #[arg(long, default_value_t = 300)]
    pub orders: u64,
    /// Journeys started per second (open loop).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// How long an order may take to get its page, and then to be fulfilled.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Period of a journey's GET /orders/{id} while it waits.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub poll_order: Duration,
    /// At most this many journeys in flight; one due beyond that is an error.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,
    /// At most this many HTTP requests in flight.
    #[arg(long, default_value_t = 64)]
    pub http_concurrency: usize,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the journeys and publishes what the clients saw.
pub async fn drive(o: DriveOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(o.rate > 0.0, "--rate must be positive");
    let rec = Arc::new(Recorder::default());
    rec.stage(CALLS, CALLS_HOW);
    let journeys = Arc::new(Journeys {
        api: Api::new(
            &o.orders_url,
            o.http_concurrency,
            o.request_timeout,
            rec.clone(),
            None,
        )?,
        wait: o.wait,
        poll: o.poll_order,
        clock: Clock::start(),
        rec: rec.clone(),
        key_prefix: format!("drive-{}", uuid::Uuid::now_v7()),
    });
    let started = Instant::now();
    let mut report = Report::new("drive");
    let load = journeys.open(o.rate, Some(o.orders), o.max_in_flight);
    let due = Duration::from_secs_f64(o.orders as f64 / o.rate);
    let ended = load
        .join(Some(due + o.wait * 2 + o.request_timeout * 4))
        .await?;
    let (all, done) = tally(&ended);
    report.figure("journeys", all as f64, "", "");
    report.figure("journeys fulfilled", done as f64, "", "with their invoice");
    client_checks(&mut report, &rec, (all, done), Some(o.orders));
    report.record(&rec);
    report.wall_seconds = started.elapsed().as_secs_f64();
    let outputs = Outputs {
        dir: None,
        json: o.json,
        markdown: None,
        svg: None,
    };
    publish(&report, &outputs, &[CALLS])?;
    Ok(report)
}
