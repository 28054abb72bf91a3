//! The one place where errors become gRPC statuses: a code plus an encoded
//! `ErrorDetail` (kind, retryable, field) in the status details.

use crate::error::{Error, ErrorKind};
use datalayer_api::v1 as pb;
use prost::Message;
use tonic::{Code, Status};

/// The status for an error.
pub fn to_status(err: &Error) -> Status {
    let (code, kind) = match err.kind() {
        ErrorKind::InvalidArgument => (Code::InvalidArgument, pb::ErrorKind::InvalidArgument),
        ErrorKind::NotFound => (Code::NotFound, pb::ErrorKind::NotFound),
        ErrorKind::AlreadyExists => (Code::AlreadyExists, pb::ErrorKind::AlreadyExists),
        ErrorKind::Unavailable => (Code::Unavailable, pb::ErrorKind::Unavailable),
        ErrorKind::NotSupported => (Code::Unimplemented, pb::ErrorKind::NotSupported),
        ErrorKind::TimestampCollected => {
            (Code::FailedPrecondition, pb::ErrorKind::TimestampCollected)
        }
        ErrorKind::CrossTablet => (Code::InvalidArgument, pb::ErrorKind::CrossTablet),
        ErrorKind::NotAnInteger => (Code::FailedPrecondition, pb::ErrorKind::NotAnInteger),
        ErrorKind::Corruption => (Code::DataLoss, pb::ErrorKind::Corruption),
        ErrorKind::Internal => (Code::Internal, pb::ErrorKind::Internal),
        ErrorKind::NotMaster => (Code::FailedPrecondition, pb::ErrorKind::NotMaster),
        // gRPC's own code for "may or may not have happened".
        ErrorKind::Ambiguous => (Code::DeadlineExceeded, pb::ErrorKind::Ambiguous),
        ErrorKind::StaleEpoch => (Code::Aborted, pb::ErrorKind::StaleEpoch),
        ErrorKind::Aborted => (Code::Aborted, pb::ErrorKind::Aborted),
        ErrorKind::NotServing => (Code::Unavailable, pb::ErrorKind::NotServing),
        ErrorKind::HandingOver => (Code::Unavailable, pb::ErrorKind::HandingOver),
        ErrorKind::LeaseLapsed => (Code::Unavailable, pb::ErrorKind::LeaseLapsed),
        ErrorKind::ReplicaBehind => (Code::Unavailable, pb::ErrorKind::ReplicaBehind),
        ErrorKind::Stopping => (Code::Unavailable, pb::ErrorKind::Stopping),
        ErrorKind::RangeMismatch => (Code::FailedPrecondition, pb::ErrorKind::RangeMismatch),
    };
    if matches!(err.kind(), ErrorKind::Internal | ErrorKind::Corruption) {
        tracing::error!(error = %err, "request failed");
    }
    let detail = pb::ErrorDetail {
        kind: kind as i32,
        retryable: err.retryable(),
        message: err.to_string(),
        field: err.field().unwrap_or_default().to_string(),
        hint: err.hint().unwrap_or_default().to_string(),
        position: match err {
            Error::Ambiguous {
                tablet, epoch, seq, ..
            } => Some(pb::WritePosition {
                tablet_id: tablet.0,
                epoch: epoch.0,
                seq: seq.0,
            }),
            _ => None,
        },
        tablets: match err {
            Error::RangeMismatch { tablets, .. } => tablets
                .iter()
                .map(|t| pb::RangeDescriptor {
                    tablet_id: t.id.0,
                    start: t.start.clone(),
                    end: t.end.clone().unwrap_or_default(),
                    generation: t.generation,
                    master: t.master.0,
                    master_addr: t.master_addr.clone().unwrap_or_default(),
                })
                .collect(),
            _ => Vec::new(),
        },
    };
    Status::with_details(code, err.to_string(), detail.encode_to_vec().into())
}

/// Shorthand for handlers: map a cluster result to a tonic result.
pub trait IntoStatus<T> {
    /// Converts the error side.
    fn status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for Result<T, Error> {
    fn status(self) -> Result<T, Status> {
        self.map_err(|e| to_status(&e))
    }
}
