//! `wss://` (cargo feature `tls`): [`FakeServerBuilder::tls`] generates, for each
//! server, a root certificate and a certificate for `127.0.0.1` and `localhost` signed
//! by it (rcgen), and serves TLS with rustls on its ring provider (which builds without
//! cmake). The test hands the client the root ([`FakeServer::root_certificate_der`]), a
//! ready [`rustls::ClientConfig`] that trusts only that root
//! ([`FakeServer::tls_client_config`]): with tokio-tungstenite's own rustls feature,
//! `Connector::Rustls(server.tls_client_config())`; without it, a `tokio_rustls::TlsConnector`
//! stream handed to `tokio_tungstenite::client_async` (as the crate's tests do). The
//! feature does not turn on tokio-tungstenite's TLS: that is the client's choice.
//!
//! Without the feature, [`Tls`] has no value and every server is plain `ws://`.
//!
//! The feature is one concern, kept in this one file under one `cfg`: the [`Tls`] that
//! the builder and then the server's configuration (`state`) hold, and the methods it
//! adds to the builder and the server, which make and read it. So this file imports the
//! handles it extends while they hold its type: a circle through the parent module,
//! kept rather than spread over three files.
//!
//! [`FakeServerBuilder::tls`]: super::FakeServerBuilder::tls
//! [`FakeServer::root_certificate_der`]: super::FakeServer::root_certificate_der
//! [`FakeServer::tls_client_config`]: super::FakeServer::tls_client_config

use std::io;

use tokio::net::TcpStream;

use super::stream::Stream;

#[cfg(feature = "tls")]
pub(super) use with_tls::Tls;

/// Without the feature `tls`, no server has TLS.
#[cfg(not(feature = "tls"))]
pub(super) enum Tls {}

#[cfg(not(feature = "tls"))]
impl Tls {
    pub(super) async fn accept(
        &self,
        _tcp: TcpStream,
        _deadline: std::time::Duration,
    ) -> io::Result<Stream> {
        match *self {}
    }
}

#[cfg(feature = "tls")]
mod with_tls {
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::super::{FakeServer, FakeServerBuilder};
    use super::*;

    /// A server's certificates and what serves them.
    pub(in crate::server) struct Tls {
        acceptor: tokio_rustls::TlsAcceptor,
        root: CertificateDer<'static>,
        root_pem: String,
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    impl Tls {
        /// A fresh root, a certificate for `127.0.0.1` and `localhost` signed by it, and
        /// a rustls server configuration that presents it.
        pub(in crate::server) fn generate() -> Self {
            let mut root_params = CertificateParams::new(Vec::new()).expect("no names");
            root_params
                .distinguished_name
                .push(DnType::CommonName, "fake-ws-server test root");
            root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let root_key = KeyPair::generate().expect("a key for the test root");
            let root = CertifiedIssuer::self_signed(root_params, root_key)
                .expect("a self-signed test root");

            let mut leaf_params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .expect("valid names");
            leaf_params
                .distinguished_name
                .push(DnType::CommonName, "fake-ws-server");
            let leaf_key = KeyPair::generate().expect("a key for the server");
            let leaf = leaf_params
                .signed_by(&leaf_key, &root)
                .expect("a server certificate");

            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
            let mut config = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .expect("the generated key matches its certificate");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Tls {
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                root: root.der().clone(),
                root_pem: root.pem(),
            }
        }

        /// The TLS handshake over an accepted connection, within `deadline` (the
        /// server's default deadline).
        pub(in crate::server) async fn accept(
            &self,
            tcp: TcpStream,
            deadline: Duration,
        ) -> io::Result<Stream> {
            match tokio::time::timeout(deadline, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {deadline:?}"),
                )),
            }
        }
    }

    impl<In, Out> FakeServerBuilder<In, Out>
    where
        In: std::fmt::Debug + Clone + Send + 'static,
        Out: Send + 'static,
    {
        /// Serves `wss://` instead of `ws://` (cargo feature `tls`), with a certificate
        /// for `127.0.0.1` and `localhost` signed by a root generated for this server
        /// alone. Give the client [`FakeServer::tls_client_config`] or
        /// [`FakeServer::root_certificate_der`] to trust.
        /// A failed TLS handshake, or none within the server's default deadline
        /// ([`FakeServerBuilder::default_deadline`]), is recorded as a failed
        /// [`Attempt`](crate::Attempt).
        pub fn tls(mut self) -> Self {
            self.tls = Some(Arc::new(Tls::generate()));
            self
        }
    }

    impl<In, Out> FakeServer<In, Out> {
        #[track_caller]
        fn tls_or_panic(&self) -> &Tls {
            match &self.shared.config.tls {
                Some(tls) => tls,
                None => panic!(
                    "this fake serves plain ws://: build it with `FakeServer::builder().tls()` to get certificates"
                ),
            }
        }

        /// The root certificate (DER) the server's certificate is signed by, for a
        /// client's trust store. Panics unless built with [`FakeServerBuilder::tls`].
        #[track_caller]
        pub fn root_certificate_der(&self) -> Vec<u8> {
            self.tls_or_panic().root.to_vec()
        }

        /// The root certificate in PEM, for a client that reads its trust store from a
        /// file (`PAYMENTS_CA=…`). Panics unless built with [`FakeServerBuilder::tls`].
        #[track_caller]
        pub fn root_certificate_pem(&self) -> String {
            self.tls_or_panic().root_pem.clone()
        }

        /// A rustls client configuration (ring provider) that trusts this server's root
        /// and nothing else. Panics unless built with [`FakeServerBuilder::tls`].
        #[track_caller]
        pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(self.tls_or_panic().root.clone())
                .expect("the generated root is a valid trust anchor");
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        }
    }
}
