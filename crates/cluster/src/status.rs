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

/// The error a peer's status carries (its `ErrorDetail`), for a call this node made
/// on a client's behalf; `None` when the status has no detail (the call itself
/// failed: a broken connection, a timeout).
pub fn from_status(status: &Status) -> Option<Error> {
    let detail = pb::ErrorDetail::decode(status.details()).ok()?;
    let kind = match pb::ErrorKind::try_from(detail.kind).ok()? {
        pb::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        pb::ErrorKind::NotFound => ErrorKind::NotFound,
        pb::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        pb::ErrorKind::Unavailable => ErrorKind::Unavailable,
        pb::ErrorKind::NotSupported => ErrorKind::NotSupported,
        pb::ErrorKind::TimestampCollected => ErrorKind::TimestampCollected,
        pb::ErrorKind::CrossTablet => ErrorKind::CrossTablet,
        pb::ErrorKind::NotAnInteger => ErrorKind::NotAnInteger,
        pb::ErrorKind::Corruption => ErrorKind::Corruption,
        pb::ErrorKind::NotMaster => ErrorKind::NotMaster,
        pb::ErrorKind::Ambiguous => ErrorKind::Ambiguous,
        pb::ErrorKind::StaleEpoch => ErrorKind::StaleEpoch,
        pb::ErrorKind::Aborted => ErrorKind::Aborted,
        pb::ErrorKind::NotServing => ErrorKind::NotServing,
        pb::ErrorKind::HandingOver => ErrorKind::HandingOver,
        pb::ErrorKind::LeaseLapsed => ErrorKind::LeaseLapsed,
        pb::ErrorKind::ReplicaBehind => ErrorKind::ReplicaBehind,
        pb::ErrorKind::Stopping => ErrorKind::Stopping,
        pb::ErrorKind::RangeMismatch => ErrorKind::RangeMismatch,
        _ => ErrorKind::Internal,
    };
    Some(Error::Peer {
        kind,
        message: detail.message,
        field: (!detail.field.is_empty()).then_some(detail.field),
    })
}
