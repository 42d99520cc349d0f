//! `--tls`: the link over mutual TLS, as a fleet would run it. A CA made for the run
//! (rcgen, `test_harness::tls`) signs Payments' certificate (for 127.0.0.1) and the
//! client certificates of Orders and of loadgen itself, which pays the pages (Payments
//! with a client CA takes no client without one). The files live in `<out>/tls/`.

use std::path::PathBuf;
use std::sync::Arc;

use test_harness::tls::{TempDir, TestCa};

/// The files of one run's PKI, and the client configuration loadgen uses.
#[derive(Debug, Clone)]
pub struct BenchTls {
    pub ca: PathBuf,
    pub payments_cert: PathBuf,
    pub payments_key: PathBuf,
    pub orders_cert: PathBuf,
    pub orders_key: PathBuf,
    /// loadgen's own client configuration: trusts the CA, presents its certificate.
    pub client: Arc<rustls::ClientConfig>,
    /// Keeps the directory (and so the files) while the run lasts.
    _dir: Arc<TempDir>,
}

impl BenchTls {
    /// A CA and its certificates for one run.
    pub fn generate() -> anyhow::Result<BenchTls> {
        let ca = TestCa::new("loadgen CA");
        let dir = TempDir::new("loadgen-tls");
        let ca_file = ca.write(&dir, "ca");
        let (payments_cert, payments_key) = ca
            .server(&["127.0.0.1", "localhost"])
            .write(&dir, "payments");
        let (orders_cert, orders_key) = ca.client("orders").write(&dir, "orders");
        let (loadgen_cert, loadgen_key) = ca.client("loadgen").write(&dir, "loadgen");
        let client =
            service_kit::tls::client_config(Some(&ca_file), Some((&loadgen_cert, &loadgen_key)))?;
        Ok(BenchTls {
            ca: ca_file,
            payments_cert,
            payments_key,
            orders_cert,
            orders_key,
            client: Arc::new(client),
            _dir: Arc::new(dir),
        })
    }

    /// An HTTP client builder that speaks TLS with loadgen's certificate.
    pub fn http(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder.tls_backend_preconfigured((*self.client).clone())
    }
}
