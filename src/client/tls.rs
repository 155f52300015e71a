//! The client side of TLS: rustls on the `ring` provider (as the server, see [`crate::tls`]),
//! trusting the system CA bundle or one PEM file the site names.

use std::path::Path;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Where Debian (and most distributions) keep the system CA bundle.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A rustls client configuration trusting the certificates in `cacert` (PEM), else the system's.
pub fn client_config(cacert: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    crate::tls::install_provider();
    let path = cacert.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read CA certificates from {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("invalid PEM in {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// For plain-HTTP servers: a configuration that trusts nothing (it is never used to connect).
pub fn client_config_without_roots() -> rustls::ClientConfig {
    crate::tls::install_provider();
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}
