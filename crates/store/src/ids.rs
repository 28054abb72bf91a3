//! Newtype identifiers shared by every crate. A bare `u64` never crosses a module boundary.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A table, unique for the life of the cluster (never reused after a drop).
    TableId,
    "table-"
);
id_type!(
    /// A tablet: one half-open key range of one table.
    TabletId,
    "tablet-"
);
id_type!(
    /// A node of the cluster.
    NodeId,
    "node-"
);
id_type!(
    /// A master epoch: bumped each time a tablet gets a new master.
    Epoch,
    "epoch-"
);
id_type!(
    /// A dense, per-tablet oplog sequence number; the first record has seq 1.
    Seq,
    "seq-"
);

impl Seq {
    /// The seq after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}
