//! `wss://` (feature `tls`): a certificate generated per server, a TLS client
//! (tokio-tungstenite over tokio-rustls) that trusts only that server's root, and the
//! typed layer through it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Down, Fake, Up, any_subscribe, subscribe, subscribed};
use fake_ws_server::AttemptOutcome;
use fake_ws_server::testing::{TlsClient, connect_tls};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn send(client: &mut TlsClient, message: &Up) {
    let text = serde_json::to_string(message).unwrap();
    client.send(Message::Text(text.into())).await.unwrap();
}

async fn receive(client: &mut TlsClient) -> Down {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("a Down");
        }
    }
}

#[tokio::test]
async fn a_tls_client_that_trusts_only_the_servers_root_talks_through_wss() {
    let server = Fake::builder()
        .tls()
        .on(any_subscribe(), subscribed)
        .start()
        .await;
    assert!(
        server.url().starts_with("wss://127.0.0.1:"),
        "{}",
        server.url()
    );

    let mut client = connect_tls(&server.url(), server.tls_client_config())
        .await
        .expect("a TLS connection the client trusts");
    let conn = server.next_connection().await;
    send(&mut client, &subscribe("prices")).await;
    assert_eq!(
        receive(&mut client).await,
        Down::Subscribed {
            topic: "prices".into()
        }
    );
    conn.send(Down::Price {
        topic: "prices".into(),
        price: 42,
    })
    .await
    .unwrap();
    assert_eq!(
        receive(&mut client).await,
        Down::Price {
            topic: "prices".into(),
            price: 42
        }
    );
    send(&mut client, &Up::Ack { id: 1 }).await;
    conn.expect(common::ack_of(1)).await;
}

#[tokio::test]
async fn the_root_certificate_der_is_enough_for_a_client_of_its_own() {
    let server = Fake::builder().tls().start().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server.root_certificate_der().into())
        .expect("a DER certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // `localhost` is in the certificate too.
    let url = server.url().replacen("127.0.0.1", "localhost", 1);
    let mut client = connect_tls(&url, Arc::new(config))
        .await
        .expect("a TLS connection the client trusts");
    let conn = server.next_connection().await;
    send(&mut client, &subscribe("x")).await;
    conn.expect(common::subscribe_to("x")).await;
}

/// A client that opens TCP and never starts TLS is given the server's default
/// deadline, not a fixed one: here 200 ms, so the failed attempt is there long before
/// the 5 s the deadline is by default.
#[tokio::test]
async fn a_tls_handshake_that_never_starts_fails_at_the_default_deadline() {
    let server = Fake::builder()
        .tls()
        .default_deadline(Duration::from_millis(200))
        .start()
        .await;
    let addr = server.url()["wss://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let _silent = TcpStream::connect(addr).await.expect("TCP connects");

    let attempts = server
        .wait_for_attempts_within(1, Duration::from_secs(3))
        .await;
    assert!(
        matches!(attempts[0].outcome(), AttemptOutcome::Failed(why)
            if why.contains("no TLS handshake within 200ms")),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn a_client_that_trusts_another_root_fails_and_the_attempt_is_recorded() {
    let server = Fake::builder().tls().start().await;
    let other = Fake::builder().tls().start().await;
    let error = connect_tls(&server.url(), other.tls_client_config())
        .await
        .expect_err("a certificate from an untrusted root");
    assert!(error.to_string().contains("certificate"), "{error}");

    // A plain ws:// client fails too.
    let plain = server.url().replacen("wss://", "ws://", 1);
    assert!(tokio_tungstenite::connect_async(plain).await.is_err());

    let attempts = server.wait_for_attempts(2).await;
    for attempt in attempts {
        assert!(
            matches!(attempt.outcome(), AttemptOutcome::Failed(why) if why.starts_with("TLS handshake")),
            "{attempt:?}"
        );
    }
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
#[should_panic(expected = "build it with `FakeServer::builder().tls()`")]
async fn asking_a_plain_server_for_its_certificate_says_to_build_it_with_tls() {
    let server = Fake::builder().start().await;
    let _ = server.tls_client_config();
}
