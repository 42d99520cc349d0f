//! What the report shows besides the checks: the figures (faults by kind, orders by
//! state and by action, why some got no definitive answer, the phases' durations), the
//! table of the faults injected, and the run's parameters.

use std::collections::BTreeMap;

use super::Ran;
use super::faults::{Fault, Injected};
use super::load::{Action, Expect};
use crate::report::{Report, Section};

/// The figures of the run; `violations` from the checks.
pub(super) fn figures(report: &mut Report, ran: &Ran<'_>, violations: u64) {
    let &Ran {
        args,
        ref outcomes,
        late,
        ref by_fault,
        two_started,
        t0,
        faults_end,
        load_end,
        settled_after,
        ref status,
        ref created,
        ref created_set,
        ..
    } = ran;
    let n = args.orders;
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, _, _) in status.values() {
        *by_state.entry(s).or_default() += 1;
    }
    report.figure(
        "violations",
        violations as f64,
        "",
        "orders (or events, restarts) breaking a check; 0 expected",
    );
    for f in Fault::ALL {
        report.figure(
            &format!("faults: {}", f.name()),
            by_fault.get(&f).copied().unwrap_or(0) as f64,
            "",
            "injected",
        );
    }
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
        status.keys().filter(|id| !created_set.contains(id)).count() as f64,
        "",
        "orders in the database whose creation loadgen never saw answered",
    );
    for (s, k) in &by_state {
        report.figure(
            &format!("orders {s}"),
            *k as f64,
            "",
            "final state, all rows",
        );
    }
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
    for o in outcomes {
        if let Some(w) = o.why_open {
            *open_why.entry(w).or_default() += 1;
        }
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
    if let Some(s) = two_started {
        report.figure(
            "second instances started at",
            s,
            "s",
            "since the load began",
        );
    }
    report.figure(
        "load and faults",
        (faults_end - t0).as_secs_f64(),
        "s",
        "first order due → faults stopped",
    );
    report.figure(
        "last calls after the faults",
        (load_end - faults_end).as_secs_f64(),
        "s",
        "",
    );
    if let Some(s) = settled_after {
        report.figure("settle", s, "s", "until nothing pending or unacked");
    }
    report.figure(
        "orders started late",
        late as f64,
        "",
        "started > 1 s after due (--max-in-flight reached)",
    );
}

/// The table of the faults injected: when, what, on which service, how long it took.
pub(super) fn faults_section(injected: &[Injected]) -> Section {
    let mut md =
        String::from("| t (s) | fault | target | how | took (s) |\n|---|---|---|---|---|\n");
    for f in injected {
        md.push_str(&format!(
            "| {:.1} | {} | {} | {}{} | {:.1} |\n",
            f.at_s,
            f.fault.name(),
            f.target,
            f.how,
            f.restart_error
                .as_deref()
                .map(|e| format!("; restart FAILED: {e}"))
                .unwrap_or_default(),
            f.restart_s
        ));
    }
    Section {
        title: "Faults".into(),
        markdown: md,
    }
}

/// The run's parameters, for the JSON report.
pub(super) fn parameters(ran: &Ran<'_>) -> serde_json::Value {
    let args = ran.args;
    let c = &args.common;
    let (n, seed, cluster) = (args.orders, ran.seed, ran.cluster);
    serde_json::json!({
        "orders": n,
        "rate": args.rate,
        "fault_min_ms": args.fault_min.as_millis() as u64,
        "fault_max_ms": args.fault_max.as_millis() as u64,
        "single_phase": args.single_phase,
        "mix": args.mix,
        "settle_s": args.settle.as_secs_f64(),
        "retry_for_s": args.retry_for.as_secs_f64(),
        "page_wait_s": args.page_wait.as_secs_f64(),
        "seed": seed,
        "postgres_cluster": format!("{}/{}", cluster.version, cluster.name),
        "http_concurrency": c.http_concurrency,
        "request_timeout_ms": c.request_timeout.as_millis() as u64,
    })
}
