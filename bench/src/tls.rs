//! `--tls`: the link over mutual TLS, as a fleet would run it. A CA made for the run
//! (rcgen, `test_harness::tls`) signs Payments' certificate (for 127.0.0.1) and the
//! client certificates of Orders and of loadgen itself, which pays the pages (Payments
//! with a client CA takes no client without one). The files live in `<out>/tls/`.

//!
//! Only with the crate feature `tls` (`cargo build --release -p bench --features tls`):
//! see bench/Cargo.toml for why it is not a default. Without it, `--tls` and `fleet`
//! stop at once and say how to build loadgen for them.

use std::path::PathBuf;
#[cfg(feature = "tls")]
use std::sync::Arc;

#[cfg(feature = "tls")]
use test_harness::tls::{TempDir, TestCa};

/// The files of one run's PKI, and the client configuration loadgen uses.
#[derive(Debug, Clone)]
pub struct BenchTls {
    pub ca: PathBuf,
    pub payments_cert: PathBuf,
    pub payments_key: PathBuf,
    pub orders_cert: PathBuf,
    pub orders_key: PathBuf,
    /// HAProxy's client certificate and key in one file (`fleet`: its HTTPS to the
    /// payment page and its health checks).
    pub haproxy_pem: PathBuf,
    /// loadgen's own client configuration: trusts the CA, presents its certificate.
    #[cfg(feature = "tls")]
    pub client: Arc<rustls::ClientConfig>,
    /// Keeps the directory (and so the files) while the run lasts.
    #[cfg(feature = "tls")]
    _dir: Arc<TempDir>,
}

/// What a `--tls` run says when loadgen was built without the feature.
pub const NOT_BUILT: &str = "this loadgen was built without TLS: \
    build it with `cargo build --release -p bench --features tls`";

#[cfg(not(feature = "tls"))]
impl BenchTls {
    pub fn generate() -> anyhow::Result<BenchTls> {
        anyhow::bail!(NOT_BUILT)
    }

    pub fn http(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder
    }
}

#[cfg(feature = "tls")]
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
        let haproxy = ca.client("haproxy");
        let haproxy_pem = dir.write("haproxy.pem", &(haproxy.cert_pem + &haproxy.key_pem));
        let client =
            service_kit::tls::client_config(Some(&ca_file), Some((&loadgen_cert, &loadgen_key)))?;
        Ok(BenchTls {
            ca: ca_file,
            payments_cert,
            payments_key,
            orders_cert,
            orders_key,
            haproxy_pem,
            client: Arc::new(client),
            _dir: Arc::new(dir),
        })
    }

    /// An HTTP client builder that speaks TLS with loadgen's certificate.
    pub fn http(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder.tls_backend_preconfigured((*self.client).clone())
    }
}
