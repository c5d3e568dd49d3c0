//! What the NATS client failed with, kept whole under [`QueueError::Nats`].

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::queue::QueueError;

/// A failure of the NATS client or server during one step of an operation.
///
/// The client's own error is the [`source`](Error::source) (held in an [`Arc`] so
/// [`QueueError`] stays `Clone`); reach it with `girder_core::error::source_of`,
/// e.g. `source_of::<async_nats::jetstream::context::PublishError>(&err)`.
#[derive(Debug, Clone)]
pub struct NatsError {
    step: &'static str,
    source: Arc<dyn Error + Send + Sync>,
}

impl NatsError {
    pub(super) fn new(step: &'static str, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self { step, source: Arc::from(source.into()) }
    }

    /// The step that failed (`"publish"`, `"fetch"`, `"ack"`, …).
    #[must_use]
    pub fn step(&self) -> &'static str {
        self.step
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's message is the source's, not repeated here.
        write!(f, "NATS {} failed", self.step)
    }
}

impl Error for NatsError {
    /// The client's error itself (not its `Arc`), so it can be downcast.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Maps a client error of `step` to a [`QueueError`].
pub(super) fn nats<E: Into<Box<dyn Error + Send + Sync>>>(
    step: &'static str,
) -> impl FnOnce(E) -> QueueError {
    move |err| QueueError::Nats(NatsError::new(step, err))
}
