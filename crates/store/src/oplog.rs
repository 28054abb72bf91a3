//! Oplog records: the unit of replication and of durability of a tablet.
//!
//! Every state change of a tablet is one record at a position `(epoch, seq)`. The
//! record, the versions it writes and the tablet's [`TabletState`] are written in one
//! RocksDB `WriteBatch`, so after any crash they agree.

use crate::hlc::Timestamp;
use crate::ids::{Epoch, Seq};
use serde::{Deserialize, Serialize};

/// One mutation of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Write a new version holding `value`.
    Put {
        /// The user key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Write a tombstone version: reads at or after it see no value.
    Delete {
        /// The user key.
        key: Vec<u8>,
    },
}

impl Mutation {
    /// The key the mutation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

/// What a record does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordBody {
    /// Marks the start of an epoch; a new master appends one before serving.
    Noop,
    /// Applies every mutation at the record's timestamp, atomically.
    Write(Vec<Mutation>),
    /// Voids the records from `from` up to this one (exclusive): their versions are
    /// deleted, atomically with this record; the records stay in the log. A master
    /// appends one to revert writes that have not committed.
    Abort {
        /// The first voided record.
        from: Seq,
        /// Timestamp of the record before `from`: committed reads stay at or below it
        /// until this record commits.
        before_ts: Timestamp,
    },
    /// Divides the tablet at `key` (DESIGN §8): the tablet keeps the keys below it,
    /// and the new tablet `right` takes the rest, starting from this point of the
    /// log (every replica that appends this record holds all of `right`'s data so
    /// far). Writes no versions: tablets of a table share its keyspace.
    Split {
        /// The first key of the right half.
        key: Vec<u8>,
        /// The right half.
        right: crate::ids::TabletId,
    },
    /// Takes the keys of the right neighbour `right` over (DESIGN §8): its master
    /// stopped ordering writes on it and every record of it up to `through` is
    /// committed, so every replica that appends this record holds all of its data.
    /// Writes no versions; its timestamp orders every later write of this tablet
    /// after every write of `right`. `requests` are `right`'s clients' last answered
    /// requests: their retries are answered from here.
    Absorb {
        /// The tablet that ends.
        right: crate::ids::TabletId,
        /// Its last record.
        through: Seq,
        /// Its clients' last answered requests.
        requests: Vec<Inherited>,
    },
}

/// A request answered by a tablet that another absorbed, as the absorbing tablet's
/// log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inherited {
    /// The request and its answer.
    pub origin: Origin,
    /// The timestamp it was written at.
    pub ts: Timestamp,
    /// Where it was written in the absorbed tablet's log.
    pub epoch: Epoch,
    /// Its seq there.
    pub seq: Seq,
}

/// A client's name for one of its write requests: the same id on a retry lets the
/// master answer from the log instead of applying the request twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The client (random, chosen by the client).
    pub client: u64,
    /// The request's number; a client's requests have increasing numbers.
    pub seq: u64,
}

/// What a request that wrote records answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The batch or compare-and-set was written.
    Done,
    /// This many live keys were deleted.
    RangeDeleted(u64),
    /// The counter's new value.
    Counter(i64),
}

/// The request a record completes (on its last record) and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The request.
    pub request: RequestId,
    /// What it answered.
    pub answer: Answer,
}

/// One record of a tablet's oplog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogRecord {
    /// Master epoch that ordered the record.
    pub epoch: Epoch,
    /// Dense position within the tablet's oplog.
    pub seq: Seq,
    /// Timestamp of every version the record writes.
    pub ts: Timestamp,
    /// What the record does.
    pub body: RecordBody,
    /// The client request this record completes, if it named itself.
    pub origin: Option<Origin>,
}

/// The replica state of one tablet, written with every record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TabletState {
    /// `(epoch, first seq of that epoch)`, oldest first.
    pub epoch_history: Vec<(Epoch, Seq)>,
    /// Seq of the last record in the oplog (0 when empty).
    pub log_end: Seq,
    /// Highest seq known durable on every member of the in-sync set.
    pub high_watermark: Seq,
    /// Timestamp of the last record; the clock restarts above it.
    pub last_ts: Timestamp,
}

impl TabletState {
    /// The epoch of the last record, if any.
    pub fn last_epoch(&self) -> Option<Epoch> {
        self.epoch_history.last().map(|(e, _)| *e)
    }

    /// The epoch of the record at `seq`, when the log holds it (or held it before
    /// trimming).
    pub fn epoch_at(&self, seq: Seq) -> Option<Epoch> {
        if seq.0 == 0 || seq > self.log_end {
            return None;
        }
        self.epoch_history
            .iter()
            .rev()
            .find(|(_, first)| *first <= seq)
            .map(|(e, _)| *e)
    }

    /// The state after cutting the log after `after`, whose record has timestamp
    /// `last_ts` (the clock restarts above the records that remain).
    pub fn truncated(&self, after: Seq, last_ts: Timestamp) -> TabletState {
        let mut state = self.clone();
        state.epoch_history.retain(|(_, first)| *first <= after);
        state.log_end = state.log_end.min(after);
        state.high_watermark = state.high_watermark.min(after);
        state.last_ts = last_ts;
        state
    }

    /// Advances the state over `record`, which must be the next in the log.
    pub fn advance(&mut self, record: &OplogRecord) {
        debug_assert_eq!(record.seq, self.log_end.next(), "records are dense");
        if self.last_epoch() != Some(record.epoch) {
            self.epoch_history.push((record.epoch, record.seq));
        }
        self.log_end = record.seq;
        self.last_ts = self.last_ts.max(record.ts);
    }
}
