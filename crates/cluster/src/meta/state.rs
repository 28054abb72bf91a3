//! The metadata state machine's core: commands in, decisions out, no I/O.
//!
//! Every node applies the same committed commands in the same order, so `apply` must
//! be deterministic: it reads nothing but the state and the command.

use crate::catalog::{
    DEFAULT_REPLICATION_FACTOR, DEFAULT_VERSION_RETENTION_SECS, ReplicaMove, TableDesc, TableSpec,
    TabletDesc, check_split_keys, validate_table_name,
};
use counts::Counts;
use datalayer_store::{Epoch, NodeId, TableId, TabletId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A change to the cluster's metadata: one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Create a table with one tablet mastered by `master`.
    CreateTable {
        /// What to create.
        spec: TableSpec,
        /// Succeed without change when it exists.
        if_not_exists: bool,
        /// The node that proposed it; it masters the tablet when no node is registered.
        proposer: NodeId,
    },
    /// Drop a live table; it moves to the dropped list until its data is purged.
    DropTable {
        /// The table's name.
        name: String,
    },
    /// Replace a live table's policy options (its policy validated them).
    SetTableOptions {
        /// The table's name.
        name: String,
        /// The new options.
        options: crate::policy::PolicyOptions,
    },
    /// A dropped table's data is gone everywhere.
    ForgetDropped {
        /// The table.
        table: TableId,
    },
    /// Removes a node from the cluster. Refused while it masters a tablet (moving a
    /// master moves its data, which comes with replication); replica sets that name
    /// it get another node where one is free.
    RemoveNode {
        /// The node.
        id: NodeId,
    },
    /// Changes nothing; its log index tells a follower how far to catch up.
    Sync,
    /// Failover or planned transfer: `master` (a member of the in-sync set) masters
    /// the tablet in the next epoch, and the old master leaves the in-sync set.
    /// Refused unless the tablet is still at `expect_epoch`.
    AppointMaster {
        /// The tablet.
        tablet: TabletId,
        /// The epoch the proposer read.
        expect_epoch: Epoch,
        /// The new master.
        master: NodeId,
    },
    /// The master changes its tablet's in-sync set. Refused unless the tablet is still
    /// at `expect_epoch` (a deposed master cannot change it).
    SetInSync {
        /// The tablet.
        tablet: TabletId,
        /// The epoch the proposer read (its own).
        expect_epoch: Epoch,
        /// The new set: the master and replicas caught up with it.
        in_sync: Vec<NodeId>,
    },
    /// Starts moving a replica of a tablet: `to` joins its replicas (outside the
    /// in-sync set, catching up from the master) and `from` is marked as leaving.
    /// Refused unless the tablet is still at `expect_conf` with no move under way,
    /// `from` holds a replica and `to`, a registered node, does not.
    MoveReplica {
        /// The tablet.
        tablet: TabletId,
        /// The replica-set version the proposer read.
        expect_conf: u64,
        /// The node giving its replica up.
        from: NodeId,
        /// The node taking it.
        to: NodeId,
    },
    /// Gives a tablet with fewer replicas than its table's factor one more, on `node`
    /// (it catches up from the master). Refused unless the tablet is still at
    /// `expect_conf`.
    AddReplica {
        /// The tablet.
        tablet: TabletId,
        /// The replica-set version the proposer read.
        expect_conf: u64,
        /// The new replica's node.
        node: NodeId,
    },
    /// Takes a replica away from a tablet: ends a move (`node` is its `from`, and
    /// `to` is in sync) or cancels it (`node` is its `to`). Refused unless the tablet
    /// is still at `expect_conf`, or when `node` is the master.
    DropReplica {
        /// The tablet.
        tablet: TabletId,
        /// The replica-set version the proposer read.
        expect_conf: u64,
        /// The node losing its replica.
        node: NodeId,
    },
    /// A tablet's master is about to split it at `key` (DESIGN §8): records the
    /// intent and takes the right half's id. Refused unless the tablet is still at
    /// `expect_generation`, has no other split or replica move under way, and `key`
    /// lies strictly inside it. Answers with the right half's id (the same again for
    /// the same intent).
    SplitIntent {
        /// The tablet.
        tablet: TabletId,
        /// The generation the proposer read.
        expect_generation: u64,
        /// The first key of the right half.
        key: Vec<u8>,
    },
    /// The split record is committed in the tablet's oplog: the tablet keeps
    /// `[start, key)` and `right` takes `[key, end)`, both in the next generation,
    /// with the same replicas, in-sync set and master. Done again when it is done.
    SplitCommit {
        /// The tablet (the left half).
        tablet: TabletId,
        /// The right half, as the intent named it.
        right: TabletId,
    },
    /// A master is about to merge two adjacent tablets of one table (DESIGN §8):
    /// records the intent on both (neither is handed over by the rebalancer while it
    /// stands; the merge gives `right` the master of `left` itself). Refused unless
    /// both are still at the generations the proposer read, `right` starts where
    /// `left` ends, they have the same replicas, every replica of both is in sync,
    /// and neither has a split, merge or replica move under way.
    MergeIntent {
        /// The tablet that stays.
        left: TabletId,
        /// The tablet that ends.
        right: TabletId,
        /// The generations the proposer read, left then right.
        expect_generations: (u64, u64),
    },
    /// `left`'s absorb record is committed: it takes `right`'s keys over in the next
    /// generation and `right` ends. Done again when it is done.
    MergeCommit {
        /// The tablet that stays.
        left: TabletId,
        /// The tablet that ends.
        right: TabletId,
    },
    /// Calls off a merge that cannot go on (the tablets no longer share a master):
    /// clears the intent from both; nothing else changed.
    MergeAbort {
        /// The tablet that stays.
        left: TabletId,
        /// The tablet that ends.
        right: TabletId,
    },
    /// A node extends its liveness record: succeeds only while the record still has
    /// `epoch`. Answers with the record either way.
    Heartbeat {
        /// The node.
        node: NodeId,
        /// The epoch the node knows its record at.
        epoch: super::liveness::LivenessEpoch,
        /// Its wall clock when sending, plus the lease length.
        expiration_ms: u64,
    },
    /// The controller ends a silent node's masterships: increments its liveness epoch,
    /// refused unless the record is still `seen` (the controller checks that it has
    /// expired by its clock before proposing).
    IncrementEpoch {
        /// The node.
        node: NodeId,
        /// The record the controller read.
        seen: super::liveness::Liveness,
    },
    /// A node announces where it listens. A node already known by `id` (or, without
    /// an id, by its gRPC address) keeps its id and gets the new addresses; a new one
    /// gets the next id.
    RegisterNode {
        /// The id the node already has, if any.
        id: Option<NodeId>,
        /// Where it serves gRPC.
        grpc_addr: String,
        /// Where it serves HTTP.
        http_addr: String,
    },
}

fn invalid(field: &str, message: String) -> MetaResponse {
    MetaResponse::Rejected(MetaError::Invalid {
        field: field.into(),
        message,
    })
}

/// A member of the cluster as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Where it serves gRPC (clients and peers).
    pub grpc_addr: String,
    /// Where it serves HTTP.
    pub http_addr: String,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaError {
    /// A live table has that name.
    Exists(String),
    /// No live table has that name.
    NotFound(String),
    /// The command is malformed.
    Invalid {
        /// The field at fault.
        field: String,
        /// Why.
        message: String,
    },
    /// The policy is not built yet.
    NotSupported(String),
    /// What the proposer read has changed since (compare-and-set failed).
    Conflict(String),
}

/// The answer to a command, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// The table after the command, and whether it was created.
    Table {
        /// The table.
        table: Box<TableDesc>,
        /// False when `if_not_exists` found it.
        created: bool,
    },
    /// The command took effect and has nothing to return.
    Done,
    /// The node's id.
    Node(NodeId),
    /// The log index a `Sync` was applied at.
    Synced(u64),
    /// The right half of a split.
    Split(TabletId),
    /// A node's liveness record after a heartbeat, and whether it was extended.
    Liveness {
        /// The record.
        record: super::liveness::Liveness,
        /// False when the record has another epoch than the heartbeat's.
        renewed: bool,
    },
    /// The command changed nothing.
    Rejected(MetaError),
}

/// The cluster's metadata as of some applied log position.
///
/// Its maps are persistent (`imbl`): a reader's copy costs O(1) and shares what did
/// not change; a command changes O(log n) of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetaState {
    /// Live tables by name (shared with readers without copying). Commands keep the
    /// tablet index with it; a state built by hand calls [`MetaState::reindex`].
    pub tables: imbl::OrdMap<String, Arc<TableDesc>>,
    /// The live table of each tablet, by name (derived from `tables`: rebuilt by
    /// [`MetaState::reindex`] after loading, kept by every command).
    #[serde(skip)]
    tablet_tables: imbl::OrdMap<TabletId, TabletAt>,
    /// Tablets per node (derived from `tables` like `tablet_tables`).
    #[serde(skip)]
    counts: Counts,
    /// Dropped tables whose data may still be on disk, by id.
    pub dropped: imbl::OrdMap<TableId, TableDesc>,
    /// The next id handed out; table and tablet ids share it and are never reused.
    pub next_id: u64,
    /// Registered nodes by id.
    pub nodes: imbl::OrdMap<NodeId, NodeInfo>,
    /// Nodes' liveness records (a node without one is at epoch 0, expired). Kept when
    /// a node is removed, so its epoch never goes back.
    #[serde(default)]
    pub liveness: imbl::OrdMap<NodeId, super::liveness::Liveness>,
}

/// Where a tablet is: its table and its start key (a tablet keeps its start for its
/// whole life: splits and merges move ends), so that finding it by id is a binary
/// search in its table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TabletAt {
    table: String,
    start: Vec<u8>,
}

impl TabletAt {
    fn of(table: &str, tablet: &TabletDesc) -> TabletAt {
        TabletAt {
            table: table.to_string(),
            start: tablet.start.clone(),
        }
    }
}

/// A record of the state as the state machine stores it: each its own key, so that a
/// command writes what it touched, not the whole metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKey {
    /// A live table: its own record and those of all its tablets.
    Table(String),
    /// One tablet of a live table (a command that changes one tablet writes that
    /// tablet's record, not its table's).
    Tablet {
        /// Its table.
        table: String,
        /// The tablet.
        id: TabletId,
    },
    /// Every live table.
    Tables,
    /// A dropped table not yet purged.
    Dropped(TableId),
    /// A registered node.
    Node(NodeId),
    /// Every registered node.
    Nodes,
    /// A node's liveness record.
    Liveness(NodeId),
}

impl MetaState {
    /// The records `cmd` may change, read before it is applied (a command rejected
    /// changes none of them, and writing them again is harmless).
    pub fn touched(&self, cmd: &MetaCommand) -> Vec<StateKey> {
        // A tablet's record, in the table of `of` (a split's right half is not
        // indexed yet: it goes in its left half's table).
        let tablet_key = |of: &TabletId, id: TabletId| {
            self.tablet_tables.get(of).map(|at| StateKey::Tablet {
                table: at.table.clone(),
                id,
            })
        };
        match cmd {
            MetaCommand::CreateTable { spec, .. } => vec![StateKey::Table(spec.name.clone())],
            MetaCommand::SetTableOptions { name, .. } => vec![StateKey::Table(name.clone())],
            MetaCommand::DropTable { name } => {
                let mut keys = vec![StateKey::Table(name.clone())];
                if let Some(t) = self.tables.get(name) {
                    keys.push(StateKey::Dropped(t.id));
                    keys.extend(t.tablets.iter().map(|tb| StateKey::Tablet {
                        table: name.clone(),
                        id: tb.id,
                    }));
                }
                keys
            }
            MetaCommand::ForgetDropped { table } => vec![StateKey::Dropped(*table)],
            MetaCommand::RemoveNode { id } => vec![StateKey::Node(*id), StateKey::Tables],
            MetaCommand::Sync => Vec::new(),
            MetaCommand::AppointMaster { tablet, .. }
            | MetaCommand::SetInSync { tablet, .. }
            | MetaCommand::MoveReplica { tablet, .. }
            | MetaCommand::AddReplica { tablet, .. }
            | MetaCommand::DropReplica { tablet, .. }
            | MetaCommand::SplitIntent { tablet, .. } => {
                tablet_key(tablet, *tablet).into_iter().collect()
            }
            MetaCommand::SplitCommit { tablet, right } => {
                [tablet_key(tablet, *tablet), tablet_key(tablet, *right)]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            MetaCommand::MergeIntent { left, right, .. }
            | MetaCommand::MergeCommit { left, right }
            | MetaCommand::MergeAbort { left, right } => {
                [tablet_key(left, *left), tablet_key(left, *right)]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            MetaCommand::Heartbeat { node, .. } | MetaCommand::IncrementEpoch { node, .. } => {
                vec![StateKey::Liveness(*node)]
            }
            MetaCommand::RegisterNode { .. } => vec![StateKey::Nodes],
        }
    }

    /// Rebuilds the derived index of tablets (after the state was loaded).
    pub fn reindex(&mut self) {
        self.tablet_tables = self
            .tables
            .values()
            .flat_map(|t| {
                t.tablets
                    .iter()
                    .map(|tb| (tb.id, TabletAt::of(&t.name, tb)))
            })
            .collect();
        self.counts = Counts::of(self.tables.values().map(|t| t.as_ref()));
    }

    /// Whether the kept tablet counts equal a count from scratch (tests check it after
    /// every command they apply).
    #[cfg(test)]
    pub(crate) fn counts_agree(&self) -> bool {
        self.counts == Counts::of(self.tables.values().map(|t| t.as_ref()))
    }

    /// Inserts or replaces a live table, indexing its tablets.
    fn insert_table(&mut self, table: Arc<TableDesc>) {
        for tb in &table.tablets {
            self.tablet_tables
                .insert(tb.id, TabletAt::of(&table.name, tb));
        }
        self.tables.insert(table.name.clone(), table);
    }

    /// Removes a live table and its tablets from the index.
    fn remove_table(&mut self, name: &str) -> Option<Arc<TableDesc>> {
        let table = self.tables.remove(name)?;
        for tb in &table.tablets {
            self.tablet_tables.remove(&tb.id);
        }
        Some(table)
    }

    /// A node's liveness record.
    pub fn liveness(&self, node: NodeId) -> super::liveness::Liveness {
        self.liveness.get(&node).copied().unwrap_or_default()
    }

    fn heartbeat(
        &mut self,
        node: NodeId,
        epoch: super::liveness::LivenessEpoch,
        expiration_ms: u64,
    ) -> MetaResponse {
        if !self.nodes.contains_key(&node) {
            return invalid("node", format!("{node} is not registered"));
        }
        let record = self.liveness.entry(node).or_default();
        let renewed = record.heartbeat(epoch, expiration_ms);
        MetaResponse::Liveness {
            record: *record,
            renewed,
        }
    }

    fn increment_epoch(&mut self, node: NodeId, seen: super::liveness::Liveness) -> MetaResponse {
        let record = self.liveness.entry(node).or_default();
        if *record != seen {
            return MetaResponse::Rejected(MetaError::Conflict(format!(
                "the liveness record of {node} is now {record:?}, not {seen:?}"
            )));
        }
        record.epoch = record.epoch.next();
        MetaResponse::Done
    }

    fn take_id(&mut self) -> u64 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Master and replicas of a new tablet: the master is the registered node that
    /// masters the fewest tablets (lowest id on ties), replicas the master and then
    /// the nodes holding the fewest replicas, up to the replication factor. `counts`
    /// then counts the new tablet too.
    fn place(
        &self,
        counts: &mut Counts,
        proposer: NodeId,
        replication_factor: u32,
    ) -> (NodeId, Vec<NodeId>) {
        if self.nodes.is_empty() {
            return (proposer, vec![proposer]);
        }
        let master = self
            .nodes
            .keys()
            .min_by_key(|id| (counts.masters(**id), **id))
            .copied()
            .unwrap_or(proposer);
        let factor = match replication_factor {
            0 => DEFAULT_REPLICATION_FACTOR,
            n => n,
        } as usize;
        let mut others: Vec<(usize, NodeId)> = self
            .nodes
            .keys()
            .filter(|id| **id != master)
            .map(|id| (counts.replicas(*id), *id))
            .collect();
        others.sort();
        let mut chosen = vec![master];
        chosen.extend(
            others
                .into_iter()
                .map(|(_, id)| id)
                .take(factor.saturating_sub(1)),
        );
        counts.add(master, &chosen);
        (master, chosen)
    }

    fn remove_node(&mut self, id: NodeId) -> MetaResponse {
        if !self.nodes.contains_key(&id) {
            return MetaResponse::Rejected(MetaError::Invalid {
                field: "node_id".into(),
                message: format!("{id} is not a member of the cluster"),
            });
        }
        let mastered: Vec<String> = self
            .tables
            .values()
            .filter(|t| t.tablets.iter().any(|tb| tb.master == id))
            .map(|t| t.name.clone())
            .collect();
        if !mastered.is_empty() {
            return MetaResponse::Rejected(MetaError::Invalid {
                field: "node_id".into(),
                message: format!(
                    "{id} masters tablets of {mastered:?}; moving masters (and their data) is not supported yet"
                ),
            });
        }
        self.nodes.remove(&id);
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let names: Vec<String> = self.tables.keys().cloned().collect();
        for name in names {
            let Some(table) = self.tables.get_mut(&name) else {
                continue;
            };
            let t = Arc::make_mut(table);
            for tablet in t.tablets.iter_mut() {
                if tablet.moving.is_some_and(|m| m.from == id || m.to == id) {
                    // A move it was part of ends: the other side keeps its slot.
                    tablet.moving = None;
                    tablet.replicas.retain(|r| *r != id);
                    tablet.in_sync.retain(|r| *r != id);
                    tablet.conf_version += 1;
                    continue;
                }
                if let Some(pos) = tablet.replicas.iter().position(|r| *r == id) {
                    tablet.conf_version += 1;
                    match nodes.iter().find(|n| !tablet.replicas.contains(n)) {
                        Some(free) => tablet.replicas[pos] = *free,
                        None => {
                            tablet.replicas.remove(pos);
                        }
                    }
                    tablet.in_sync.retain(|r| *r != id);
                }
            }
        }
        MetaResponse::Done
    }

    /// The name of the tablet's table and its index there: O(log n).
    fn locate(&self, id: TabletId) -> Option<(String, usize)> {
        let at = self.tablet_tables.get(&id)?;
        let table = self.tables.get(&at.table)?;
        let i = table.index_of_start(&at.start)?;
        (table.tablets[i].id == id).then(|| (at.table.clone(), i))
    }

    fn tablet_mut(&mut self, id: TabletId) -> Option<&mut TabletDesc> {
        let (name, i) = self.locate(id)?;
        let table = self.tables.get_mut(&name)?;
        Arc::make_mut(table).tablets.get_mut(i)
    }

    /// The live table holding the tablet with that id.
    pub fn table_of(&self, id: TabletId) -> Option<&Arc<TableDesc>> {
        self.tables.get(&self.tablet_tables.get(&id)?.table)
    }

    /// The tablet with that id, if its table is live: O(log n), however many
    /// tablets its table has.
    pub fn tablet(&self, id: TabletId) -> Option<&TabletDesc> {
        let (name, i) = self.locate(id)?;
        self.tables.get(&name)?.tablets.get(i)
    }

    /// The tablet, if it still exists at the epoch the proposer read.
    fn tablet_at(&mut self, id: TabletId, expect: Epoch) -> Result<&mut TabletDesc, MetaResponse> {
        let tablet = self.tablet_mut(id).ok_or_else(|| {
            MetaResponse::Rejected(MetaError::Conflict(format!("{id} no longer exists")))
        })?;
        if tablet.master_epoch != expect {
            return Err(MetaResponse::Rejected(MetaError::Conflict(format!(
                "{id} is at {} now, not {expect}",
                tablet.master_epoch
            ))));
        }
        Ok(tablet)
    }

    /// The tablet, if it still exists at the replica-set version the proposer read.
    fn tablet_at_conf(
        &mut self,
        id: TabletId,
        expect: u64,
    ) -> Result<&mut TabletDesc, MetaResponse> {
        let tablet = self.tablet_mut(id).ok_or_else(|| {
            MetaResponse::Rejected(MetaError::Conflict(format!("{id} no longer exists")))
        })?;
        if tablet.conf_version != expect {
            return Err(MetaResponse::Rejected(MetaError::Conflict(format!(
                "the replicas of {id} are at version {} now, not {expect}",
                tablet.conf_version
            ))));
        }
        if tablet.split.is_some() || tablet.merge.is_some() {
            return Err(MetaResponse::Rejected(MetaError::Conflict(format!(
                "{id} is splitting or merging: its replicas change once that is over"
            ))));
        }
        Ok(tablet)
    }

    fn move_replica(
        &mut self,
        id: TabletId,
        expect: u64,
        from: NodeId,
        to: NodeId,
    ) -> MetaResponse {
        if !self.nodes.contains_key(&to) {
            return invalid("to", format!("{to} is not a member of the cluster"));
        }
        let tablet = match self.tablet_at_conf(id, expect) {
            Ok(t) => t,
            Err(rejected) => return rejected,
        };
        if let Some(m) = tablet.moving {
            return MetaResponse::Rejected(MetaError::Conflict(format!(
                "{id} is already moving a replica from {} to {}",
                m.from, m.to
            )));
        }
        if !tablet.replicas.contains(&from) {
            return invalid("from", format!("{from} holds no replica of {id}"));
        }
        if tablet.replicas.contains(&to) {
            return invalid("to", format!("{to} already holds a replica of {id}"));
        }
        tablet.replicas.push(to);
        tablet.moving = Some(ReplicaMove { from, to });
        tablet.conf_version += 1;
        MetaResponse::Done
    }

    fn add_replica(&mut self, id: TabletId, expect: u64, node: NodeId) -> MetaResponse {
        if !self.nodes.contains_key(&node) {
            return invalid("node", format!("{node} is not a member of the cluster"));
        }
        let factor = self
            .table_of(id)
            .map_or(0, |t| t.replication_factor as usize);
        let tablet = match self.tablet_at_conf(id, expect) {
            Ok(t) => t,
            Err(rejected) => return rejected,
        };
        if tablet.replicas.contains(&node) {
            return invalid("node", format!("{node} already holds a replica of {id}"));
        }
        if tablet.replicas.len() >= factor {
            return invalid("node", format!("{id} already has its {factor} replicas"));
        }
        tablet.replicas.push(node);
        tablet.conf_version += 1;
        MetaResponse::Done
    }

    fn drop_replica(&mut self, id: TabletId, expect: u64, node: NodeId) -> MetaResponse {
        let tablet = match self.tablet_at_conf(id, expect) {
            Ok(t) => t,
            Err(rejected) => return rejected,
        };
        if tablet.master == node {
            return invalid("node", format!("{node} masters {id}: hand it over first"));
        }
        if !tablet.replicas.contains(&node) {
            return invalid("node", format!("{node} holds no replica of {id}"));
        }
        if let Some(m) = tablet.moving
            && m.from == node
            && !tablet.in_sync.contains(&m.to)
        {
            return invalid(
                "node",
                format!(
                    "{} has not caught up yet: {node} keeps its replica of {id}",
                    m.to
                ),
            );
        }
        tablet.replicas.retain(|n| *n != node);
        tablet.in_sync.retain(|n| *n != node);
        if tablet
            .moving
            .is_some_and(|m| m.from == node || m.to == node)
        {
            tablet.moving = None;
        }
        tablet.conf_version += 1;
        MetaResponse::Done
    }

    fn appoint_master(&mut self, id: TabletId, expect: Epoch, master: NodeId) -> MetaResponse {
        let liveness = self.liveness(master).epoch;
        let tablet = match self.tablet_at(id, expect) {
            Ok(t) => t,
            Err(rejected) => return rejected,
        };
        if !tablet.in_sync.contains(&master) {
            return MetaResponse::Rejected(MetaError::Invalid {
                field: "master".into(),
                message: format!("{master} is not in the in-sync set of {id}"),
            });
        }
        let old = tablet.master;
        if old != master {
            tablet.in_sync.retain(|n| *n != old);
        }
        tablet.master = master;
        tablet.master_epoch = Epoch(expect.0 + 1);
        tablet.master_liveness = liveness;
        MetaResponse::Done
    }

    fn set_in_sync(&mut self, id: TabletId, expect: Epoch, in_sync: &[NodeId]) -> MetaResponse {
        let tablet = match self.tablet_at(id, expect) {
            Ok(t) => t,
            Err(rejected) => return rejected,
        };
        if !in_sync.contains(&tablet.master) || in_sync.iter().any(|n| !tablet.replicas.contains(n))
        {
            return MetaResponse::Rejected(MetaError::Invalid {
                field: "in_sync".into(),
                message: format!(
                    "{in_sync:?} must hold the master {} and only replicas of {id}",
                    tablet.master
                ),
            });
        }
        let mut set = in_sync.to_vec();
        set.sort();
        set.dedup();
        tablet.in_sync = set;
        MetaResponse::Done
    }

    /// Applies one committed command.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        // The tablet counts follow what the command touches: out before, in after.
        let (mut all, mut names, mut ids) = (false, Vec::new(), Vec::new());
        for key in self.touched(cmd) {
            match key {
                StateKey::Table(name) => names.push(name),
                StateKey::Tablet { table, id } => ids.push((table, id)),
                StateKey::Tables => all = true,
                _ => {}
            }
        }
        // A table counted whole counts its tablets.
        ids.retain(|(table, _)| !names.contains(table));
        self.count(&names, &ids, false);
        let response = self.apply_command(cmd);
        if all {
            self.counts = Counts::of(self.tables.values().map(|t| t.as_ref()));
        } else {
            self.count(&names, &ids, true);
        }
        response
    }

    /// Counts (`add`) or stops counting the tables `names` and the tablets `ids` as
    /// they are now.
    fn count(&mut self, names: &[String], ids: &[(String, TabletId)], add: bool) {
        for name in names {
            if let Some(t) = self.tables.get(name) {
                match add {
                    true => self.counts.add_table(t),
                    false => self.counts.remove_table(t),
                }
            }
        }
        for (_, id) in ids {
            if let Some((name, i)) = self.locate(*id) {
                let tb = &self.tables[&name].tablets[i];
                match add {
                    true => self.counts.add(tb.master, &tb.replicas),
                    false => self.counts.remove(tb.master, &tb.replicas),
                }
            }
        }
    }

    fn apply_command(&mut self, cmd: &MetaCommand) -> MetaResponse {
        match cmd {
            MetaCommand::CreateTable {
                spec,
                if_not_exists,
                proposer,
            } => {
                if let Err(e) = validate_table_name(&spec.name) {
                    return MetaResponse::Rejected(MetaError::Invalid {
                        field: "name".into(),
                        message: e.to_string(),
                    });
                }
                if let Some(existing) = self.tables.get(&spec.name) {
                    return if *if_not_exists {
                        MetaResponse::Table {
                            table: Box::new(existing.as_ref().clone()),
                            created: false,
                        }
                    } else {
                        MetaResponse::Rejected(MetaError::Exists(spec.name.clone()))
                    };
                }
                if let Err(message) = check_split_keys(&spec.split_keys) {
                    return invalid("split_keys", message);
                }
                let table = TableId(self.take_id());
                // A scratch copy (O(1)): `apply` counts the new table once it is in.
                let mut counts = self.counts.clone();
                let mut tablets = crate::catalog::Tablets::new();
                let mut starts = std::iter::once(Vec::new()).chain(spec.split_keys.iter().cloned());
                let mut start = starts.next().unwrap_or_default();
                loop {
                    let end = starts.next();
                    let (master, replicas) =
                        self.place(&mut counts, *proposer, spec.replication_factor);
                    tablets.push_back(TabletDesc {
                        id: TabletId(self.take_id()),
                        table,
                        start: std::mem::take(&mut start),
                        end: end.clone(),
                        generation: 1,
                        in_sync: replicas.clone(),
                        replicas,
                        master,
                        master_epoch: Epoch(1),
                        master_liveness: self.liveness(master).epoch,
                        conf_version: 1,
                        moving: None,
                        split: None,
                        merge: None,
                        absorbed: None,
                    });
                    match end {
                        Some(next) => start = next,
                        None => break,
                    }
                }
                let desc = TableDesc {
                    id: table,
                    name: spec.name.clone(),
                    policy: spec.policy,
                    replication_factor: match spec.replication_factor {
                        0 => DEFAULT_REPLICATION_FACTOR,
                        n => n,
                    },
                    version_retention_secs: match spec.version_retention_secs {
                        0 => DEFAULT_VERSION_RETENTION_SECS,
                        n => n,
                    },
                    options: spec.options.clone(),
                    tablets,
                };
                self.insert_table(Arc::new(desc.clone()));
                MetaResponse::Table {
                    table: Box::new(desc),
                    created: true,
                }
            }
            MetaCommand::DropTable { name } => match self.remove_table(name) {
                Some(desc) => {
                    let desc = desc.as_ref().clone();
                    self.dropped.insert(desc.id, desc.clone());
                    MetaResponse::Table {
                        table: Box::new(desc),
                        created: false,
                    }
                }
                None => MetaResponse::Rejected(MetaError::NotFound(name.clone())),
            },
            MetaCommand::SetTableOptions { name, options } => match self.tables.get(name) {
                Some(t) => {
                    let mut desc = t.as_ref().clone();
                    desc.options = options.clone();
                    self.tables.insert(name.clone(), Arc::new(desc.clone()));
                    MetaResponse::Table {
                        table: Box::new(desc),
                        created: false,
                    }
                }
                None => MetaResponse::Rejected(MetaError::NotFound(name.clone())),
            },
            MetaCommand::ForgetDropped { table } => {
                self.dropped.remove(table);
                MetaResponse::Done
            }
            MetaCommand::RemoveNode { id } => self.remove_node(*id),
            MetaCommand::AppointMaster {
                tablet,
                expect_epoch,
                master,
            } => self.appoint_master(*tablet, *expect_epoch, *master),
            MetaCommand::SetInSync {
                tablet,
                expect_epoch,
                in_sync,
            } => self.set_in_sync(*tablet, *expect_epoch, in_sync),
            MetaCommand::MoveReplica {
                tablet,
                expect_conf,
                from,
                to,
            } => self.move_replica(*tablet, *expect_conf, *from, *to),
            MetaCommand::AddReplica {
                tablet,
                expect_conf,
                node,
            } => self.add_replica(*tablet, *expect_conf, *node),
            MetaCommand::DropReplica {
                tablet,
                expect_conf,
                node,
            } => self.drop_replica(*tablet, *expect_conf, *node),
            MetaCommand::SplitIntent {
                tablet,
                expect_generation,
                key,
            } => self.split_intent(*tablet, *expect_generation, key),
            MetaCommand::SplitCommit { tablet, right } => self.split_commit(*tablet, *right),
            MetaCommand::MergeIntent {
                left,
                right,
                expect_generations,
            } => self.merge_intent(*left, *right, *expect_generations),
            MetaCommand::MergeCommit { left, right } => self.merge_commit(*left, *right),
            MetaCommand::MergeAbort { left, right } => self.merge_abort(*left, *right),
            // The state machine answers with the entry's index.
            MetaCommand::Sync => MetaResponse::Done,
            MetaCommand::Heartbeat {
                node,
                epoch,
                expiration_ms,
            } => self.heartbeat(*node, *epoch, *expiration_ms),
            MetaCommand::IncrementEpoch { node, seen } => self.increment_epoch(*node, *seen),
            MetaCommand::RegisterNode {
                id,
                grpc_addr,
                http_addr,
            } => {
                let id = id
                    .or_else(|| {
                        self.nodes
                            .values()
                            .find(|n| &n.grpc_addr == grpc_addr)
                            .map(|n| n.id)
                    })
                    .unwrap_or_else(|| {
                        NodeId(self.nodes.keys().next_back().map_or(1, |n| n.0 + 1))
                    });
                self.nodes.insert(
                    id,
                    NodeInfo {
                        id,
                        grpc_addr: grpc_addr.clone(),
                        http_addr: http_addr.clone(),
                    },
                );
                MetaResponse::Node(id)
            }
        }
    }
}

mod counts;
mod ranges;
#[cfg(test)]
mod tests;
