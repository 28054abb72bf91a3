//! # datalayer-api: the wire contract
//!
//! The `datalayer.v1` protobuf services (KV, Admin) and the tonic/prost code generated
//! from `proto/`. No logic lives here: the node and every client depend on it.

/// Package `datalayer.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("datalayer.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("datalayer_descriptor");
}
