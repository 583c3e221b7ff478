//! The one error type of the media crate.

/// Why a piece of media could not be parsed or packaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The input ended before a structure it announced was complete.
    #[error("{what} is truncated")]
    Truncated {
        /// The structure being read.
        what: &'static str,
    },
    /// The input is well-formed but uses something this crate does not package.
    #[error("unsupported {what}: {value}")]
    Unsupported {
        /// The kind of thing (codec, sample-rate index, ...).
        what: &'static str,
        /// Its value as found in the stream.
        value: u32,
    },
    /// The input breaks a rule of its format.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

pub(crate) fn need(buf: &[u8], len: usize, what: &'static str) -> Result<(), MediaError> {
    if buf.len() < len {
        Err(MediaError::Truncated { what })
    } else {
        Ok(())
    }
}
