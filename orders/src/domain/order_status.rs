//! The order's life as a state machine: the one place that says which status an order
//! can move to, and on what.
//!
//! ```text
//!                    methods offered (a method is chosen, once)
//!                    refused by Payments (counted; parked at MAX_PAYMENT_ATTEMPTS)
//!                    cancel requested (recorded; Payments is asked)
//!                          ┌───┐
//!                          ▼   │
//!  POST /orders ──▶ pending_payment ──── page ────▶ awaiting_payment ◀─┐ a new page,
//!                       │    │                          │    │    └──┘ refused,
//!                       │    └──── outcome: cancel ─────┼────┼──▶ cancelled   cancel requested
//!                       └───────── outcome: fulfill ────┴────┼──▶ fulfilled (+ invoice)
//!                                                            └──▶ (either, by outcome)
//! ```
//!
//! | from \ event        | methods offered | page             | outcome fulfill | outcome cancel | cancel requested | refused |
//! |---------------------|-----------------|------------------|-----------------|----------------|------------------|---------|
//! | `pending_payment`   | stays           | awaiting_payment | fulfilled       | cancelled      | stays            | stays   |
//! | `awaiting_payment`  | —               | stays (new page) | fulfilled       | cancelled      | stays            | stays   |
//! | `fulfilled`         | —               | —                | —               | —              | —                | —       |
//! | `cancelled`         | —               | —                | —               | —              | —                | —       |
//!
//! "—" means the event does not apply: the store changes nothing and the message is
//! answered as what it is (already final, not pending). Every transition is one
//! conditional `UPDATE … WHERE status IN (…)` in [`crate::store`]; the SQL cannot name
//! [`OrderStatus::OPEN`] (compile-time checked queries are string literals), so
//! `orders/tests/status_table.rs` walks every (state, event) pair through the real store
//! and checks that the SQL does what [`OrderStatus::next`] says.
//!
//! An operator's `POST /orders/{id}/retry` is not in the table: it clears the parked
//! mark of an open order and never changes its status.

use serde::Serialize;
use shared_protocol::PaymentOutcome;

/// Where an order stands. Stored as text with a CHECK constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created; Payments has not sent the page yet.
    PendingPayment,
    /// The payment page URL is known; the customer is paying.
    AwaitingPayment,
    /// Paid, with an invoice. Final.
    Fulfilled,
    /// Not paid. Final.
    Cancelled,
}

/// What can happen to an order: the messages from Payments about it, and the
/// customer's cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// `payment_methods`: Payments offers methods; Orders picks the first, once.
    MethodsOffered,
    /// `payment_page`: the customer can pay at this URL (a different one than stored).
    PageReceived,
    /// `payment_state`: the payment's outcome.
    Outcome(PaymentOutcome),
    /// `POST /orders/{id}/cancel`.
    CancelRequested,
    /// `error` about the order: Payments refused its request.
    Refused,
}

impl OrderEvent {
    /// Every event, for tests and tables.
    pub const ALL: [OrderEvent; 6] = [
        OrderEvent::MethodsOffered,
        OrderEvent::PageReceived,
        OrderEvent::Outcome(PaymentOutcome::Fulfill),
        OrderEvent::Outcome(PaymentOutcome::Cancel),
        OrderEvent::CancelRequested,
        OrderEvent::Refused,
    ];
}

impl OrderStatus {
    /// Every status.
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::PendingPayment,
        OrderStatus::AwaitingPayment,
        OrderStatus::Fulfilled,
        OrderStatus::Cancelled,
    ];

    /// The statuses in which an order still waits for its payment's outcome (the
    /// `status IN ('pending_payment', 'awaiting_payment')` of the store's SQL).
    pub const OPEN: [OrderStatus; 2] = [OrderStatus::PendingPayment, OrderStatus::AwaitingPayment];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// The status of its stored text, if it is one.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Fulfilled or cancelled: nothing moves it any more.
    pub fn is_final(self) -> bool {
        !OrderStatus::OPEN.contains(&self)
    }

    /// The final status a payment outcome moves an open order to.
    pub fn after(outcome: PaymentOutcome) -> OrderStatus {
        match outcome {
            PaymentOutcome::Fulfill => OrderStatus::Fulfilled,
            PaymentOutcome::Cancel => OrderStatus::Cancelled,
        }
    }

    /// Where `event` takes an order in this status: `Some(status)` when the event
    /// applies (the status may stay the same), `None` when it does not.
    pub fn next(self, event: OrderEvent) -> Option<OrderStatus> {
        use OrderEvent::*;
        use OrderStatus::*;
        match (self, event) {
            (Fulfilled | Cancelled, _) => None,
            (PendingPayment, MethodsOffered) => Some(PendingPayment),
            (AwaitingPayment, MethodsOffered) => None,
            (PendingPayment | AwaitingPayment, PageReceived) => Some(AwaitingPayment),
            (PendingPayment | AwaitingPayment, Outcome(outcome)) => {
                Some(OrderStatus::after(outcome))
            }
            (open, CancelRequested | Refused) => Some(open),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_take_no_event_and_open_ones_end_in_the_outcome() {
        for status in OrderStatus::ALL {
            for event in OrderEvent::ALL {
                let next = status.next(event);
                if status.is_final() {
                    assert_eq!(next, None, "{status:?} on {event:?}");
                }
                if let (OrderEvent::Outcome(outcome), false) = (event, status.is_final()) {
                    assert_eq!(next, Some(OrderStatus::after(outcome)));
                }
                if let Some(next) = next {
                    // Never back from awaiting to pending.
                    assert!(
                        !(status == OrderStatus::AwaitingPayment
                            && next == OrderStatus::PendingPayment)
                    );
                }
            }
        }
    }

    #[test]
    fn the_text_round_trips() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("paid"), None);
    }
}
