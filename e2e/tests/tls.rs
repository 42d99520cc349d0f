//! The two real services over mutual TLS (issue 19): Payments serves WSS and requires
//! a client certificate from its CA; Orders trusts Payments' CA and presents its own
//! certificate; one order goes the whole way. The page is then paid over HTTPS with a
//! client certificate too (every client of a Payments with a client CA needs one: the
//! customer-facing side goes through a proxy that presents it).

use e2e::{Stack, StackTls};
use test_harness::tls::{TempDir, TestCa};

#[tokio::test]
async fn an_order_is_fulfilled_over_mutual_tls() {
    let ca = TestCa::new("e2e CA");
    let dir = TempDir::new("e2e-tls");
    let (payments_cert, payments_key) = ca.server(&["127.0.0.1"]).write(&dir, "payments");
    let (orders_cert, orders_key) = ca.client("orders").write(&dir, "orders");
    let ca_file = ca.write(&dir, "ca");
    let stack = Stack::spawn_tls(StackTls {
        payments_cert,
        payments_key,
        client_ca: ca_file.clone(),
        payments_ca: ca_file,
        orders_cert,
        orders_key,
    })
    .await;
    let order = stack.create_order(1999, "EUR").await;
    let page = stack.payment_url(order).await;
    assert!(page.starts_with("https://127.0.0.1:"), "{page}");
    // The customer's side: a client with a certificate from the CA (as a proxy would).
    let (proxy_cert, proxy_key) = ca.client("proxy").write(&dir, "proxy");
    let status = https_post(
        &page,
        &dir.write("ca-again.crt", &ca.cert_pem()),
        (&proxy_cert, &proxy_key),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 303"), "{status}");
    let order = stack.wait_status(order, "fulfilled").await;
    assert_eq!(order["status"], "fulfilled");
    assert_eq!(stack.invoices().await, 1);
}

/// `POST {url}/complete` over TLS with a client certificate; the status line.
async fn https_post(
    url: &str,
    ca: &std::path::Path,
    (cert, key): (&std::path::Path, &std::path::Path),
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("https://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let config = service_kit::tls::client_config(Some(ca), Some((cert, key))).unwrap();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let host = authority.split(':').next().unwrap().to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let request = format!(
        "POST /{path}/complete HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
