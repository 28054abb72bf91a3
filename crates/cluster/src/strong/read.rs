//! Reads of strong tablets: committed and latest at the master (behind its lease),
//! and follower reads at any replica with their staleness.

use super::*;

/// How far ahead of this node's clock a read timestamp may be (the clock moves up to
/// it); one further ahead is refused as in the future.
pub const MAX_CLOCK_LEAD_MS: u64 = 500;

impl StrongTablets {
    /// The timestamp committed reads at this master would read at now (what its
    /// followers may serve follower reads at once they hold its high watermark).
    pub fn committed_ts(&self, mastership: &Mastership) -> Timestamp {
        let closed = Timestamp(self.closed.load(Ordering::Acquire));
        let v = mastership.view();
        let (hw, hw_ts) = v.acks.high_watermark();
        if hw >= v.acks.master_end.0 {
            closed
        } else {
            hw_ts
        }
    }

    /// Whether this node holds a replica of `tablet` that follower reads can use.
    pub fn has_replica(&self, tablet: TabletId) -> bool {
        self.replica_reads.read().contains_key(&tablet) || self.serves(tablet)
    }

    /// Where a follower read of `tablet` reads, and how stale that is; `None` when
    /// this node masters it (a committed read at the master is not stale) or holds
    /// no replica of it.
    pub(super) fn follower_point(
        &self,
        tablet: TabletId,
        max: Duration,
        at: Option<Timestamp>,
    ) -> Result<Option<(Timestamp, Duration)>> {
        if self.serves(tablet) {
            return Ok(None);
        }
        let Some((point, heard)) = self.replica_reads.read().get(&tablet).copied() else {
            return Err(Error::ReplicaBehind {
                tablet,
                behind: crate::error::Behind::NoReplica,
            });
        };
        let stale = heard.elapsed();
        if stale > max {
            return Err(Error::ReplicaBehind {
                tablet,
                behind: crate::error::Behind::Stale {
                    heard_ms: stale.as_millis() as u64,
                    max_ms: max.as_millis() as u64,
                },
            });
        }
        match at {
            None => Ok(Some((point, stale))),
            Some(wanted) if wanted <= point => Ok(Some((wanted, stale))),
            Some(wanted) => Err(Error::ReplicaBehind {
                tablet,
                behind: crate::error::Behind::Timestamp { wanted },
            }),
        }
    }

    /// A follower read of `keys` in `tablet`: the values, the timestamp read at and
    /// the staleness. Served by the master as a committed read when it is this node.
    pub async fn get_follower(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
        max: Duration,
    ) -> Result<(Vec<Option<Versioned>>, Timestamp, Duration)> {
        let Some((ts, stale)) = self.follower_point(tablet, max, at)? else {
            let (values, ts) = self
                .get(table, tablet, keys, at, ReadLevel::Committed)
                .await?;
            return Ok((values, ts, Duration::ZERO));
        };
        let id = table.id;
        let values = self
            .blocking(move |e| keys.iter().map(|k| e.get(id, k, ts)).collect())
            .await?;
        Ok((values, ts, stale))
    }

    /// The timestamp a read asked for (`None` = newest the level allows), checked
    /// against the table's garbage-collection horizon and made safe to read at.
    pub(super) async fn read_ts(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<Timestamp> {
        if let Some(at) = at {
            let horizon = gc_horizon(table, self.clock.peek());
            if at <= horizon {
                return Err(Error::TimestampCollected {
                    table: table.name.clone(),
                    requested: at,
                    horizon,
                });
            }
            let now = self.clock.peek();
            if at.millis() > now.millis() + MAX_CLOCK_LEAD_MS {
                return Err(Error::invalid(
                    "at_timestamp",
                    format!("timestamp {at} is in the future"),
                ));
            }
            // A timestamp a little ahead is another node's read timestamp (a request
            // spanning tablets reads them all at the first one's): the clocks of
            // nodes differ, and this one moves up to it.
            self.clock.observe(at);
            if at.0 > self.closed.load(Ordering::Acquire) {
                // Writes below `at` may still be in flight: wait until the writer closes it.
                self.call(|reply| writer::Command::Close { reply }).await?;
            }
        }
        let closed = Timestamp(self.closed.load(Ordering::Acquire));
        let Some(mastership) = self.mastership(tablet) else {
            return Err(Error::NotServing { tablet });
        };
        self.check_lease(&mastership)?;
        if level == ReadLevel::Latest {
            return Ok(at.unwrap_or(closed));
        }
        let committed = move |v: &AckView| -> Option<Timestamp> {
            let (hw, hw_ts) = v.acks.high_watermark();
            if hw < v.epoch_first {
                None // the epoch's no-op is not committed: older commits may be unknown
            } else if hw >= v.acks.master_end.0 {
                Some(closed)
            } else {
                Some(hw_ts)
            }
        };
        let wanted = at.unwrap_or(Timestamp(0));
        let view = mastership
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| v.deposed || committed(v).is_some_and(|ts| ts >= wanted),
            )
            .await
            .ok_or(Error::NotConfirmed {
                tablet,
                waited_ms: self.config.ack_timeout_ms,
            })?;
        if view.deposed {
            return Err(Error::NotServing { tablet });
        }
        let ts = committed(&view).unwrap_or(closed);
        Ok(at.unwrap_or(ts))
    }

    /// Refuses to serve a tablet another node could be mastering by now.
    pub(super) fn check_lease(&self, mastership: &Mastership) -> Result<()> {
        if mastership.needs_lease() && !self.lease.valid_for(mastership.liveness) {
            return Err(Error::LeaseLapsed {
                tablet: mastership.tablet,
            });
        }
        Ok(())
    }

    /// After a read: the answer counts only if the lease still held at its end (a
    /// master paused mid-read may have been replaced meanwhile).
    pub(super) fn check_lease_after(&self, tablet: TabletId) -> Result<()> {
        match self.mastership(tablet) {
            Some(mastership) if !mastership.deposed() => self.check_lease(&mastership),
            _ => Err(Error::NotServing { tablet }),
        }
    }

    /// The values of `keys` (in order, all in `tablet`) as of `at` (`None` = the
    /// newest `level` allows), and the timestamp read at.
    pub async fn get(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        keys: Vec<Vec<u8>>,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<(Vec<Option<Versioned>>, Timestamp)> {
        let ts = self.read_ts(table, tablet, at, level).await?;
        let id = table.id;
        if keys.len() == 1 {
            // One point read is a memtable or block-cache lookup in the common case:
            // cheaper inline than the two thread hops of a blocking task.
            let value = self.engine.get(id, &keys[0], ts)?;
            self.check_lease_after(tablet)?;
            return Ok((vec![value], ts));
        }
        let values = self
            .blocking(move |e| keys.iter().map(|k| e.get(id, k, ts)).collect())
            .await?;
        self.check_lease_after(tablet)?;
        Ok((values, ts))
    }

    /// One page of live rows of `range` (inside `tablet`).
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        table: &TableDesc,
        tablet: TabletId,
        range: KeyRange,
        limit: usize,
        reverse: bool,
        at: Option<Timestamp>,
        level: ReadLevel,
    ) -> Result<ScanPage> {
        let follower = match level {
            ReadLevel::Follower(max) => self.follower_point(tablet, max, at)?,
            _ => None,
        };
        let (ts, staleness) = match follower {
            Some(point) => point,
            None => (
                self.read_ts(table, tablet, at, level).await?,
                Duration::ZERO,
            ),
        };
        let req = ScanRequest {
            table: table.id,
            range,
            at: ts,
            limit: limit + 1,
            reverse,
        };
        let mut rows = self.blocking(move |e| e.scan(&req)).await?;
        if follower.is_none() {
            self.check_lease_after(tablet)?;
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        let resume_key = match (more, rows.last()) {
            (true, Some((last, _))) => resume_key(last, reverse),
            _ => Vec::new(),
        };
        Ok(ScanPage {
            rows,
            more,
            resume_key,
            read_ts: ts,
            staleness,
        })
    }
}
