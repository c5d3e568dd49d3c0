//! The errors of the sketches: one enum for bad parameters, one for merging sketches
//! of different shapes, one for bytes that are not a sketch this crate wrote.

use thiserror::Error;

/// Why a sketch could not be built from the parameters given.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A rate or probability was not strictly between 0 and 1 (or was NaN).
    #[error("{name} must be strictly between 0 and 1, got {value}")]
    Probability {
        /// The parameter's name.
        name: &'static str,
        /// What was given.
        value: f64,
    },
    /// An integer parameter was outside its allowed range, or a size derived from the
    /// parameters would be.
    #[error("{name} must be in {min}..={max}, got {value}")]
    OutOfRange {
        /// The parameter's (or derived size's) name.
        name: &'static str,
        /// What was given or derived.
        value: u64,
        /// The smallest allowed value.
        min: u64,
        /// The largest allowed value.
        max: u64,
    },
}

/// Why two sketches could not be merged. Neither sketch is changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MergeError {
    /// The sketches differ in shape (size, number of hashes, layout, update mode or
    /// seed): their cells do not mean the same keys, so combining them would be wrong.
    #[error("cannot merge sketches of different shapes: {0}")]
    ShapeMismatch(&'static str),
}

/// Why a key could not be added to a growing sketch. The sketch is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InsertError {
    /// A scalable Bloom filter needed a new stage and may not add one: it already has
    /// its configured maximum of stages, or the next stage would exceed the size limit.
    #[error("the filter is full: {stages} stages, the next would exceed its limits")]
    Full {
        /// The stages the filter has.
        stages: u32,
    },
}

/// Why bytes could not be read back as a sketch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the fixed header and checksum need.
    #[error("too short: {got} bytes, at least {needed} needed")]
    TooShort {
        /// The bytes needed.
        needed: usize,
        /// The bytes given.
        got: usize,
    },
    /// The bytes do not start with this crate's magic number.
    #[error("not a girder sketch (bad magic)")]
    BadMagic,
    /// The CRC-32C over the bytes does not match the stored one: they were damaged.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum the bytes carry.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The bytes hold another kind of sketch than the one asked for.
    #[error("wrong sketch kind: expected {expected}, found {found}")]
    WrongKind {
        /// The kind asked for.
        expected: u8,
        /// The kind stored.
        found: u8,
    },
    /// A format version this code does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// The payload ended before a field, or has bytes left over after the last one.
    #[error("payload length is {got} bytes, expected {expected}")]
    Length {
        /// The bytes the fields need.
        expected: u64,
        /// The bytes present.
        got: u64,
    },
    /// A field holds a value no sketch of this kind can have.
    #[error("invalid {field}: {value}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}
