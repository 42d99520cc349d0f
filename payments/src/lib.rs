//! The Payments service: the `payments.v1` WebSocket Orders connects to, payment
//! sessions and their outcome events in PostgreSQL, delivery of every outcome until
//! Orders acks it (across instances, through the database), expiry, and the hosted
//! payment page customers pay on.
//!
//! `main` reads the [`config::Config`] and calls [`startup::Application::build`];
//! tests do the same on port 0 against a fresh database.

pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod flow;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod ws;

pub use config::Config;
pub use startup::{AppHandle, Application};
