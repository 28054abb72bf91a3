//! Errors of the store.

use crate::ids::TabletId;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB failed (I/O, or a closed instance).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A file outside RocksDB (a tablet export) could not be written or read.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Records an operation needs were trimmed from the oplog.
    #[error("{tablet}: record {seq} was trimmed from the oplog")]
    Trimmed {
        /// The tablet.
        tablet: TabletId,
        /// The missing record.
        seq: u64,
    },
    /// Bytes on disk do not decode.
    #[error("corruption: {what}")]
    Corruption {
        /// What failed to decode.
        what: String,
    },
    /// An append does not continue the tablet's log.
    #[error("{tablet}: append out of order: log ends at {log_end}, got seq {got}")]
    OutOfOrder {
        /// The tablet.
        tablet: TabletId,
        /// Where its log ends.
        log_end: u64,
        /// The first seq offered.
        got: u64,
    },
}

impl Error {
    pub(crate) fn corruption(what: impl Into<String>) -> Error {
        Error::Corruption { what: what.into() }
    }
}

/// Result of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;
