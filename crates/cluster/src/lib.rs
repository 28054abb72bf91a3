//! # datalayer-cluster: where everything is and who serves it
//!
//! ```text
//!   node (gRPC) ──► Router ──► Catalog (RaftCatalog): table name → TableDesc → tablet
//!                     │
//!                     └──────► StrongPolicy (master of the tablet) ──► TabletEngine (store)
//!                               writer thread: order, evaluate, group commit
//! ```
//!
//! - [`catalog`]: table and tablet metadata behind the [`Catalog`] trait.
//! - [`meta`]: the metadata Raft group (openraft) that keeps the catalog: its
//!   deterministic state machine, RocksDB-backed log, gRPC network, [`RaftCatalog`].
//! - [`router`]: resolves a request to its table and tablet, and refuses batches that
//!   span tablets.
//! - [`strong`]: the `strong` policy, master side: positions `(epoch, seq)`, group
//!   commit, read-modify-write, reads at the closed timestamp.
//!
//! Invariants: every write to a tablet goes through its master's writer; a tablet's
//! timestamps rise with its seq; a read at a timestamp below the closed timestamp is
//! repeatable.

pub mod catalog;
pub mod error;
pub mod meta;
pub mod replicator;
pub mod router;
pub mod strong;

pub use catalog::{Catalog, Policy, TableDesc, TableSpec, TabletDesc};
pub use error::{Error, ErrorKind, Result};
pub use meta::RaftCatalog;
pub use router::{Router, WriteOptions};
pub use strong::{Expected, OpResult, Outcome, Position, StrongPolicy, WriteOp};
