//! # datalayer-api: the wire contract
//!
//! The public `datalayer.v1` services (KV, Admin; `proto/datalayer/v1/`) and the
//! internal node-to-node ones in `datalayer.internal.v1` (the metadata group's Raft
//! messages, tablet replication; `proto/datalayer/internal/v1/`), with the
//! tonic/prost code generated from them. No logic lives here: the node and every
//! client depend on it. Each package's proto files say how it may change.

/// Package `datalayer.v1`: what clients speak.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("datalayer.v1");

    /// The encoded file descriptor set of the public services, for gRPC server
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("datalayer_descriptor");
}

pub mod prompb;

/// Package `datalayer.internal.v1`: what nodes speak to each other.
pub mod internal {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("datalayer.internal.v1");
    }
}
