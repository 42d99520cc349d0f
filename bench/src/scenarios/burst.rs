//! `burst N`: N orders posted at once (at most `--http-concurrency` in flight); the
//! time from the last 201 until every order has its page; then every page paid at
//! once, and the time from the last 303 until every outcome is applied.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::steps::{
    COMPLETE_TO_DISPATCHED, COMPLETE_TO_FULFILLED, CREATE_TO_INITIATE, CREATE_TO_PAGE,
    FULFILLED_TO_ACKED, POST_COMPLETE, POST_ORDERS, Poll, complete_many, create_many, latest,
    secs_between, until_none_in,
};
use super::{Run, Scenario, Size, Spec};
use crate::api::Api;
use crate::observe::{EventRow, Observer, OrderRow};
use crate::stats::{Clock, Recorder};

pub struct Burst(pub Size);

impl Scenario for Burst {
    fn spec(&self) -> Spec<'_> {
        let plotted = &[CREATE_TO_PAGE, COMPLETE_TO_FULFILLED];
        Spec::new("burst", &self.0.common, plotted)
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let obs = run.start().await?;
        let api = run.api()?;
        declare_stages(&run.rec);
        let clock = Clock::start();
        let burst = Phase {
            api: &api,
            obs: &obs,
            clock: &clock,
        };
        let (n, urls, paged) = burst.create(run, self.0.n).await?;
        if paged {
            burst.pay(run, n, &urls).await?;
        } else {
            run.report.figure(
                "paged by the deadline",
                urls.len() as f64,
                "",
                &format!(
                    "orders with their page {:?} after the last 201",
                    run.common.deadline
                ),
            );
            let note = "pages never completed, so nothing was paid".into();
            run.report.notes.push(note);
        }
        let report = &mut run.report;
        let detail = format!("{} of {n} paged", urls.len());
        report.check(
            "every order got its page within the deadline",
            paged,
            detail,
        );
        let detail = format!("{n} of {}", self.0.n);
        report.check(
            "every POST /orders answered 201",
            n as u64 == self.0.n,
            detail,
        );
        let c = &run.common;
        report.parameters = serde_json::json!({
            "n": self.0.n,
            "http_concurrency": c.http_concurrency,
            "poll_ms": c.poll.as_millis() as u64,
            "service_log": c.stack.service_log,
        });
        Ok(())
    }
}

/// What both phases share.
struct Phase<'a> {
    api: &'a Api,
    obs: &'a Observer,
    clock: &'a Clock,
}

impl Phase<'_> {
    /// `n` orders at once, then until every order has its page (or the deadline):
    /// how many were created, the pages, and whether every order had one in time.
    async fn create(&self, run: &mut Run, n: u64) -> anyhow::Result<(i64, Vec<String>, bool)> {
        let (obs, clock, c) = (self.obs, self.clock, &run.common);
        let created = create_many(self.api, n, c.http_concurrency, &run.rec, clock).await;
        let n = created.ids.len() as i64;
        let paged = until_none_in(obs, "pending_payment", c.deadline, c.poll).await?;
        let orders = obs.all_orders().await.context("reading orders")?;
        let sessions = obs.sessions().await.context("reading sessions")?;
        record_db_stages(&run.rec, clock, &orders, &sessions, &HashMap::new(), true);
        let pages: Vec<_> = orders.iter().filter(|o| o.payment_url.is_some()).collect();
        let first_created = orders.iter().map(|o| o.created_at).min();
        let create_secs = (created.last_answer - created.first_sent).as_secs_f64();
        let report = &mut run.report;
        report.figure(
            "orders created",
            n as f64,
            "",
            "201 answers to POST /orders",
        );
        report.figure(
            "POST /orders rate",
            n as f64 / create_secs.max(1e-9),
            "/s",
            &format!(
                "201s ÷ time from the first request to the last answer, {} in flight",
                c.http_concurrency
            ),
        );
        let last_page = latest(pages.iter().map(|o| &o.updated_at));
        if let Some(last_page) = last_page.filter(|_| paged) {
            report.figure(
                "last 201 → every page",
                secs_between(clock.wall(created.last_answer), last_page),
                "s",
                "the latest orders.updated_at of a paged order − when the last 201 was received",
            );
            if let Some(first) = first_created {
                report.figure(
                    "pages/s",
                    pages.len() as f64 / secs_between(first, last_page).max(1e-9),
                    "/s",
                    "paged orders ÷ (latest page − earliest orders.created_at)",
                );
            }
        }
        let urls = pages.iter().filter_map(|o| o.payment_url.clone());
        Ok((n, urls.collect(), paged))
    }

    /// Every page paid at once, then until every outcome is applied and acked.
    async fn pay(&self, run: &mut Run, n: i64, urls: &[String]) -> anyhow::Result<()> {
        let (obs, clock, c) = (self.obs, self.clock, &run.common);
        let pay_started = Instant::now();
        let paid = complete_many(self.api, urls, c.http_concurrency, &run.rec, clock).await;
        let last_303 = Instant::now();
        let applied = until_none_in(obs, "awaiting_payment", c.deadline, c.poll).await?;
        let mut poll = Poll::new(c.deadline, c.poll);
        let mut acked = false;
        while !acked && poll.next().await {
            acked = obs.unacked().await? == 0;
        }
        let orders = obs.all_orders().await?;
        let events = obs.all_events().await?;
        record_db_stages(&run.rec, clock, &orders, &HashMap::new(), &events, false);
        let issued: Vec<_> = orders.iter().filter_map(|o| o.issued_at).collect();
        let first_paid = events.values().map(|e| e.created_at).min();
        let report = &mut run.report;
        report.figure(
            "POST complete rate",
            paid as f64 / (last_303 - pay_started).as_secs_f64().max(1e-9),
            "/s",
            &format!(
                "303s ÷ time from the first request to the last answer, {} in flight",
                c.http_concurrency
            ),
        );
        if let (Some(last), Some(first), true) = (latest(&issued), first_paid, applied) {
            report.figure(
                "last 303 → every outcome applied",
                secs_between(clock.wall(last_303), last),
                "s",
                "the latest invoices.issued_at − when the last 303 was received",
            );
            report.figure(
                "outcomes/s",
                issued.len() as f64 / secs_between(first, last).max(1e-9),
                "/s",
                "invoices ÷ (latest invoices.issued_at − earliest payment_events.created_at)",
            );
        }
        let detail = format!("{paid} of {n} POST complete answered 303");
        report.check("every page paid", paid as i64 == n, detail);
        let fulfilled = orders.iter().filter(|o| o.status == "fulfilled").count();
        let detail = format!("{fulfilled} of {n} fulfilled");
        report.check("every outcome applied within the deadline", applied, detail);
        let acks = events.values().filter(|e| e.acked_at.is_some()).count();
        let detail = format!("{acks} of {} acked", events.len());
        report.check("every event acked within the deadline", acked, detail);
        let counts = obs.invoice_counts().await?;
        report.check(
            "exactly one invoice per fulfilled order",
            counts.invoices == n && counts.orders_invoiced == n && counts.fulfilled == n,
            format!(
                "{} invoices for {} orders; {} fulfilled of {n}",
                counts.invoices, counts.orders_invoiced, counts.fulfilled
            ),
        );
        Ok(())
    }
}

/// The stages, measured from the database's timestamps after the fact.
fn declare_stages(rec: &Recorder) {
    for (name, how) in [
        (
            POST_ORDERS,
            "HTTP round trip of POST /orders, request sent → 201 received",
        ),
        (
            CREATE_TO_INITIATE,
            "payment_sessions.created_at − orders.created_at: Payments stored the initiate_payment",
        ),
        (
            CREATE_TO_PAGE,
            "orders.updated_at while awaiting_payment (the page recorded) − orders.created_at",
        ),
        (
            POST_COMPLETE,
            "HTTP round trip of POST {payment_url}/complete, request sent → 303 received",
        ),
        (
            COMPLETE_TO_DISPATCHED,
            "payment_events.dispatched_at − payment_events.created_at (the payment's commit)",
        ),
        (
            COMPLETE_TO_FULFILLED,
            "invoices.issued_at − payment_events.created_at: the outcome applied in Orders",
        ),
        (
            FULFILLED_TO_ACKED,
            "payment_events.acked_at − invoices.issued_at: Payments stored Orders' ack",
        ),
    ] {
        rec.stage(name, how);
    }
}

/// Records the per-order stages of page and outcome from the database rows.
fn record_db_stages(
    rec: &Recorder,
    clock: &Clock,
    orders: &[OrderRow],
    sessions: &HashMap<Uuid, DateTime<Utc>>,
    events: &HashMap<Uuid, EventRow>,
    pages: bool,
) {
    for o in orders {
        if let Some(initiated) = sessions.get(&o.id) {
            rec.record_wall(CREATE_TO_INITIATE, clock, o.created_at, *initiated);
        }
        if pages && o.status == "awaiting_payment" {
            rec.record_wall(CREATE_TO_PAGE, clock, o.created_at, o.updated_at);
        }
        let Some(e) = events.get(&o.id) else {
            continue;
        };
        if let Some(d) = e.dispatched_at {
            rec.record_wall(COMPLETE_TO_DISPATCHED, clock, e.created_at, d);
        }
        if let Some(issued) = o.issued_at {
            rec.record_wall(COMPLETE_TO_FULFILLED, clock, e.created_at, issued);
            if let Some(acked) = e.acked_at {
                rec.record_wall(FULFILLED_TO_ACKED, clock, issued, acked);
            }
        }
    }
}
