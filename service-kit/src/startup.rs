//! What can stop a service from starting, the same for both: a refused token or
//! setting, a database it cannot open, an address it cannot listen on.

use std::net::TcpListener;
use std::time::Duration;

/// Why a service did not start. `main` prints it with its sources and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A token is refused: empty, or in production missing, too short or the
    /// development token (see [`crate::token`]).
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// A setting is out of its range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A TLS file cannot be used (the error names it).
    #[error("could not set up TLS")]
    Tls(#[from] crate::tls::TlsError),
    /// The database could not be opened or migrated.
    #[error("could not open the database")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The address is taken or not ours.
    #[error("could not listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else the OS refused.
    #[error("could not start")]
    Io(#[from] std::io::Error),
}

impl StartupError {
    /// The database could not be opened: keeps the store's error as the source.
    pub fn store(e: impl std::error::Error + Send + Sync + 'static) -> StartupError {
        StartupError::Store(Box::new(e))
    }
}

/// How long a stop may take in all, from SIGTERM to exit: Docker Compose kills a
/// service 10 s after its SIGTERM (its default `stop_grace_period`), so the parts below
/// add up to at most 9 s with the default drain, a second left for the process to go. A
/// longer `DRAIN_PERIOD` needs a longer grace period, by as much.
pub const STOP_BUDGET: Duration = Duration::from_secs(9);
/// The default `DRAIN_PERIOD`: `/readyz` answers 503 this long before the instance
/// stops accepting (a load balancer that checks every second and takes an instance out
/// after two failures has done so by then).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);
/// In-flight HTTP requests, WebSockets closing with 1001 among them, get this long to
/// finish (actix's graceful shutdown); then they are dropped.
pub const HTTP_STOP: Duration = Duration::from_secs(4);
/// Then the background work (Orders' link, Payments' delivery and expiry) gets this
/// long to finish.
pub const BACKGROUND_STOP: Duration = Duration::from_secs(2);

const _STOP_FITS: () = assert!(
    DEFAULT_DRAIN.as_millis()
        + HTTP_STOP.as_millis()
        + BACKGROUND_STOP.as_millis()
        + crate::database::CLOSE_WAIT.as_millis()
        <= STOP_BUDGET.as_millis()
);

/// Whether this instance is draining: set on SIGTERM ([`wait_for_stop`]), when
/// `/readyz` starts answering 503 so that a load balancer takes the instance out while
/// it still serves what comes.
#[derive(Debug, Clone, Default)]
pub struct Draining(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Waits for SIGTERM or SIGINT, then drains for `period`: `draining` is set (so
/// `/readyz` answers 503) while the server goes on serving, long enough for a load
/// balancer's health checks to take the instance out. Returns when it is time to stop
/// accepting; a second signal cuts the drain short.
pub async fn wait_for_stop(signals: &mut StopSignals, draining: &Draining, period: Duration) {
    signals.next().await;
    draining.start();
    tracing::info!(drain = ?period, "stopping: /readyz answers 503 while draining, then no new connections are taken");
    tokio::select! {
        () = tokio::time::sleep(period) => {}
        () = signals.next() => tracing::info!("a second signal: the drain is cut short"),
    }
}

/// SIGTERM and SIGINT, listened for from [`StopSignals::listen`] on. A service
/// listens before its port answers: a signal sent as soon as `/readyz` says ready is
/// then kept for [`wait_for_stop`], where it would otherwise take its default action
/// and kill the process with no drain.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening (inside a tokio runtime).
    pub fn listen() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Resolves on the next SIGTERM or SIGINT, or one that came since the last.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Listens on `addr` (port 0 picks a free port), or says which address failed.
pub fn bind(addr: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).map_err(|source| StartupError::Bind {
        addr: addr.to_owned(),
        source,
    })
}

/// A service `main` can run: both binaries' `main` is [`run`] on their `Application`.
pub trait Service: Sized {
    /// Its name: the default `service.name` of its traces (`OTEL_SERVICE_NAME` wins).
    const NAME: &'static str;

    /// Its settings, read from the environment and flags.
    type Config: clap::Parser;

    /// The settings every service has (logging, among them).
    fn common(config: &Self::Config) -> &crate::config::CommonConfig;

    /// Opens what it needs and binds its port, without serving yet.
    fn build(config: Self::Config) -> impl Future<Output = Result<Self, StartupError>>;

    /// Its database pool, closed by [`run`] once the service has stopped.
    fn pool(&self) -> sqlx::PgPool;

    /// Serves until SIGTERM or SIGINT, then stops gracefully.
    fn run_until_stopped(self) -> impl Future<Output = std::io::Result<()>>;
}

/// The whole of a service's `main`: read the settings, set up logging, build, serve.
pub async fn run<S: Service>() -> anyhow::Result<()> {
    let config = <S::Config as clap::Parser>::parse();
    let common = S::common(&config);
    let telemetry = crate::telemetry::init(&common.rust_log, common.log_format, S::NAME)?;
    let service = match S::build(config).await {
        Ok(service) => service,
        Err(e) => {
            telemetry.flush().await;
            return Err(e.into());
        }
    };
    let pool = service.pool();
    let served = service.run_until_stopped().await;
    // Side by side, each bounded by a second: the stop's budget is unchanged.
    tokio::join!(crate::database::close_at_exit(&pool), telemetry.flush());
    served?;
    Ok(())
}
