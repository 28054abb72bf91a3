//! Errors of the cluster crate. Each knows its kind and whether a retry can succeed;
//! the node maps them to gRPC statuses in one place.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a limit; nothing was changed.
    #[error("invalid argument {field}: {message}")]
    InvalidArgument {
        /// The request field at fault.
        field: String,
        /// Why.
        message: String,
    },
    /// No table of that name.
    #[error("table {name:?} not found")]
    TableNotFound {
        /// The name asked for.
        name: String,
    },
    /// A table of that name exists.
    #[error("table {name:?} already exists")]
    TableExists {
        /// The name.
        name: String,
    },
    /// The feature or policy is not built yet.
    #[error("not supported yet: {what}")]
    NotSupported {
        /// What was asked for.
        what: String,
    },
    /// A read below the table's garbage-collection horizon.
    #[error(
        "timestamp {requested} is below the garbage-collection horizon {horizon} of table {table:?}"
    )]
    TimestampCollected {
        /// The table.
        table: String,
        /// The timestamp asked for.
        requested: datalayer_store::Timestamp,
        /// Versions at or below this may be gone.
        horizon: datalayer_store::Timestamp,
    },
    /// A batch spans tablets; nothing was changed.
    #[error(
        "batch spans tablets {first} and {second} of table {table:?}; a batch must stay in one tablet"
    )]
    CrossTablet {
        /// The table.
        table: String,
        /// One tablet.
        first: datalayer_store::TabletId,
        /// Another.
        second: datalayer_store::TabletId,
    },
    /// Another node masters the tablet; send the request there.
    #[error("{tablet} is mastered by {master}{}", addr.as_ref().map(|a| format!(" at {a}")).unwrap_or_default())]
    NotMaster {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// Its master.
        master: datalayer_store::NodeId,
        /// Where the master serves, if known.
        addr: Option<String>,
    },
    /// A write whose acks did not arrive: it may or may not commit.
    #[error(
        "write at {tablet} {epoch} {seq} is not acknowledged by {acks} replicas: {reason}; it may still commit or be lost, ask its write status"
    )]
    Ambiguous {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// Epoch of the write's record.
        epoch: datalayer_store::Epoch,
        /// Its seq.
        seq: datalayer_store::Seq,
        /// The acks it asked for, as the policy writes them (`1`, `2`, `all`).
        acks: String,
        /// What happened.
        reason: String,
    },
    /// A write forwarded to its tablet's master whose call broke after it may have
    /// reached the master: it may or may not have been applied (no position known).
    #[error(
        "the write was forwarded to the master at {addr}, which did not answer: {reason}; it may or may not have been applied, read the key to find out"
    )]
    OutcomeUnknown {
        /// The master's address.
        addr: String,
        /// What happened to the call.
        reason: String,
    },
    /// A write voided by an abort record before it committed: it never takes effect.
    #[error(
        "the write at {tablet} seq {seq} was aborted before it committed: it never takes effect"
    )]
    Aborted {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// The write's seq.
        seq: datalayer_store::Seq,
    },
    /// A message from a master epoch older than the replica knows.
    #[error("{tablet}: epoch {got} is older than {current}")]
    StaleEpoch {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// The epoch of the message.
        got: datalayer_store::Epoch,
        /// The epoch the replica knows.
        current: datalayer_store::Epoch,
    },
    /// This node does not (or no longer) serve the tablet as master or replica: the
    /// metadata here may be behind; re-route with fresh metadata.
    #[error("{tablet} is not (or no longer) served by this node")]
    NotServing {
        /// The tablet asked for.
        tablet: datalayer_store::TabletId,
    },
    /// The tablet's master is handing it over to another node: retry shortly, at
    /// the new master.
    #[error("{tablet} is being handed over to another master; retry")]
    HandingOver {
        /// The tablet.
        tablet: datalayer_store::TabletId,
    },
    /// The tablet is splitting and the request reaches into its right half, which
    /// serves it once the split is recorded (a moment): retry.
    #[error("{tablet} is splitting at {key:?} and the request reaches past it; retry")]
    Splitting {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// The split key (lossy text).
        key: String,
    },
    /// The master's lease lapsed (its liveness heartbeats are not getting through):
    /// it serves nothing until they do, or until another master is appointed.
    #[error(
        "{tablet}: this master's lease lapsed (its liveness heartbeats are not getting through)"
    )]
    LeaseLapsed {
        /// The tablet.
        tablet: datalayer_store::TabletId,
    },
    /// A follower read this replica cannot serve: it is behind what the read needs.
    #[error("{tablet}: {behind}")]
    ReplicaBehind {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// How it is behind.
        behind: Behind,
    },
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// A call to another node failed at the transport: it never got there, or it was
    /// a request safe to send again whose answer was lost. Retry.
    #[error("the call to the node at {addr} failed: {reason}; retry")]
    Unreachable {
        /// Its address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// Another node refused a request it was sent on this node's behalf, as it
    /// classed the refusal (a layered policy's call to a tablet's master).
    #[error("{message}")]
    Peer {
        /// The class of the refusal.
        kind: ErrorKind,
        /// What the node answered.
        message: String,
        /// The request field at fault, if any.
        field: Option<String>,
    },
    /// Another node answered an internal call with an error.
    #[error("{call} at the node at {addr} failed: {message}")]
    PeerFailed {
        /// The node's address.
        addr: String,
        /// The call.
        call: &'static str,
        /// What the node answered.
        message: String,
    },
    /// The metadata names no address for a node (it never registered, or left).
    #[error("{node} has no known address")]
    NoAddress {
        /// The node.
        node: datalayer_store::NodeId,
    },
    /// The tablet no longer exists (its table was dropped).
    #[error("{tablet} no longer exists")]
    TabletGone {
        /// The tablet.
        tablet: datalayer_store::TabletId,
    },
    /// This node's metadata is behind the tablet's replicas (a newer master already
    /// replicates to it): re-route with fresh metadata.
    #[error("{tablet} has a newer master than this node's metadata says; retry")]
    StaleMetadata {
        /// The tablet.
        tablet: datalayer_store::TabletId,
    },
    /// The in-sync replicas did not confirm in time the state an answer rests on
    /// (a committed read's high watermark, or a read-only write's current value);
    /// nothing was written.
    #[error(
        "{tablet}: the in-sync replicas did not confirm within {waited_ms} ms the state the answer rests on; nothing was written"
    )]
    NotConfirmed {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// How long the master waited.
        waited_ms: u64,
    },
    /// A planned hand-over was called off: the target did not catch up in time.
    #[error(
        "{target} did not catch up with {tablet}'s master in time; the hand-over was called off"
    )]
    HandOverCalledOff {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// The node it was to go to.
        target: datalayer_store::NodeId,
    },
    /// A node's tablet has no other in-sync replica to take over from it yet.
    #[error("{tablet} has no other in-sync replica to take over from {node} yet; retry later")]
    NoOtherReplica {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// The node it is to leave.
        node: datalayer_store::NodeId,
    },
    /// An abort asked for a record before a pending abort record: retry once that
    /// committed.
    #[error(
        "record {seq} of {tablet} precedes the abort record at {abort}; retry once it committed"
    )]
    AbortPending {
        /// The tablet.
        tablet: datalayer_store::TabletId,
        /// The record asked for.
        seq: datalayer_store::Seq,
        /// Where the pending abort record is.
        abort: datalayer_store::Seq,
    },
    /// The request was routed by a tablet generation the table has moved past (a
    /// split or a merge); nothing was executed. Carries the current descriptors.
    #[error(
        "table {table:?} was routed by {routed} generation {generation}, which it has moved past; route by the current tablets"
    )]
    RangeMismatch {
        /// The table.
        table: String,
        /// The tablet the request was routed by.
        routed: datalayer_store::TabletId,
        /// The generation it was routed by.
        generation: u64,
        /// The tablet holding the key now, and the routed one as it is now (if it
        /// still exists and differs).
        tablets: Vec<RangeInfo>,
    },
    /// The metadata group cannot take the change or answer now.
    #[error("metadata group: {0}")]
    Metadata(MetaUnavailable),
    /// Increment on a non-integer value, or overflow.
    #[error("value of the key is not a 64-bit decimal integer, or the increment overflows")]
    NotAnInteger,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] datalayer_store::Error),
    /// A bug or an unexpected state.
    #[error("internal: {0}")]
    Internal(String),
}

/// A tablet as a [`Error::RangeMismatch`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeInfo {
    /// The tablet.
    pub id: datalayer_store::TabletId,
    /// Inclusive start.
    pub start: Vec<u8>,
    /// Exclusive end; `None` is the end of the table.
    pub end: Option<Vec<u8>>,
    /// Its generation.
    pub generation: u64,
    /// Its master.
    pub master: datalayer_store::NodeId,
    /// Where the master serves, if known.
    pub master_addr: Option<String>,
}

/// Why the metadata group cannot take a change now. It is also the error side of a
/// `Propose` call's answer between members (serde JSON; a variant is only added).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum MetaUnavailable {
    /// This member is not the leader (and did not forward the change).
    #[error("this node is not the metadata leader (leader: {})", leader.map_or("unknown".to_string(), |l| l.to_string()))]
    NotLeader {
        /// The leader it knows, if any.
        leader: Option<datalayer_store::NodeId>,
    },
    /// The change was not committed in time (no quorum reachable?); it may still
    /// commit.
    #[error(
        "the change was not committed within {waited_ms} ms (no quorum reachable?); it may still commit"
    )]
    NotCommitted {
        /// How long the member waited.
        waited_ms: u64,
    },
    /// This member could not catch up with the leader's log.
    #[error("this node is behind on the metadata")]
    Behind,
    /// This member's part of the group has stopped.
    #[error("the metadata group stopped")]
    Stopped,
    /// The metadata changed under a compare-and-set change: read again and retry.
    #[error("the metadata changed meanwhile: {what}")]
    Conflict {
        /// What changed.
        what: String,
    },
    /// The member's Raft failed otherwise (what openraft said).
    #[error("{reason}")]
    Raft {
        /// openraft's error.
        reason: String,
    },
}

/// The class of an error, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request or limit.
    InvalidArgument,
    /// Unknown table.
    NotFound,
    /// Duplicate table.
    AlreadyExists,
    /// Try again later.
    Unavailable,
    /// Not built yet.
    NotSupported,
    /// Read below the GC horizon.
    TimestampCollected,
    /// Batch spans tablets.
    CrossTablet,
    /// Increment on a non-integer.
    NotAnInteger,
    /// Another node masters the tablet.
    NotMaster,
    /// A write's outcome is unknown.
    Ambiguous,
    /// A message from an old epoch.
    StaleEpoch,
    /// A write voided by an abort record.
    Aborted,
    /// Bytes on disk do not decode.
    Corruption,
    /// This node does not serve the tablet: re-route with fresh metadata.
    NotServing,
    /// The master is handing the tablet over: retry shortly.
    HandingOver,
    /// The master's lease lapsed: retry (another master may be appointed).
    LeaseLapsed,
    /// A follower replica is behind what the read needs: retry, or read at the master.
    ReplicaBehind,
    /// The node is stopping: retry at another node.
    Stopping,
    /// Routed by an old tablet generation: re-route by the descriptors, at once.
    RangeMismatch,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// Whether a request that failed with this kind may succeed if sent again
    /// (possibly elsewhere). An ambiguous write is never retried blindly.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::NotMaster
                | ErrorKind::NotServing
                | ErrorKind::HandingOver
                | ErrorKind::LeaseLapsed
                | ErrorKind::ReplicaBehind
                | ErrorKind::Stopping
                | ErrorKind::RangeMismatch
        )
    }
}

/// How a follower replica is behind what a read needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// It last heard its master longer ago than the read allows.
    Stale {
        /// Since it last heard its master, ms.
        heard_ms: u64,
        /// What the read allows, ms.
        max_ms: u64,
    },
    /// It has not caught up to the timestamp the read asks for.
    Timestamp {
        /// The timestamp asked for.
        wanted: datalayer_store::Timestamp,
    },
    /// It holds no replica to read from.
    NoReplica,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behind::Stale { heard_ms, max_ms } => write!(
                f,
                "this replica last heard its master {heard_ms} ms ago, more than the {max_ms} ms allowed"
            ),
            Behind::Timestamp { wanted } => {
                write!(
                    f,
                    "this replica has not caught up to timestamp {wanted} yet"
                )
            }
            Behind::NoReplica => f.write_str("this node holds no replica to read from"),
        }
    }
}

impl Error {
    /// An invalid argument error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::TableNotFound { .. } => ErrorKind::NotFound,
            Error::TableExists { .. } => ErrorKind::AlreadyExists,
            Error::NotSupported { .. } => ErrorKind::NotSupported,
            Error::TimestampCollected { .. } => ErrorKind::TimestampCollected,
            Error::CrossTablet { .. } => ErrorKind::CrossTablet,
            Error::NotAnInteger => ErrorKind::NotAnInteger,
            Error::NotMaster { .. } => ErrorKind::NotMaster,
            Error::Ambiguous { .. } | Error::OutcomeUnknown { .. } => ErrorKind::Ambiguous,
            Error::StaleEpoch { .. } => ErrorKind::StaleEpoch,
            Error::Aborted { .. } => ErrorKind::Aborted,
            Error::NotServing { .. } => ErrorKind::NotServing,
            Error::HandingOver { .. } => ErrorKind::HandingOver,
            Error::LeaseLapsed { .. } => ErrorKind::LeaseLapsed,
            Error::ReplicaBehind { .. } => ErrorKind::ReplicaBehind,
            Error::Stopping => ErrorKind::Stopping,
            Error::RangeMismatch { .. } => ErrorKind::RangeMismatch,
            Error::StaleMetadata { .. } | Error::Splitting { .. } => ErrorKind::NotServing,
            Error::Unreachable { .. }
            | Error::PeerFailed { .. }
            | Error::NoAddress { .. }
            | Error::NotConfirmed { .. }
            | Error::HandOverCalledOff { .. }
            | Error::NoOtherReplica { .. }
            | Error::AbortPending { .. }
            | Error::Metadata(_) => ErrorKind::Unavailable,
            Error::TabletGone { .. } => ErrorKind::NotFound,
            Error::Peer { kind, .. } => *kind,
            Error::Store(datalayer_store::Error::Corruption { .. }) => ErrorKind::Corruption,
            Error::Store(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn retryable(&self) -> bool {
        self.kind().retryable()
    }

    /// Where to send the request instead, if known.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::NotMaster { addr, .. } => addr.as_deref(),
            _ => None,
        }
    }

    /// The request field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { field, .. } => Some(field),
            Error::Peer { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

/// Result of the cluster crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
