//! # datalayer-store: bytes on disk
//!
//! The floor of DataLayer. One RocksDB instance per node holds every tablet of every
//! table; a tablet is a key range inside it, so a split moves no data.
//!
//! ```text
//!   policy (strong, ...) ──► TabletEngine::append(records + state)   one synced WriteBatch
//!                            TabletEngine::get / scan (at timestamp)  MVCC reads
//!                                     │
//!                 RocksTabletEngine: CFs data | oplog | tablet | meta
//! ```
//!
//! Invariants:
//! - Every state change of a tablet is one `WriteBatch`: the oplog record, the versions
//!   it writes and the tablet's state move together, and the batch is synced to the WAL
//!   before `append` returns. One `append` may carry many tablets and records: that is
//!   the group commit that lets many writers share one sync.
//! - Versions are keyed by [`codec::version_key`]: reads at a timestamp see exactly the
//!   versions at or below it.
//!
//! This crate knows nothing of policies, Raft or the network: it must never depend on
//! tonic, openraft, tantivy or automerge.

pub mod codec;
pub mod conformance;
pub mod engine;
pub mod error;
pub mod hlc;
pub mod ids;
pub mod oplog;
pub mod rocks;

pub use engine::{
    EngineStats, KeyRange, ScanRequest, TabletAppend, TabletEngine, TabletExport, Versioned,
};
pub use error::{Error, Result};
pub use hlc::{HybridClock, Timestamp};
pub use ids::{Epoch, NodeId, Seq, TableId, TabletId};
pub use oplog::{
    Answer, Inherited, Mutation, OplogRecord, Origin, RecordBody, RequestId, TabletState,
};
pub use rocks::RocksTabletEngine;
