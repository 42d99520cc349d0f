//! `--tls`: the binary serves wss://, and a client that trusts the root from the
//! ready line (or from `GET /tls/root-certificate`) talks to it; one that trusts
//! nothing else does not get in.

mod common;

use std::sync::Arc;

use common::*;
use fake_ws_server::testing::connect_tls;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A rustls client configuration that trusts `root_pem` and nothing else.
fn trusting(root_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("a PEM certificate");
    roots.add(root).expect("a usable root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn with_tls_a_client_trusting_the_ready_lines_root_talks_over_wss() {
    let fake = Fake::spawn(&["--tls"]).await;
    assert!(
        fake.ws_url.starts_with("wss://127.0.0.1:"),
        "{}",
        fake.ws_url
    );
    let pem = fake.ready["root_certificate_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, served) = fake.get_text("/tls/root-certificate").await;
    assert_eq!((status, served.as_str()), (200, pem.as_str()));

    let mut client = tokio::time::timeout(WAIT, connect_tls(&fake.ws_url, trusting(&pem)))
        .await
        .expect("a TLS handshake in time")
        .expect("the fake's certificate is trusted");
    fake.ok("/connections/next").await;
    client
        .send(Message::text(r#"{"type":"hello"}"#))
        .await
        .unwrap();
    let (status, body) = fake
        .post(
            "/connections/0/expect",
            json!({"match": {"equals": {"type": "hello"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    fake.post("/connections/0/send", json!({"text": "over tls"}))
        .await;
    let frame = tokio::time::timeout(WAIT, client.next()).await.unwrap();
    assert_eq!(frame.unwrap().unwrap(), Message::text("over tls"));

    // A root of another fake is no use: the handshake fails, and is recorded.
    let other = Fake::spawn(&["--tls"]).await;
    let other_root = other.ready["root_certificate_pem"].as_str().unwrap();
    let refused = connect_tls(&fake.ws_url, trusting(other_root)).await;
    assert!(refused.is_err(), "trusted a certificate it should not");
    let attempts = fake.ok("/attempts/wait?count=2").await;
    assert_eq!(attempts["attempts"][1]["outcome"], "failed", "{attempts}");
}

#[tokio::test]
async fn without_tls_there_is_no_root_to_give() {
    let fake = Fake::spawn(&[]).await;
    assert!(fake.ws_url.starts_with("ws://"), "{}", fake.ws_url);
    assert!(
        fake.ready.get("root_certificate_pem").is_none(),
        "{}",
        fake.ready
    );
    let (status, body) = fake.get("/tls/root-certificate").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--tls"), "{body}");
}
