//! The answers of PROTOCOL.md: what Payments replies to each message from Orders.
//! Pure store work and no sockets, so the connection loop stays a transport.

use std::time::Duration;

use shared_protocol::{ClientMessage, ErrorCode, OrderId, ServerMessage};
use uuid::Uuid;

use crate::store::{Finished, Initiated, Selected, Session, SessionState, Store, StoreError};

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
    let order_id = shared_protocol::Message::order_id(&message);
    match try_answer(ctx, message).await {
        Ok(replies) => replies,
        Err(e) => {
            tracing::error!(order_id = ?order_id, error = %error_chain(&e), "could not serve a request");
            vec![ServerMessage::error(
                order_id,
                ErrorCode::Internal,
                "internal error; try again",
            )]
        }
    }
}

async fn try_answer(
    ctx: &Context<'_>,
    message: ClientMessage,
) -> Result<Vec<ServerMessage>, StoreError> {
    Ok(match message {
        ClientMessage::InitiatePayment {
            order_id,
            amount,
            currency,
        } => match ctx
            .store
            .initiate(order_id, amount, currency, ctx.ttl, ctx.connection)
            .await?
        {
            Initiated::Conflict(session) => vec![ServerMessage::error(
                Some(order_id),
                ErrorCode::Conflict,
                format!(
                    "order {order_id} already has a payment of {} {}, not {amount} {currency}",
                    session.amount, session.currency
                ),
            )],
            Initiated::Session(session, event) => match (session.state, event) {
                (_, Some(event)) => vec![event.message()],
                (SessionState::Initiated, None) => vec![methods(order_id)],
                (SessionState::MethodSelected, None) => vec![page(ctx, &session)],
                (state, None) => {
                    return Err(StoreError::Corrupt(format!(
                        "session {} is {} without an event",
                        session.payment_id,
                        state.as_str()
                    )));
                }
            },
        },
        ClientMessage::SelectPaymentMethod { order_id, method } => {
            if !METHODS.contains(&method.as_str()) {
                // An unknown order is the more useful answer of the two.
                if ctx.store.session_by_order(order_id).await?.is_none() {
                    return Ok(vec![unknown_order(order_id)]);
                }
                return Ok(vec![ServerMessage::error(
                    Some(order_id),
                    ErrorCode::UnknownMethod,
                    format!("unknown method {method:?}; offered: {}", METHODS.join(", ")),
                )]);
            }
            match ctx
                .store
                .select_method(order_id, &method, ctx.connection)
                .await?
            {
                Selected::Page(session) => vec![page(ctx, &session)],
                Selected::Conflict(session) => vec![ServerMessage::error(
                    Some(order_id),
                    ErrorCode::Conflict,
                    format!(
                        "order {order_id} already pays with {:?}",
                        session.method.unwrap_or_default()
                    ),
                )],
                Selected::Final(_, event) => vec![event.message()],
                Selected::UnknownOrder => vec![unknown_order(order_id)],
            }
        }
        ClientMessage::CancelPayment { order_id } => {
            match ctx.store.cancel_by_order(order_id, ctx.connection).await? {
                Finished::Now(event) => {
                    tracing::info!(%order_id, event_id = %event.event_id, "payment cancelled at Orders' request");
                    vec![event.message()]
                }
                Finished::Already(event) => vec![event.message()],
                Finished::NotApplicable(state) => {
                    return Err(StoreError::Corrupt(format!(
                        "session of {order_id} is {} and cannot be cancelled",
                        state.as_str()
                    )));
                }
                Finished::Unknown => vec![unknown_order(order_id)],
            }
        }
        ClientMessage::Ack { event_id } => {
            if ctx.store.ack(event_id).await? {
                tracing::info!(%event_id, "event acked");
            } else {
                tracing::debug!(%event_id, "ack of an unknown or already acked event");
            }
            Vec::new()
        }
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

pub use service_kit::error_chain;
