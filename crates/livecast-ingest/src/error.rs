//! Errors of the ingest service.

/// Why the ingest service could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A flag has a value the service cannot use.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket or file operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Why one RTMP connection ended early; logged, never sent to the peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0:?}")]
    Handshake(rml_rtmp::handshake::HandshakeError),
    #[error("rtmp session: {0:?}")]
    Session(rml_rtmp::sessions::ServerSessionError),
    #[error("rtmp chunk stream: {0}")]
    Chunk(#[from] crate::chunk::ChunkError),
    #[error("no data for {0} s")]
    Idle(u64),
    #[error("refused: {0}")]
    Refused(&'static str),
}

impl From<rml_rtmp::handshake::HandshakeError> for ConnectionError {
    fn from(e: rml_rtmp::handshake::HandshakeError) -> Self {
        Self::Handshake(e)
    }
}

impl From<rml_rtmp::sessions::ServerSessionError> for ConnectionError {
    fn from(e: rml_rtmp::sessions::ServerSessionError) -> Self {
        Self::Session(e)
    }
}
