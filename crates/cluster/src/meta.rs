//! # The metadata group
//!
//! One openraft group holds the cluster's metadata: tables and their tablets (and,
//! with membership, nodes). Its log, vote and state machine live in the node's RocksDB
//! ([`storage`]); the state machine's logic is a pure core ([`state`]).
//!
//! ```text
//!   RaftCatalog::create_table ──► raft.client_write(MetaCommand) ──► log (synced) ──►
//!   commit ──► StateMachine::apply ──► MetaState::apply ──► shared MetaState (reads)
//! ```

pub mod changes;
pub mod controller;
pub mod liveness;
mod membership;
pub mod network;
pub mod placement;
pub mod raft_catalog;
pub mod state;
pub mod storage;

pub use liveness::{Lease, Liveness, LivenessEpoch};
pub use raft_catalog::{MetaOptions, RaftCatalog, join};
pub use state::{MetaCommand, MetaError, MetaResponse, MetaState, NodeInfo};

// The macro names `Cursor` unqualified.
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Types of the metadata Raft group.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaResponse,
);

/// A member of the metadata group.
pub type MetaRaft = openraft::Raft<TypeConfig>;
