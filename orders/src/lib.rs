//! The Orders service: an HTTP API to create and read orders, stored in PostgreSQL,
//! and one long-lived WebSocket to Payments that carries every order's payment.
//!
//! `main` reads the [`config::Config`] and calls [`startup::Application::build`];
//! tests do the same on port 0 against a fresh database and a fake Payments.

pub mod config;
pub mod domain;
pub mod error;
pub mod flow;
pub mod metrics;
pub mod openapi;
pub mod payments_link;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;

pub use config::Config;
pub use startup::{AppHandle, Application};
