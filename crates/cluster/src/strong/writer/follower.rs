//! The writer's follower side: following a tablet, staging the records its master
//! ships (cutting a suffix that disagrees first), snapshots, and dropping a replica.

use super::*;

impl Writer {
    pub(super) fn follow(&mut self, desc: &TabletDesc) -> Result<()> {
        if let Some(s) = self.served.get_mut(&desc.id) {
            if desc.master_epoch > s.epoch
                || (s.role == Role::Follower && desc.master_epoch == s.epoch)
            {
                let was_master = s.role == Role::Master;
                s.epoch = desc.master_epoch;
                s.role = Role::Follower;
                if was_master {
                    tracing::info!(tablet = %desc.id, epoch = %desc.master_epoch, "no longer master: following the new master");
                    self.demote(desc.id);
                }
            }
            return Ok(());
        }
        let last_ts = self.follow_loaded(desc.id, desc.table, desc.master_epoch)?;
        self.clock.observe(last_ts);
        Ok(())
    }

    /// Starts following `tablet` at `epoch` from its state as stored, or at its log's
    /// last epoch if that is newer (a master of an older epoch, or a copy of the
    /// metadata behind, must not have newer records cut); returns the timestamp of its
    /// last record.
    fn follow_loaded(
        &mut self,
        tablet: TabletId,
        table: TableId,
        epoch: Epoch,
    ) -> Result<Timestamp> {
        let (state, trimmed_below, (requests, voids, split)) = self.load(tablet)?;
        let last_ts = state.last_ts;
        let epoch = state.last_epoch().map_or(epoch, |last| last.max(epoch));
        self.served.insert(
            tablet,
            Served {
                table,
                epoch,
                role: Role::Follower,
                fenced: false,
                state,
                trimmed_below,
                requests,
                voids,
                split,
                retained: Default::default(),
            },
        );
        self.publish_committed(tablet);
        Ok(last_ts)
    }

    /// Checks a master's records and stages those that extend this replica's log.
    /// A suffix that disagrees with the master's history is cut first.
    pub(super) fn stage_replica(&mut self, group: &mut Group, req: Replicate) -> Result<()> {
        if self.dropped.contains(&req.tablet) {
            return Err(Error::NotServing { tablet: req.tablet });
        }
        if !self.served.contains_key(&req.tablet) {
            // The metadata naming this node a replica has not reached it yet.
            self.follow_loaded(req.tablet, req.table, req.epoch)?;
        }
        let served = self.served.get_mut(&req.tablet).expect("inserted above");
        if req.epoch < served.epoch || (req.epoch == served.epoch && served.role == Role::Master) {
            return Err(Error::StaleEpoch {
                tablet: req.tablet,
                got: req.epoch,
                current: served.epoch,
            });
        }
        if served.role == Role::Master {
            tracing::info!(tablet = %req.tablet, epoch = %req.epoch, "a newer master replicates to this node: following it");
            served.role = Role::Follower;
            self.demote(req.tablet);
        }
        let served = self.served.get_mut(&req.tablet).expect("served");
        served.epoch = req.epoch;
        let table = served.table;
        let current = group
            .appends
            .get(&req.tablet)
            .map_or_else(|| served.state.clone(), |a| a.state.clone());
        let agreed = agreement(&current, &req.history, req.log_end);
        if agreed < current.log_end {
            // Cut the divergent suffix: commit what is pending, then truncate.
            self.commit(std::mem::take(group));
            self.truncate(table, req.tablet, &req.range, agreed)?;
        }
        let served = self.served.get(&req.tablet).expect("served");
        let mut state = group
            .appends
            .get(&req.tablet)
            .map_or_else(|| served.state.clone(), |a| a.state.clone());
        let fresh: Vec<OplogRecord> = req
            .records
            .into_iter()
            .filter(|r| r.seq > state.log_end)
            .collect();
        if let Some(first) = fresh.first()
            && first.seq != state.log_end.next()
        {
            // A gap: the answer (our log end) tells the master where to resume.
            return Ok(());
        }
        if let Some(bad) = fresh.iter().find(|r| r.epoch > req.epoch) {
            return Err(Error::invalid(
                "records",
                format!(
                    "record {} of {} is from epoch {} above the master's {}",
                    bad.seq, req.tablet, bad.epoch, req.epoch
                ),
            ));
        }
        // An absorb record needs the whole log of the tablet it takes over, up to its
        // last record, held here: a replica that missed some of it must not serve
        // its keys (it refuses, and its master sends it a snapshot of the merged
        // tablet once the metadata holds the merge).
        for r in &fresh {
            if let RecordBody::Absorb { right, through, .. } = &r.body {
                let held = self.served.get(right).map_or(Seq(0), |s| s.state.log_end);
                if held < *through {
                    return Err(Error::ReplicaBehind {
                        tablet: *right,
                        behind: crate::error::Behind::NoReplica,
                    });
                }
            }
        }
        let served = self.served.get_mut(&req.tablet).expect("served");
        let mut splits = Vec::new();
        for r in &fresh {
            state.advance(r);
            self.clock.observe(r.ts);
            remember(&mut served.requests, req.tablet, r);
            if let Some(void) = Void::of(r) {
                served.voids.push(void);
                forget_voided(&mut served.requests, &served.voids);
            }
            if let Some(mark) = SplitMark::of(r) {
                served.split = Some(mark.clone());
                splits.push((mark, r.epoch, r.ts, served.requests.clone()));
            }
            if matches!(r.body, RecordBody::Absorb { .. }) {
                // The keys past the last split are this tablet's again.
                served.split = None;
            }
        }
        for (mark, epoch, ts, requests) in splits {
            self.start_right_half(group, table, &mark, epoch, ts, requests)?;
        }
        state.high_watermark = req.high_watermark.min(state.log_end);
        // Follower reads: every committed record up to the master's high watermark is
        // here, so the master's committed timestamp is safe; otherwise only this
        // replica's own prefix, all of it committed, is.
        let read_at = if state.log_end >= req.high_watermark {
            req.committed_ts
        } else {
            state.last_ts
        };
        group
            .replica_reads
            .insert(req.tablet, (read_at, std::time::Instant::now()));
        let append = group
            .appends
            .entry(req.tablet)
            .or_insert_with(|| TabletAppend {
                table,
                tablet: req.tablet,
                records: Vec::new(),
                state: state.clone(),
            });
        append.records.extend(fresh);
        append.state = state;
        Ok(())
    }

    /// Cuts a follower's log after `after`, deleting exactly the cut records' versions.
    /// When the oplog no longer holds every record to cut (trimmed, or the replica came
    /// from a snapshot), the whole replica is deleted instead and catches up again.
    pub(super) fn truncate(
        &mut self,
        table: TableId,
        tablet: TabletId,
        range: &KeyRange,
        after: Seq,
    ) -> Result<()> {
        let served = self.served.get_mut(&tablet).expect("served");
        // The records after `after`, and `after` itself for its timestamp.
        let needed = if after.0 == 0 { Seq(1) } else { after };
        if served.trimmed_below > needed {
            tracing::warn!(%tablet, %after, "records to cut were trimmed: deleting the replica to catch up again");
            return self.wipe(table, tablet, range);
        }
        let last_ts = if after.0 == 0 {
            Timestamp(0)
        } else {
            let rec = self.engine.read_oplog(tablet, after, 1)?;
            match rec.first() {
                Some(r) if r.seq == after => r.ts,
                _ => {
                    // Not in the oplog: trimmed, or the base a split began this half
                    // at (after a restart the oplog cannot tell how far it was
                    // trimmed). The whole replica catches up again instead.
                    tracing::warn!(%tablet, %after, "the record to cut after is not in the oplog: deleting the replica to catch up again");
                    return self.wipe(table, tablet, range);
                }
            }
        };
        let cut = served.state.truncated(after, last_ts);
        let removed = match self.engine.truncate(table, tablet, after, &cut) {
            Ok(n) => n,
            Err(datalayer_store::Error::Trimmed { .. }) => {
                tracing::warn!(%tablet, %after, "records to restore were trimmed: deleting the replica to catch up again");
                return self.wipe(table, tablet, range);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::warn!(%tablet, %after, removed, "cut records the master does not hold");
        let (requests, voids, split) = self.recall(tablet, cut.log_end)?;
        let served = self.served.get_mut(&tablet).expect("served");
        let undone = served.split.take().filter(|mark| mark.seq > after);
        served.state = cut;
        served.retained.forget_after(after);
        served.requests = requests;
        served.voids = voids;
        served.split = split;
        if let Some(mark) = undone {
            // The split record was not committed (the master does not hold it): the
            // right half it began never served, and its base goes with it.
            tracing::warn!(%tablet, right = %mark.right, "cut a split record: its right half goes");
            self.engine.append(&[TabletAppend {
                table,
                tablet: mark.right,
                records: Vec::new(),
                state: TabletState::default(),
            }])?;
            self.served.remove(&mark.right);
        }
        self.publish_committed(tablet);
        Ok(())
    }

    /// Replaces this node's replica of a tablet with a master's export, unless the
    /// master's epoch is older than the one this node follows.
    pub(super) fn install_snapshot(&mut self, install: Install) -> Result<(Seq, Timestamp)> {
        let tablet = install.tablet;
        if self.dropped.contains(&tablet) {
            return Err(Error::NotServing { tablet });
        }
        if let Some(served) = self.served.get(&tablet) {
            if install.epoch < served.epoch
                || (install.epoch == served.epoch && served.role == Role::Master)
            {
                return Err(Error::StaleEpoch {
                    tablet,
                    got: install.epoch,
                    current: served.epoch,
                });
            }
            if served.role == Role::Master {
                self.demote(tablet);
            }
        }
        // No follower reads while the replica is replaced.
        self.replica_reads.write().remove(&tablet);
        self.served.remove(&tablet);
        self.engine.import_tablet(
            install.table,
            tablet,
            &install.range,
            &install.state,
            install.file.as_deref(),
        )?;
        self.clock.observe(install.state.last_ts);
        let (log_end, last_ts) = (install.state.log_end, install.state.last_ts);
        tracing::info!(%tablet, %log_end, "installed a snapshot of the master's replica");
        self.served.insert(
            tablet,
            Served {
                table: install.table,
                epoch: install.epoch,
                role: Role::Follower,
                fenced: false,
                state: install.state,
                trimmed_below: log_end.next(),
                requests: Requests::new(),
                voids: Vec::new(),
                split: None,
                retained: Default::default(),
            },
        );
        self.publish_committed(tablet);
        Ok((log_end, last_ts))
    }

    /// Begins the right half of a split whose record this replica just staged (in the
    /// same group, so both are durable together): its base state, unless this node
    /// holds the right half already (from a snapshot of its master), and the requests
    /// the left half's log answered so far, so that a retry reaching the right half
    /// is answered, not applied again.
    pub(super) fn start_right_half(
        &mut self,
        group: &mut Group,
        table: TableId,
        mark: &SplitMark,
        epoch: Epoch,
        ts: Timestamp,
        requests: Requests,
    ) -> Result<()> {
        let held = self.served.contains_key(&mark.right)
            || self
                .engine
                .tablet_state(mark.right)?
                .is_some_and(|s| s.log_end.0 > 0);
        if held {
            return Ok(());
        }
        let base = SplitMark::base(epoch, ts);
        group.appends.insert(
            mark.right,
            TabletAppend {
                table,
                tablet: mark.right,
                records: Vec::new(),
                state: base.clone(),
            },
        );
        self.served.insert(
            mark.right,
            Served {
                table,
                epoch,
                role: Role::Follower,
                fenced: false,
                state: base,
                // The base is not in the oplog: cutting down to it deletes the
                // replica (it catches up from a snapshot).
                trimmed_below: Seq(2),
                requests,
                voids: Vec::new(),
                split: None,
                retained: Default::default(),
            },
        );
        Ok(())
    }

    /// Deletes this node's replica of a tablet it no longer holds (unlike a dropped
    /// table's, it may come back: the metadata can name this node again).
    pub(super) fn drop_replica(&mut self, desc: &TabletDesc) -> Result<()> {
        self.engine
            .drop_tablet(desc.table, desc.id, &desc.range())?;
        self.served.remove(&desc.id);
        self.demote(desc.id);
        self.replica_reads.write().remove(&desc.id);
        Ok(())
    }
}
