//! After the faults: waiting for the orders to settle, then the checks on both
//! databases (no order lost, every answered action took effect, invoices and sessions
//! agree with the orders, nothing unacked, parked or left down) and on the run itself
//! (every kind of fault injected, outcomes crossing instances); then the figures
//! (faults by kind, orders by state and by action, why some got no definitive answer,
//! the phases' durations), the table of the faults, and the run's parameters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::faults::{Fault, Injected};
use super::load::{Action, Expect, Outcome};
use super::options::ChaosOptions;
use crate::observe::Observer;
use crate::report::{Report, Section};
use crate::scenarios::steps::Poll;

/// What the run left, for the checks and the figures: the answers, the faults, the
/// timings, and every order's row.
pub(super) struct Ran<'a> {
    pub(super) options: &'a ChaosOptions,
    pub(super) seed: u64,
    /// `<version>/<name>` of the run's PostgreSQL cluster.
    pub(super) cluster: String,
    pub(super) outcomes: Vec<Outcome>,
    /// Orders started > 1 s after due.
    pub(super) late: u64,
    pub(super) injected: Vec<Injected>,
    /// Services that would not start again once the faults stopped.
    pub(super) final_start_errors: Vec<String>,
    /// When the second instances started, since the load began.
    pub(super) two_started: Option<f64>,
    /// When the first order was due, the faults stopped, the load's last call ended.
    pub(super) t0: Instant,
    pub(super) faults_end: Instant,
    pub(super) load_end: Instant,
    /// How long the orders took to settle, or what was left at the last look.
    pub(super) settled: Result<f64, String>,
}

/// Each order's status, whether it is parked, and its invoices.
type Rows = HashMap<Uuid, (String, bool, i32)>;

/// Waits at most `settle` until no order is pending, every definitive answer is final
/// and nothing is unacked: how long that took, or what was left at the last look.
pub(super) async fn settle(
    obs: &Observer,
    outcomes: &[Outcome],
    settle: Duration,
) -> Result<f64, String> {
    let expect: HashMap<Uuid, Expect> = outcomes
        .iter()
        .filter_map(|o| Some((o.id?, o.expect)))
        .collect();
    let settle_start = Instant::now();
    let mut poll = Poll::new(settle, Duration::from_secs(1));
    let mut settled = Err(String::from("never read"));
    while poll.next().await {
        match unsettled(obs, &expect).await {
            Ok((0, _)) => {
                settled = Ok(settle_start.elapsed().as_secs_f64());
                break;
            }
            Ok((_, why)) => settled = Err(why),
            Err(e) => settled = Err(format!("database error: {e}")),
        }
    }
    eprintln!(
        "loadgen chaos: settled: {:?}; checking",
        settled.as_ref().ok()
    );
    settled
}

/// How many orders are not settled yet, and why (for the report if it never happens).
async fn unsettled(obs: &Observer, expect: &HashMap<Uuid, Expect>) -> sqlx::Result<(u64, String)> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM orders WHERE status IN ('pending_payment', 'awaiting_payment')",
    )
    .fetch_all(&obs.orders)
    .await?;
    let pending = rows.iter().filter(|(_, s)| s == "pending_payment").count() as u64;
    let answered_open = rows
        .iter()
        .filter(|(id, _)| {
            expect
                .get(id)
                .is_some_and(|e| *e != Expect::FinalOrAwaiting)
        })
        .count() as u64;
    let unacked = obs.unacked().await? as u64;
    Ok((
        pending + answered_open + unacked,
        format!(
            "{pending} pending_payment, {answered_open} answered but not final, {unacked} unacked events"
        ),
    ))
}

/// The checks, the figures, the faults' table and the parameters of the run.
pub(super) async fn report(
    report: &mut Report,
    obs: &Observer,
    ran: &Ran<'_>,
) -> anyhow::Result<()> {
    let rows: Vec<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>, i32)> = sqlx::query_as(
        "SELECT o.id, o.status, o.parked_at, \
                (SELECT count(*)::int FROM invoices i WHERE i.order_id = o.id) \
         FROM orders o",
    )
    .fetch_all(&obs.orders)
    .await?;
    let rows: Rows = rows
        .into_iter()
        .map(|(id, s, parked, inv)| (id, (s, parked.is_some(), inv)))
        .collect();
    let mut checks = Checks {
        report: &mut *report,
        violations: 0,
    };
    checks.orders(ran, &rows);
    checks.invoices(&rows);
    checks.databases(obs, &rows).await?;
    checks.run(ran, &rows);
    let violations = checks.violations;
    figures(report, ran, &rows, violations);
    report.sections.push(faults_section(&ran.injected));
    report.parameters = parameters(ran);
    Ok(())
}

/// The checks, counting the violations: orders (or events, restarts) breaking one.
struct Checks<'r> {
    report: &'r mut Report,
    violations: u64,
}

impl Checks<'_> {
    fn count(&mut self, name: &str, bad: u64, detail: String) {
        self.violations += bad;
        self.report.check(name, bad == 0, detail);
    }

    /// A check that `items` breaks, each one violation: "<n><what>: <examples>".
    fn list(&mut self, name: &str, items: Vec<String>, what: &str) {
        let n = items.len();
        let shown: Vec<String> = items.into_iter().take(5).collect();
        let examples = match shown.is_empty() {
            true => String::new(),
            false => format!(": {}", shown.join("; ")),
        };
        self.count(name, n as u64, format!("{n}{what}{examples}"));
    }

    /// Settling, and every order against its row and its answers.
    fn orders(&mut self, ran: &Ran, rows: &Rows) {
        let settle = ran.options.settle;
        let (bad, detail) = match &ran.settled {
            Ok(s) => (
                0,
                format!(
                    "in {s:.1} s: nothing pending, every answered action final, nothing unacked"
                ),
            ),
            Err(left) => (1, format!("after {settle:?}: {left}")),
        };
        self.count(
            "settled within --settle after the faults stopped",
            bad,
            detail,
        );
        let created: Vec<Uuid> = ran.outcomes.iter().filter_map(|o| o.id).collect();
        let lost = created.iter().filter(|id| !rows.contains_key(id));
        self.list(
            "no order lost: every 201/200 has its row",
            lost.map(Uuid::to_string).collect(),
            &format!(" of {} created orders missing", created.len()),
        );
        let not_final = rows
            .iter()
            .filter(|(_, (s, _, _))| {
                !matches!(s.as_str(), "fulfilled" | "cancelled" | "awaiting_payment")
            })
            .map(|(id, (s, _, _))| format!("{id} {s}"));
        self.list(
            "every order final or awaiting_payment",
            not_final.collect(),
            " not",
        );
        let wrong = ran.outcomes.iter().filter_map(|o| {
            let id = o.id?;
            let (s, _, _) = rows.get(&id)?;
            let bad = match o.expect {
                Expect::Fulfilled => s != "fulfilled",
                Expect::Cancelled => s != "cancelled",
                // Nobody cancelled an order whose action was Pay.
                Expect::FinalOrAwaiting => o.action == Action::Pay && s == "cancelled",
            };
            bad.then(|| format!("{id} {:?}/{:?} is {s}", o.action, o.expect))
        });
        self.list(
            "every answered action took effect (303 Pay → fulfilled, 303 Cancel/202 → cancelled; Pay never cancelled)",
            wrong.collect(),
            " wrong",
        );
    }

    /// No order with two invoices, none cancelled with one, none fulfilled without.
    fn invoices(&mut self, rows: &Rows) {
        let two = rows
            .iter()
            .filter(|(_, (_, _, n))| *n > 1)
            .map(|(id, (_, _, n))| format!("{id} ({n})"));
        self.list("no order has two invoices", two.collect(), "");
        let mismatch = rows
            .iter()
            .filter(|(_, (s, _, n))| (s == "cancelled" && *n > 0) || (s == "fulfilled" && *n != 1))
            .map(|(id, (s, _, n))| format!("{id} {s} with {n} invoice(s)"));
        self.list(
            "no invoice of a cancelled order; every fulfilled order has one",
            mismatch.collect(),
            "",
        );
    }

    /// Sessions, events and incidents, by SQL on both databases.
    async fn databases(&mut self, obs: &Observer, rows: &Rows) -> anyhow::Result<()> {
        let sessions: HashMap<Uuid, String> =
            sqlx::query_as::<_, (Uuid, String)>("SELECT order_id, state FROM payment_sessions")
                .fetch_all(&obs.payments)
                .await?
                .into_iter()
                .collect();
        let mismatch = rows.iter().filter_map(|(id, (s, _, _))| {
            let want = matches!(s.as_str(), "fulfilled" | "cancelled").then_some(s)?;
            let has = sessions.get(id).map_or("no session", String::as_str);
            (has != want).then(|| format!("{id} {s}, session {has}"))
        });
        self.list(
            "every fulfilled order's session is fulfilled, every cancelled order's cancelled",
            mismatch.collect(),
            "",
        );
        let (unacked, dead): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE acked_at IS NULL), \
                    count(*) FILTER (WHERE dead_at IS NOT NULL AND acked_at IS NULL) \
             FROM payment_events",
        )
        .fetch_one(&obs.payments)
        .await?;
        let detail = format!("{unacked} unacked ({dead} of them dead-lettered)");
        self.count("no unacked event left", unacked as u64, detail);
        let parked = rows.values().filter(|(_, p, _)| *p).count() as u64;
        let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM order_incidents")
            .fetch_one(&obs.orders)
            .await?;
        let detail = format!("{parked} parked, {incidents} incident(s)");
        self.count(
            "no parked order, no order incident",
            parked + incidents as u64,
            detail,
        );
        Ok(())
    }

    /// The run itself: every service came back, the faults it promised, crossings.
    fn run(&mut self, ran: &Ran, rows: &Rows) {
        let restart_failures = ran.injected.iter().filter_map(|f| {
            let e = f.restart_error.as_ref()?;
            Some(format!(
                "{:.1} s {} on {}: {e}",
                f.at_s,
                f.fault.name(),
                f.target
            ))
        });
        let failures = restart_failures.chain(ran.final_start_errors.iter().cloned());
        self.list(
            "every service came back after every fault",
            failures.collect(),
            " failed restart(s)",
        );
        let by_fault = by_fault(&ran.injected);
        let pg = [Fault::PgRestart, Fault::PgCrash].map(|f| by_fault.get(&f).copied().unwrap_or(0));
        let pg = pg[0] + pg[1];
        self.report.check(
            "the run injected every kind of fault, PostgreSQL restarts included",
            Fault::ALL.iter().all(|f| by_fault.contains_key(f)) && pg > 0,
            format!(
                "{} fault(s), {pg} PostgreSQL restart(s)",
                ran.injected.len()
            ),
        );
        let crossed_final = ran
            .outcomes
            .iter()
            .filter(|o| o.crossed && o.expect != Expect::FinalOrAwaiting)
            .filter_map(|o| rows.get(&o.id?))
            .filter(|(s, _, _)| matches!(s.as_str(), "fulfilled" | "cancelled"))
            .count();
        if ran.options.single_phase < 1.0 {
            self.report.check(
                "two-instance phase: outcomes acted on the other instance took effect",
                ran.two_started.is_some() && crossed_final > 0,
                format!("{crossed_final} order(s) created on one instance, paid/cancelled on the other, final"),
            );
        }
    }
}

fn by_fault(injected: &[Injected]) -> BTreeMap<Fault, u64> {
    let mut by_fault = BTreeMap::new();
    for f in injected {
        *by_fault.entry(f.fault).or_default() += 1;
    }
    by_fault
}

/// The figures of the run; `violations` from the checks.
fn figures(report: &mut Report, ran: &Ran, rows: &Rows, violations: u64) {
    let n = ran.options.orders;
    report.figure(
        "violations",
        violations as f64,
        "",
        "orders (or events, restarts) breaking a check; 0 expected",
    );
    let by_fault = by_fault(&ran.injected);
    for f in Fault::ALL {
        let count = by_fault.get(&f).copied().unwrap_or(0) as f64;
        report.figure(&format!("faults: {}", f.name()), count, "", "injected");
    }
    let created: Vec<Uuid> = ran.outcomes.iter().filter_map(|o| o.id).collect();
    let created_set: HashSet<&Uuid> = created.iter().collect();
    report.figure("orders due", n as f64, "", "POST /orders sequences started");
    report.figure(
        "orders created",
        created_set.len() as f64,
        "",
        "a 201 (or the 200 of a retry with the same Idempotency-Key)",
    );
    report.figure(
        "orders without an answer",
        (n as usize - created.len()) as f64,
        "",
        "no 201/200 within --retry-for (they may exist: see rows)",
    );
    report.figure(
        "rows without a 201",
        rows.keys().filter(|id| !created_set.contains(id)).count() as f64,
        "",
        "orders in the database whose creation loadgen never saw answered",
    );
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, _, _) in rows.values() {
        *by_state.entry(s).or_default() += 1;
    }
    for (s, k) in &by_state {
        let name = format!("orders {s}");
        report.figure(&name, *k as f64, "", "final state, all rows");
    }
    action_figures(report, &ran.outcomes);
    phase_figures(report, ran);
}

/// Orders by action and by why they got no definitive answer, and crossings.
fn action_figures(report: &mut Report, outcomes: &[Outcome]) {
    for (name, action) in [
        ("action: pay on the page", Action::Pay),
        ("action: cancel on the page", Action::PageCancel),
        ("action: cancel through the API", Action::ApiCancel),
    ] {
        let all = outcomes
            .iter()
            .filter(|o| o.id.is_some() && o.action == action);
        let answered = all
            .clone()
            .filter(|o| o.expect != Expect::FinalOrAwaiting)
            .count();
        report.figure(
            name,
            all.count() as f64,
            "",
            &format!("created orders given this action; {answered} got a definitive answer"),
        );
    }
    let mut open_why: BTreeMap<&str, u64> = BTreeMap::new();
    for w in outcomes.iter().filter_map(|o| o.why_open) {
        *open_why.entry(w).or_default() += 1;
    }
    for (w, k) in &open_why {
        report.figure(&format!("no definitive answer: {w}"), *k as f64, "", "");
    }
    report.figure(
        "orders crossing instances",
        outcomes
            .iter()
            .filter(|o| o.crossed && o.id.is_some())
            .count() as f64,
        "",
        "created while two instances ran; action sent to the other instance",
    );
}

/// How long each phase took.
fn phase_figures(report: &mut Report, ran: &Ran) {
    if let Some(s) = ran.two_started {
        report.figure(
            "second instances started at",
            s,
            "s",
            "since the load began",
        );
    }
    report.figure(
        "load and faults",
        (ran.faults_end - ran.t0).as_secs_f64(),
        "s",
        "first order due → faults stopped",
    );
    report.figure(
        "last calls after the faults",
        (ran.load_end - ran.faults_end).as_secs_f64(),
        "s",
        "",
    );
    if let Ok(s) = ran.settled {
        report.figure("settle", s, "s", "until nothing pending or unacked");
    }
    report.figure(
        "orders started late",
        ran.late as f64,
        "",
        "started > 1 s after due (--max-in-flight reached)",
    );
}

/// The table of the faults injected: when, what, on which service, how long it took.
fn faults_section(injected: &[Injected]) -> Section {
    let mut md =
        String::from("| t (s) | fault | target | how | took (s) |\n|---|---|---|---|---|\n");
    for f in injected {
        let failed = f.restart_error.as_deref();
        let failed = failed.map(|e| format!("; restart FAILED: {e}"));
        md.push_str(&format!(
            "| {:.1} | {} | {} | {}{} | {:.1} |\n",
            f.at_s,
            f.fault.name(),
            f.target,
            f.how,
            failed.unwrap_or_default(),
            f.restart_s
        ));
    }
    Section {
        title: "Faults".into(),
        markdown: md,
    }
}

/// The run's parameters, for the JSON report.
fn parameters(ran: &Ran) -> serde_json::Value {
    let o = ran.options;
    let c = &o.common;
    serde_json::json!({
        "orders": o.orders,
        "rate": o.rate,
        "fault_min_ms": o.fault_min.as_millis() as u64,
        "fault_max_ms": o.fault_max.as_millis() as u64,
        "single_phase": o.single_phase,
        "mix": o.mix,
        "settle_s": o.settle.as_secs_f64(),
        "retry_for_s": o.retry_for.as_secs_f64(),
        "page_wait_s": o.page_wait.as_secs_f64(),
        "seed": ran.seed,
        "postgres_cluster": ran.cluster,
        "http_concurrency": c.http_concurrency,
        "request_timeout_ms": c.request_timeout.as_millis() as u64,
    })
}
