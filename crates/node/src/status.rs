//! Errors become gRPC statuses in one place, `datalayer_cluster::status`; the node's
//! services use it through here.

pub use datalayer_cluster::status::IntoStatus;
