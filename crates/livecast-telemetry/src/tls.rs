//! TLS server configuration from PEM files, shared by every service that terminates TLS (the
//! balancer's HTTPS, the ingest's RTMPS).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Builds a rustls server configuration (ring, TLS 1.2 and 1.3) from a PEM certificate chain
/// and its private key, offering the ALPN protocols `alpn` in order of preference. The error
/// names the file at fault.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        format!("cannot read {what} {}: {e}", path.display())
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("private key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls certificate and key do not match: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Stateless session tickets (keys rotated every 6 hours), as HAProxy and nginx issue them:
    // any number of viewers can resume. The default, a cache of 256 sessions on the server,
    // forgets a viewer's session once 256 others have connected after it.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("tls tickets: {e}"))?;
    Ok(Arc::new(config))
}
