//! HTTPS: rustls on the `ring` provider (aws-lc-rs needs cmake and compiles for minutes on small
//! machines). The accept loop, shared with plain HTTP, is in [`crate::listener`].
//!
//! The certificate is served through a resolver holding the current key pair, so a reload
//! ([`CertReloader::reload`]) swaps it for new handshakes while open connections go on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Makes `ring` the process-wide provider, once, before any rustls configuration is built.
pub fn install_provider() {
    // Fails only if a provider is installed already, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Server configuration from PEM files: the certificate chain (leaf first) and its private key.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    Ok(reloadable_acceptor(cert, key)?.0)
}

/// Like [`acceptor`], with the handle that replaces the certificate later.
pub fn reloadable_acceptor(cert: &Path, key: &Path) -> anyhow::Result<(TlsAcceptor, CertReloader)> {
    install_provider();
    let resolver = Arc::new(Resolver(RwLock::new(load(cert, key)?)));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), CertReloader(resolver)))
}

/// Reads and checks a certificate chain and its key (the key must match the leaf).
fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM in TLS certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a TLS private key from {}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider)
        .context("TLS certificate and key do not form a usable pair")?;
    Ok(Arc::new(certified))
}

#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// Replaces the served certificate.
#[derive(Debug, Clone)]
pub struct CertReloader(Arc<Resolver>);

/// A certificate read and checked, not yet served.
pub struct PendingCert(Arc<CertifiedKey>);

impl CertReloader {
    /// Reads `cert` and `key`; nothing changes until [`CertReloader::apply`].
    pub fn prepare(cert: &Path, key: &Path) -> anyhow::Result<PendingCert> {
        Ok(PendingCert(load(cert, key)?))
    }

    /// Serves `pending` to every new handshake.
    pub fn apply(&self, pending: PendingCert) {
        *self.0 .0.write().unwrap_or_else(|p| p.into_inner()) = pending.0;
    }
}

/// The certificate and key files of `[tls]`, when both are set.
pub fn files(c: &crate::config::TlsConfig) -> Option<(PathBuf, PathBuf)> {
    Some((c.cert.clone()?, c.key.clone()?))
}
