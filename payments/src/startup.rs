//! Building and running the service, the same way for `main` and for tests (port 0):
//! the store, the HTTP server with the WebSocket and the page, event delivery and
//! expiry in the background, and a graceful stop that closes WebSockets with 1001.

use service_kit::token::ExposeSecret;

pub use service_kit::startup::StartupError;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use tokio::sync::watch;
use tracing_actix_web::TracingLogger;
use uuid::Uuid;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::routes;
use crate::state::AppState;
use crate::store::{SCAN_LIMIT, Store};
use service_kit::error_chain;

/// How long a graceful stop may take before connections are dropped (within the
/// stop's whole budget, [`service_kit::startup::STOP_BUDGET`]).
pub const SHUTDOWN_TIMEOUT_SECS: u64 = service_kit::startup::HTTP_STOP.as_secs();

/// The service, built and listening.
pub struct Application {
    port: u16,
    public_url: String,
    server: Server,
    shutdown: Arc<watch::Sender<bool>>,
    store: Store,
    /// Delivery and expiry: awaited (for a bounded time) after the server stops, so
    /// their last database work runs before the runtime goes away.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Set on SIGTERM, for `DRAIN_PERIOD`: `/readyz` answers 503.
    draining: service_kit::startup::Draining,
    drain_period: Duration,
    /// Listened for from `build` on.
    stop_signals: service_kit::startup::StopSignals,
}

/// How long the background tasks get to finish after the server stopped.
const BACKGROUND_STOP_WAIT: Duration = service_kit::startup::BACKGROUND_STOP;

/// A `Send` handle to stop a running [`Application`].
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    shutdown: Arc<watch::Sender<bool>>,
}

impl AppHandle {
    /// Closes the WebSockets with 1001 and stops the server (gracefully: in-flight
    /// requests finish).
    pub async fn stop(&self, graceful: bool) {
        let _ = self.shutdown.send(true);
        self.server.stop(graceful).await;
    }

    /// Asks everything to stop at once, without waiting: for `Drop` impls in tests.
    pub fn stop_now(&self) {
        self.request_stop(false);
    }

    /// Closes the WebSockets (1001) and sends the server its stop command.
    fn request_stop(&self, graceful: bool) {
        let _ = self.shutdown.send(true);
        // The command is sent when `stop` is called; the returned future only waits.
        drop(self.server.stop(graceful));
    }
}

impl Application {
    /// Checks the configuration, opens the store, starts the background tasks, and
    /// starts the HTTP server on its listener.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        check_config(&config)?;
        let store = Store::open(config.database_url.expose_secret(), &config.common.database)
            .await
            .map_err(StartupError::store)?;
        let tls = load_tls(&config)?;
        // Before the port answers, so that no early signal is lost (see StopSignals).
        let stop_signals = service_kit::startup::StopSignals::listen()?;
        let listener = service_kit::startup::bind(&config.payments_addr)?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = public_url(&config, scheme, local);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Shared::new(&config, &store, shutdown);
        let background = shared.spawn_background(&config, &store, tls.as_ref());
        let draining = service_kit::startup::Draining::default();
        let state = shared.into_state(&config, &public_url, &draining);
        let server = serve(&config, state, listener, tls.as_ref())?;
        tracing::info!(address = %local, %public_url, tls = scheme == "https",
            mutual_tls = tls.as_ref().is_some_and(|t| t.mutual()), "payments is listening");
        Ok(Application {
            port: local.port(),
            public_url,
            server,
            shutdown: Arc::new(shutdown_tx),
            store,
            background,
            draining,
            drain_period: config.common.drain_period,
            stop_signals,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base of payment page URLs.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Serves until SIGTERM/SIGINT or [`AppHandle::stop`].
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let handle = self.handle();
        let server = self.server;
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            () = service_kit::startup::wait_for_stop(&mut self.stop_signals, &self.draining, self.drain_period) => {
                tracing::info!("stopping: closing WebSockets, finishing in-flight requests");
                // Ask, then keep polling the server: it is the server future that carries
                // the stop out, so awaiting the stop's completion here would deadlock.
                handle.request_stop(true);
                server.await
            }
        };
        let _ = self.shutdown.send(true);
        // Let delivery unregister this instance's connections while the runtime still
        // runs (it used to be cut off, leaving rows for the heartbeat to expire);
        // bounded, so the exit stays within its 10 s.
        let wait = futures_util::future::join_all(self.background);
        if tokio::time::timeout(BACKGROUND_STOP_WAIT, wait)
            .await
            .is_err()
        {
            tracing::warn!(wait = ?BACKGROUND_STOP_WAIT, "background tasks did not finish in time");
        }
        result
    }
}

/// What the HTTP server and the background tasks share, made before either starts.
struct Shared {
    delivery: Delivery,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The metrics and this instance's event delivery, on `store`.
    fn new(config: &Config, store: &Store, shutdown: watch::Receiver<bool>) -> Shared {
        let metrics = Metrics::new();
        let delivery = Delivery::new(
            store.clone(),
            Uuid::new_v4(),
            // A connection is alive while its instance refreshed it within three scans.
            (config.delivery_scan_interval * 3).max(Duration::from_secs(3)),
            config.redeliver_after,
            config.max_delivery_attempts,
            metrics.clone(),
        );
        Shared {
            delivery,
            metrics,
            shutdown,
        }
    }

    /// Starts delivery, expiry and (with TLS) the certificate reload.
    fn spawn_background(
        &self,
        config: &Config,
        store: &Store,
        tls: Option<&Arc<service_kit::tls::ServerTls>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut background = vec![
            tokio::spawn(
                self.delivery
                    .clone()
                    .run(config.delivery_scan_interval, self.shutdown.clone()),
            ),
            tokio::spawn(expire_sessions(
                store.clone(),
                config.expiry_interval,
                self.metrics.clone(),
                self.shutdown.clone(),
            )),
        ];
        if let Some(tls) = tls {
            background.push(tokio::spawn(
                tls.clone()
                    .watch(config.tls_reload_interval, self.shutdown.clone()),
            ));
        }
        background
    }

    /// What the handlers share.
    fn into_state(
        self,
        config: &Config,
        public_url: &str,
        draining: &service_kit::startup::Draining,
    ) -> web::Data<AppState> {
        web::Data::new(AppState {
            store: self.delivery.store.clone(),
            config: config.clone(),
            public_url: public_url.to_owned(),
            delivery: self.delivery,
            metrics: self.metrics,
            shutdown: self.shutdown,
            websockets: Arc::new(tokio::sync::Semaphore::new(config.max_websockets as usize)),
            draining: draining.clone(),
        })
    }
}

/// The configuration's own checks, beyond what parsing it checked: the secrets, and
/// at least one delivery attempt.
fn check_config(config: &Config) -> Result<(), StartupError> {
    check_tokens(config)?;
    if config.max_delivery_attempts == 0 {
        return Err(StartupError::Config(
            "MAX_DELIVERY_ATTEMPTS must be at least 1",
        ));
    }
    Ok(())
}

/// The base of payment page URLs, without a trailing slash: `PAYMENTS_PUBLIC_URL`, or
/// the address listened on.
fn public_url(config: &Config, scheme: &str, local: std::net::SocketAddr) -> String {
    config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local}"))
        .trim_end_matches('/')
        .to_owned()
}

/// Starts the HTTP server (with TLS if configured) on `listener`.
fn serve(
    config: &Config,
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
    tls: Option<&Arc<service_kit::tls::ServerTls>>,
) -> Result<Server, StartupError> {
    let http_metrics = web::Data::new(state.metrics.http.clone());
    let http = &config.common.http;
    let server = http
        .apply(HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    service_kit::http_metrics::record,
                ))
                .wrap(TracingLogger::<service_kit::http_span::OwnTrace>::new())
                .app_data(state.clone())
                .app_data(http_metrics.clone())
                .configure(routes::configure)
        }))
        .on_connect(service_kit::http_server::on_connect(
            config.common.peer_timeout,
        ));
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls.server_config())?,
        None => server.listen(listener)?,
    };
    Ok(server
        // Signals are ours (see run_until_stopped): WebSockets must close before the
        // server waits for its connections to end.
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        // Every frame to Orders goes out at once (no Nagle wait for the previous ACK).
        .tcp_nodelay(true)
        .run())
}

/// The TLS certificate (and client CA) to serve with, if configured; a file that cannot
/// be used stops the start, naming it.
fn load_tls(config: &Config) -> Result<Option<Arc<service_kit::tls::ServerTls>>, StartupError> {
    if config.tls_files().is_none()
        && (config.tls_cert.is_some() || config.tls_key.is_some() || config.tls_client_ca.is_some())
    {
        return Err(StartupError::Config(
            "PAYMENTS_TLS_CERT and PAYMENTS_TLS_KEY go together (and PAYMENTS_TLS_CLIENT_CA needs them)",
        ));
    }
    Ok(config
        .tls_files()
        .map(service_kit::tls::ServerTls::load)
        .transpose()?)
}

/// The service's secrets, as `APP_ENV` wants them (see [`service_kit::token`]). The
/// admin token is optional: without it the admin endpoints are off.
fn check_tokens(config: &Config) -> Result<(), StartupError> {
    use service_kit::token::{check_distinct, check_optional_token, check_payments_token};
    let env = config.common.app_env;
    check_payments_token(env, &config.common.payments_token)?;
    check_optional_token(
        env,
        "PAYMENTS_ADMIN_TOKEN",
        config.admin_token.as_ref(),
        None,
    )?;
    check_distinct(
        ("PAYMENTS_ADMIN_TOKEN", config.admin_token.as_ref()),
        ("PAYMENTS_TOKEN", &config.common.payments_token),
    )?;
    if config.admin_token.is_none() {
        tracing::info!("PAYMENTS_ADMIN_TOKEN is not set: the admin endpoints refuse every request");
    }
    Ok(())
}

/// Cancels sessions past their deadline, every `interval`.
async fn expire_sessions(
    store: Store,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => loop {
                // In batches of SCAN_LIMIT, until a batch comes back short.
                match store.expire().await {
                    Ok(events) => {
                        metrics.expired(events.len());
                        for event in &events {
                            tracing::info!(order_id = %event.order_id, event_id = %event.event_id, "payment expired");
                        }
                        if (events.len() as i64) < SCAN_LIMIT {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "expiry scan failed; will retry");
                        break;
                    }
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

impl service_kit::startup::Service for Application {
    const NAME: &'static str = "payments";

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
