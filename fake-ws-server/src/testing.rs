//! Not part of the API, and hidden from the docs: the plain tokio-tungstenite client
//! (and, with feature `tls`, its TLS twin) that the fake's own tests (`tests/common`),
//! the standalone binary's and test-harness's tests drive a fake with, so that none
//! keeps a copy of it. Each test file puts its own protocol on
//! top: what it encodes into the frames it sends, what it decodes from the texts.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A plain WebSocket client, as tokio-tungstenite connects one.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `request` (a URL, or a request with headers); panics if that fails.
pub async fn connect(request: impl IntoClientRequest) -> Client {
    try_connect(request).await.expect("connect")
}

/// Connects to `request` (a URL, or a request with headers): the client, or why the
/// handshake failed.
pub async fn try_connect(request: impl IntoClientRequest) -> Result<Client, WsError> {
    let request = request.into_client_request().unwrap();
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// A WebSocket client over TLS (feature `tls`): tokio-tungstenite over tokio-rustls.
#[cfg(feature = "tls")]
pub type TlsClient = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects over TLS to `url` (`wss://host:port/...`) with `config`, checking the
/// server's certificate against the URL's host, the way a client under test would:
/// the client, or why the TCP, TLS or WebSocket handshake failed (feature `tls`).
#[cfg(feature = "tls")]
pub async fn connect_tls(
    url: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<TlsClient, Box<dyn std::error::Error>> {
    let authority = url
        .strip_prefix("wss://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("a wss:// URL")?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let tcp = TcpStream::connect(authority).await?;
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await?;
    Ok(ws)
}

/// Sends one frame; panics if it cannot be written.
pub async fn send_frame(client: &mut Client, frame: Message) {
    client.send(frame).await.unwrap();
}

/// The text of the next text frame, skipping other frames; panics if no frame comes
/// within 5 s, or the connection ends.
pub async fn receive_text(client: &mut Client) -> String {
    loop {
        if let Message::Text(text) = next_frame(client).await {
            return text.as_str().to_owned();
        }
    }
}

/// The bytes of the next binary frame, skipping other frames; panics as
/// [`receive_text`] does.
pub async fn receive_binary(client: &mut Client) -> Vec<u8> {
    loop {
        if let Message::Binary(bytes) = next_frame(client).await {
            return bytes.to_vec();
        }
    }
}

/// The next frame of any kind, within 5 s.
async fn next_frame(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a frame within 5 s")
        .expect("open")
        .expect("no error")
}

/// Asserts that no frame comes within `within`; the failure message is `what`, what a
/// frame would mean (`"answered before the delay"`).
pub async fn assert_no_frame(client: &mut Client, within: Duration, what: &str) {
    assert!(
        tokio::time::timeout(within, client.next()).await.is_err(),
        "{what}"
    );
}

/// Runs `f` and returns its panic message (the fake fails tests by panicking).
pub async fn panic_message<F: std::future::Future<Output = ()> + Send + 'static>(f: F) -> String {
    let error = tokio::spawn(f).await.expect_err("should have panicked");
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
