//! Opening the WebSocket to Payments, with a timeout on the TCP connect, over TLS for a
//! `wss://` URL (the system's roots plus `PAYMENTS_CA`, and `ORDERS_TLS_CLIENT_CERT`
//! for mutual TLS, read at each connection so that rotated files are taken).

use std::fmt;

use actix_http::Uri;
use actix_rt::net::TcpStream;
use actix_service::ServiceExt;
use actix_tls::connect::{Connection as TcpConnection, Connector as TcpConnector, Resolver};
use shared_protocol::{MAX_MESSAGE_BYTES, SUBPROTOCOL};

use super::{CONNECT_TIMEOUT, LinkConfig};

#[derive(Debug)]
pub(super) enum ConnectError {
    /// The TLS files could not be used.
    Tls(service_kit::tls::TlsError),
    Handshake(awc::error::WsClientError),
    Refused(awc::http::StatusCode),
    Subprotocol(Option<String>),
    Timeout,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tls(e) => write!(f, "TLS set-up failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {}", explain(e)),
            ConnectError::Refused(status) if status.as_u16() == 401 => {
                write!(f, "Payments answered {status}: check PAYMENTS_TOKEN")
            }
            ConnectError::Refused(status) => write!(f, "Payments answered {status} instead of 101"),
            ConnectError::Subprotocol(p) => write!(
                f,
                "Payments did not accept subprotocol {SUBPROTOCOL} (it chose {p:?})"
            ),
            ConnectError::Timeout => write!(f, "no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
}

pub(super) type Framed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

pub(super) async fn connect(config: &LinkConfig) -> Result<Framed, ConnectError> {
    // TCP_NODELAY: a frame goes out when it is written. With Nagle's algorithm a small
    // frame written while an earlier one is unacknowledged waits for that ACK, which the
    // peer's delayed ACK holds back up to 40 ms: most messages of a busy link did.
    let tcp = TcpConnector::new(Resolver::default()).service().map(
        |conn: TcpConnection<Uri, TcpStream>| {
            if let Err(e) = conn.io_ref().set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on the link");
            }
            conn
        },
    );
    let mut connector = awc::Connector::new().connector(tcp);
    if config.url.starts_with("wss://") {
        let identity = config
            .client_identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()));
        let tls = service_kit::tls::client_config(config.ca.as_deref(), identity)
            .map_err(ConnectError::Tls)?;
        connector = connector.rustls_0_23(std::sync::Arc::new(tls));
    }
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(CONNECT_TIMEOUT)
        .finish();
    let request = client
        .ws(config.url.as_str())
        .protocols([SUBPROTOCOL])
        .bearer_auth(service_kit::token::ExposeSecret::expose_secret(
            &config.token,
        ))
        .max_frame_size(MAX_MESSAGE_BYTES);
    let (response, framed) = tokio::time::timeout(CONNECT_TIMEOUT, request.connect())
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| match e {
            awc::error::WsClientError::InvalidResponseStatus(status) => {
                ConnectError::Refused(status)
            }
            e => ConnectError::Handshake(e),
        })?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if chosen.as_deref() != Some(SUBPROTOCOL) {
        return Err(ConnectError::Subprotocol(chosen));
    }
    Ok(framed)
}

/// The handshake's error, with what it most likely means where awc's words do not say:
/// an answer that is not HTTP (plain `ws://` spoken to a TLS port reads the server's
/// TLS alert as a response: "invalid HTTP version"), or a certificate the link does not
/// trust (rustls names why: an unknown issuer, an expired certificate, another name).
fn explain(e: &awc::error::WsClientError) -> String {
    use awc::error::{SendRequestError, WsClientError};
    let hint = match e {
        WsClientError::SendRequest(SendRequestError::Response(_)) => {
            " (Payments answered something that is not HTTP: if it serves TLS, the URL must be wss://)"
        }
        _ if e.to_string().contains("certificate") => {
            " (Payments' certificate is not trusted for this URL: check PAYMENTS_CA and the host name)"
        }
        _ => "",
    };
    format!("{e}{hint}")
}
