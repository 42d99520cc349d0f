//! Building and running the service: the store, the link to Payments and the HTTP
//! server, wired the same way for `main` and for tests (which bind port 0).

use service_kit::token::ExposeSecret;

pub use service_kit::startup::StartupError;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::config::Config;
use crate::error::json_errors;
use crate::metrics::Metrics;
use crate::payments_link::{LinkConfig, LinkGuard, PaymentsLink};
use crate::routes;
use crate::state::AppState;
use crate::store::Store;

/// How long a graceful stop may take before in-flight requests are dropped (within
/// the stop's whole budget, [`service_kit::startup::STOP_BUDGET`]).
pub const SHUTDOWN_TIMEOUT_SECS: u64 = service_kit::startup::HTTP_STOP.as_secs();

/// The service, built and listening, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    link: PaymentsLink,
    link_guard: LinkGuard,
    store: Store,
    /// Set on SIGTERM, for `DRAIN_PERIOD`: `/readyz` answers 503.
    draining: service_kit::startup::Draining,
    drain_period: std::time::Duration,
    /// Listened for from `build` on.
    stop_signals: service_kit::startup::StopSignals,
}

/// A `Send` handle to stop a running [`Application`].
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    link: PaymentsLink,
    stop_link: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppHandle {
    /// Stops the HTTP server (gracefully: in-flight requests finish), then the link
    /// (closing the WebSocket with 1001); returns once both have stopped.
    pub async fn stop(&self, graceful: bool) {
        self.server.stop(graceful).await;
        let _ = self.stop_link.send(true);
        self.link.stopped().await;
    }

    /// Asks everything to stop at once, without waiting: for `Drop` impls in tests.
    pub fn stop_now(&self) {
        drop(self.server.stop(false));
        let _ = self.stop_link.send(true);
    }
}

impl Application {
    /// Opens the store, binds the HTTP port, starts the link to Payments and the
    /// HTTP server (not yet running).
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        check_tokens(&config)?;
        config.check().map_err(StartupError::Config)?;
        let store = Store::open(config.database_url.expose_secret(), &config.common.database)
            .await
            .map_err(StartupError::store)?
            .with_max_payment_attempts(config.max_payment_attempts);
        // Before the port answers, so that no early signal is lost (see StopSignals).
        let stop_signals = service_kit::startup::StopSignals::listen()?;
        let listener = service_kit::startup::bind(&config.orders_addr)?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new();
        let (link, link_guard) =
            PaymentsLink::start(link_config(&config), store.clone(), metrics.clone())?;
        let draining = service_kit::startup::Draining::default();
        let state = AppState {
            store: store.clone(),
            link: link.clone(),
            metrics,
            api_token: config.orders_api_token.clone(),
            body_timeout: config.common.http.http_body_timeout,
            draining: draining.clone(),
            openapi: crate::openapi::document,
        };
        let server = http_server(&config, state, listener)?;
        tracing::info!(port, payments = %config.payments_ws_url, "orders is listening");
        Ok(Application {
            port,
            server,
            link,
            link_guard,
            store,
            draining,
            drain_period: config.common.drain_period,
            stop_signals,
        })
    }

    /// The port the HTTP API listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            link: self.link.clone(),
            stop_link: self.link_guard.stopper(),
        }
    }

    /// The link to Payments (for readiness checks in tests).
    pub fn link(&self) -> PaymentsLink {
        self.link.clone()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until stopped (SIGTERM/SIGINT, after the drain, or [`AppHandle::stop`]),
    /// then closes the link.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            () = service_kit::startup::wait_for_stop(&mut self.stop_signals, &self.draining, self.drain_period) => {
                // Ask, then keep polling the server: it is the server future that carries
                // the stop out.
                drop(handle.stop(true));
                server.await
            }
        };
        let guard = self.link_guard;
        // Joining the link's thread blocks: do it off the async thread.
        let _ = tokio::task::spawn_blocking(move || guard.stop()).await;
        result
    }
}

/// The service's secrets, as `APP_ENV` wants them (see [`service_kit::token`]).
fn check_tokens(config: &Config) -> Result<(), StartupError> {
    use service_kit::token::{check_distinct, check_optional_token, check_payments_token};
    let env = config.common.app_env;
    check_payments_token(env, &config.common.payments_token)?;
    check_optional_token(
        env,
        "ORDERS_API_TOKEN",
        config.orders_api_token.as_ref(),
        Some("without it, anyone who reaches the port can list every order and its payment page"),
    )?;
    check_distinct(
        ("ORDERS_API_TOKEN", config.orders_api_token.as_ref()),
        ("PAYMENTS_TOKEN", &config.common.payments_token),
    )?;
    Ok(())
}

impl service_kit::startup::Service for Application {
    const NAME: &'static str = "orders";

    type Config = Config;

    fn common(config: &Config) -> &service_kit::config::CommonConfig {
        &config.common
    }

    async fn build(config: Config) -> Result<Application, StartupError> {
        Application::build(config).await
    }

    fn pool(&self) -> sqlx::PgPool {
        self.store.pool().clone()
    }

    async fn run_until_stopped(self) -> std::io::Result<()> {
        Application::run_until_stopped(self).await
    }
}

/// The link's settings, from the service's.
fn link_config(config: &Config) -> LinkConfig {
    LinkConfig {
        url: config.payments_ws_url.clone(),
        token: config.common.payments_token.clone(),
        heartbeat_interval: config.common.heartbeat_interval,
        peer_timeout: config.common.peer_timeout,
        resend_after: config.resend_after,
        reconnect_base: config.reconnect_base,
        reconnect_cap: config.reconnect_cap,
        outbox_capacity: config.link_outbox,
        ca: config.payments_ca.clone(),
        client_identity: config
            .tls_client_cert
            .clone()
            .zip(config.tls_client_key.clone()),
    }
}

/// The HTTP server of the API on `listener`, with its limits, metrics and logs.
fn http_server(
    config: &Config,
    state: AppState,
    listener: std::net::TcpListener,
) -> Result<Server, StartupError> {
    let http_metrics = web::Data::new(state.metrics.http.clone());
    let state = web::Data::new(state);
    let server = config
        .common
        .http
        .apply(HttpServer::new(move || {
            App::new()
                .wrap(ErrorHandlers::new().default_handler(json_errors))
                .wrap(actix_web::middleware::from_fn(
                    service_kit::http_metrics::record,
                ))
                .wrap(TracingLogger::<service_kit::http_span::ContinueTrace>::new())
                .app_data(state.clone())
                .app_data(http_metrics.clone())
                .configure(routes::configure)
        }))
        .on_connect(service_kit::http_server::on_connect(
            config.common.peer_timeout,
        ))
        .listen(listener)?
        // Signals are ours (see run_until_stopped): the drain comes first.
        .disable_signals()
        // Then in-flight requests get this long (the stop's budget: STOP_BUDGET).
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        // Responses go out at once (no Nagle wait for the previous ACK).
        .tcp_nodelay(true)
        .run();
    Ok(server)
}
