//! `burst N`: N orders posted at once (at most `--http-concurrency` in flight); the
//! time from the last 201 until every order has its page; then every page paid at
//! once, and the time from the last 303 until every outcome is applied.

use std::sync::Arc;

use anyhow::Context;
use tokio::time::Instant;

use super::{
    COMPLETE_TO_FULFILLED, CREATE_TO_PAGE, Poll, api, complete_many, create_many,
    declare_db_stages, latest, record_db_stages, run_sized, secs_from, until_none_in,
};
use crate::cli::SizeArgs;
use crate::report::{Machine, Report};
use crate::stack::Stack;
use crate::stats::{Clock, Recorder, micros_between};

pub async fn run(args: &SizeArgs) -> anyhow::Result<Report> {
    run_sized(
        args,
        "burst",
        &[CREATE_TO_PAGE, COMPLETE_TO_FULFILLED],
        body,
    )
    .await
}

async fn body(stack: &mut Stack, args: &SizeArgs, rec: &Arc<Recorder>) -> anyhow::Result<Report> {
    let c = &args.common;
    stack.start_payments().await?;
    stack.start_orders(true).await?;
    let obs = stack.observer()?;
    let machine = Machine::describe(Some(&obs.orders)).await;
    let api = api(stack, c, rec)?;
    declare_db_stages(rec);

    let clock = Clock::start();
    let created = create_many(&api, args.n, c.http_concurrency, rec, &clock).await;
    let n = created.ids.len() as i64;
    let paged = until_none_in(&obs, "pending_payment", c.deadline, c.poll).await?;
    let after_pages = obs.all_orders().await.context("reading orders")?;
    let sessions = obs.sessions().await.context("reading sessions")?;
    record_db_stages(
        rec,
        &clock,
        &after_pages,
        &sessions,
        &Default::default(),
        true,
    );
    let page_times: Vec<_> = after_pages
        .iter()
        .filter(|o| o.payment_url.is_some())
        .map(|o| o.updated_at)
        .collect();
    let last_page = latest(page_times.iter());
    let first_created = after_pages.iter().map(|o| o.created_at).min();

    let mut figures = Vec::new();
    let create_secs = (created.last_answer - created.first_sent).as_secs_f64();
    figures.push((
        "orders created",
        n as f64,
        "",
        "201 answers to POST /orders".to_owned(),
    ));
    figures.push((
        "POST /orders rate",
        n as f64 / create_secs.max(1e-9),
        "/s",
        format!(
            "201s ÷ time from the first request to the last answer, {} in flight",
            c.http_concurrency
        ),
    ));
    if let Some(last_page) = last_page.filter(|_| paged) {
        figures.push((
            "last 201 → every page",
            secs_from(&clock, created.last_answer, last_page),
            "s",
            "the latest orders.updated_at of a paged order − when the last 201 was received".into(),
        ));
        if let Some(first) = first_created {
            figures.push((
                "pages/s",
                page_times.len() as f64 / (micros_between(first, last_page) as f64 / 1e6).max(1e-9),
                "/s",
                "paged orders ÷ (latest page − earliest orders.created_at)".into(),
            ));
        }
    }

    let mut report = Report::from_recorder("burst", rec);
    let mut pay_ok = false;
    if paged {
        // Phase 2: pay every page at once.
        let urls: Vec<String> = after_pages
            .iter()
            .filter_map(|o| o.payment_url.clone())
            .collect();
        let pay_started = Instant::now();
        let paid = complete_many(&api, &urls, c.http_concurrency, rec, &clock).await;
        let last_303 = Instant::now();
        let applied = until_none_in(&obs, "awaiting_payment", c.deadline, c.poll).await?;
        let mut poll = Poll::new(c.deadline, c.poll);
        let mut acked = false;
        while poll.next().await {
            if obs.unacked().await? == 0 {
                acked = true;
                break;
            }
        }
        let after_outcomes = obs.all_orders().await?;
        let events = obs.all_events().await?;
        record_db_stages(
            rec,
            &clock,
            &after_outcomes,
            &Default::default(),
            &events,
            false,
        );
        let issued: Vec<_> = after_outcomes.iter().filter_map(|o| o.issued_at).collect();
        let first_paid = events.values().map(|e| e.created_at).min();
        figures.push((
            "POST complete rate",
            paid as f64 / (last_303 - pay_started).as_secs_f64().max(1e-9),
            "/s",
            format!(
                "303s ÷ time from the first request to the last answer, {} in flight",
                c.http_concurrency
            ),
        ));
        if let (Some(last), Some(first), true) = (latest(issued.iter()), first_paid, applied) {
            figures.push((
                "last 303 → every outcome applied",
                secs_from(&clock, last_303, last),
                "s",
                "the latest invoices.issued_at − when the last 303 was received".into(),
            ));
            figures.push((
                "outcomes/s",
                issued.len() as f64 / (micros_between(first, last) as f64 / 1e6).max(1e-9),
                "/s",
                "invoices ÷ (latest invoices.issued_at − earliest payment_events.created_at)"
                    .into(),
            ));
        }
        report = Report::from_recorder("burst", rec);
        report.check(
            "every page paid",
            paid as i64 == n,
            format!("{paid} of {n} POST complete answered 303"),
        );
        report.check(
            "every outcome applied within the deadline",
            applied,
            format!(
                "{} of {n} fulfilled",
                after_outcomes
                    .iter()
                    .filter(|o| o.status == "fulfilled")
                    .count()
            ),
        );
        report.check(
            "every event acked within the deadline",
            acked,
            format!(
                "{} of {} acked",
                events.values().filter(|e| e.acked_at.is_some()).count(),
                events.len()
            ),
        );
        let counts = obs.invoice_counts().await?;
        report.check(
            "exactly one invoice per fulfilled order",
            counts.invoices == n && counts.orders_invoiced == n && counts.fulfilled == n,
            format!(
                "{} invoices for {} orders; {} fulfilled of {n}",
                counts.invoices, counts.orders_invoiced, counts.fulfilled
            ),
        );
        pay_ok = true;
    }
    if !paged {
        report.figure(
            "paged by the deadline",
            page_times.len() as f64,
            "",
            &format!("orders with their page {:?} after the last 201", c.deadline),
        );
    }
    report.check(
        "every order got its page within the deadline",
        paged,
        format!("{} of {n} paged", page_times.len()),
    );
    if !pay_ok {
        report
            .notes
            .push("pages never completed, so nothing was paid".into());
    }
    report.check(
        "every POST /orders answered 201",
        n as u64 == args.n,
        format!("{n} of {}", args.n),
    );
    for (name, value, unit, how) in figures {
        report.figure(name, value, unit, &how);
    }
    report.parameters = serde_json::json!({
        "n": args.n,
        "http_concurrency": c.http_concurrency,
        "poll_ms": c.poll.as_millis() as u64,
        "service_log": c.service_log,
    });
    report.machine = machine;
    Ok(report)
}
