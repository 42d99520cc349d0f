//! After the faults: waiting for the orders to settle, then the checks on both
//! databases (no order lost, every answered action took effect, invoices and sessions
//! agree with the orders, nothing unacked, parked or left down) and on the run itself
//! (every kind of fault injected, outcomes crossing instances).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Ran;
use super::faults::Fault;
use super::load::{Action, Expect, Outcome};
use crate::observe::Observer;
use crate::report::Report;
use crate::scenarios::Poll;

/// Waits at most `settle` until no order is pending, every definitive answer is final
/// and nothing is unacked: how long that took, and what was left at the last look.
pub(super) async fn settle(
    obs: &Observer,
    outcomes: &[Outcome],
    settle: Duration,
) -> (Option<f64>, String) {
    let expect: HashMap<Uuid, Expect> = outcomes
        .iter()
        .filter_map(|o| Some((o.id?, o.expect)))
        .collect();
    let settle_start = Instant::now();
    let mut poll = Poll::new(settle, Duration::from_secs(1));
    let mut settled_after = None;
    let mut last_unsettled = String::from("never read");
    while poll.next().await {
        match unsettled(obs, &expect).await {
            Ok((0, _)) => {
                settled_after = Some(settle_start.elapsed().as_secs_f64());
                break;
            }
            Ok((_, why)) => last_unsettled = why,
            Err(e) => last_unsettled = format!("database error: {e}"),
        }
    }
    eprintln!("loadgen chaos: settled: {settled_after:?}; checking");
    (settled_after, last_unsettled)
}

/// Every check of the run, into `report`; returns the violations: orders (or events,
/// restarts) breaking a check.
pub(super) async fn check(
    report: &mut Report,
    obs: &Observer,
    ran: &Ran<'_>,
) -> anyhow::Result<u64> {
    let &Ran {
        args,
        ref outcomes,
        ref injected,
        ref by_fault,
        ref final_start_errors,
        two_started,
        settled_after,
        ref last_unsettled,
        ref status,
        ref created,
        ..
    } = ran;
    let mut violations = 0u64;
    let mut check = |report: &mut Report, name: &str, bad: u64, detail: String| {
        violations += bad;
        report.check(name, bad == 0, detail);
    };

    check(
        report,
        "settled within --settle after the faults stopped",
        u64::from(settled_after.is_none()),
        match settled_after {
            Some(s) => format!(
                "in {s:.1} s: nothing pending, every answered action final, nothing unacked"
            ),
            None => format!("after {:?}: {last_unsettled}", args.settle),
        },
    );

    let lost: Vec<&Uuid> = created
        .iter()
        .filter(|id| !status.contains_key(id))
        .collect();
    check(
        report,
        "no order lost: every 201/200 has its row",
        lost.len() as u64,
        format!(
            "{} of {} created orders missing{}",
            lost.len(),
            created.len(),
            examples(lost.iter().map(|id| id.to_string()))
        ),
    );

    let not_final: Vec<String> = status
        .iter()
        .filter(|(_, (s, _, _))| !matches!(*s, "fulfilled" | "cancelled" | "awaiting_payment"))
        .map(|(id, (s, _, _))| format!("{id} {s}"))
        .collect();
    check(
        report,
        "every order final or awaiting_payment",
        not_final.len() as u64,
        format!("{} not{}", not_final.len(), examples(not_final.into_iter())),
    );

    let mut wrong = Vec::new();
    for o in outcomes {
        let Some(id) = o.id else { continue };
        let Some((s, _, _)) = status.get(&id) else {
            continue;
        };
        let bad = match o.expect {
            Expect::Fulfilled => *s != "fulfilled",
            Expect::Cancelled => *s != "cancelled",
            // Nobody cancelled an order whose action was Pay.
            Expect::FinalOrAwaiting => o.action == Action::Pay && *s == "cancelled",
        };
        if bad {
            wrong.push(format!("{id} {:?}/{:?} is {s}", o.action, o.expect));
        }
    }
    check(
        report,
        "every answered action took effect (303 Pay → fulfilled, 303 Cancel/202 → cancelled; Pay never cancelled)",
        wrong.len() as u64,
        format!("{} wrong{}", wrong.len(), examples(wrong.into_iter())),
    );

    let two_invoices: Vec<String> = status
        .iter()
        .filter(|(_, (_, _, n))| *n > 1)
        .map(|(id, (_, _, n))| format!("{id} ({n})"))
        .collect();
    check(
        report,
        "no order has two invoices",
        two_invoices.len() as u64,
        format!(
            "{}{}",
            two_invoices.len(),
            examples(two_invoices.into_iter())
        ),
    );
    let invoice_mismatch: Vec<String> = status
        .iter()
        .filter(|(_, (s, _, n))| (*s == "cancelled" && *n > 0) || (*s == "fulfilled" && *n != 1))
        .map(|(id, (s, _, n))| format!("{id} {s} with {n} invoice(s)"))
        .collect();
    check(
        report,
        "no invoice of a cancelled order; every fulfilled order has one",
        invoice_mismatch.len() as u64,
        format!(
            "{}{}",
            invoice_mismatch.len(),
            examples(invoice_mismatch.into_iter())
        ),
    );

    let sessions: HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT order_id, state FROM payment_sessions")
            .fetch_all(&obs.payments)
            .await?
            .into_iter()
            .collect();
    let mut session_mismatch = Vec::new();
    for (id, (s, _, _)) in status {
        let want = match *s {
            "fulfilled" => "fulfilled",
            "cancelled" => "cancelled",
            _ => continue,
        };
        let has = sessions.get(id).map_or("no session", String::as_str);
        if has != want {
            session_mismatch.push(format!("{id} {s}, session {has}"));
        }
    }
    check(
        report,
        "every fulfilled order's session is fulfilled, every cancelled order's cancelled",
        session_mismatch.len() as u64,
        format!(
            "{}{}",
            session_mismatch.len(),
            examples(session_mismatch.into_iter())
        ),
    );

    let (unacked, dead): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE acked_at IS NULL), \
                count(*) FILTER (WHERE dead_at IS NOT NULL AND acked_at IS NULL) \
         FROM payment_events",
    )
    .fetch_one(&obs.payments)
    .await?;
    check(
        report,
        "no unacked event left",
        unacked as u64,
        format!("{unacked} unacked ({dead} of them dead-lettered)"),
    );
    let parked = status.values().filter(|(_, p, _)| *p).count() as u64;
    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM order_incidents")
        .fetch_one(&obs.orders)
        .await?;
    check(
        report,
        "no parked order, no order incident",
        parked + incidents as u64,
        format!("{parked} parked, {incidents} incident(s)"),
    );

    let restart_failures: Vec<String> = injected
        .iter()
        .filter_map(|f| {
            f.restart_error
                .as_ref()
                .map(|e| format!("{:.1} s {} on {}: {e}", f.at_s, f.fault.name(), f.target))
        })
        .chain(final_start_errors.iter().cloned())
        .collect();
    check(
        report,
        "every service came back after every fault",
        restart_failures.len() as u64,
        format!(
            "{} failed restart(s){}",
            restart_failures.len(),
            examples(restart_failures.into_iter())
        ),
    );

    // The run itself: the faults it promised.
    let pg = by_fault.get(&Fault::PgRestart).copied().unwrap_or(0)
        + by_fault.get(&Fault::PgCrash).copied().unwrap_or(0);
    report.check(
        "the run injected every kind of fault, PostgreSQL restarts included",
        Fault::ALL.iter().all(|f| by_fault.contains_key(f)) && pg > 0,
        format!("{} fault(s), {pg} PostgreSQL restart(s)", injected.len()),
    );
    let crossed_final = outcomes
        .iter()
        .filter(|o| o.crossed && o.expect != Expect::FinalOrAwaiting)
        .filter(|o| {
            o.id.and_then(|id| status.get(&id))
                .is_some_and(|(s, _, _)| matches!(*s, "fulfilled" | "cancelled"))
        })
        .count();
    if args.single_phase < 1.0 {
        report.check(
            "two-instance phase: outcomes acted on the other instance took effect",
            two_started.is_some() && crossed_final > 0,
            format!("{crossed_final} order(s) created on one instance, paid/cancelled on the other, final"),
        );
    }
    Ok(violations)
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

/// Up to five examples, for a check's detail.
fn examples(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.take(5).collect();
    if items.is_empty() {
        String::new()
    } else {
        format!(": {}", items.join("; "))
    }
}
