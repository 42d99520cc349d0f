//! The settings both services read, with the same names, meanings and defaults:
//! flattened into each service's `Config` (`#[command(flatten)] common: CommonConfig`),
//! so `orders --help` and `payments --help` list them as their own.
//!
//! `DATABASE_URL` is not here: its default names each service's own database, and a
//! flattened clap struct has one default for every user.

use std::time::Duration;

use crate::database::DatabaseConfig;
pub use crate::durations::{MAX_DURATION, MIN_DURATION, drain_period, duration};
use crate::http_server::HttpConfig;
use crate::telemetry::LogFormat;
use crate::token::{AppEnv, DEFAULT_PAYMENTS_TOKEN, SecretString};

/// The WebSocket's shared secret, the environment, logging and the link's liveness.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// Bearer token of the WebSocket handshake: Orders sends it, Payments requires it.
    #[arg(long, env = "PAYMENTS_TOKEN", default_value = DEFAULT_PAYMENTS_TOKEN, hide_env_values = true)]
    pub payments_token: SecretString,

    /// Where the service runs: `production` refuses to start with the public
    /// development token, without a token the service requires there, with any token
    /// under 32 bytes, or with one secret for two doors.
    #[arg(long, env = "APP_ENV", value_enum, default_value_t = AppEnv::Development)]
    pub app_env: AppEnv,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,

    /// Log format: `pretty` for people, `json` for one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// How often this side pings the other over the WebSocket.
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "10s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// Silence after which the other side is considered gone: Payments drops the
    /// connection, Orders reconnects. Also the bound on every WebSocket write, and on
    /// data any HTTP peer leaves untaken (TCP_USER_TIMEOUT).
    #[arg(long, env = "PEER_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub peer_timeout: Duration,

    /// On SIGTERM, how long `/readyz` answers 503 while everything else is served as
    /// before, so that a load balancer takes the instance out before it stops
    /// accepting (0s: no drain). The whole stop takes this plus 7 s at most.
    #[arg(long, env = "DRAIN_PERIOD", default_value = "2s", value_parser = drain_period)]
    pub drain_period: Duration,

    /// The database pool and the timeouts of its sessions.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// The HTTP server's connection cap and deadlines.
    #[command(flatten)]
    pub http: HttpConfig,
}
