//! The answers of PROTOCOL.md: what Payments replies to each message from Orders.
//! Pure store work and no sockets, so the connection loop stays a transport.
//!
//! Messages come in batches (whatever the connection had read when it got to them):
//! a batch is applied in ONE transaction, each kind of message with one statement over
//! arrays, and committed before any reply goes out (group commit). Messages about one
//! order keep their order: the batch is cut into segments holding at most one message
//! per order, applied one after the other in the same transaction. Errors stay per
//! message: a refused message gets its own `error`; if the transaction itself fails,
//! the messages are applied again one by one, so one message the database rejects
//! does not fail the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use service_kit::error_chain;
use shared_protocol::{
    Amount, ClientMessage, Currency, ErrorCode, EventId, Message, OrderId, ServerMessage,
    TraceContext,
};
use uuid::Uuid;

use crate::store::{Batch, Event, Finished, Session, SessionState, Store, StoreError};

/// The methods offered for every order, in order: Orders picks the first.
pub const METHODS: [&str; 3] = ["credit_card", "paypal", "bank_transfer"];

/// What answering needs to know besides the message.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub store: &'a Store,
    pub ttl: Duration,
    /// Base of payment page URLs, without a trailing slash.
    pub public_url: &'a str,
    /// The connection the message came on.
    pub connection: Uuid,
    /// The trace context of the batch (its span's, or its one message's when the
    /// batch has no span): a new session keeps it for the customer's Pay to link to.
    /// `None` when traces are off.
    pub trace: Option<&'a TraceContext>,
}

/// The reply (or replies) to one message. Never fails: a storage failure is answered
/// with an `internal` error, which Orders retries.
pub async fn answer(ctx: &Context<'_>, message: ClientMessage) -> Vec<ServerMessage> {
    answer_batch(ctx, vec![message])
        .await
        .pop()
        .unwrap_or_default()
}

/// The replies to a batch of messages, one list per message, in the order of the
/// messages. Never fails (see [`answer`]).
pub async fn answer_batch(
    ctx: &Context<'_>,
    messages: Vec<ClientMessage>,
) -> Vec<Vec<ServerMessage>> {
    match try_batch(ctx, &messages).await {
        Ok(replies) => replies,
        Err(e) if messages.len() > 1 => {
            tracing::warn!(error = %error_chain(&e), messages = messages.len(), "a batch failed; applying its messages one by one");
            let mut replies = Vec::with_capacity(messages.len());
            for message in messages {
                replies.push(match try_batch(ctx, std::slice::from_ref(&message)).await {
                    Ok(mut one) => one.pop().unwrap_or_default(),
                    Err(e) => vec![internal(message.order_id(), &e)],
                });
            }
            replies
        }
        Err(e) => messages
            .iter()
            .map(|m| vec![internal(m.order_id(), &e)])
            .collect(),
    }
}

fn internal(order_id: Option<OrderId>, e: &StoreError) -> ServerMessage {
    tracing::error!(order_id = ?order_id, error = %error_chain(e), "could not serve a request");
    ServerMessage::error(order_id, ErrorCode::Internal, "internal error; try again")
}

async fn try_batch(
    ctx: &Context<'_>,
    messages: &[ClientMessage],
) -> Result<Vec<Vec<ServerMessage>>, StoreError> {
    let mut replies = vec![Vec::new(); messages.len()];
    let mut batch = ctx.store.batch().await?;
    let mut start = 0;
    while start < messages.len() {
        // A segment: up to (not including) the second message about some order.
        let mut orders = HashSet::new();
        let mut end = start;
        while end < messages.len() {
            if let Some(order_id) = messages[end].order_id()
                && !orders.insert(order_id)
            {
                break;
            }
            end += 1;
        }
        apply_segment(
            ctx,
            &mut batch,
            &messages[start..end],
            &mut replies[start..end],
        )
        .await?;
        start = end;
    }
    batch.commit().await?;
    Ok(replies)
}

/// Applies messages about distinct orders (acks have none), one statement per kind.
async fn apply_segment(
    ctx: &Context<'_>,
    batch: &mut Batch,
    messages: &[ClientMessage],
    replies: &mut [Vec<ServerMessage>],
) -> Result<(), StoreError> {
    let segment = Segment::of(messages);
    let applied = segment.apply(ctx, batch).await?;
    for (message, reply) in messages.iter().zip(replies.iter_mut()) {
        match message {
            ClientMessage::Ack { .. } => {}
            ClientMessage::InitiatePayment {
                order_id,
                amount,
                currency,
            } => reply.push(applied.initiate_reply(ctx, *order_id, *amount, *currency)?),
            ClientMessage::SelectPaymentMethod { order_id, method } => {
                reply.push(applied.select_reply(ctx, *order_id, method)?);
            }
            ClientMessage::CancelPayment { order_id } => {
                reply.push(cancel_and_reply(ctx, batch, *order_id).await?);
            }
        }
    }
    Ok(())
}

/// A session as a statement of the segment left it, with its final event if any.
type Found = (Session, Option<Event>);

/// What a segment asks of the store: one list per statement.
#[derive(Default)]
struct Segment {
    acks: Vec<EventId>,
    initiates: Vec<(OrderId, Amount, Currency)>,
    selects: Vec<(OrderId, String)>,
    /// Orders a `select_payment_method` names with a method not offered.
    bad_methods: Vec<OrderId>,
}

impl Segment {
    /// Sorts the messages into the statements that apply them (cancels have none here).
    fn of(messages: &[ClientMessage]) -> Segment {
        let mut segment = Segment::default();
        for message in messages {
            match message {
                ClientMessage::Ack { event_id } => segment.acks.push(*event_id),
                ClientMessage::InitiatePayment {
                    order_id,
                    amount,
                    currency,
                } => segment.initiates.push((*order_id, *amount, *currency)),
                ClientMessage::SelectPaymentMethod { order_id, method } => {
                    if METHODS.contains(&method.as_str()) {
                        segment.selects.push((*order_id, method.clone()));
                    } else {
                        segment.bad_methods.push(*order_id);
                    }
                }
                ClientMessage::CancelPayment { .. } => {}
            }
        }
        segment
    }

    /// Runs the segment's statements, in order: acks, initiates, selects, known orders.
    async fn apply(&self, ctx: &Context<'_>, batch: &mut Batch) -> Result<Applied, StoreError> {
        if !self.acks.is_empty() {
            ack(batch, &self.acks).await?;
        }
        let initiated = if self.initiates.is_empty() {
            HashMap::new()
        } else {
            let traceparent = ctx.trace.map(TraceContext::traceparent);
            by_order(
                batch
                    .initiate(&self.initiates, ctx.ttl, ctx.connection, traceparent)
                    .await?,
            )
        };
        let selected = if self.selects.is_empty() {
            HashMap::new()
        } else {
            by_order(batch.select(&self.selects, ctx.connection).await?)
        };
        // An unknown order is the more useful answer to an unknown method.
        let known: HashSet<OrderId> = if self.bad_methods.is_empty() {
            HashSet::new()
        } else {
            batch.known(&self.bad_methods).await?.into_iter().collect()
        };
        Ok(Applied {
            initiated,
            selected,
            known,
        })
    }
}

/// Acks events and logs each one acked.
async fn ack(batch: &mut Batch, acks: &[EventId]) -> Result<(), StoreError> {
    let acked = batch.ack(acks).await?;
    tracing::debug!(acked = acked.len(), of = acks.len(), "events acked");
    for event_id in acked {
        tracing::info!(%event_id, "event acked");
    }
    Ok(())
}

/// Keys sessions by their order.
fn by_order(found: Vec<Found>) -> HashMap<OrderId, Found> {
    found
        .into_iter()
        .map(|(session, event)| (session.order_id, (session, event)))
        .collect()
}

/// What the segment's statements found, by order.
struct Applied {
    initiated: HashMap<OrderId, Found>,
    selected: HashMap<OrderId, Found>,
    /// Which of the orders with a bad method have a session.
    known: HashSet<OrderId>,
}

impl Applied {
    /// The reply to `initiate_payment`: a conflict, the final event, or the next step.
    fn initiate_reply(
        &self,
        ctx: &Context<'_>,
        order_id: OrderId,
        amount: Amount,
        currency: Currency,
    ) -> Result<ServerMessage, StoreError> {
        let (session, event) = self
            .initiated
            .get(&order_id)
            .ok_or_else(|| StoreError::Corrupt(format!("session of {order_id} vanished")))?;
        if session.amount != amount || session.currency != currency {
            return Ok(ServerMessage::error(
                Some(order_id),
                ErrorCode::Conflict,
                format!(
                    "order {order_id} already has a payment of {} {}, not {amount} {currency}",
                    session.amount, session.currency
                ),
            ));
        }
        match (session.state, event) {
            (_, Some(event)) => Ok(event.message()),
            (SessionState::Initiated, None) => Ok(methods(order_id)),
            (SessionState::MethodSelected, None) => Ok(page(ctx, session)),
            (state, None) => Err(StoreError::Corrupt(format!(
                "session {} is {} without an event",
                session.payment_id,
                state.as_str()
            ))),
        }
    }

    /// The reply to `select_payment_method`: an unknown method or order, the final
    /// event, the page, or a conflict with the method chosen before.
    fn select_reply(
        &self,
        ctx: &Context<'_>,
        order_id: OrderId,
        method: &str,
    ) -> Result<ServerMessage, StoreError> {
        if !METHODS.contains(&method) {
            return Ok(if self.known.contains(&order_id) {
                ServerMessage::error(
                    Some(order_id),
                    ErrorCode::UnknownMethod,
                    format!("unknown method {method:?}; offered: {}", METHODS.join(", ")),
                )
            } else {
                unknown_order(order_id)
            });
        }
        Ok(match self.selected.get(&order_id) {
            None => unknown_order(order_id),
            Some((session, Some(event))) if session.state.is_final() => event.message(),
            Some((session, None)) if session.state.is_final() => {
                return Err(StoreError::Corrupt(format!(
                    "final session {} has no event",
                    session.payment_id
                )));
            }
            Some((session, _)) if session.method.as_deref() == Some(method) => page(ctx, session),
            Some((session, _)) => ServerMessage::error(
                Some(order_id),
                ErrorCode::Conflict,
                format!(
                    "order {order_id} already pays with {:?}",
                    session.method.clone().unwrap_or_default()
                ),
            ),
        })
    }
}

/// Applies `cancel_payment` and replies to it.
async fn cancel_and_reply(
    ctx: &Context<'_>,
    batch: &mut Batch,
    order_id: OrderId,
) -> Result<ServerMessage, StoreError> {
    // Rare: one statement pair per message, in the same transaction.
    Ok(match batch.cancel(order_id, ctx.connection).await? {
        Finished::Now(event) => {
            tracing::info!(%order_id, event_id = %event.event_id, "payment cancelled at Orders' request");
            event.message()
        }
        Finished::Already(event) => event.message(),
        Finished::NotApplicable(state) => {
            return Err(StoreError::Corrupt(format!(
                "session of {order_id} is {} and cannot be cancelled",
                state.as_str()
            )));
        }
        Finished::Unknown => unknown_order(order_id),
    })
}

fn methods(order_id: OrderId) -> ServerMessage {
    ServerMessage::PaymentMethods {
        order_id,
        methods: METHODS.iter().map(|m| m.to_string()).collect(),
    }
}

/// The `payment_page` of a session with a method.
pub fn page(ctx: &Context<'_>, session: &Session) -> ServerMessage {
    ServerMessage::PaymentPage {
        order_id: session.order_id,
        payment_id: session.payment_id,
        url: format!("{}/pay/{}", ctx.public_url, session.payment_id),
        expires_at: session.expires_at,
    }
}

fn unknown_order(order_id: OrderId) -> ServerMessage {
    ServerMessage::error(
        Some(order_id),
        ErrorCode::UnknownOrder,
        format!("no payment for order {order_id}: send initiate_payment first"),
    )
}
