//! Configuration, read from the environment (or flags) by clap, so `payments --help`
//! documents every variable and its default. The timing knobs at the end let tests
//! run expiry, redelivery and dead-peer detection in milliseconds.

use std::time::Duration;

use clap::Parser;
pub use service_kit::config::CommonConfig;
pub use service_kit::telemetry::LogFormat;

use service_kit::token::SecretString;
pub use service_kit::token::{AppEnv, DEFAULT_PAYMENTS_TOKEN};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "payments",
    version,
    about = "The Payments service: the payments.v1 WebSocket and the payment page"
)]
pub struct Config {
    /// PostgreSQL database of this service; created at start-up if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/payments",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// PAYMENTS_TOKEN, APP_ENV, RUST_LOG, LOG_FORMAT, HEARTBEAT_INTERVAL, PEER_TIMEOUT.
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PAYMENTS_ADDR", default_value = "127.0.0.1:8081")]
    pub payments_addr: String,

    /// Bearer token of the operators' endpoints (`/admin/…`): their own secret, never
    /// the link's (`PAYMENTS_TOKEN` gets 401 there). Unset: the admin endpoints refuse
    /// every request.
    #[arg(long, env = "PAYMENTS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Base of payment page URLs; default `http://` (or `https://` with TLS) + the
    /// bound address.
    #[arg(long, env = "PAYMENTS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// PEM certificate chain: with `PAYMENTS_TLS_KEY`, Payments serves HTTPS and WSS
    /// only. Re-read when the file changes or on SIGHUP, without a restart.
    #[arg(long, env = "PAYMENTS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `PAYMENTS_TLS_CERT`.
    #[arg(long, env = "PAYMENTS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA certificate(s): every client must present a certificate signed by one
    /// (mutual TLS), the link's and the page's alike (put the page behind a proxy that
    /// presents one). Needs `PAYMENTS_TLS_CERT`.
    #[arg(long, env = "PAYMENTS_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// How often the TLS files are looked at for changes (SIGHUP reloads at once).
    #[arg(long, env = "PAYMENTS_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = service_kit::config::duration)]
    pub tls_reload_interval: Duration,

    /// How long a payment session may stay open before it is cancelled as `expired`.
    #[arg(long, env = "PAYMENT_TTL", default_value = "15m", value_parser = service_kit::config::duration)]
    pub payment_ttl: Duration,

    /// How often open sessions are checked for expiry.
    #[arg(long, env = "EXPIRY_INTERVAL", default_value = "5s", value_parser = service_kit::config::duration)]
    pub expiry_interval: Duration,

    /// How often undelivered events are scanned for (NOTIFY is the fast path).
    #[arg(long, env = "DELIVERY_SCAN_INTERVAL", default_value = "2s", value_parser = service_kit::config::duration)]
    pub delivery_scan_interval: Duration,

    /// An event sent this long ago and still unacked is sent again (to its order's
    /// connection, or any open one), in case it died unread with a connection.
    #[arg(long, env = "REDELIVER_AFTER", default_value = "30s", value_parser = service_kit::config::duration)]
    pub redeliver_after: Duration,

    /// Delivery attempts of an outcome event without an ack after which it is
    /// dead-lettered: logged at ERROR, counted, and no longer sent until an operator
    /// retries it (`POST /admin/events/{event_id}/retry`). A send (first delivery,
    /// redelivery, resend to a new connection) counts only once REDELIVER_AFTER has
    /// passed since the last attempt, so reconnects do not use attempts up. At least 1.
    #[arg(long, env = "MAX_DELIVERY_ATTEMPTS", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(i32::MAX)))]
    pub max_delivery_attempts: u32,

    /// The most WebSockets open at once on this instance (one per Orders instance is
    /// the normal load); a handshake past it is refused with 503 and `Retry-After`.
    #[arg(long, env = "PAYMENTS_MAX_WEBSOCKETS", default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_websockets: u32,

    /// How old the backlog gauges of `/metrics` may be: the database counts the
    /// backlog at most this often, however many scrapes come.
    #[arg(long, env = "BACKLOG_GAUGE_MAX_AGE", default_value = "5s", value_parser = service_kit::config::duration)]
    pub backlog_gauge_max_age: Duration,
}

impl Config {
    /// The TLS files, when Payments serves TLS.
    pub fn tls_files(&self) -> Option<service_kit::tls::ServerFiles> {
        Some(service_kit::tls::ServerFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The defaults, with whatever the environment sets on top (clap reads it): tests
    /// start from this and override the fields they care about.
    pub fn defaults() -> Config {
        Config::parse_from(["payments"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let c = Config::try_parse_from([
            "payments",
            "--database-url=postgres://svc:db-pa55word@db.example:5432/payments",
            "--payments-token=t0ken-s3cr3t",
            "--admin-token=adm1n-s3cr3t",
        ])
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        for secret in ["db-pa55word", "t0ken-s3cr3t", "adm1n-s3cr3t", "postgres://"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn max_delivery_attempts_defaults_to_10_and_must_be_at_least_1() {
        let parse = |args: &[&str]| Config::try_parse_from([&["payments"][..], args].concat());
        assert_eq!(parse(&[]).unwrap().max_delivery_attempts, 10);
        assert_eq!(
            parse(&["--max-delivery-attempts=3"])
                .unwrap()
                .max_delivery_attempts,
            3
        );
        for bad in ["0", "-1", "x", "", "2147483648"] {
            assert!(
                parse(&[&format!("--max-delivery-attempts={bad}")]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn every_duration_is_refused_at_zero_and_past_a_week() {
        for flag in [
            "--heartbeat-interval",
            "--peer-timeout",
            "--payment-ttl",
            "--expiry-interval",
            "--delivery-scan-interval",
            "--redeliver-after",
            "--backlog-gauge-max-age",
            "--db-statement-timeout",
        ] {
            for bad in ["0", "0s", "8days", "1000years"] {
                let parsed = Config::try_parse_from(["payments", &format!("{flag}={bad}")]);
                assert!(parsed.is_err(), "{flag}={bad} accepted");
            }
            assert!(
                Config::try_parse_from(["payments", &format!("{flag}=1s")]).is_ok(),
                "{flag}"
            );
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
