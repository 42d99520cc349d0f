//! `resume N`: Orders up, Payments down; N orders created through the API (all
//! `pending_payment`); then Payments starts. Measured: from Payments' start, and from
//! the moment the link connected (`ws_connections.opened_at`), until every order has
//! its page. Orders runs with `RECONNECT_CAP` = `--reconnect-cap` (1 s by default) so
//! its backoff does not dominate the figure; the gap is reported separately.

use super::steps::{
    Back, CREATE_TO_INITIATE, POST_ORDERS, create_many, latest, payments_back, secs_between,
};
use super::{Run, Scenario, Size, Spec};
use crate::stats::{Clock, Recorder};

pub const START_TO_PAGE: &str = "Payments start → page";

pub struct Resume(pub Size);

impl Scenario for Resume {
    fn spec(&self) -> Spec<'_> {
        Spec::new(
            "resume",
            &self.0.common,
            &[START_TO_PAGE, CREATE_TO_INITIATE],
        )
    }

    async fn measure(&self, run: &mut Run) -> anyhow::Result<()> {
        let c = run.common.clone();
        run.stack.start_orders(false).await?;
        let obs = run.stack.observer()?;
        let api = run.api()?;
        let rec = run.rec.clone();
        declare_stages(&rec);
        let clock = Clock::start();
        let created = create_many(&api, self.0.n, c.http_concurrency, &rec, &clock).await;
        let n = created.ids.len() as i64;
        let pending = obs.count_status("pending_payment").await?;
        let wait = (c.deadline, c.poll);
        let until = [("pending_payment", 0)];
        let back = payments_back(&mut run.stack, &obs, &clock, wait, &until).await?;
        let orders = obs.all_orders().await?;
        let sessions = obs.sessions().await?;
        let mut pages = Vec::new();
        for o in &orders {
            if o.payment_url.is_some() {
                pages.push(o.updated_at);
                rec.record_wall(START_TO_PAGE, &clock, back.start, o.updated_at);
            }
            if let Some(at) = sessions.get(&o.id) {
                rec.record_wall(CREATE_TO_INITIATE, &clock, o.created_at, *at);
            }
        }
        self.figures(run, n, &back, &pages);
        let report = &mut run.report;
        report.check(
            "every POST /orders answered 201 while Payments was down",
            n as u64 == self.0.n && pending == n,
            format!(
                "{n} of {} created, {pending} pending before Payments started",
                self.0.n
            ),
        );
        let detail = format!("{} of {n} paged", pages.len());
        report.check(
            "every order got its page within the deadline",
            back.done,
            detail,
        );
        let detail = format!("{} sessions for {n} orders", sessions.len());
        report.check(
            "one payment session per order",
            sessions.len() as i64 == n,
            detail,
        );
        report.parameters = serde_json::json!({
            "n": self.0.n,
            "http_concurrency": c.http_concurrency,
            "reconnect_cap_ms": c.stack.reconnect_cap.as_millis() as u64,
            "poll_ms": c.poll.as_millis() as u64,
            "service_log": c.stack.service_log,
        });
        Ok(())
    }
}

fn declare_stages(rec: &Recorder) {
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
}

impl Resume {
    fn figures(&self, run: &mut Run, n: i64, back: &Back, pages: &[chrono::DateTime<chrono::Utc>]) {
        let report = &mut run.report;
        report.figure(
            "orders created while Payments was down",
            n as f64,
            "",
            "201 answers",
        );
        report.figure(
            "Payments start → ready",
            back.ready.as_secs_f64(),
            "s",
            "spawn → its /readyz answered 200 (migrations included)",
        );
        if let Some(opened) = back.link_opened {
            report.figure(
                "Payments start → link connected",
                secs_between(back.start, opened),
                "s",
                "the first ws_connections.opened_at − spawn of Payments (Orders' reconnect backoff)",
            );
        }
        if let Some(last) = latest(pages).filter(|_| back.done) {
            report.figure(
                "Payments start → every page",
                secs_between(back.start, last),
                "s",
                "the latest page's orders.updated_at − spawn of Payments",
            );
            if let Some(opened) = back.link_opened {
                let secs = secs_between(opened, last);
                report.figure(
                    "link connected → every page",
                    secs,
                    "s",
                    "the latest page's orders.updated_at − ws_connections.opened_at",
                );
                report.figure(
                    "pages/s after connecting",
                    pages.len() as f64 / secs.max(1e-9),
                    "/s",
                    "paged orders ÷ (latest page − connection)",
                );
            }
        }
        if !back.done {
            report.figure(
                "paged by the deadline",
                pages.len() as f64,
                "",
                &format!(
                    "orders with their page {:?} after Payments started",
                    run.common.deadline
                ),
            );
        }
    }
}
