//! The messages of `payments.v1`: one enum per direction, tagged by `"type"`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Amount, Currency, EventId, OrderId, PaymentId};

/// A direction of the protocol: the list of `type` names it knows, for telling an
/// unknown `type` from a malformed message.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Every `type` value of this direction.
    const TYPES: &'static [&'static str];

    /// The `type` of this message, for logs and metrics.
    fn type_name(&self) -> &'static str;

    /// The order this message is about, if any.
    fn order_id(&self) -> Option<OrderId>;
}

/// Orders → Payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Start (or resume) the payment session of an order. Idempotent.
    InitiatePayment {
        order_id: OrderId,
        amount: Amount,
        currency: Currency,
    },
    /// Pay with one of the offered methods.
    SelectPaymentMethod { order_id: OrderId, method: String },
    /// The customer gave up: cancel unless already final.
    CancelPayment { order_id: OrderId },
    /// Orders has durably applied the `payment_state` event with this id.
    Ack { event_id: EventId },
}

impl Message for ClientMessage {
    const TYPES: &'static [&'static str] = &[
        "initiate_payment",
        "select_payment_method",
        "cancel_payment",
        "ack",
    ];

    fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::InitiatePayment { .. } => "initiate_payment",
            ClientMessage::SelectPaymentMethod { .. } => "select_payment_method",
            ClientMessage::CancelPayment { .. } => "cancel_payment",
            ClientMessage::Ack { .. } => "ack",
        }
    }

    fn order_id(&self) -> Option<OrderId> {
        match self {
            ClientMessage::InitiatePayment { order_id, .. }
            | ClientMessage::SelectPaymentMethod { order_id, .. }
            | ClientMessage::CancelPayment { order_id } => Some(*order_id),
            ClientMessage::Ack { .. } => None,
        }
    }
}

/// Payments → Orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The methods offered for an order (never empty); Orders picks the first.
    PaymentMethods {
        order_id: OrderId,
        #[serde(deserialize_with = "non_empty")]
        #[schemars(length(min = 1))]
        methods: Vec<String>,
    },
    /// Where the customer completes the payment.
    PaymentPage {
        order_id: OrderId,
        payment_id: PaymentId,
        url: String,
        expires_at: DateTime<Utc>,
    },
    /// The payment reached a final state. Delivered at least once, until acked.
    PaymentState {
        event_id: EventId,
        order_id: OrderId,
        payment_id: PaymentId,
        state: PaymentOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<CancelReason>,
    },
    /// A request could not be served.
    Error {
        order_id: Option<OrderId>,
        code: ErrorCode,
        message: String,
    },
}

impl Message for ServerMessage {
    const TYPES: &'static [&'static str] =
        &["payment_methods", "payment_page", "payment_state", "error"];

    fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::PaymentMethods { .. } => "payment_methods",
            ServerMessage::PaymentPage { .. } => "payment_page",
            ServerMessage::PaymentState { .. } => "payment_state",
            ServerMessage::Error { .. } => "error",
        }
    }

    fn order_id(&self) -> Option<OrderId> {
        match self {
            ServerMessage::PaymentMethods { order_id, .. }
            | ServerMessage::PaymentPage { order_id, .. }
            | ServerMessage::PaymentState { order_id, .. } => Some(*order_id),
            ServerMessage::Error { order_id, .. } => *order_id,
        }
    }
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(order_id: Option<OrderId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            order_id,
            code,
            message: message.into(),
        }
    }
}

fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let methods = Vec::<String>::deserialize(d)?;
    if methods.is_empty() {
        return Err(serde::de::Error::custom("`methods` must not be empty"));
    }
    Ok(methods)
}

/// The final state of a payment, as the wire spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PaymentOutcome {
    #[serde(rename = "FULFILL")]
    Fulfill,
    #[serde(rename = "CANCEL")]
    Cancel,
}

impl PaymentOutcome {
    /// As the wire (and Payments' `payment_events.state`) spells it: `FULFILL`, `CANCEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Fulfill => "FULFILL",
            PaymentOutcome::Cancel => "CANCEL",
        }
    }
}

/// Why a payment was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The customer pressed Cancel on the payment page.
    Customer,
    /// The session was not final after `PAYMENT_TTL`.
    Expired,
    /// Orders sent `cancel_payment`.
    OrdersCancelled,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Customer => "customer",
            CancelReason::Expired => "expired",
            CancelReason::OrdersCancelled => "orders_cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(CancelReason::Customer),
            "expired" => Some(CancelReason::Expired),
            "orders_cancelled" => Some(CancelReason::OrdersCancelled),
            _ => None,
        }
    }
}

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedMessage,
    UnknownType,
    UnknownOrder,
    UnknownMethod,
    Conflict,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnknownOrder => "unknown_order",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
        }
    }
}
