//! The writer's master side: staging client writes (evaluated by
//! [`evaluate::evaluate`] against the tablet as the group's own earlier writes left
//! it) and abort records.

use super::evaluate::{self, Current};
use super::*;

/// A tablet as the master's evaluation sees it: the store, under the group's
/// pending writes.
struct GroupView<'a> {
    writer: &'a Writer,
    group: &'a Group,
    table: TableId,
}

impl Current for GroupView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        if let Some(v) = self.group.overlay.get(&(self.table, key.to_vec())) {
            return Ok(v.clone());
        }
        Ok(self.writer.engine.get(self.table, key, Timestamp::MAX)?)
    }

    fn live_keys(&self, range: &KeyRange) -> Result<Vec<Vec<u8>>> {
        let mut live: BTreeMap<Vec<u8>, bool> = self
            .writer
            .engine
            .scan(&ScanRequest {
                table: self.table,
                range: range.clone(),
                at: Timestamp::MAX,
                limit: usize::MAX,
                reverse: false,
            })?
            .into_iter()
            .map(|(k, _)| (k, true))
            .collect();
        for ((t, key), v) in &self.group.overlay {
            if *t == self.table && range.contains(key) {
                live.insert(key.clone(), v.is_some());
            }
        }
        Ok(live
            .into_iter()
            .filter(|(_, l)| *l)
            .map(|(k, _)| k)
            .collect())
    }
}

impl Writer {
    /// Evaluates `op` and stages its records in `group`, handing them to the shippers
    /// at once (`paced`: the write waits for followers' acks, so its group may wait for
    /// the pacer's next call before syncing).
    pub(super) fn stage(
        &mut self,
        group: &mut Group,
        table: TableId,
        tablet: TabletId,
        op: WriteOp,
        request: Option<RequestId>,
        paced: bool,
    ) -> Result<Outcome> {
        let served = self
            .served
            .get(&tablet)
            .filter(|s| s.table == table && s.role == Role::Master)
            .ok_or(Error::NotServing { tablet })?;
        if served.fenced {
            return Err(Error::HandingOver { tablet });
        }
        if let Some(mark) = served.split.as_ref().filter(|m| m.reached_by(&op)) {
            return Err(Error::Splitting {
                tablet,
                key: String::from_utf8_lossy(&mark.key).into_owned(),
            });
        }
        if let Some(id) = request
            && let Some((last, outcome)) = served.requests.get(&id.client)
        {
            if *last == id.seq {
                // A retry of a request the log holds: its answer, not a second write.
                return Ok(outcome.clone());
            }
            if *last > id.seq {
                return Err(Error::invalid(
                    "request_id",
                    format!(
                        "request {} of client {:x} is older than its request {last} already written",
                        id.seq, id.client
                    ),
                ));
            }
        }
        let epoch = served.epoch;
        let ts = self.clock.now();
        let (records, result) = evaluate::evaluate(
            op,
            &GroupView {
                writer: self,
                group,
                table,
            },
        )?;
        if records.is_empty() {
            let observed = group
                .appends
                .get(&tablet)
                .map_or(served.state.log_end, |a| a.state.log_end);
            return Ok(Outcome {
                ts,
                position: None,
                observed,
                result,
            });
        }
        let append = group.appends.entry(tablet).or_insert_with(|| TabletAppend {
            table,
            tablet,
            records: Vec::new(),
            state: served.state.clone(),
        });
        let answer = match &result {
            OpResult::Done | OpResult::Mismatch(_) => Answer::Done,
            OpResult::RangeDeleted(n) => Answer::RangeDeleted(*n),
            OpResult::Counter(v) => Answer::Counter(*v),
        };
        let last = records.len() - 1;
        let first_new = append.records.len();
        for (i, mutations) in records.into_iter().enumerate() {
            for m in &mutations {
                let value = match m {
                    Mutation::Put { value, .. } => Some(Versioned {
                        ts,
                        value: value.clone(),
                    }),
                    Mutation::Delete { .. } => None,
                };
                group.overlay.insert((table, m.key().to_vec()), value);
            }
            let record = OplogRecord {
                epoch,
                seq: append.state.log_end.next(),
                ts,
                body: RecordBody::Write(mutations),
                origin: request
                    .filter(|_| i == last)
                    .map(|request| Origin { request, answer }),
            };
            append.state.advance(&record);
            append.records.push(record);
        }
        // The shippers send the records at once, while this thread stages more and
        // syncs them.
        if let Some(mastership) = self.masterships.read().get(&tablet) {
            mastership.stage(&append.records[first_new..]);
            if paced {
                mastership.await_call();
            }
        }
        if let Some(record) = append.records.last()
            && let Some(s) = self.served.get_mut(&tablet)
        {
            remember(&mut s.requests, tablet, record);
        }
        Ok(Outcome {
            ts,
            position: Some(Position {
                tablet,
                epoch,
                seq: append.state.log_end,
            }),
            observed: append.state.log_end,
            result,
        })
    }

    /// Stages a split record at `key` on a tablet this node masters, beginning the
    /// right half `right` in the same group; when the log holds that split already,
    /// its position. From the record on, the tablet orders no write at or past `key`.
    pub(super) fn stage_split(
        &mut self,
        group: &mut Group,
        tablet: TabletId,
        key: Vec<u8>,
        right: TabletId,
    ) -> Result<Outcome> {
        let served = self
            .served
            .get(&tablet)
            .filter(|s| s.role == Role::Master)
            .ok_or(Error::NotServing { tablet })?;
        if served.fenced {
            return Err(Error::HandingOver { tablet });
        }
        let (epoch, table) = (served.epoch, served.table);
        if let Some(mark) = served.split.as_ref().filter(|m| m.right == right) {
            let epoch = served.state.epoch_at(mark.seq).unwrap_or(epoch);
            return Ok(Outcome {
                ts: self.clock.now(),
                position: Some(Position {
                    tablet,
                    epoch,
                    seq: mark.seq,
                }),
                observed: mark.seq,
                result: OpResult::Done,
            });
        }
        let body = RecordBody::Split {
            key: key.clone(),
            right,
        };
        let (seq, ts) = self.stage_control(group, tablet, body)?;
        let mark = SplitMark { key, right, seq };
        let served = self.served.get_mut(&tablet).expect("served");
        served.split = Some(mark.clone());
        let requests = served.requests.clone();
        self.start_right_half(group, table, &mark, epoch, ts, requests)?;
        tracing::info!(%tablet, %right, %seq, "split record staged");
        Ok(Outcome {
            ts,
            position: Some(Position { tablet, epoch, seq }),
            observed: seq,
            result: OpResult::Done,
        })
    }

    /// Stages a record of `body` that answers no request on `tablet`, mastered here;
    /// its seq and timestamp.
    pub(super) fn stage_control(
        &mut self,
        group: &mut Group,
        tablet: TabletId,
        body: RecordBody,
    ) -> Result<(Seq, Timestamp)> {
        let served = self
            .served
            .get(&tablet)
            .filter(|s| s.role == Role::Master)
            .ok_or(Error::NotServing { tablet })?;
        let (epoch, table) = (served.epoch, served.table);
        let append = group.appends.entry(tablet).or_insert_with(|| TabletAppend {
            table,
            tablet,
            records: Vec::new(),
            state: served.state.clone(),
        });
        let ts = self.clock.now();
        let record = OplogRecord {
            epoch,
            seq: append.state.log_end.next(),
            ts,
            body,
            origin: None,
        };
        append.state.advance(&record);
        let seq = record.seq;
        if let Some(mastership) = self.masterships.read().get(&tablet) {
            mastership.stage(std::slice::from_ref(&record));
        }
        if let Some(s) = self.served.get_mut(&tablet) {
            remember(&mut s.requests, tablet, &record);
        }
        append.records.push(record);
        Ok((seq, ts))
    }

    /// Appends an abort record voiding `from..` on a tablet this node masters: only
    /// records not committed yet, and not voided already, may be voided.
    pub(super) fn abort(&mut self, tablet: TabletId, from: Seq) -> Result<Position> {
        let mastership = self.masterships.read().get(&tablet).cloned();
        let (Some(mastership), Some(served)) = (mastership, self.served.get(&tablet)) else {
            return Err(Error::NotServing { tablet });
        };
        if served.fenced {
            return Err(Error::HandingOver { tablet });
        }
        let view = mastership.view();
        let hw = view.acks.high_watermark().0;
        let mut state = served.state.clone();
        if from <= hw {
            return Err(Error::invalid(
                "position",
                format!("record {from} of {tablet} has committed: it cannot be aborted"),
            ));
        }
        if from > state.log_end || view.acks.voided(from) {
            return Err(Error::invalid(
                "position",
                format!("record {from} of {tablet} is not a pending record of its log"),
            ));
        }
        if let Some(mark) = served.split.as_ref().filter(|m| m.seq >= from) {
            // Everything before a split commits with it: wait for it instead.
            return Err(Error::Splitting {
                tablet,
                key: String::from_utf8_lossy(&mark.key).into_owned(),
            });
        }
        if let Some(v) = view.acks.voids.iter().find(|v| from <= v.at) {
            // Voids never overlap: an abort is never voided itself.
            return Err(Error::AbortPending {
                tablet,
                seq: from,
                abort: v.at,
            });
        }
        let before_ts = self
            .engine
            .read_oplog(tablet, Seq(from.0 - 1), 1)?
            .first()
            .filter(|r| r.seq.0 == from.0 - 1)
            .map_or(Timestamp(0), |r| r.ts);
        let record = OplogRecord {
            epoch: served.epoch,
            seq: state.log_end.next(),
            ts: self.clock.now(),
            body: RecordBody::Abort { from, before_ts },
            origin: None,
        };
        let void = Void::of(&record).expect("an abort record");
        state.advance(&record);
        let mut acks = view.acks.clone();
        acks.voids.push(void);
        state.high_watermark = acks.high_watermark().0.min(state.log_end);
        let position = Position {
            tablet,
            epoch: record.epoch,
            seq: record.seq,
        };
        let records = vec![record];
        self.engine.append(&[TabletAppend {
            table: served.table,
            tablet,
            records: records.clone(),
            state: state.clone(),
        }])?;
        tracing::warn!(%tablet, %from, at = %position.seq, "aborted records that had not committed");
        mastership.void(void);
        mastership.appended(&state, &records);
        let served = self.served.get_mut(&tablet).expect("served");
        served.state = state;
        served.voids.push(void);
        forget_voided(&mut served.requests, &served.voids);
        self.maybe_trim(tablet);
        self.close_now();
        Ok(position)
    }
}
