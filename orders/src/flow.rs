//! The order's side of the protocol: what each message from Payments means for an
//! order, and which requests Orders (re-)sends. Pure store work, no sockets, so the
//! link stays a transport and this stays readable.
//!
//! A batch is handled in three steps: [`Batch::sort`] decides what each message asks
//! of the orders, [`Batch::apply`] does it in one transaction, and [`Replies::to`]
//! logs what happened to each message and answers it. Every step runs in a span
//! carrying the `order_id`.

use chrono::{DateTime, Utc};
use shared_protocol::{
    Amount, CancelReason, ClientMessage, Currency, ErrorCode, EventId, Message, OrderId, PaymentId,
    PaymentOutcome, ServerMessage,
};

use crate::domain::OrderStatus;
use crate::metrics::Metrics;
use crate::store::{
    Applied, MethodChoice, NewIncident, OpenOrder, Outcome, PageRecorded, Refusal, Store,
    StoreError,
};

/// Handles one message from Payments.
///
/// A store error is returned to the caller: the event it concerned was not applied and
/// must not be acked; Payments delivers it again.
pub async fn handle(
    store: &Store,
    metrics: &Metrics,
    message: ServerMessage,
) -> Result<Option<ClientMessage>, StoreError> {
    Ok(handle_batch(store, metrics, vec![message])
        .await?
        .pop()
        .flatten())
}

/// Handles messages from Payments about distinct orders (at most one per order, so
/// their order does not matter) in ONE transaction: one multi-row statement per kind
/// of message, one commit, then the reply to each (if any), in the order of
/// `messages`. On a store error nothing was applied, and none of the events may be
/// acked.
pub async fn handle_batch(
    store: &Store,
    metrics: &Metrics,
    messages: Vec<ServerMessage>,
) -> Result<Vec<Option<ClientMessage>>, StoreError> {
    // A value the orders table would refuse fails the whole batch (and every other
    // order's outcome and invoice in it): it is counted as a refusal instead, and the
    // order is parked after too many, as for a refusal from Payments.
    let unstorable: Vec<Option<String>> = messages.iter().map(unstorable).collect();
    let batch = Batch::sort(&messages, &unstorable);
    let mut replies = batch.apply(store, metrics).await?;
    Ok(messages
        .into_iter()
        .zip(unstorable)
        .map(|(message, why)| replies.to(message, why, metrics))
        .collect())
}

/// One payment page: the order, its payment, the page's URL and when it expires.
type Page<'m> = (OrderId, PaymentId, &'m str, DateTime<Utc>);

/// What a batch of messages asks of the orders, by kind, each in the order of the
/// messages: one multi-row statement each.
#[derive(Default)]
struct Batch<'m> {
    offers: Vec<(OrderId, &'m [String])>,
    pages: Vec<Page<'m>>,
    outcomes: Vec<Outcome>,
    /// The event of each outcome, in the same order.
    events: Vec<EventId>,
    /// Refusals from Payments, and values Orders cannot store: counted on the order.
    refusals: Vec<(OrderId, String)>,
}

impl<'m> Batch<'m> {
    /// Decides what each message asks of its order, without touching the store.
    fn sort(messages: &'m [ServerMessage], unstorable: &[Option<String>]) -> Self {
        let mut batch = Batch::default();
        for (message, why) in messages.iter().zip(unstorable) {
            if let (Some(why), Some(order_id)) = (why, message.order_id()) {
                let refusal = format!("could not store {}: {why}", message.type_name());
                batch.refusals.push((order_id, refusal));
                continue;
            }
            batch.add(message);
        }
        batch
    }

    /// Adds what one storable message asks.
    fn add(&mut self, message: &'m ServerMessage) {
        match message {
            ServerMessage::PaymentMethods { order_id, methods } => {
                self.offers.push((*order_id, methods.as_slice()))
            }
            ServerMessage::PaymentPage {
                order_id,
                payment_id,
                url,
                expires_at,
            } => self
                .pages
                .push((*order_id, *payment_id, url.as_str(), *expires_at)),
            ServerMessage::PaymentState {
                event_id,
                order_id,
                payment_id,
                state,
                reason,
            } => {
                self.outcomes
                    .push((*order_id, *payment_id, *state, *reason));
                self.events.push(*event_id);
            }
            // A refusal of one order's request (not a passing failure at Payments):
            // counted on the order, which is parked after too many.
            ServerMessage::Error {
                order_id: Some(order_id),
                code,
                message,
            } if *code != ErrorCode::Internal => self
                .refusals
                .push((*order_id, format!("{}: {message}", code.as_str()))),
            ServerMessage::Error { .. } => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.offers.is_empty()
            && self.pages.is_empty()
            && self.outcomes.is_empty()
            && self.refusals.is_empty()
    }

    /// Applies the batch in one transaction; what each statement did, for the replies.
    async fn apply(&self, store: &Store, metrics: &Metrics) -> Result<Replies, StoreError> {
        if self.is_empty() {
            return Ok(Replies::default());
        }
        let mut tx = store.begin().await?;
        let choices = Store::choose_methods(&mut tx, &self.offers).await?;
        let recorded = Store::record_pages(&mut tx, &self.pages).await?;
        let applied = Store::apply_outcomes(&mut tx, &self.outcomes).await?;
        // What the orders could not take is recorded with the batch, before the acks.
        let incidents = incidents_of(&self.outcomes, &self.events, &applied);
        let new_incidents = Store::record_incidents(&mut tx, &incidents).await?;
        let refused =
            Store::record_refusals(&mut tx, &self.refusals, store.max_payment_attempts()).await?;
        tx.commit().await?;
        for incident in new_incidents {
            metrics.incident(incident.kind);
        }
        Ok(Replies {
            choices: choices.into_iter(),
            recorded: recorded.into_iter(),
            applied: applied.into_iter(),
            refused: refused.into_iter(),
        })
    }
}

/// What the batch's statements did, by kind, in the order of the messages: each
/// message takes the next answer of its kind.
#[derive(Default)]
struct Replies {
    choices: std::vec::IntoIter<MethodChoice>,
    recorded: std::vec::IntoIter<PageRecorded>,
    applied: std::vec::IntoIter<Applied>,
    refused: std::vec::IntoIter<Refusal>,
}

impl Replies {
    /// Logs what the batch did with `message` and returns the reply to it, if any.
    fn to(
        &mut self,
        message: ServerMessage,
        unstorable: Option<String>,
        metrics: &Metrics,
    ) -> Option<ClientMessage> {
        if let Some(why) = unstorable {
            let refusal = self.refused.next().unwrap_or(Refusal::Ignored);
            on_unstorable(&message, &why, refusal, metrics);
            return None;
        }
        match message {
            ServerMessage::PaymentMethods { order_id, methods } => on_methods(
                order_id,
                &methods,
                self.choices.next().unwrap_or(MethodChoice::UnknownOrder),
            ),
            ServerMessage::PaymentPage {
                order_id,
                payment_id,
                url,
                expires_at,
            } => {
                let recorded = self.recorded.next().unwrap_or(PageRecorded::UnknownOrder);
                on_page((order_id, payment_id, &url, expires_at), recorded, metrics);
                None
            }
            ServerMessage::PaymentState {
                event_id,
                order_id,
                state,
                reason,
                ..
            } => {
                let _span =
                    tracing::info_span!("payment_state", %order_id, %event_id, ?state).entered();
                let applied = self.applied.next().unwrap_or(Applied::UnknownOrder);
                on_state(state, reason, applied, metrics).then_some(ClientMessage::Ack { event_id })
            }
            ServerMessage::Error {
                order_id,
                code,
                message,
            } => {
                // Only a counted refusal (an order's, not an internal error) took an answer.
                let refusal = match (code, order_id) {
                    (ErrorCode::Internal, _) | (_, None) => None,
                    (_, Some(_)) => Some(self.refused.next().unwrap_or(Refusal::Ignored)),
                };
                on_error(order_id, code, &message, refusal, metrics);
                None
            }
        }
    }
}

/// A value Orders cannot store: counted as a refusal.
fn on_unstorable(message: &ServerMessage, why: &str, refusal: Refusal, metrics: &Metrics) {
    metrics.refused(matches!(refusal, Refusal::Parked { .. }));
    tracing::error!(order_id = ?message.order_id(), r#type = message.type_name(), %why, ?refusal, "Payments sent a value Orders cannot store: counted as a refusal");
}

/// The page of an order's payment, recorded (or not).
fn on_page(page: Page<'_>, recorded: PageRecorded, metrics: &Metrics) {
    let (order_id, payment_id, url, expires_at) = page;
    // The page's URL (and the payment id in it) is a bearer capability until the
    // payment ends: whoever has it can pay or cancel. It is logged at debug only.
    let _span = tracing::info_span!("payment_page", %order_id).entered();
    match recorded {
        PageRecorded::Recorded => {
            metrics.transition(OrderStatus::AwaitingPayment.as_str());
            tracing::info!(%expires_at, "payment page ready; awaiting payment");
            tracing::debug!(%payment_id, %url, "payment page");
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
}

/// An outcome, applied (or not): whether to ack its event.
fn on_state(
    state: PaymentOutcome,
    reason: Option<CancelReason>,
    applied: Applied,
    metrics: &Metrics,
) -> bool {
    match applied {
        Applied::Transitioned { status, invoice } => {
            metrics.transition(status.as_str());
            tracing::info!(
                status = status.as_str(),
                invoice,
                reason = reason.map(|r| r.as_str()),
                "order is final"
            );
            true
        }
        Applied::AlreadyFinal(status) => {
            if status == OrderStatus::after(state) {
                tracing::info!("repeated event for a final order: acked again");
            } else {
                // Final states never change. Redelivering this forever would not
                // help either side: acked, and recorded on the order for a person.
                tracing::error!(
                    status = status.as_str(),
                    "Payments reports an outcome that contradicts the order's final state; order left unchanged, incident recorded"
                );
            }
            true
        }
        Applied::PaymentMismatch { status, .. } => {
            // Neither payment id: both are bearer capabilities while open.
            tracing::error!(
                status = status.as_str(),
                "Payments reports an outcome for another payment than the order's; order left unchanged, incident recorded"
            );
            true
        }
        Applied::UnknownOrder => {
            tracing::warn!("payment_state for an order we do not have: not acked");
            false
        }
    }
}

/// An error from Payments; `refusal` is what counting it did, when it was counted.
fn on_error(
    order_id: Option<OrderId>,
    code: ErrorCode,
    message: &str,
    refusal: Option<Refusal>,
    metrics: &Metrics,
) {
    let order = order_id.map(|id| id.to_string());
    match (code, refusal) {
        (ErrorCode::Internal, _) => {
            tracing::warn!(order_id = order, code = code.as_str(), %message, "Payments could not serve a request; it will be re-sent")
        }
        (_, Some(Refusal::Counted { attempts })) => {
            metrics.refused(false);
            tracing::warn!(order_id = order, code = code.as_str(), %message, attempts, "Payments refused a request; it will be re-sent")
        }
        (_, Some(Refusal::Parked { attempts })) => {
            metrics.refused(true);
            tracing::error!(order_id = order, code = code.as_str(), %message, attempts, "Payments refused this order's request too often: parked, no longer re-sent (POST /orders/{{id}}/retry sends it again)")
        }
        (_, Some(Refusal::Ignored)) => {
            tracing::warn!(order_id = order, code = code.as_str(), %message, "Payments refused a request for an order that is final, parked or unknown")
        }
        (_, None) => {
            tracing::error!(code = code.as_str(), %message, "Payments refused a message")
        }
    }
}

/// Why Orders cannot store what `message` holds, if it cannot (see
/// [`crate::domain::check_offered_methods`], [`crate::domain::check_payment_url`]).
fn unstorable(message: &ServerMessage) -> Option<String> {
    match message {
        ServerMessage::PaymentMethods { methods, .. } => {
            crate::domain::check_offered_methods(methods).err()
        }
        ServerMessage::PaymentPage { url, .. } => crate::domain::check_payment_url(url).err(),
        _ => None,
    }
}

/// The incidents of a batch of outcomes: each one the order could not take.
fn incidents_of(outcomes: &[Outcome], events: &[EventId], applied: &[Applied]) -> Vec<NewIncident> {
    outcomes
        .iter()
        .zip(events)
        .zip(applied)
        .filter_map(|((&(order_id, _, state, _), event), applied)| {
            // No payment id in the detail: it is served by the API and read by people,
            // and a payment id is the capability in the page's URL. An operator finds
            // both payments in Payments' records by the order id and the event id.
            let (kind, detail) = match applied {
                Applied::AlreadyFinal(status) if *status != OrderStatus::after(state) => (
                    "contradicting_outcome",
                    format!(
                        "Payments reported {} (event {}), but the order is {}",
                        state.as_str(),
                        event.0,
                        status.as_str()
                    ),
                ),
                Applied::PaymentMismatch { status, .. } => (
                    "payment_id_mismatch",
                    format!(
                        "Payments reported {} (event {}) for another payment than the one the order ({}) holds",
                        state.as_str(),
                        event.0,
                        status.as_str()
                    ),
                ),
                _ => return None,
            };
            Some(NewIncident {
                order_id,
                kind,
                event_id: event.0,
                detail,
            })
        })
        .collect()
}

fn on_methods(
    order_id: OrderId,
    methods: &[String],
    choice: MethodChoice,
) -> Option<ClientMessage> {
    let _span = tracing::info_span!("payment_methods", %order_id).entered();
    match choice {
        MethodChoice::Select(method) => {
            tracing::debug!(%method, offered = ?methods, "selecting the payment method");
            Some(ClientMessage::SelectPaymentMethod { order_id, method })
        }
        MethodChoice::NotPending(status) => {
            tracing::debug!(
                status = status.as_str(),
                "methods for an order that has moved on: ignored"
            );
            None
        }
        MethodChoice::UnknownOrder => {
            tracing::warn!("Payments offered methods for an order we do not have");
            None
        }
    }
}

/// The requests to (re-)send for open orders: `initiate_payment` where Payments has
/// not answered (or must have decided by now), then `cancel_payment` where a cancel
/// is unconfirmed. Initiate comes first so Payments knows the order before the cancel.
pub fn requests_for(orders: &[OpenOrder]) -> Vec<ClientMessage> {
    let mut messages = Vec::with_capacity(orders.len());
    for order in orders {
        if order.status == OrderStatus::PendingPayment || !order.cancel_requested {
            messages.push(initiate(order.key.id, order.amount, order.currency));
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
