//! Errors of the shipper.

/// Why the shipper could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum LogshipError {
    /// A flag has a value the service cannot use.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file or socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
