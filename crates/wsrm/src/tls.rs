//! HTTPS configuration (rustls with the `ring` provider): the service's certificate and key,
//! optional client-certificate authentication (mutual TLS), and the client's trust anchors and
//! optional client certificate.
//!
//! With mutual TLS the service identifies each connection by its client certificate
//! ([`ClientIdentity`], the SHA-256 of the end-entity certificate's DER encoding); the runtime
//! binds each sequence to the identity that created it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// A TLS configuration error.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM input held no certificate.
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    /// A PEM input held no private key.
    #[error("no private key found in {0}")]
    NoKey(String),
    /// A PEM input could not be parsed.
    #[error("malformed PEM in {what}: {source}")]
    Pem {
        /// What was being read.
        what: String,
        /// The parse error.
        source: std::io::Error,
    },
    /// rustls refused the configuration (e.g. key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. unusable CA certificate).
    #[error("client-certificate verifier: {0}")]
    Verifier(String),
}

/// The identity of a TLS client authenticated by its certificate: the SHA-256 digest of the
/// end-entity certificate (DER). Two connections presenting the same certificate have the same
/// identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIdentity([u8; 32]);

impl ClientIdentity {
    /// The identity of a DER-encoded certificate.
    pub fn from_der(der: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(d.as_ref()) {
            *o = *b;
        }
        ClientIdentity(out)
    }

    /// The raw SHA-256 digest.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientIdentity({self})")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut rd = pem;
    let certs = rustls_pemfile::certs(&mut rd)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what.to_string()));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut rd = pem;
    rustls_pemfile::private_key(&mut rd)
        .map_err(|source| TlsError::Pem {
            what: what.to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(what.to_string()))
}

fn roots(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store.add(c.clone())?;
    }
    Ok(store)
}

/// Whether a mutual-TLS service requires a client certificate or merely accepts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Connections without a valid client certificate are refused (WCF
    /// `requireClientCertificate="true"`).
    Required,
    /// Connections may present a certificate; those that do are identified by it.
    Optional,
}

/// The service side of HTTPS: certificate chain and key, and optionally the CA that client
/// certificates must chain to.
pub struct ServerTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<(Vec<CertificateDer<'static>>, ClientAuth)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("chain_len", &self.chain.len())
            .field("client_auth", &self.client_ca.as_ref().map(|c| c.1))
            .finish()
    }
}

impl Clone for ServerTls {
    fn clone(&self) -> Self {
        ServerTls {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            client_ca: self.client_ca.clone(),
        }
    }
}

impl ServerTls {
    /// Certificate chain (leaf first) and private key, both PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_pem, "server certificate")?;
        let key = parse_key(key_pem, "server key")?;
        let me = ServerTls {
            chain,
            key,
            client_ca: None,
        };
        me.config()?;
        Ok(me)
    }

    /// As [`ServerTls::from_pem`], reading the two PEM files.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let c = read_file(cert.as_ref())?;
        let k = read_file(key.as_ref())?;
        let chain = parse_certs(&c, &cert.as_ref().display().to_string())?;
        let key = parse_key(&k, &key.as_ref().display().to_string())?;
        let me = ServerTls {
            chain,
            key,
            client_ca: None,
        };
        me.config()?;
        Ok(me)
    }

    /// Requires client certificates issued by a CA in `ca_pem` (mutual TLS).
    pub fn with_client_ca_pem(self, ca_pem: &[u8], mode: ClientAuth) -> Result<Self, TlsError> {
        let ca = parse_certs(ca_pem, "client CA")?;
        let me = ServerTls {
            client_ca: Some((ca, mode)),
            ..self
        };
        me.config()?;
        Ok(me)
    }

    /// As [`ServerTls::with_client_ca_pem`], reading the PEM file.
    pub fn with_client_ca_file(
        self,
        ca: impl AsRef<Path>,
        mode: ClientAuth,
    ) -> Result<Self, TlsError> {
        let pem = read_file(ca.as_ref())?;
        let ca = parse_certs(&pem, &ca.as_ref().display().to_string())?;
        let me = ServerTls {
            client_ca: Some((ca, mode)),
            ..self
        };
        me.config()?;
        Ok(me)
    }

    /// Whether client certificates are checked (mutual TLS).
    pub fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    pub(crate) fn config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some((ca, mode)) => {
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let v = match mode {
                    ClientAuth::Required => v,
                    ClientAuth::Optional => v.allow_unauthenticated(),
                };
                let v = v.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(v)
            }
        };
        let mut cfg = builder.with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(self.config()?)))
    }
}

/// The client side of HTTPS: trusted CA certificates and an optional client certificate.
#[derive(Default)]
pub struct ClientTls {
    ca: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trusted", &self.ca.len())
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        ClientTls {
            ca: self.ca.clone(),
            identity: self
                .identity
                .as_ref()
                .map(|(c, k)| (c.clone(), k.clone_key())),
        }
    }
}

impl ClientTls {
    /// Trusts nothing yet (add CAs with [`ClientTls::with_ca_pem`]).
    pub fn new() -> Self {
        ClientTls::default()
    }

    /// Trusts the CA certificates in `pem`.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, TlsError> {
        let certs = parse_certs(pem, "CA")?;
        roots(&certs)?;
        self.ca.extend(certs);
        Ok(self)
    }

    /// As [`ClientTls::with_ca_pem`], reading the file.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let pem = read_file(path.as_ref())?;
        self.with_ca_pem(&pem)
    }

    /// Presents this certificate chain and key to services requiring client certificates.
    pub fn with_client_cert_pem(
        mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_pem, "client certificate")?;
        let key = parse_key(key_pem, "client key")?;
        self.identity = Some((chain, key));
        self.config()?;
        Ok(self)
    }

    /// As [`ClientTls::with_client_cert_pem`], reading the two files.
    pub fn with_client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let c = read_file(cert.as_ref())?;
        let k = read_file(key.as_ref())?;
        self.with_client_cert_pem(&c, &k)
    }

    pub(crate) fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(&self.ca)?);
        // ALPN is set by the HTTPS connector (http/1.1).
        Ok(match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
        })
    }
}
