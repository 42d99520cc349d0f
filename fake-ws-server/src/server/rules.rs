//! How mounted rules answer: which one fires for a message ([`pick`]), and running its
//! [`Response`] on the connection ([`fire`]).
//!
//! Rules live in the shared state (`state`): the builder's, those mounted later with
//! [`FakeServer::mount`](super::FakeServer::mount), and those scoped to one connection
//! with [`Connection::mount`](super::Connection::mount). The connection's task picks
//! and fires them (`frames`) through its own [`Command`] channel; `verify` reports
//! those that did not fire as often as they were told to.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::command::Command;
use super::rule::Reply;
use super::state::{MountedRule, Shared};
use crate::response::{Response, Step};

/// The rule that answers `message` on connection `conn`, counted as fired: of the
/// matching rules that still answer, the highest priority, then one scoped to `conn`
/// before a server-wide one, then the first mounted. Returns its reply, its delay and
/// how the transcript names it.
pub(super) fn pick<In, Out>(
    rules: &mut [MountedRule<In, Out>],
    conn: usize,
    message: &In,
) -> Option<(Reply<In, Out>, Option<Duration>, String)> {
    let mounted = rules
        .iter_mut()
        .enumerate()
        .filter(|(_, m)| m.scope.is_none_or(|scope| scope == conn))
        .filter(|(_, m)| m.rule.limit.is_none_or(|limit| m.hits < limit))
        .filter(|(_, m)| m.rule.matcher.matches(message))
        .min_by_key(|(index, m)| (m.rule.priority, m.scope.is_none(), *index))
        .map(|(_, m)| m)?;
    mounted.hits += 1;
    Some((
        mounted.rule.reply.clone(),
        mounted.rule.delay,
        format!("answered by {}", mounted.rule.describe()),
    ))
}

/// Runs `response` on connection `id`, whose task takes `commands`, after `delay` if
/// any: at once, in order, when it has no delay (so it comes before anything a later
/// frame's rule sends), else on a task of its own. A message the codec cannot encode
/// is not sent, and neither is anything after it: it fails the test at drop (this runs
/// on the server's task, where a panic would go unseen).
pub(super) fn fire<In: 'static, Out: 'static>(
    shared: &Shared<In, Out>,
    id: usize,
    response: Response<Out>,
    delay: Option<Duration>,
    commands: &mpsc::UnboundedSender<Command>,
) {
    let mut steps = Vec::new();
    for step in response.steps {
        steps.push(match step {
            Step::Send(message) => match shared.config.codec.encode(&message) {
                Ok(payload) => Planned::Send(payload.into_message()),
                Err(e) => {
                    shared.lock().failures.push(format!(
                        "connection {id}: the codec could not encode a rule's reply, so it and the rest of the response were not sent: {e}"
                    ));
                    break;
                }
            },
            Step::Text(text) => Planned::Send(Message::Text(text.into())),
            Step::Binary(bytes) => Planned::Send(Message::Binary(bytes.into())),
            Step::Close(code, reason) => Planned::Close(code, reason),
            Step::Abort => Planned::Abort,
            Step::Stall => Planned::Stall,
            Step::Delay(delay) => Planned::Delay(delay),
        });
    }
    if let Some(delay) = delay {
        steps.insert(0, Planned::Delay(delay));
    }
    if !steps.iter().any(|s| matches!(s, Planned::Delay(_))) {
        for step in steps {
            step.run(commands);
        }
        return;
    }
    let commands = commands.clone();
    tokio::spawn(async move {
        for step in steps {
            match step {
                Planned::Delay(delay) => tokio::time::sleep(delay).await,
                step => {
                    if !step.run(&commands) {
                        // The connection is gone: nothing left to answer.
                        return;
                    }
                }
            }
        }
    });
}

/// A step of a response, with its message already encoded.
enum Planned {
    Send(Message),
    Close(u16, String),
    Abort,
    Stall,
    Delay(Duration),
}

impl Planned {
    /// Hands the step to the connection's task; `false` once that task is gone.
    fn run(self, commands: &mpsc::UnboundedSender<Command>) -> bool {
        let command = match self {
            Planned::Send(message) => Command::Send(message, oneshot::channel().0),
            Planned::Close(code, reason) => Command::Close(code, reason, oneshot::channel().0),
            Planned::Abort => Command::Abort(oneshot::channel().0),
            Planned::Stall => Command::Read(false, oneshot::channel().0),
            Planned::Delay(_) => return true,
        };
        commands.send(command).is_ok()
    }
}
