//! TLS termination: rustls with ALPN offering HTTP/2 (which LL-HLS players want) and HTTP/1.1.

use std::path::Path;

use tokio_rustls::TlsAcceptor;

use crate::ProxyError;

/// Builds the acceptor from PEM files.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ProxyError> {
    livecast_telemetry::tls::server_config(cert, key, &[b"h2", b"http/1.1"])
        .map(TlsAcceptor::from)
        .map_err(ProxyError::Config)
}
