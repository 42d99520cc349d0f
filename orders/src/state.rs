//! What the request handlers share. Its own module, so that the routes import it
//! from here and `startup` imports the routes: imports point one way.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::payments_link::PaymentsLink;
use crate::store::Store;

/// What the request handlers share.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub link: PaymentsLink,
    pub metrics: Arc<Metrics>,
    /// `ORDERS_API_TOKEN`: when set, `/orders` routes need it ([`crate::routes::auth`]).
    pub api_token: Option<service_kit::token::SecretString>,
    /// How long a request body may take to arrive (`HTTP_BODY_TIMEOUT`).
    pub body_timeout: std::time::Duration,
    /// Set on SIGTERM: `/readyz` answers 503 while the instance drains.
    pub draining: service_kit::startup::Draining,
    /// Makes what `GET /openapi.json` serves ([`crate::openapi::document`]): a
    /// function, so the routes need not import the module that lists them, and the
    /// document is made when asked for, as before, not kept in memory.
    pub openapi: fn() -> String,
}
