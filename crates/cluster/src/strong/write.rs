//! Writes to strong tablets: staged by the master's writer, then waited on for their
//! acks; and what a client can ask of a write later (its state, aborting it).

use super::*;

impl StrongTablets {
    /// Orders, applies and durably writes one command on `tablet`, then waits until
    /// `acks` replicas hold it. When they do not in time the answer is
    /// [`Error::Ambiguous`] with the write's position.
    pub async fn write(
        &self,
        tablet: &TabletDesc,
        op: WriteOp,
        acks: Acks,
        request: Option<datalayer_store::RequestId>,
    ) -> Result<Outcome> {
        if let Acks::Count(n) = acks
            && (n == 0 || n as usize > tablet.replicas.len().max(1))
        {
            return Err(Error::invalid(
                "acks",
                format!(
                    "acks {n} must be between 1 and the tablet's {} replicas",
                    tablet.replicas.len()
                ),
            ));
        }
        let mastership = self.mastership(tablet.id);
        if let Some(mastership) = &mastership {
            self.check_lease(mastership)?;
        }
        let (table, id) = (tablet.table, tablet.id);
        let outcome = self
            .call(|reply| writer::Command::Write {
                table,
                tablet: id,
                op,
                request,
                paced: mastership.is_some() && !matches!(acks, Acks::One | Acks::Count(1)),
                reply,
            })
            .await?;
        let Some(mastership) = mastership else {
            return Ok(outcome);
        };
        if cfg!(feature = "unsafe-early-ack") {
            // The broken build: acknowledge before replicating.
            return Ok(outcome);
        }
        let Some(position) = outcome.position else {
            // Nothing written, but the answer rests on what the log held: wait until
            // that is committed, so no later read can see an older state.
            if acks != Acks::One {
                self.wait_committed(&mastership, outcome.observed, acks)
                    .await?;
            }
            return Ok(outcome);
        };
        if position.tablet != id {
            // A retry answered from a request this tablet inherited when it began as
            // the right half of a split: the write is in the left half's oplog,
            // before the split record, which committed before this half served.
            return Ok(outcome);
        }
        let lapsed = |mastership: &Mastership| {
            mastership.needs_lease() && !self.lease.valid_for(mastership.liveness)
        };
        if acks == Acks::One {
            if lapsed(&mastership) {
                return Err(Error::Ambiguous {
                    tablet: position.tablet,
                    epoch: position.epoch,
                    seq: position.seq,
                    acks: acks.to_string(),
                    reason: "the master's lease lapsed while writing".into(),
                });
            }
            return Ok(outcome);
        }
        let seq = position.seq;
        let waited = mastership
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| {
                    // A voided write waits for its abort to commit (or for the timeout).
                    v.deposed
                        || v.acks.aborted(seq)
                        || (!v.acks.voided(seq) && v.acks.satisfied(seq, acks))
                },
            )
            .await;
        let ambiguous = |reason: &str| Error::Ambiguous {
            tablet: position.tablet,
            epoch: position.epoch,
            seq: position.seq,
            acks: acks.to_string(),
            reason: reason.to_string(),
        };
        match waited {
            Some(v) if v.acks.aborted(position.seq) => Err(Error::Aborted {
                tablet: position.tablet,
                seq: position.seq,
            }),
            // Held by every in-sync replica: committed, whatever happens to this master.
            Some(v) if !v.deposed && acks == Acks::All => Ok(outcome),
            Some(v) if !v.deposed && !lapsed(&mastership) => Ok(outcome),
            Some(v) if !v.deposed => Err(ambiguous("the master's lease lapsed while writing")),
            Some(_) => Err(ambiguous("the master stepped down")),
            None => Err(ambiguous("timed out waiting for acks")),
        }
    }

    /// Waits until the log up to `seq` has `acks`; a command that wrote nothing fails
    /// as unavailable (retryable: nothing changed) when it does not in time.
    pub(super) async fn wait_committed(
        &self,
        mastership: &Mastership,
        seq: Seq,
        acks: Acks,
    ) -> Result<()> {
        let waited = mastership
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| v.deposed || v.acks.satisfied(seq, acks),
            )
            .await;
        match waited {
            Some(v) if !v.deposed => Ok(()),
            _ => Err(Error::NotConfirmed {
                tablet: mastership.tablet,
                waited_ms: self.config.ack_timeout_ms,
            }),
        }
    }

    /// Whether the write at `(epoch, seq)` of `tablet` committed, is pending or was
    /// lost. Asked of the tablet's master.
    pub async fn write_status(
        &self,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        let mastership = self.mastering(tablet)?;
        let view = mastership.view();
        let state = datalayer_store::TabletState {
            epoch_history: view.history.clone(),
            log_end: view.acks.master_end.0,
            ..Default::default()
        };
        if state.epoch_at(seq) != Some(epoch) {
            // The master's log holds another epoch's record there, or none yet: the
            // write was cut, unless its epoch is still current and it is not durable
            // yet (only possible within the ack timeout).
            if epoch == mastership.epoch && seq > state.log_end {
                return Ok(WriteState::Pending);
            }
            return Ok(WriteState::Lost);
        }
        let hw = view.acks.high_watermark().0;
        if let Some(void) = view.acks.void_of(seq) {
            // Voided: final once the abort record committed.
            return Ok(if hw >= void.at {
                WriteState::Aborted
            } else {
                WriteState::Pending
            });
        }
        if hw >= seq {
            Ok(WriteState::Committed)
        } else {
            Ok(WriteState::Pending)
        }
    }

    /// Reverts the write at `(epoch, seq)` of `tablet` if it has not committed: an
    /// abort record voids it and every later record not committed yet. Answers the
    /// write's final state (aborted, lost, or committed when it was too late) once the
    /// abort record committed; `Ambiguous` when that did not happen in time.
    pub async fn abort_write(
        &self,
        tablet: TabletId,
        epoch: Epoch,
        seq: Seq,
    ) -> Result<WriteState> {
        let mastership = self.mastering(tablet)?;
        self.check_lease(&mastership)?;
        let at = match self.write_status(tablet, epoch, seq).await? {
            WriteState::Pending => {
                let view = mastership.view();
                match view.acks.void_of(seq) {
                    // Voided already; wait for that abort to commit.
                    Some(void) => void.at,
                    None => match self
                        .call(|reply| writer::Command::Abort {
                            tablet,
                            from: seq,
                            reply,
                        })
                        .await
                    {
                        Ok(position) => position.seq,
                        // Committed meanwhile.
                        Err(Error::InvalidArgument { .. }) => {
                            return self.write_status(tablet, epoch, seq).await;
                        }
                        Err(e) => return Err(e),
                    },
                }
            }
            done => return Ok(done),
        };
        let waited = mastership
            .wait_for(
                Duration::from_millis(self.config.ack_timeout_ms),
                move |v| v.deposed || v.acks.satisfied(at, Acks::All),
            )
            .await;
        match waited {
            Some(v) if !v.deposed => Ok(WriteState::Aborted),
            _ => Err(Error::Ambiguous {
                tablet,
                epoch: mastership.epoch,
                seq: at,
                acks: Acks::All.to_string(),
                reason: "the abort record was not acknowledged in time".into(),
            }),
        }
    }
}
