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

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::steps::{
    Back, POST_COMPLETE, POST_ORDERS, complete_many, create_many, latest, payments_back,
    secs_between, until_none_in,
};
use super::{Run, Scenario, Size, Spec};
use crate::observe::Observer;
use crate::stack::Which;
use crate::stats::{Clock, Recorder};

pub const START_TO_APPLIED: &str = "Payments start → outcome applied (A)";
pub const START_TO_PAGE: &str = "Payments start → page (B)";

pub struct Backlog(pub Size);

/// Both backlogs, waiting for Payments.
struct Waiting {
    batch_a: HashSet<uuid::Uuid>,
    unacked: i64,
    pending: i64,
    stopped: String,
}

/// What became of them once Payments came back.
struct Drained {
    back: Back,
    /// Orders fulfilled and pending at the last look.
    progress: (i64, i64),
    /// When each outcome of batch A was applied, and each page of batch B recorded.
    applied: Vec<DateTime<Utc>>,
    pages: Vec<DateTime<Utc>>,
}

impl Scenario for Backlog {
    fn spec(&self) -> Spec<'_> {
        Spec::new(
            "backlog",
            &self.0.common,
            &[START_TO_APPLIED, START_TO_PAGE],
        )
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let obs = run.start().await?;
        declare_stages(&run.rec);
        let clock = Clock::start();
        let waiting = self.set_up(run, &obs, &clock).await?;
        let drained = self.drain(run, &clock, &waiting).await?;
        self.report(run, &waiting, &drained).await
    }
}

fn declare_stages(rec: &Recorder) {
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
}

impl Backlog {
    /// Steps 1 to 3: batch A paid while Orders is down, batch B created while Payments is.
    async fn set_up(
        &self,
        run: &mut Run,
        obs: &Observer,
        clock: &Clock,
    ) -> anyhow::Result<Waiting> {
        let (c, n) = (run.common.clone(), self.0.n as i64);
        let api = run.api()?;
        let rec = &run.rec;

        // 1. Batch A, paged.
        let a = create_many(&api, self.0.n, c.http_concurrency, rec, clock).await;
        let created = a.ids.len();
        anyhow::ensure!(
            created as i64 == n,
            "batch A: only {created} of {n} orders created"
        );
        anyhow::ensure!(
            until_none_in(obs, "pending_payment", c.deadline, c.poll).await?,
            "batch A: not every order paged within the deadline"
        );
        let orders = obs.all_orders().await?;
        let urls: Vec<String> = orders.into_iter().filter_map(|o| o.payment_url).collect();

        // 2. Orders down; pay batch A: the outcomes wait in Payments.
        let orders_stop = run.stack.stop(Which::Orders).await;
        let paid = complete_many(&api, &urls, c.http_concurrency, rec, clock).await;
        anyhow::ensure!(paid as i64 == n, "batch A: only {paid} of {n} pages paid");
        let unacked = obs.unacked().await?;

        // 3. Payments down, Orders alone; batch B waits as pending orders.
        let payments_stop = run.stack.stop(Which::Payments).await;
        run.stack.start_orders(false).await?;
        let b = create_many(&api, self.0.n, c.http_concurrency, rec, clock).await;
        let created = b.ids.len();
        anyhow::ensure!(
            created as i64 == n,
            "batch B: only {created} of {n} orders created"
        );
        Ok(Waiting {
            batch_a: a.ids.into_iter().collect(),
            unacked,
            pending: obs.count_status("pending_payment").await?,
            stopped: format!(
                "Set-up: Orders stopped with {orders_stop}; Payments stopped with {payments_stop}."
            ),
        })
    }

    /// Step 4: Payments up, both backlogs meet.
    async fn drain(&self, run: &mut Run, clock: &Clock, w: &Waiting) -> anyhow::Result<Drained> {
        let (c, n) = (&run.common, self.0.n as i64);
        let obs = run.stack.observer()?;
        let wait = (c.deadline, c.poll);
        let until = [("fulfilled", n), ("pending_payment", 0)];
        let back = payments_back(&mut run.stack, &obs, clock, wait, &until).await?;
        let progress = match back.counts[..] {
            [fulfilled, pending] => (fulfilled, pending),
            _ => (0, n),
        };
        let mut out = Drained {
            back,
            progress,
            applied: Vec::new(),
            pages: Vec::new(),
        };
        let start = out.back.start;
        for o in obs.all_orders().await? {
            if w.batch_a.contains(&o.id) {
                if let Some(issued) = o.issued_at {
                    out.applied.push(issued);
                    run.rec.record_wall(START_TO_APPLIED, clock, start, issued);
                }
            } else if o.payment_url.is_some() {
                out.pages.push(o.updated_at);
                run.rec
                    .record_wall(START_TO_PAGE, clock, start, o.updated_at);
            }
        }
        Ok(out)
    }

    async fn report(&self, run: &mut Run, w: &Waiting, d: &Drained) -> anyhow::Result<()> {
        let (c, n) = (&run.common, self.0.n as i64);
        let (start, report) = (d.back.start, &mut run.report);
        report.figure(
            "unacked outcomes waiting",
            w.unacked as f64,
            "",
            "payment_events with acked_at IS NULL before Payments restarted",
        );
        report.figure(
            "pending orders waiting",
            w.pending as f64,
            "",
            "orders in pending_payment before Payments restarted",
        );
        if let Some(opened) = d.back.link_opened {
            report.figure(
                "Payments start → link connected",
                secs_between(start, opened),
                "s",
                "ws_connections.opened_at − spawn of Payments",
            );
        }
        if let Some(last) = latest(&d.applied).filter(|_| d.applied.len() as i64 == n) {
            report.figure(
                "Payments start → every outcome applied",
                secs_between(start, last),
                "s",
                "the latest invoices.issued_at of batch A − spawn of Payments",
            );
        }
        if let Some(last) = latest(&d.pages).filter(|_| d.pages.len() as i64 == n) {
            report.figure(
                "Payments start → every page",
                secs_between(start, last),
                "s",
                "the latest page (orders.updated_at) of batch B − spawn of Payments",
            );
        }
        let last = latest(d.applied.iter().chain(&d.pages));
        match last.filter(|_| d.back.done) {
            Some(last) => report.figure(
                "Payments start → drained",
                secs_between(start, last),
                "s",
                "the later of the two above",
            ),
            None => report.figure(
                "drained within the deadline",
                0.0,
                "",
                &format!(
                    "no: after {:?}, {} of {n} outcomes applied and {} of {n} orders still pending",
                    c.deadline, d.progress.0, d.progress.1
                ),
            ),
        }
        self.checks(run, w, d).await
    }

    async fn checks(&self, run: &mut Run, w: &Waiting, d: &Drained) -> anyhow::Result<()> {
        let (c, n) = (&run.common, self.0.n);
        let counts = run.stack.observer()?.invoice_counts().await?;
        let report = &mut run.report;
        report.check(
            "both backlogs drained within the deadline",
            d.back.done,
            format!(
                "{} of {n} outcomes applied, {} of {n} pages recorded",
                d.applied.len(),
                d.pages.len()
            ),
        );
        report.check(
            "exactly one invoice per fulfilled order",
            counts.invoices == counts.orders_invoiced && counts.invoices == counts.fulfilled,
            format!(
                "{} invoices for {} orders; {} fulfilled",
                counts.invoices, counts.orders_invoiced, counts.fulfilled
            ),
        );
        report.notes.push(w.stopped.clone());
        report.parameters = serde_json::json!({
            "n": n,
            "http_concurrency": c.http_concurrency,
            "reconnect_cap_ms": c.stack.reconnect_cap.as_millis() as u64,
            "deadline_s": c.deadline.as_secs(),
            "service_log": c.stack.service_log,
        });
        Ok(())
    }
}
