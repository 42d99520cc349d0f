//! The payment session's life as a state machine: the one place that says which state
//! a session can move to, and on what.
//!
//! ```text
//!  initiate_payment ──▶ initiated ── select_payment_method ──▶ method_selected ── Pay ──▶ fulfilled
//!                          │                                         │
//!                          └──── Cancel on the page, cancel_payment, ┴──▶ cancelled
//!                                or expiry (reason customer,
//!                                orders_cancelled or expired)
//! ```
//!
//! | from \ event       | select method   | pay (before expiry) | cancel (page) | cancel_payment | expire (after expiry) |
//! |--------------------|-----------------|---------------------|---------------|----------------|-----------------------|
//! | `initiated`        | method_selected | —                   | cancelled     | cancelled      | cancelled             |
//! | `method_selected`  | —               | fulfilled           | cancelled     | cancelled      | cancelled             |
//! | `fulfilled`        | —               | —                   | —             | —              | —                     |
//! | `cancelled`        | —               | —                   | —             | —              | —                     |
//!
//! "—" means the event does not apply: nothing changes. A second `select_payment_method`
//! is answered from the session as it stands (its page for the same method, `conflict`
//! for another); a Pay or Cancel on a final session shows its outcome. Each move to a
//! final state writes the one outcome event of the session in the same transaction.
//!
//! Every transition is one conditional `UPDATE … WHERE state = …` (or `WHERE is_open`,
//! the generated column that says `initiated` or `method_selected`) in
//! [`crate::store`]; `payments/tests/session_table.rs` walks every (state, event) pair
//! through the real store and checks that the SQL does what [`SessionState::next`] says.

/// Where a payment session stands. Stored as text with a CHECK constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// `initiate_payment` received; the methods were offered.
    Initiated,
    /// Orders selected a method; the page is live until it expires.
    MethodSelected,
    /// Paid. Final; the event says `FULFILL`.
    Fulfilled,
    /// Not paid. Final; the event says `CANCEL` with the reason.
    Cancelled,
}

/// What can happen to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// `select_payment_method` from Orders.
    SelectMethod,
    /// The customer's Pay on the page, before the session expires.
    Pay,
    /// The customer's Cancel on the page.
    CancelByCustomer,
    /// `cancel_payment` from Orders.
    CancelByOrders,
    /// The expiry sweep, for a session past its `expires_at`.
    Expire,
}

impl SessionEvent {
    /// Every event, for tests and tables.
    pub const ALL: [SessionEvent; 5] = [
        SessionEvent::SelectMethod,
        SessionEvent::Pay,
        SessionEvent::CancelByCustomer,
        SessionEvent::CancelByOrders,
        SessionEvent::Expire,
    ];
}

impl SessionState {
    /// Every state.
    pub const ALL: [SessionState; 4] = [
        SessionState::Initiated,
        SessionState::MethodSelected,
        SessionState::Fulfilled,
        SessionState::Cancelled,
    ];

    /// The states a session can still be paid or cancelled in (the store's generated
    /// column `is_open`, which every query about open sessions reads).
    pub const OPEN: [SessionState; 2] = [SessionState::Initiated, SessionState::MethodSelected];

    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Initiated => "initiated",
            SessionState::MethodSelected => "method_selected",
            SessionState::Fulfilled => "fulfilled",
            SessionState::Cancelled => "cancelled",
        }
    }

    /// The state of its stored text, if it is one.
    pub fn parse(s: &str) -> Option<SessionState> {
        SessionState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Fulfilled or cancelled: nothing moves it any more.
    pub fn is_final(self) -> bool {
        !SessionState::OPEN.contains(&self)
    }

    /// Where `event` takes a session in this state: `Some(state)` when the event
    /// applies, `None` when it does not.
    pub fn next(self, event: SessionEvent) -> Option<SessionState> {
        use SessionEvent::*;
        use SessionState::*;
        match (self, event) {
            (Fulfilled | Cancelled, _) => None,
            (Initiated, SelectMethod) => Some(MethodSelected),
            (MethodSelected, SelectMethod) => None,
            (Initiated, Pay) => None,
            (MethodSelected, Pay) => Some(Fulfilled),
            (Initiated | MethodSelected, CancelByCustomer | CancelByOrders | Expire) => {
                Some(Cancelled)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_take_no_event() {
        for state in SessionState::ALL {
            for event in SessionEvent::ALL {
                if state.is_final() {
                    assert_eq!(state.next(event), None, "{state:?} on {event:?}");
                }
            }
        }
    }

    #[test]
    fn the_text_round_trips() {
        for state in SessionState::ALL {
            assert_eq!(SessionState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SessionState::parse("paid"), None);
    }
}
