//! The crate's typed errors.

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    /// The setting.
    pub name: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self { name, reason: reason.into() }
    }
}

/// Operator state that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The bytes end inside a field.
    #[error("the state ends inside a field")]
    Truncated,
    /// Not operator state, or a format this version does not read.
    #[error("not operator state (bad magic or version {0})")]
    Format(u8),
    /// The checksum does not match: the bytes were damaged.
    #[error("the state's checksum does not match")]
    Checksum,
    /// A field holds a value no operator writes.
    #[error("invalid state: {0}")]
    Invalid(&'static str),
    /// The state was written by an operator with other settings.
    #[error("the state was written with other settings: {0}")]
    Mismatch(&'static str),
}
