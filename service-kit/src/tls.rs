//! TLS from PEM files, with rustls on its ring provider (no cmake, as everywhere in
//! the workspace): a server whose certificate (and the CA it requires client
//! certificates from) is re-read when the files change or on SIGHUP, without a restart
//! and without touching live connections ([`ServerTls`]); and the client side of a
//! link, trusting the system's roots plus a CA of its own and presenting a certificate
//! of its own ([`client_config`]).
//!
//! A new certificate is taken by the next handshake: the certificate resolver and the
//! client certificate verifier of the server's rustls configuration read the current
//! one each time, so the configuration itself never changes (actix-web takes it once,
//! when it binds).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// The crypto provider of every TLS configuration here: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS configuration could not be made; the path says which file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("the key {key} does not go with the certificate {cert}: {source}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{path} holds no CA certificate rustls can use: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("rustls refused the configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificates of a file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key of a file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => TlsError::Read {
            path: path.to_owned(),
            source,
        },
    })
}

/// A certificate chain and its key, checked to go together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(certificates(cert)?, private_key(key)?, &provider()).map_err(|source| {
        TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        }
    })
}

/// The roots in a CA file.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The files of a TLS server: its certificate chain and key, and the CA client
/// certificates must be signed by (mutual TLS) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }
}

/// What the files held when last read.
struct Loaded {
    key: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// A TLS server's certificate and client verifier, as its files last held them.
pub struct ServerTls {
    files: ServerFiles,
    loaded: RwLock<Arc<Loaded>>,
    /// The files' modification times and sizes at the last read.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: ServerFiles) -> Result<Arc<ServerTls>, TlsError> {
        let stamps = stamps(&files);
        let loaded = read(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Whether client certificates are required (a client CA is configured).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The rustls configuration that serves the current certificate, asks for a client
    /// certificate when a client CA is configured, and takes new ones as they are read.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = if self.mutual() {
            builder.with_client_cert_verifier(Arc::new(CurrentVerifier(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        builder.with_cert_resolver(Arc::new(CurrentCert(self.clone())))
    }

    /// Reads the files again if one of them changed since the last read (or always,
    /// with `force`); returns whether a new certificate was taken. On an error the
    /// current one stays in use.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        let mut last = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *last == now {
            return Ok(false);
        }
        let loaded = read(&self.files)?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        *last = now;
        Ok(true)
    }

    /// Reloads when the files change (looked at every `interval`) and on SIGHUP, until
    /// `stop` turns true. Each reload, or failure to, is logged.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<Option<()>>();
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = sighup => true,
                _ = stop.changed() => return,
            };
            match self.reload(force) {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), sighup = force, "TLS certificate reloaded: new connections use it, live ones keep theirs")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "could not reload the TLS certificate; the one in use stays")
                }
            }
        }
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read(files: &ServerFiles) -> Result<Loaded, TlsError> {
    let key = Arc::new(certified_key(&files.cert, &files.key)?);
    let verifier = match &files.client_ca {
        None => None,
        Some(ca) => Some(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?,
        ),
    };
    Ok(Loaded { key, verifier })
}

fn stamps(files: &ServerFiles) -> Vec<Option<(SystemTime, u64)>> {
    files
        .paths()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// The server's certificate, as last read.
#[derive(Debug)]
struct CurrentCert(Arc<ServerTls>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

/// The client certificate verifier of the CA as last read. It names no CA in its
/// certificate request (the hints would have to outlive a reload); clients present the
/// certificate they have.
#[derive(Debug)]
struct CurrentVerifier(Arc<ServerTls>);

impl CurrentVerifier {
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.0
            .current()
            .verifier
            .clone()
            .ok_or_else(|| rustls::Error::General("no client CA configured".into()))
    }
}

impl ClientCertVerifier for CurrentVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client side of a TLS link: the system's trusted roots, plus the CA at `ca`
/// (for a private one), and the certificate and key at `identity` when the server
/// requires one (mutual TLS). Only HTTP/1.1 is offered (ALPN): a WebSocket is an
/// HTTP/1.1 upgrade. Read from the files each time it is called, so a client that
/// calls it per connection takes rotated files at its next connection.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "a system root certificate could not be read");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|e| TlsError::BadCa {
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            // Checked to go together here, where the error can name both files.
            certified_key(cert, key)?;
            builder.with_client_auth_cert(certificates(cert)?, private_key(key)?)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
