//! `backlog N`: both backlogs at once when the link comes up.
//!
//! 1. Both up: N orders (batch A) created and paged.
//! 2. Orders stopped (SIGTERM); all N pages of batch A paid: N outcome events wait,
//!    unacked and undelivered, in Payments.
//! 3. Payments stopped; Orders started alone; N new orders (batch B) created: N
//!    `pending_payment` orders wait in Orders.
//! 4. Payments started. On connect Orders re-sends N `initiate_payment`s while Payments
//!    sends N unacked events: both write their backlog before reading.
//!
//! Measured from Payments' start (and from the connection) until all 2N are done: the
//! N outcomes applied (batch A fulfilled, each with its invoice) and the N pages of
//! batch B recorded. With the deadline passed, the report says how far it got.

use std::sync::Arc;

use tokio::time::Instant;

use super::{
    POST_COMPLETE, POST_ORDERS, Poll, api, complete_many, create_many, latest, run_sized,
    until_none_in,
};
use crate::cli::SizeArgs;
use crate::report::{Machine, Report};
use crate::stack::{Stack, Which};
use crate::stats::{Clock, Recorder, micros_between};

pub const START_TO_APPLIED: &str = "Payments start → outcome applied (A)";
pub const START_TO_PAGE: &str = "Payments start → page (B)";

pub async fn run(args: &SizeArgs) -> anyhow::Result<Report> {
    run_sized(args, "backlog", &[START_TO_APPLIED, START_TO_PAGE], body).await
}

async fn body(stack: &mut Stack, args: &SizeArgs, rec: &Arc<Recorder>) -> anyhow::Result<Report> {
    let c = &args.common;
    let n = args.n as i64;
    stack.start_payments().await?;
    stack.start_orders(true).await?;
    let obs = stack.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    let api = api(stack, c, rec)?;
    rec.stage(
        START_TO_APPLIED,
        "invoices.issued_at of a batch-A order − spawn of Payments",
    );
    rec.stage(
        START_TO_PAGE,
        "orders.updated_at of a batch-B page − spawn of Payments",
    );
    rec.stage(
        POST_ORDERS,
        "HTTP round trip of POST /orders, request sent → 201 received",
    );
    rec.stage(
        POST_COMPLETE,
        "HTTP round trip of POST {payment_url}/complete, request sent → 303 received",
    );
    let clock = Clock::start();

    // 1. Batch A, paged.
    let a = create_many(&api, args.n, c.http_concurrency, rec, &clock).await;
    anyhow::ensure!(
        a.ids.len() as i64 == n,
        "batch A: only {} of {n} orders created",
        a.ids.len()
    );
    anyhow::ensure!(
        until_none_in(&obs, "pending_payment", c.deadline, c.poll).await?,
        "batch A: not every order paged within the deadline"
    );
    let urls: Vec<String> = obs
        .all_orders()
        .await?
        .into_iter()
        .filter_map(|o| o.payment_url)
        .collect();

    // 2. Orders down; pay batch A: the outcomes wait in Payments.
    let orders_stop = stack.stop(Which::Orders).await;
    let paid = complete_many(&api, &urls, c.http_concurrency, rec, &clock).await;
    anyhow::ensure!(paid as i64 == n, "batch A: only {paid} of {n} pages paid");
    let unacked = obs.unacked().await?;

    // 3. Payments down, Orders alone; batch B waits as pending orders.
    let payments_stop = stack.stop(Which::Payments).await;
    stack.start_orders(false).await?;
    let b = create_many(&api, args.n, c.http_concurrency, rec, &clock).await;
    anyhow::ensure!(
        b.ids.len() as i64 == n,
        "batch B: only {} of {n} orders created",
        b.ids.len()
    );
    let pending = obs.count_status("pending_payment").await?;

    // 4. Payments up: both backlogs meet.
    let payments_start = Instant::now();
    stack.start_payments().await?;
    let mut progress_now = (0, n);
    let mut drained = false;
    let mut poll = Poll::new(c.deadline, c.poll);
    let mut link_opened = None;
    while poll.next().await {
        if link_opened.is_none() {
            link_opened = obs.link_opened_at().await?;
        }
        let fulfilled = obs.count_status("fulfilled").await?;
        let pending = obs.count_status("pending_payment").await?;
        progress_now = (fulfilled, pending);
        if fulfilled == n && pending == 0 {
            drained = true;
            break;
        }
    }
    let start_wall = clock.wall(payments_start);
    let orders = obs.all_orders().await?;
    let batch_a: std::collections::HashSet<_> = a.ids.iter().collect();
    let mut applied = Vec::new();
    let mut pages = Vec::new();
    for o in &orders {
        if batch_a.contains(&o.id) {
            if let Some(issued) = o.issued_at {
                applied.push(issued);
                rec.record(
                    START_TO_APPLIED,
                    clock.secs_wall(issued),
                    micros_between(start_wall, issued),
                );
            }
        } else if o.payment_url.is_some() {
            pages.push(o.updated_at);
            rec.record(
                START_TO_PAGE,
                clock.secs_wall(o.updated_at),
                micros_between(start_wall, o.updated_at),
            );
        }
    }
    let mut report = Report::from_recorder("backlog", rec);
    report.figure(
        "unacked outcomes waiting",
        unacked as f64,
        "",
        "payment_events with acked_at IS NULL before Payments restarted",
    );
    report.figure(
        "pending orders waiting",
        pending as f64,
        "",
        "orders in pending_payment before Payments restarted",
    );
    if let Some(opened) = link_opened {
        report.figure(
            "Payments start → link connected",
            micros_between(start_wall, opened) as f64 / 1e6,
            "s",
            "ws_connections.opened_at − spawn of Payments",
        );
    }
    if let Some(last) = latest(applied.iter()).filter(|_| applied.len() as i64 == n) {
        report.figure(
            "Payments start → every outcome applied",
            micros_between(start_wall, last) as f64 / 1e6,
            "s",
            "the latest invoices.issued_at of batch A − spawn of Payments",
        );
    }
    if let Some(last) = latest(pages.iter()).filter(|_| pages.len() as i64 == n) {
        report.figure(
            "Payments start → every page",
            micros_between(start_wall, last) as f64 / 1e6,
            "s",
            "the latest page (orders.updated_at) of batch B − spawn of Payments",
        );
    }
    if drained && let Some(last) = latest(applied.iter().chain(pages.iter())) {
        report.figure(
            "Payments start → drained",
            micros_between(start_wall, last) as f64 / 1e6,
            "s",
            "the later of the two above",
        );
    } else {
        report.figure(
            "drained within the deadline",
            0.0,
            "",
            &format!(
                "no: after {:?}, {} of {n} outcomes applied and {} of {n} orders still pending",
                c.deadline, progress_now.0, progress_now.1
            ),
        );
    }
    report.check(
        "both backlogs drained within the deadline",
        drained,
        format!(
            "{} of {n} outcomes applied, {} of {n} pages recorded",
            applied.len(),
            pages.len()
        ),
    );
    let counts = obs.invoice_counts().await?;
    report.check(
        "exactly one invoice per fulfilled order",
        counts.invoices == counts.orders_invoiced && counts.invoices == counts.fulfilled,
        format!(
            "{} invoices for {} orders; {} fulfilled",
            counts.invoices, counts.orders_invoiced, counts.fulfilled
        ),
    );
    report.notes.push(format!(
        "Set-up: Orders stopped with {orders_stop}; Payments stopped with {payments_stop}."
    ));
    report.parameters = serde_json::json!({
        "n": args.n,
        "http_concurrency": c.http_concurrency,
        "reconnect_cap_ms": c.reconnect_cap.as_millis() as u64,
        "deadline_s": c.deadline.as_secs(),
        "service_log": c.service_log,
    });
    report.machine = machine;
    Ok(report)
}
