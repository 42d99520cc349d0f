//! `resume N`: Orders up, Payments down; N orders created through the API (all
//! `pending_payment`); then Payments starts. Measured: from Payments' start, and from
//! the moment the link connected (`ws_connections.opened_at`), until every order has
//! its page. Orders runs with `RECONNECT_CAP` = `--reconnect-cap` (1 s by default) so
//! its backoff does not dominate the figure; the gap is reported separately.

use std::sync::Arc;

use tokio::time::Instant;

use super::{CREATE_TO_INITIATE, POST_ORDERS, Poll, api, create_many, latest, run_sized};
use crate::cli::SizeArgs;
use crate::report::{Machine, Report};
use crate::stack::Stack;
use crate::stats::{Clock, Recorder, micros_between};

pub const START_TO_PAGE: &str = "Payments start → page";

pub async fn run(args: &SizeArgs) -> anyhow::Result<Report> {
    run_sized(args, "resume", &[START_TO_PAGE, CREATE_TO_INITIATE], body).await
}

async fn body(stack: &mut Stack, args: &SizeArgs, rec: &Arc<Recorder>) -> anyhow::Result<Report> {
    let c = &args.common;
    stack.start_orders(false).await?;
    let obs = stack.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    let api = api(stack, c, rec)?;
    rec.stage(
        POST_ORDERS,
        "HTTP round trip of POST /orders (Payments down), request sent → 201 received",
    );
    rec.stage(
        START_TO_PAGE,
        "orders.updated_at of the page − when loadgen spawned Payments",
    );
    rec.stage(
        CREATE_TO_INITIATE,
        "payment_sessions.created_at − orders.created_at (includes the time Payments was down)",
    );

    let clock = Clock::start();
    let created = create_many(&api, args.n, c.http_concurrency, rec, &clock).await;
    let n = created.ids.len() as i64;
    let pending_before = obs.count_status("pending_payment").await?;

    let payments_start = Instant::now();
    stack.start_payments().await?;
    let payments_ready = Instant::now();
    // The first connection: its row stays while it is open, and a later one (after
    // Payments dropped a silent peer) must not be taken for it, so it is read during
    // the wait, not after.
    let mut link_opened = None;
    let mut paged = false;
    let mut poll = Poll::new(c.deadline, c.poll);
    while poll.next().await {
        if link_opened.is_none() {
            link_opened = obs.link_opened_at().await?;
        }
        if obs.count_status("pending_payment").await? == 0 {
            paged = true;
            break;
        }
    }
    let orders = obs.all_orders().await?;
    let sessions = obs.sessions().await?;
    let start_wall = clock.wall(payments_start);
    let mut page_times = Vec::new();
    for o in &orders {
        if o.payment_url.is_some() {
            page_times.push(o.updated_at);
            rec.record(
                START_TO_PAGE,
                clock.secs_wall(o.updated_at),
                micros_between(start_wall, o.updated_at),
            );
        }
        if let Some(at) = sessions.get(&o.id) {
            rec.record(
                CREATE_TO_INITIATE,
                clock.secs_wall(*at),
                micros_between(o.created_at, *at),
            );
        }
    }
    let last_page = latest(page_times.iter());

    let mut report = Report::from_recorder("resume", rec);
    report.figure(
        "orders created while Payments was down",
        n as f64,
        "",
        "201 answers",
    );
    report.figure(
        "Payments start → ready",
        (payments_ready - payments_start).as_secs_f64(),
        "s",
        "spawn → its /readyz answered 200 (migrations included)",
    );
    if let Some(opened) = link_opened {
        report.figure(
            "Payments start → link connected",
            micros_between(start_wall, opened) as f64 / 1e6,
            "s",
            "the first ws_connections.opened_at − spawn of Payments (Orders' reconnect backoff)",
        );
    }
    if let Some(last) = last_page.filter(|_| paged) {
        report.figure(
            "Payments start → every page",
            micros_between(start_wall, last) as f64 / 1e6,
            "s",
            "the latest page's orders.updated_at − spawn of Payments",
        );
        if let Some(opened) = link_opened {
            let secs = micros_between(opened, last) as f64 / 1e6;
            report.figure(
                "link connected → every page",
                secs,
                "s",
                "the latest page's orders.updated_at − ws_connections.opened_at",
            );
            report.figure(
                "pages/s after connecting",
                page_times.len() as f64 / secs.max(1e-9),
                "/s",
                "paged orders ÷ (latest page − connection)",
            );
        }
    }
    if !paged {
        report.figure(
            "paged by the deadline",
            page_times.len() as f64,
            "",
            &format!(
                "orders with their page {:?} after Payments started",
                c.deadline
            ),
        );
    }
    report.check(
        "every POST /orders answered 201 while Payments was down",
        n as u64 == args.n && pending_before == n,
        format!(
            "{n} of {} created, {pending_before} pending before Payments started",
            args.n
        ),
    );
    report.check(
        "every order got its page within the deadline",
        paged,
        format!("{} of {n} paged", page_times.len()),
    );
    report.check(
        "one payment session per order",
        sessions.len() as i64 == n,
        format!("{} sessions for {n} orders", sessions.len()),
    );
    report.parameters = serde_json::json!({
        "n": args.n,
        "http_concurrency": c.http_concurrency,
        "reconnect_cap_ms": c.reconnect_cap.as_millis() as u64,
        "poll_ms": c.poll.as_millis() as u64,
        "service_log": c.service_log,
    });
    report.machine = machine;
    Ok(report)
}
