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
use shared_protocol::{ClientMessage, ErrorCode, Message, OrderId, ServerMessage};
use uuid::Uuid;

use crate::store::{Batch, Event, Finished, Session, SessionState, Store, StoreError};

/// The methods offered for every order, in order: Orders picks the first.
pub const METHODS: [&str; 3] = ["credit_card", "paypal", "bank_transfer"];

/// What answering needs to know besides the message.
pub struct Context<'a> {
    pub store: &'a Store,
    pub ttl: Duration,
    /// Base of payment page URLs, without a trailing slash.
    pub public_url: &'a str,
    /// The connection the message came on.
    pub connection: Uuid,
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
    let mut acks = Vec::new();
    let mut initiates = Vec::new();
    let mut selects = Vec::new();
    let mut bad_methods = Vec::new();
    for message in messages {
        match message {
            ClientMessage::Ack { event_id } => acks.push(*event_id),
            ClientMessage::InitiatePayment {
                order_id,
                amount,
                currency,
            } => initiates.push((*order_id, *amount, *currency)),
            ClientMessage::SelectPaymentMethod { order_id, method } => {
                if METHODS.contains(&method.as_str()) {
                    selects.push((*order_id, method.clone()));
                } else {
                    bad_methods.push(*order_id);
                }
            }
            ClientMessage::CancelPayment { .. } => {}
        }
    }

    if !acks.is_empty() {
        let acked = batch.ack(&acks).await?;
        tracing::debug!(acked = acked.len(), of = acks.len(), "events acked");
        for event_id in acked {
            tracing::info!(%event_id, "event acked");
        }
    }
    let initiated: HashMap<OrderId, (Session, Option<Event>)> = if initiates.is_empty() {
        HashMap::new()
    } else {
        batch
            .initiate(&initiates, ctx.ttl, ctx.connection)
            .await?
            .into_iter()
            .map(|(session, event)| (session.order_id, (session, event)))
            .collect()
    };
    let selected: HashMap<OrderId, (Session, Option<Event>)> = if selects.is_empty() {
        HashMap::new()
    } else {
        batch
            .select(&selects, ctx.connection)
            .await?
            .into_iter()
            .map(|(session, event)| (session.order_id, (session, event)))
            .collect()
    };
    // An unknown order is the more useful answer to an unknown method.
    let known: HashSet<OrderId> = if bad_methods.is_empty() {
        HashSet::new()
    } else {
        batch.known(&bad_methods).await?.into_iter().collect()
    };

    for (message, reply) in messages.iter().zip(replies.iter_mut()) {
        match message {
            ClientMessage::Ack { .. } => {}
            ClientMessage::InitiatePayment {
                order_id,
                amount,
                currency,
            } => {
                let (session, event) = initiated.get(order_id).ok_or_else(|| {
                    StoreError::Corrupt(format!("session of {order_id} vanished"))
                })?;
                reply.push(
                    if session.amount != *amount || session.currency != *currency {
                        ServerMessage::error(
                            Some(*order_id),
                            ErrorCode::Conflict,
                            format!(
                                "order {order_id} already has a payment of {} {}, not {amount} {currency}",
                                session.amount, session.currency
                            ),
                        )
                    } else {
                        match (session.state, event) {
                            (_, Some(event)) => event.message(),
                            (SessionState::Initiated, None) => methods(*order_id),
                            (SessionState::MethodSelected, None) => page(ctx, session),
                            (state, None) => {
                                return Err(StoreError::Corrupt(format!(
                                    "session {} is {} without an event",
                                    session.payment_id,
                                    state.as_str()
                                )));
                            }
                        }
                    },
                );
            }
            ClientMessage::SelectPaymentMethod { order_id, method } => {
                reply.push(if !METHODS.contains(&method.as_str()) {
                    if known.contains(order_id) {
                        ServerMessage::error(
                            Some(*order_id),
                            ErrorCode::UnknownMethod,
                            format!("unknown method {method:?}; offered: {}", METHODS.join(", ")),
                        )
                    } else {
                        unknown_order(*order_id)
                    }
                } else {
                    match selected.get(order_id) {
                        None => unknown_order(*order_id),
                        Some((session, Some(event))) if session.state.is_final() => event.message(),
                        Some((session, None)) if session.state.is_final() => {
                            return Err(StoreError::Corrupt(format!(
                                "final session {} has no event",
                                session.payment_id
                            )));
                        }
                        Some((session, _)) if session.method.as_deref() == Some(method) => {
                            page(ctx, session)
                        }
                        Some((session, _)) => ServerMessage::error(
                            Some(*order_id),
                            ErrorCode::Conflict,
                            format!(
                                "order {order_id} already pays with {:?}",
                                session.method.clone().unwrap_or_default()
                            ),
                        ),
                    }
                });
            }
            ClientMessage::CancelPayment { order_id } => {
                // Rare: one statement pair per message, in the same transaction.
                reply.push(match batch.cancel(*order_id, ctx.connection).await? {
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
                    Finished::Unknown => unknown_order(*order_id),
                });
            }
        }
    }
    Ok(())
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
