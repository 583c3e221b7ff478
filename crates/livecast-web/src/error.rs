//! Errors of the front-end.

/// Why the front-end could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
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
