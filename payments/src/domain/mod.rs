//! Payments' types and rules, apart from storage and transport. The payment session's
//! life, its states and what moves it between them, is [`session`].

pub mod session;

pub use session::{SessionEvent, SessionState};
