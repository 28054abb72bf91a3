//! # datalayer-cluster: where everything is and who serves it
//!
//! ```text
//!   node (gRPC) ──► Router: table → tablet → policy ──► TabletPolicy (registered by the node)
//!                     │                                   └─ strong: StrongPolicy
//!                     ▼                                        ├─ life: master, follow, let go, hand over
//!                   RaftCatalog (metadata group)               ├─ kv: the KV data plane
//!                     └─ controller ──► ControllerHook         ├─ ship / keeper / service: replication
//!                                        └─ StrongFailover     └─ StrongTablets: writer thread ──► store
//! ```
//!
//! - [`policy`]: the seam every policy implements ([`TabletPolicy`], its control
//!   plane, and [`ControllerHook`], its share of the metadata leader's controller).
//! - [`router`]: resolves table → tablet → policy; knows no policy of its own.
//! - [`catalog`]: table and tablet descriptors behind the [`Catalog`] trait.
//! - [`meta`]: the metadata Raft group (openraft) that keeps the catalog: its
//!   deterministic state machine, RocksDB-backed log, gRPC network, liveness, the
//!   controller and the placement planner, [`RaftCatalog`].
//! - [`strong`]: the `strong` policy: masters, oplogs, replication, failover.
//! - [`fail`]: fail points, where tests make the node crash.
//! - [`pool`]: the node's one pool of outgoing gRPC channels.
//! - [`status`]: the one mapping of errors to gRPC statuses.
//!
//! Invariants: every write to a strong tablet goes through its master's writer; a
//! tablet's timestamps rise with its seq; a read at a timestamp below the closed
//! timestamp is repeatable; the router and the metadata layer name no policy (the
//! controller reaches strong only through its hook).

pub mod catalog;
pub mod error;
pub mod fail;
pub mod meta;
pub mod policy;
pub mod pool;
pub mod router;
pub mod status;
pub mod strong;

pub use catalog::{Catalog, MergeIntent, PolicyKind, TableDesc, TableSpec, TabletDesc};
pub use error::{Error, ErrorKind, MetaUnavailable, RangeInfo, Result};
pub use meta::RaftCatalog;
pub use policy::{ControllerHook, Locality, TabletPolicy};
pub use router::Router;
pub use strong::{
    Expected, OpResult, Outcome, Position, StrongPolicy, StrongTablets, WriteOp, WriteOptions,
};
