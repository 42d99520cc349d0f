//! The limits both HTTP servers run with, so that no client can hold the server's
//! resources for long or without bound: a cap on open connections, deadlines for
//! the request head, for a request body and for an idle keep-alive connection, and a
//! deadline, in the kernel, for data a peer does not take.
//!
//! The last one is `TCP_USER_TIMEOUT`: actix writes a response (a WebSocket's frames
//! among them) for as long as the peer keeps its connection open, with no deadline, so
//! a peer that stops reading used to hold its connection, and its buffers, for ever.
//! With it, the kernel ends a connection whose data stayed unacknowledged, or unsent
//! for want of window, for `PEER_TIMEOUT` (the bound on every write of the services),
//! and actix sees the write fail.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceFactory};
use actix_web::{Error, HttpServer};

/// The HTTP server's limits, the same settings for both services.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HttpConfig {
    /// The most HTTP connections (WebSockets included) open at once; further clients
    /// wait in the listen queue until one closes.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,

    /// How long a client has to send a request's head once it connected (or sent its
    /// previous request).
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "5s", value_parser = crate::durations::duration)]
    pub http_request_timeout: Duration,

    /// How long a request's body may take to arrive, once its head did (a 408 after).
    #[arg(long, env = "HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = crate::durations::duration)]
    pub http_body_timeout: Duration,

    /// How long an idle keep-alive connection stays open.
    #[arg(long, env = "HTTP_KEEP_ALIVE", default_value = "5s", value_parser = crate::durations::duration)]
    pub http_keep_alive: Duration,
}

impl Default for HttpConfig {
    /// The defaults of the flags above.
    fn default() -> HttpConfig {
        HttpConfig {
            http_max_connections: 4096,
            http_request_timeout: Duration::from_secs(5),
            http_body_timeout: Duration::from_secs(10),
            http_keep_alive: Duration::from_secs(5),
        }
    }
}

impl HttpConfig {
    /// The number of worker threads the server runs: actix's own default, one per CPU
    /// the process may use, set here so that the connection cap can be shared out.
    pub fn workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// `server` with these limits: the worker count of [`HttpConfig::workers`], each
    /// worker taking its share of [`HttpConfig::http_max_connections`] (actix counts
    /// per worker), and the deadlines.
    pub fn apply<F, I, S, B>(&self, server: HttpServer<F, I, S, B>) -> HttpServer<F, I, S, B>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: actix_service::IntoServiceFactory<S, actix_http::Request>,
        S: ServiceFactory<actix_http::Request, Config = AppConfig> + 'static,
        S::Error: Into<Error> + 'static,
        S::InitError: std::fmt::Debug,
        S::Response: Into<actix_http::Response<B>> + 'static,
        <S::Service as actix_web::dev::Service<actix_http::Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let workers = HttpConfig::workers();
        let per_worker = (self.http_max_connections as usize).div_ceil(workers);
        server
            .workers(workers)
            .max_connections(per_worker)
            .client_request_timeout(self.http_request_timeout)
            .keep_alive(self.http_keep_alive)
    }
}

/// `HttpServer::on_connect`: sets `TCP_USER_TIMEOUT` on each accepted TCP connection
/// (see the module's doc); `TCP_NODELAY` is the server's own setting.
pub fn on_connect(
    send_timeout: Duration,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
    move |connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            set_send_timeout(tcp, send_timeout);
        } else if let Some(tls) = connection.downcast_ref::<TlsStream>() {
            set_send_timeout(tls.get_ref().0, send_timeout);
        }
    }
}

/// A TLS connection as actix-web accepts it (`listen_rustls_0_23`).
type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;

/// Sets `TCP_USER_TIMEOUT` (Linux; elsewhere nothing), logging a failure.
fn set_send_timeout(tcp: &actix_web::rt::net::TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
        tracing::warn!(error = %e, "could not set TCP_USER_TIMEOUT on a connection");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tcp, timeout);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags alone, to read their defaults.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        http: HttpConfig,
    }

    #[test]
    fn the_default_is_what_the_flags_default_to() {
        use clap::Parser;
        assert_eq!(
            Flags::try_parse_from(["x"]).unwrap().http,
            HttpConfig::default()
        );
        assert!(Flags::try_parse_from(["x", "--http-max-connections=0"]).is_err());
        assert!(Flags::try_parse_from(["x", "--http-body-timeout=0s"]).is_err());
    }

    #[tokio::test]
    async fn an_accepted_connection_gets_the_send_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { tokio::net::TcpStream::connect(address).await });
        let (accepted, _) = listener.accept().await.unwrap();
        let _client = client.await.unwrap().unwrap();
        on_connect(Duration::from_millis(1234))(&accepted, &mut Default::default());
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket2::SockRef::from(&accepted)
                .tcp_user_timeout()
                .unwrap(),
            Some(Duration::from_millis(1234))
        );
    }
}
