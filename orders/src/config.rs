//! Configuration, read from the environment (or flags) by clap, so `orders --help`
//! documents every variable and its default.
//!
//! The timing knobs at the end exist so tests can exercise heartbeats, backoff and the
//! sweeper with short durations instead of sleeping through the real ones.

use std::time::Duration;

use clap::Parser;
pub use service_kit::config::CommonConfig;
pub use service_kit::telemetry::LogFormat;

use service_kit::token::SecretString;
pub use service_kit::token::{AppEnv, DEFAULT_PAYMENTS_TOKEN};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "orders",
    version,
    about = "The Orders service: HTTP API for orders, one WebSocket to Payments"
)]
pub struct Config {
    /// PostgreSQL database of this service; created at start-up if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orders",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// PAYMENTS_TOKEN, APP_ENV, RUST_LOG, LOG_FORMAT, HEARTBEAT_INTERVAL, PEER_TIMEOUT.
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "ORDERS_ADDR", default_value = "127.0.0.1:8080")]
    pub orders_addr: String,

    /// WebSocket endpoint of Payments: `wss://` for TLS. With APP_ENV=production, a
    /// `ws://` URL must name a loopback host (the token and every outcome would cross
    /// the network in clear).
    #[arg(
        long,
        env = "PAYMENTS_WS_URL",
        default_value = "ws://127.0.0.1:8081/ws"
    )]
    pub payments_ws_url: String,

    /// PEM CA certificate(s) trusted for `wss://`, besides the system's roots (for a
    /// private CA).
    #[arg(long, env = "PAYMENTS_CA")]
    pub payments_ca: Option<std::path::PathBuf>,

    /// PEM certificate chain Orders presents to Payments (mutual TLS); read at each
    /// connection, so a rotated one is used from the next.
    #[arg(long, env = "ORDERS_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<std::path::PathBuf>,

    /// PEM private key of `ORDERS_TLS_CLIENT_CERT`.
    #[arg(long, env = "ORDERS_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<std::path::PathBuf>,

    /// When set, every `/orders` route needs `Authorization: Bearer <this>` (401
    /// otherwise); `/healthz`, `/readyz`, `/metrics` and `/openapi.json` stay open.
    #[arg(long, env = "ORDERS_API_TOKEN", hide_env_values = true)]
    pub orders_api_token: Option<SecretString>,

    /// How long an order may wait for an answer from Payments before its request is re-sent.
    #[arg(long, env = "RESEND_AFTER", default_value = "30s", value_parser = service_kit::config::duration)]
    pub resend_after: Duration,

    /// Refusals from Payments (an `error` about the order other than `internal`, or an
    /// answer Orders cannot store) after which an order is parked: no longer re-sent
    /// until `POST /orders/{id}/retry`.
    #[arg(long, env = "MAX_PAYMENT_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_payment_attempts: u32,

    /// Upper bound of the first reconnect delay; each later one doubles, up to the cap.
    #[arg(long, env = "RECONNECT_BASE", default_value = "200ms", value_parser = service_kit::config::duration)]
    pub reconnect_base: Duration,

    /// The longest delay between two reconnect attempts.
    #[arg(long, env = "RECONNECT_CAP", default_value = "10s", value_parser = service_kit::config::duration)]
    pub reconnect_cap: Duration,

    /// How many new requests may wait in memory for the link. Past that they are sent
    /// from the database instead (within milliseconds): this bounds memory, not orders.
    #[arg(long, env = "LINK_OUTBOX", default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub link_outbox: usize,
}

impl Config {
    /// What no single setting's range can say.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err("ORDERS_TLS_CLIENT_CERT and ORDERS_TLS_CLIENT_KEY go together");
        }
        if self.common.app_env == AppEnv::Production
            && plaintext_to_another_host(&self.payments_ws_url)
        {
            return Err(
                "PAYMENTS_WS_URL is ws:// to a host that is not loopback and APP_ENV is \
                 production: the link's token and every payment outcome would cross the \
                 network in clear; use wss:// (PAYMENTS_CA, ORDERS_TLS_CLIENT_CERT/_KEY)",
            );
        }
        if self.common.peer_timeout <= self.common.heartbeat_interval {
            // Orders hears from a quiet Payments through the pongs to its pings.
            return Err("PEER_TIMEOUT must be longer than HEARTBEAT_INTERVAL");
        }
        if self.reconnect_base > self.reconnect_cap {
            return Err("RECONNECT_BASE must not be longer than RECONNECT_CAP");
        }
        Ok(())
    }

    /// The defaults, with whatever the environment sets on top (clap reads it): tests
    /// start from this and override the fields they care about.
    pub fn defaults() -> Config {
        Config::parse_from(["orders"])
    }
}

/// Whether `url` is plain `ws://` to a host other than loopback (`localhost`,
/// `127.0.0.0/8`, `::1`).
fn plaintext_to_another_host(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("ws://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(host, _)| host),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_architecture() {
        // Parse with an empty environment: clap would otherwise read the test's variables.
        let c = Config::try_parse_from([
            "orders",
            "--database-url=postgres://postgres@127.0.0.1:5432/orders",
        ])
        .unwrap();
        assert_eq!(c.common.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.common.peer_timeout, Duration::from_secs(30));
        assert_eq!(c.reconnect_base, Duration::from_millis(200));
        assert_eq!(c.reconnect_cap, Duration::from_secs(10));
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Config::try_parse_from([
            "orders",
            "--database-url=postgres://svc:db-pa55word@db.example:5432/orders",
            "--payments-token=t0ken-s3cr3t",
            "--orders-api-token=ap1-s3cr3t",
        ])
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        for secret in ["db-pa55word", "t0ken-s3cr3t", "ap1-s3cr3t", "postgres://"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn every_duration_is_refused_at_zero_and_past_a_week() {
        for flag in [
            "--heartbeat-interval",
            "--peer-timeout",
            "--resend-after",
            "--reconnect-base",
            "--reconnect-cap",
            "--db-acquire-timeout",
            "--db-statement-timeout",
            "--db-lock-timeout",
            "--db-idle-in-transaction-timeout",
            "--migration-lock-timeout",
        ] {
            for bad in ["0", "0s", "8days", "1000years"] {
                let parsed = Config::try_parse_from(["orders", &format!("{flag}={bad}")]);
                assert!(parsed.is_err(), "{flag}={bad} accepted");
            }
            assert!(
                Config::try_parse_from(["orders", &format!("{flag}=1s")]).is_ok(),
                "{flag}"
            );
        }
    }

    #[test]
    fn production_refuses_a_plaintext_link_off_the_host() {
        for url in [
            "ws://payments:8081/ws",
            "ws://10.0.0.7/ws",
            "ws://user@pay.example/ws",
        ] {
            assert!(plaintext_to_another_host(url), "{url}");
        }
        for url in [
            "ws://127.0.0.1:8081/ws",
            "ws://localhost/ws",
            "ws://[::1]:8081/ws",
            "ws://127.0.0.53/ws",
            "wss://payments:8443/ws",
        ] {
            assert!(!plaintext_to_another_host(url), "{url}");
        }
        let production = |url: &str| {
            Config::try_parse_from([
                "orders",
                "--app-env=production",
                &format!("--payments-ws-url={url}"),
            ])
            .unwrap()
            .check()
        };
        assert!(
            production("ws://payments:8081/ws")
                .unwrap_err()
                .contains("wss://")
        );
        assert!(production("wss://payments:8443/ws").is_ok());
        assert!(production("ws://127.0.0.1:8081/ws").is_ok());
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused() {
        let parse = |args: &[&str]| {
            Config::try_parse_from([&["orders"][..], args].concat())
                .unwrap()
                .check()
        };
        assert!(parse(&[]).is_ok());
        assert_eq!(
            parse(&["--heartbeat-interval=30s", "--peer-timeout=30s"]),
            Err("PEER_TIMEOUT must be longer than HEARTBEAT_INTERVAL")
        );
        assert_eq!(
            parse(&["--reconnect-base=20s", "--reconnect-cap=10s"]),
            Err("RECONNECT_BASE must not be longer than RECONNECT_CAP")
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
