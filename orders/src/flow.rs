//! The order's side of the protocol: what each message from Payments means for an
//! order, and which requests Orders (re-)sends. Pure store work, no sockets, so the
//! link stays a transport and this stays readable.
//!
//! Every step runs in a span carrying the `order_id`.

use shared_protocol::{Amount, ClientMessage, Currency, ErrorCode, OrderId, ServerMessage};
use tracing::Instrument;

use crate::domain::OrderStatus;
use crate::metrics::Metrics;
use crate::store::{Applied, MethodChoice, OpenOrder, PageRecorded, Store, StoreError};

/// What the link must do after handling one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    /// Messages to send back to Payments, in order.
    pub replies: Vec<ClientMessage>,
}

impl Reaction {
    fn none() -> Reaction {
        Reaction::default()
    }

    fn reply(message: ClientMessage) -> Reaction {
        Reaction {
            replies: vec![message],
        }
    }
}

/// Handles one message from Payments.
///
/// A store error is returned to the caller: the event it concerned was not applied and
/// must not be acked, and the link reconnects so Payments delivers it again.
pub async fn handle(
    store: &Store,
    metrics: &Metrics,
    message: ServerMessage,
) -> Result<Reaction, StoreError> {
    match message {
        ServerMessage::PaymentMethods { order_id, methods } => {
            let span = tracing::info_span!("payment_methods", %order_id);
            async {
                match store.choose_method(order_id, &methods).await? {
                    MethodChoice::Select(method) => {
                        tracing::info!(%method, offered = ?methods, "selecting the payment method");
                        Ok(Reaction::reply(ClientMessage::SelectPaymentMethod {
                            order_id,
                            method,
                        }))
                    }
                    MethodChoice::NotPending(status) => {
                        tracing::debug!(
                            status = status.as_str(),
                            "methods for an order that has moved on: ignored"
                        );
                        Ok(Reaction::none())
                    }
                    MethodChoice::UnknownOrder => {
                        tracing::warn!("Payments offered methods for an order we do not have");
                        Ok(Reaction::none())
                    }
                }
            }
            .instrument(span)
            .await
        }
        ServerMessage::PaymentPage {
            order_id,
            payment_id,
            url,
            expires_at,
        } => {
            let span = tracing::info_span!("payment_page", %order_id, %payment_id);
            async {
                match store
                    .record_page(order_id, payment_id, &url, expires_at)
                    .await?
                {
                    PageRecorded::Recorded => {
                        metrics.transition(OrderStatus::AwaitingPayment.as_str());
                        tracing::info!(%url, %expires_at, "payment page ready; awaiting payment");
                    }
                    PageRecorded::Unchanged(status) => {
                        tracing::debug!(
                            status = status.as_str(),
                            "page already known, or order final: nothing to do"
                        );
                    }
                    PageRecorded::UnknownOrder => {
                        tracing::warn!("Payments sent a page for an order we do not have")
                    }
                }
                Ok(Reaction::none())
            }
            .instrument(span)
            .await
        }
        ServerMessage::PaymentState {
            event_id,
            order_id,
            payment_id,
            state,
            reason,
        } => {
            let span = tracing::info_span!("payment_state", %order_id, %event_id, ?state);
            async {
                let ack = ClientMessage::Ack { event_id };
                match store.apply_outcome(order_id, payment_id, state, reason).await? {
                    Applied::Transitioned { status, invoice } => {
                        metrics.transition(status.as_str());
                        tracing::info!(status = status.as_str(), invoice, reason = reason.map(|r| r.as_str()), "order is final");
                        Ok(Reaction::reply(ack))
                    }
                    Applied::AlreadyFinal(status) => {
                        let expected = match state {
                            shared_protocol::PaymentOutcome::Fulfill => OrderStatus::Fulfilled,
                            shared_protocol::PaymentOutcome::Cancel => OrderStatus::Cancelled,
                        };
                        if status == expected {
                            tracing::info!("repeated event for a final order: acked again");
                        } else {
                            // Final states never change. Redelivering this forever would not
                            // help either side, so it is acked and flagged for a person.
                            tracing::error!(status = status.as_str(), "Payments reports an outcome that contradicts the order's final state; order left unchanged");
                        }
                        Ok(Reaction::reply(ack))
                    }
                    Applied::UnknownOrder => {
                        tracing::warn!("payment_state for an order we do not have: not acked");
                        Ok(Reaction::none())
                    }
                }
            }
            .instrument(span)
            .await
        }
        ServerMessage::Error {
            order_id,
            code,
            message,
        } => {
            let order = order_id.map(|id| id.to_string());
            match code {
                ErrorCode::Internal => {
                    tracing::warn!(order_id = order, code = code.as_str(), %message, "Payments could not serve a request; it will be re-sent")
                }
                _ => {
                    tracing::error!(order_id = order, code = code.as_str(), %message, "Payments refused a request")
                }
            }
            Ok(Reaction::none())
        }
    }
}

/// The requests to (re-)send for open orders: `initiate_payment` where Payments has
/// not answered (or must have decided by now), then `cancel_payment` where a cancel
/// is unconfirmed. Initiate comes first so Payments knows the order before the cancel.
pub fn requests_for(orders: &[OpenOrder]) -> Vec<ClientMessage> {
    let mut messages = Vec::with_capacity(orders.len());
    for order in orders {
        let initiate = order.status == OrderStatus::PendingPayment || !order.cancel_requested;
        if initiate {
            match (Amount::new(order.amount), Currency::parse(&order.currency)) {
                (Ok(amount), Ok(currency)) => messages.push(ClientMessage::InitiatePayment {
                    order_id: order.key.id,
                    amount,
                    currency,
                }),
                // The table's CHECK constraints make this unreachable; never panic on it.
                _ => {
                    tracing::error!(order_id = %order.key.id, "order row with an invalid amount or currency")
                }
            }
        }
        if order.cancel_requested {
            messages.push(ClientMessage::CancelPayment {
                order_id: order.key.id,
            });
        }
    }
    messages
}

/// The `initiate_payment` of a new order.
pub fn initiate(order_id: OrderId, amount: Amount, currency: Currency) -> ClientMessage {
    ClientMessage::InitiatePayment {
        order_id,
        amount,
        currency,
    }
}
