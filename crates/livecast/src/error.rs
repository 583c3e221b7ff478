//! The umbrella's error type: each message says what failed and where, so `main` prints it
//! as it is.

/// Everything `livecast up`, `livecast probe` and `livecast token` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LivecastError {
    /// A flag or its value is not acceptable.
    #[error("{0}")]
    Config(String),
    /// A socket or file operation failed; `what` names it.
    #[error("{what}: {error}")]
    Io {
        /// What was being done (`cannot bind balancer on 0.0.0.0:8080`).
        what: String,
        /// The operating system's answer.
        error: std::io::Error,
    },
    /// A socket operation failed where the context is plain from the caller.
    #[error(transparent)]
    Os(#[from] std::io::Error),
    /// One of the stack's services stopped with an error.
    #[error("{service}: {error}")]
    Service {
        /// Which service (`ingest`, `front-end`, `balancer`, `log shipper`).
        service: &'static str,
        /// Its own error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A probed URL did not answer 2xx.
    #[error("{0}")]
    Probe(String),
}

impl LivecastError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        move |error| Self::Io {
            what: what.into(),
            error,
        }
    }

    /// A refusal of a flag's value, from whatever the service or library said about it.
    pub(crate) fn config(refusal: impl std::fmt::Display) -> Self {
        Self::Config(refusal.to_string())
    }

    /// Wraps a service's error with the service's name.
    pub(crate) fn service<E>(service: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |error| Self::Service {
            service,
            error: Box::new(error),
        }
    }
}

/// Results of the umbrella.
pub type Result<T> = std::result::Result<T, LivecastError>;
