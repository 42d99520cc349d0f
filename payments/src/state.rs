//! What the handlers share. Its own module, so that the routes and the WebSocket
//! import it from here and `startup` imports them: imports point one way.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::store::Store;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Sessions, events and connections (the same store delivery uses).
    pub store: Store,
    pub config: Config,
    pub public_url: String,
    pub delivery: Delivery,
    pub metrics: Arc<Metrics>,
    /// Turns true when the service stops: WebSocket loops close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per open WebSocket (`PAYMENTS_MAX_WEBSOCKETS`), held by its loop.
    pub websockets: Arc<tokio::sync::Semaphore>,
    /// Set on SIGTERM: `/readyz` answers 503 while the instance drains.
    pub draining: service_kit::startup::Draining,
}
