//! Payments over TLS (issue 19): HTTPS and WSS with `PAYMENTS_TLS_CERT`/`_KEY`, mutual
//! TLS with `PAYMENTS_TLS_CLIENT_CA`, refusals at the TLS layer that say why, and a
//! certificate rotated under live connections. Certificates are made by rcgen in each
//! test (`test_harness::tls`); the client is tokio-rustls under tokio-tungstenite.

mod helpers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helpers::{TOKEN, TestApp};
use rustls::pki_types::ServerName;
use shared_protocol::{Amount, ClientMessage, Currency, OrderId, SUBPROTOCOL, ServerMessage};
use test_harness::postgres::TestDatabase;
use test_harness::tls::{Leaf, TempDir, TestCa};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type TlsWs =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A client configuration that trusts `ca` and presents `identity` if given.
fn client(ca: &TestCa, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let dir = TempDir::new("tls-client");
    let ca_file = ca.write(&dir, "ca");
    let identity = identity.map(|leaf| leaf.write(&dir, "client"));
    let config = service_kit::tls::client_config(
        Some(&ca_file),
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .expect("a client configuration");
    Arc::new(config)
}

/// The TLS handshake, then the WebSocket's; the error as text when either fails.
async fn wss(port: u16, host: &str, config: Arc<rustls::ClientConfig>) -> Result<TlsWs, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut request = format!("wss://{host}:{port}/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| format!("WebSocket: {e}"))?;
    Ok(ws)
}

/// The first certificate the server presented on `ws`'s connection, in DER.
fn presented(ws: &TlsWs) -> Vec<u8> {
    ws.get_ref().get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One `initiate_payment` and its answer: the connection carries the protocol.
async fn round_trip(ws: &mut TlsWs) -> ServerMessage {
    let initiate = ClientMessage::InitiatePayment {
        order_id: OrderId::new(),
        amount: Amount::new(100).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
    };
    ws.send(Message::Text(shared_protocol::encode(&initiate).into()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(helpers::DEADLINE, ws.next())
            .await
            .expect("an answer")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            return shared_protocol::decode(text.as_str()).unwrap();
        }
    }
}

struct Pki {
    ca: TestCa,
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca_file: PathBuf,
}

fn pki() -> Pki {
    let ca = TestCa::new("payments test CA");
    let dir = TempDir::new("payments-tls");
    let (cert, key) = ca.server(&["127.0.0.1", "localhost"]).write(&dir, "server");
    let ca_file = ca.write(&dir, "ca");
    Pki {
        ca,
        dir,
        cert,
        key,
        ca_file,
    }
}

async fn spawn(db: &TestDatabase, pki: &Pki, mutual: bool) -> TestApp {
    let (cert, key, ca) = (pki.cert.clone(), pki.key.clone(), pki.ca_file.clone());
    TestApp::spawn_with(db, move |config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
        config.tls_client_ca = mutual.then_some(ca);
        config.tls_reload_interval = Duration::from_millis(100);
    })
    .await
}

#[tokio::test]
async fn mutual_tls_serves_a_client_whose_certificate_the_ca_signed() {
    let db = TestDatabase::create("payments").await;
    let pki = pki();
    let app = spawn(&db, &pki, true).await;
    let orders = pki.ca.client("orders");
    let mut ws = wss(app.port, "127.0.0.1", client(&pki.ca, Some(&orders)))
        .await
        .expect("a mutual TLS connection");
    assert!(matches!(
        round_trip(&mut ws).await,
        ServerMessage::PaymentMethods { .. }
    ));
    // The page is HTTPS too, and its URL says so.
    let ServerMessage::PaymentMethods { order_id, .. } = round_trip(&mut ws).await else {
        panic!("no methods")
    };
    ws.send(Message::Text(
        shared_protocol::encode(&ClientMessage::SelectPaymentMethod {
            order_id,
            method: "credit_card".into(),
        })
        .into(),
    ))
    .await
    .unwrap();
    let page = loop {
        if let Some(Ok(Message::Text(text))) = ws.next().await {
            break shared_protocol::decode::<ServerMessage>(text.as_str()).unwrap();
        }
    };
    let ServerMessage::PaymentPage { url, .. } = page else {
        panic!("{page:?}")
    };
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{}/pay/", app.port)),
        "{url}"
    );
}

#[tokio::test]
async fn clients_the_ca_did_not_sign_are_refused_at_the_tls_layer() {
    let db = TestDatabase::create("payments").await;
    let pki = pki();
    let app = spawn(&db, &pki, true).await;
    let stranger = TestCa::new("another CA").client("orders");
    for (what, identity) in [
        ("no client certificate", None),
        ("another CA's", Some(&stranger)),
    ] {
        let refused = wss(app.port, "127.0.0.1", client(&pki.ca, identity))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} was let in"));
        // The server refuses in the handshake (TLS 1.3 tells the client with an alert
        // once it reads): never a 101.
        assert!(!refused.contains("101"), "{what}: {refused}");
        assert!(
            refused.contains("alert") || refused.contains("reset") || refused.contains("closed"),
            "{what}: {refused}"
        );
    }
}

#[tokio::test]
async fn a_server_certificate_the_client_cannot_trust_is_refused_and_says_why() {
    let db = TestDatabase::create("payments").await;
    let pki = pki();
    let app = spawn(&db, &pki, false).await;
    // Another name than the certificate's.
    let wrong_name = wss(app.port, "payments.example", client(&pki.ca, None))
        .await
        .expect_err("a certificate for another name was taken");
    assert!(
        wrong_name.contains("not valid for name \"payments.example\""),
        "{wrong_name}"
    );
    // A CA the client does not know.
    let unknown = wss(app.port, "127.0.0.1", client(&TestCa::new("other"), None))
        .await
        .expect_err("a certificate from an unknown CA was taken");
    assert!(unknown.contains("UnknownIssuer"), "{unknown}");
    // An expired certificate.
    let (cert, key) = pki
        .ca
        .expired_server(&["127.0.0.1"])
        .write(&pki.dir, "expired");
    let expired_db = TestDatabase::create("payments").await;
    let expired_app = TestApp::spawn_with(&expired_db, move |config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    })
    .await;
    let expired = wss(expired_app.port, "127.0.0.1", client(&pki.ca, None))
        .await
        .expect_err("an expired certificate was taken");
    assert!(expired.contains("certificate expired"), "{expired}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_nothing_but_an_error() {
    let db = TestDatabase::create("payments").await;
    let pki = pki();
    let app = spawn(&db, &pki, false).await;
    let answer = reqwest::get(format!("http://127.0.0.1:{}/healthz", app.port)).await;
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
    let plain = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", app.port)).await;
    assert!(plain.is_err(), "plain ws:// was upgraded");
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_live_ones_go_on() {
    let db = TestDatabase::create("payments").await;
    let pki = pki();
    let app = spawn(&db, &pki, true).await;
    let orders = pki.ca.client("orders");
    // A fresh client configuration per connection: a shared one would resume the TLS
    // session, and a resumed session shows the certificate of the first.
    let config = || client(&pki.ca, Some(&orders));
    let mut old = wss(app.port, "127.0.0.1", config()).await.unwrap();
    let first = presented(&old);

    // New files in place (as a certificate manager renames them in).
    let renewed = pki.ca.server(&["127.0.0.1", "localhost"]);
    let staged = renewed.write(&pki.dir, "renewed");
    std::fs::rename(&staged.0, &pki.cert).unwrap();
    std::fs::rename(&staged.1, &pki.key).unwrap();

    let end = tokio::time::Instant::now() + helpers::DEADLINE;
    let mut new = loop {
        let ws = wss(app.port, "127.0.0.1", config()).await.unwrap();
        if presented(&ws) != first {
            break ws;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Both connections carry the protocol: the old one was not dropped.
    assert!(matches!(
        round_trip(&mut old).await,
        ServerMessage::PaymentMethods { .. }
    ));
    assert!(matches!(
        round_trip(&mut new).await,
        ServerMessage::PaymentMethods { .. }
    ));
    assert_eq!(presented(&old), first);
}
