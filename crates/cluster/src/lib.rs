//! # datalayer-cluster: where everything is and who serves it
//!
//! ```text
//!   node (gRPC) ──► Router ──► Catalog: table name → TableDesc → tablet for a key
//!                     │
//!                     └──────► StrongPolicy (master of the tablet) ──► TabletEngine (store)
//!                               writer thread: order, evaluate, group commit
//! ```
//!
//! - [`catalog`]: table and tablet metadata behind the [`Catalog`] trait; the
//!   single-node [`LocalCatalog`] persists it in the store.
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
pub mod router;
pub mod strong;

pub use catalog::{Catalog, LocalCatalog, Policy, TableDesc, TableSpec, TabletDesc};
pub use error::{Error, ErrorKind, Result};
pub use router::Router;
pub use strong::{Expected, OpResult, Outcome, Position, StrongPolicy, WriteOp};
