//! Verification at drop: what fails the test when the [`FakeServer`](super::FakeServer)
//! or the last clone of a [`Connection`](super::Connection) handle is dropped.
//!
//! It reads the shared state (`state`): frames from the client that nobody looked at
//! (when strict), frames that are not valid messages, and rules that did not fire as
//! often as they were told to ([`Rule::times`](super::Rule::times), and
//! [`HandshakeRule::times`](super::HandshakeRule::times)); and it renders
//! them, with the transcripts, into one panic, never while the thread is already
//! panicking.

use super::state::{MountedRule, Shared};
use crate::transcript::{FrameKind, render};

/// Panics with every problem of the fake (`only: None`) or of one connection, unless
/// the thread is already panicking. Reported connections are not reported again.
/// `whose` begins with where the test started the server or took the connection: a
/// drop has no caller in the test to point the panic at, so the message's first words do.
pub(super) fn fail_on_problems<In, Out>(
    shared: &Shared<In, Out>,
    only: Option<usize>,
    whose: &str,
) {
    if std::thread::panicking() {
        return;
    }
    let problems = problems_of(shared, only);
    if problems.is_empty() {
        return;
    }
    let transcripts = {
        let mut state = shared.lock();
        state
            .connections
            .iter_mut()
            .filter(|c| only.is_none_or(|id| id == c.id))
            .map(|c| {
                c.reported = true;
                format!("  connection {}:\n{}", c.id, render(&c.transcript))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{whose} found problems:\n- {}\n\ntranscripts:\n{transcripts}",
        problems.join("\n- ")
    );
}

/// What fails the test at drop: of the whole fake (`None`) or of one connection.
pub(super) fn problems_of<In, Out>(shared: &Shared<In, Out>, only: Option<usize>) -> Vec<String> {
    let state = shared.lock();
    let mut problems = Vec::new();
    let connections = state
        .connections
        .iter()
        .filter(|c| !c.reported && only.is_none_or(|id| id == c.id));
    for conn in connections {
        for inbound in &conn.inbound {
            if inbound.consumed {
                continue;
            }
            if let Some(message) = &inbound.message
                && conn
                    .allowed
                    .iter()
                    .chain(&state.allowed)
                    .any(|a| a.matches(message))
            {
                continue;
            }
            let entry = &conn.transcript[inbound.entry];
            if let Some(error) = &inbound.error {
                // A close frame is the protocol's, not the messages' contract: what it
                // breaks is RFC 6455.
                let problem = if matches!(entry.frame, FrameKind::Close { .. }) {
                    "protocol violation, a close frame RFC 6455 forbids"
                } else {
                    "contract violation, a frame that is not a valid message"
                };
                problems.push(format!(
                    "connection {}: {problem} ({error}): {entry}",
                    conn.id
                ));
            } else if shared.config.strict && !inbound.handled {
                problems.push(format!(
                    "connection {}: a message that no expectation or rule looked at: {entry}",
                    conn.id
                ));
            }
        }
    }
    if only.is_none() {
        problems.extend(state.failures.iter().cloned());
        if let Some(replay) = &state.replay {
            problems.extend(replay.unfinished(state.connections.len()));
        }
        problems.extend(state.handshake_rules.iter().filter_map(|r| r.problem()));
    }
    let reported = |id: usize| state.connections.get(id).is_some_and(|c| c.reported);
    problems.extend(rule_problems(&state.rules, only, reported));
    problems
}

/// The rules (server-wide when `only` is `None`, else those scoped to connection
/// `only`) that did not fire as often as they were told to. `reported` says whether
/// a connection's problems were already reported (its rules are not reported again).
fn rule_problems<In, Out>(
    rules: &[MountedRule<In, Out>],
    only: Option<usize>,
    reported: impl Fn(usize) -> bool,
) -> Vec<String> {
    rules
        .iter()
        .filter(|m| match (only, m.scope) {
            (Some(id), scope) => scope == Some(id) && !reported(id),
            (None, Some(scope)) => !reported(scope),
            (None, None) => true,
        })
        .filter_map(|m| {
            let expected = m.rule.expected?;
            if expected.contains(m.hits) {
                return None;
            }
            let scope = match m.scope {
                Some(id) => format!(", scoped to connection {id}"),
                None => String::new(),
            };
            Some(format!(
                "{} (mounted at {}{scope}) fired {} times, expected {expected}",
                m.rule.describe(),
                m.rule.location,
                m.hits
            ))
        })
        .collect()
}
