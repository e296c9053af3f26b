//! TLS on the one port: HTTPS and `wss://` with a PEM certificate chain and key.
//!
//! The handshake runs in the accept loop (bounded by the header timeout); hyper serves HTTP
//! over the TLS stream; after a WebSocket upgrade the session takes back the TCP socket and
//! the rustls connection and drives them itself ([`crate::transport`]), so TLS connections
//! keep the same single-task, readiness-driven session loop as plain ones.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate chain (leaf first), PEM.
    pub cert_pem: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_pem: Vec<u8>,
}

impl TlsConfig {
    /// Checks that the certificate and key can be used.
    ///
    /// # Errors
    /// As the server would fail at start.
    pub fn check(&self) -> Result<(), TlsError> {
        server_config(self).map(|_| ())
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("TlsConfig(..)")
    }
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file holds no usable certificate.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The key file holds no usable private key.
    #[error("private key: {0}")]
    Key(String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Builds the rustls server settings for a certificate and key.
///
/// # Errors
/// When the PEM data cannot be read or the pair is refused.
pub(crate) fn server_config(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&config.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Certificate(err.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(
            "no certificate in the PEM data".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&config.key_pem)
        .map_err(|err| TlsError::Key(err.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| TlsError::Config(err.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
