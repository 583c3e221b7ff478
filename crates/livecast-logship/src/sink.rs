//! The seam between the driver and a destination: what a sink is asked and what it answers.
//! A second destination is a new implementation of [`Sink`], not a new branch in the driver.

use std::future::Future;

use crate::source::Line;

/// How one batch fared at a sink.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Lines the sink stored now.
    pub delivered: usize,
    /// Lines it already had (a resend after a crash or a retry).
    pub already_there: usize,
    /// Indices into the batch to send again.
    pub retry: Vec<usize>,
    /// Indices that will never be accepted, with the reason.
    pub rejected: Vec<(usize, String)>,
}

/// A destination for log lines.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Why a whole request failed; the batch is retried.
    type Error: std::fmt::Display + Send;

    /// The sink's name in metrics (`sink` label) and the dead-letter file.
    fn name(&self) -> &'static str;

    /// Sends `which` of `lines` (indices into it) and says how each fared.
    fn send(
        &self,
        lines: &[Line],
        which: &[usize],
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;
}
