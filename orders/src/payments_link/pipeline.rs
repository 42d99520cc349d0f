//! Applying what Payments sends: a bounded number of batches at once, each in its own
//! transaction, answered in order; and the window of requests awaiting an answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use awc::ws::Message;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;
use shared_protocol::{ClientMessage, Message as _, OrderId, ServerMessage, TraceContext};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::{MAX_BATCH, MAX_IN_FLIGHT, MAX_OUTSTANDING, MAX_WAITING, SPARE};
use crate::flow;
use crate::metrics::Metrics;
use crate::store::Store;

/// The orders with an `initiate_payment` sent on this connection and not yet answered
/// with a page, an outcome or an error: at most [`MAX_OUTSTANDING`].
#[derive(Default)]
pub(super) struct Window {
    pub(super) sent: HashMap<OrderId, Instant>,
}

impl Window {
    pub(super) fn has_room(&self, n: usize) -> bool {
        self.sent.len() + n <= MAX_OUTSTANDING
    }

    pub(super) fn sent(&mut self, message: &ClientMessage) {
        if let ClientMessage::InitiatePayment { order_id, .. } = message {
            self.sent.entry(*order_id).or_insert_with(Instant::now);
        }
    }

    pub(super) fn answered(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::PaymentMethods { .. } => {}
            ServerMessage::PaymentPage { order_id, .. }
            | ServerMessage::PaymentState { order_id, .. } => {
                self.sent.remove(order_id);
            }
            ServerMessage::Error { .. } => {
                if let Some(order_id) = message.order_id() {
                    self.sent.remove(&order_id);
                }
            }
        }
    }

    pub(super) fn forget_older_than(&mut self, age: Duration) {
        self.sent.retain(|_, at| at.elapsed() < age);
    }
}

/// The messages read from Payments and not yet applied, and those being applied.
///
/// Group commit: whatever waits when a batch can start (at most one message per
/// order, up to [`MAX_BATCH`]) is applied in one transaction, with up to
/// [`MAX_IN_FLIGHT`] batches at once on different orders (one, today: see its doc).
/// Under light load a batch is one message and costs one commit; under heavy load the
/// batches grow, and the commits per message shrink. Messages for one order are
/// applied one after another, in the order they arrived.
pub(super) struct Pipeline<'a> {
    pub(super) waiting: VecDeque<Received>,
    pub(super) busy: HashSet<OrderId>,
    pub(super) in_flight: FuturesUnordered<LocalBoxFuture<'a, Vec<Applied>>>,
    /// Write-queue slots promised to the replies of the batches in flight (at most one
    /// reply per message): a batch starts only when its replies fit, so the loop never
    /// waits on the writer and keeps reading.
    pub(super) reserved: usize,
}

/// A message read from Payments, and the trace context it carried, if any.
pub(super) struct Received {
    pub(super) message: ServerMessage,
    pub(super) trace: Option<TraceContext>,
}

/// A message from Payments, applied (or not).
pub(super) struct Applied {
    pub(super) order: Option<OrderId>,
    /// The reply to send, if any.
    pub(super) result: Result<Option<ClientMessage>, crate::store::StoreError>,
    /// The context of the batch's span, for the reply (with traces on).
    pub(super) trace: Option<TraceContext>,
}

impl<'a> Pipeline<'a> {
    pub(super) fn new() -> Self {
        Pipeline {
            waiting: VecDeque::new(),
            busy: HashSet::new(),
            in_flight: FuturesUnordered::new(),
            reserved: 0,
        }
    }

    /// Whether another message may be read from the socket.
    pub(super) fn has_room(&self) -> bool {
        self.waiting.len() < MAX_WAITING
    }

    /// Write-queue slots free for new work: not promised to replies, not spare.
    pub(super) fn free(&self, out: &mpsc::Sender<Message>) -> usize {
        out.capacity().saturating_sub(self.reserved + SPARE)
    }

    /// Whether messages wait only because the write queue has no room for replies.
    pub(super) fn blocked_on_writer(&self, out: &mpsc::Sender<Message>) -> bool {
        !self.waiting.is_empty() && self.in_flight.len() < MAX_IN_FLIGHT && self.free(out) == 0
    }

    /// Starts a batch of the earliest waiting message of every order that has none in
    /// flight, if a batch may start and as many replies as it may send fit in the write
    /// queue.
    pub(super) fn start(
        &mut self,
        store: &'a Store,
        metrics: &'a Metrics,
        out: &mpsc::Sender<Message>,
    ) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let limit = MAX_BATCH.min(self.free(out));
        let mut batch = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && batch.len() < limit {
            let order = self.waiting[i].message.order_id();
            if order.is_some_and(|o| self.busy.contains(&o)) {
                i += 1;
                continue;
            }
            let Some(message) = self.waiting.remove(i) else {
                break;
            };
            if let Some(order) = order {
                self.busy.insert(order);
            }
            batch.push(message);
        }
        if !batch.is_empty() {
            self.reserved += batch.len();
            self.in_flight.push(Box::pin(apply(store, metrics, batch)));
        }
    }

    pub(super) fn finished(&mut self, applied: &[Applied]) {
        self.reserved = self.reserved.saturating_sub(applied.len());
        for applied in applied {
            if let Some(order) = applied.order {
                self.busy.remove(&order);
            }
        }
    }
}

/// Applies a batch in its span (with traces on: the child of its one message's
/// context, or linked to each); the replies carry the span's context.
pub(super) async fn apply(store: &Store, metrics: &Metrics, batch: Vec<Received>) -> Vec<Applied> {
    let span = batch_span(&batch);
    let trace = service_kit::trace_context::for_message(&span);
    let batch = batch.into_iter().map(|r| r.message).collect();
    let mut applied = apply_messages(store, metrics, batch).instrument(span).await;
    if trace.is_some() {
        for one in &mut applied {
            one.trace.clone_from(&trace);
        }
    }
    applied
}

/// The span of a batch from Payments ([`service_kit::trace_context::batch_span`]).
fn batch_span(batch: &[Received]) -> tracing::Span {
    let contexts = batch.iter().map(|r| r.trace.as_ref());
    let order = batch.first().and_then(|r| r.message.order_id());
    service_kit::trace_context::batch_span("apply messages from Payments", contexts, order)
}

/// Applies messages in one transaction; if that fails, each message on its own, so one
/// message the database refuses (a poison message) cannot hold back the others.
async fn apply_messages(
    store: &Store,
    metrics: &Metrics,
    batch: Vec<ServerMessage>,
) -> Vec<Applied> {
    let orders: Vec<Option<OrderId>> = batch.iter().map(|m| m.order_id()).collect();
    if batch.len() > 1 {
        match flow::handle_batch(store, metrics, batch.clone()).await {
            Ok(replies) => {
                return orders
                    .into_iter()
                    .zip(replies)
                    .map(|(order, reply)| Applied {
                        order,
                        result: Ok(reply),
                        trace: None,
                    })
                    .collect();
            }
            Err(e) => tracing::warn!(
                messages = batch.len(),
                error = %crate::error::error_chain(&e),
                "a batch from Payments failed; applying its messages one by one"
            ),
        }
    }
    let mut applied = Vec::with_capacity(batch.len());
    for (order, message) in orders.into_iter().zip(batch) {
        let kind = message.type_name();
        let result = flow::handle(store, metrics, message).await;
        if let (Err(e), Some(order)) = (&result, order)
            && e.is_deterministic()
        {
            // The database refuses this message itself (a value it cannot hold): it
            // would fail the same way every time. Counted like a refusal from Payments,
            // so the order is parked instead of being re-sent forever; an outcome is
            // not acked, so Payments keeps it (and dead-letters it after its attempts).
            let error = format!("could not store {kind}: {}", crate::error::error_chain(e));
            tracing::error!(order_id = %order, %error, "a message from Payments cannot be applied");
            match store.record_refusal(order, error).await {
                Ok(refusal) => {
                    metrics.refused(matches!(refusal, crate::store::Refusal::Parked { .. }))
                }
                Err(e) => {
                    tracing::warn!(order_id = %order, error = %crate::error::error_chain(&e), "could not count the refusal")
                }
            }
        }
        applied.push(Applied {
            order,
            result,
            trace: None,
        });
    }
    applied
}
