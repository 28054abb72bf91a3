//! The writer's part of a merge (DESIGN §8, `strong::merge`): the absorb record a
//! master appends to the tablet that takes its right neighbour's keys over.

use super::*;

/// The answer an absorbed tablet gave to a request, as its absorber keeps it.
pub(super) fn inherited_outcome(right: TabletId, i: &datalayer_store::Inherited) -> Outcome {
    let result = match i.origin.answer {
        Answer::Done => OpResult::Done,
        Answer::RangeDeleted(n) => OpResult::RangeDeleted(n),
        Answer::Counter(v) => OpResult::Counter(v),
    };
    Outcome {
        ts: i.ts,
        position: Some(Position {
            tablet: right,
            epoch: i.epoch,
            seq: i.seq,
        }),
        observed: i.seq,
        result,
    }
}

/// `right`'s clients' last answered requests, as an absorb record carries them.
fn inherit(requests: &Requests) -> Vec<datalayer_store::Inherited> {
    let mut out: Vec<datalayer_store::Inherited> = requests
        .iter()
        .filter_map(|(client, (seq, o))| {
            let p = o.position?;
            let answer = match o.result {
                OpResult::Done => Answer::Done,
                OpResult::RangeDeleted(n) => Answer::RangeDeleted(n),
                OpResult::Counter(v) => Answer::Counter(v),
                // A compare-and-set that failed wrote nothing: no record names it.
                OpResult::Mismatch(_) => return None,
            };
            Some(datalayer_store::Inherited {
                origin: Origin {
                    request: RequestId {
                        client: *client,
                        seq: *seq,
                    },
                    answer,
                },
                ts: o.ts,
                epoch: p.epoch,
                seq: p.seq,
            })
        })
        .collect();
    out.sort_by_key(|i| i.origin.request.client);
    out
}

impl Writer {
    /// Stages an absorb record on `tablet` (mastered here) taking `right`'s keys
    /// over; `right` must be served here with nothing past `through` in its log.
    pub(super) fn stage_absorb(
        &mut self,
        group: &mut Group,
        tablet: TabletId,
        right: TabletId,
        through: Seq,
    ) -> Result<Outcome> {
        let absorbed = self
            .served
            .get(&right)
            .ok_or(Error::NotServing { tablet: right })?;
        if absorbed.state.log_end != through || group.appends.contains_key(&right) {
            return Err(Error::Internal(format!(
                "{right} was to end at {through} but its log is at {}",
                absorbed.state.log_end
            )));
        }
        let requests = inherit(&absorbed.requests);
        let served = self
            .served
            .get(&tablet)
            .filter(|s| s.role == Role::Master)
            .ok_or(Error::NotServing { tablet })?;
        if served.fenced {
            return Err(Error::HandingOver { tablet });
        }
        let epoch = served.epoch;
        let body = RecordBody::Absorb {
            right,
            through,
            requests,
        };
        let (seq, ts) = self.stage_control(group, tablet, body)?;
        if let Some(s) = self.served.get_mut(&tablet) {
            // The keys past its last split are this tablet's again.
            s.split = None;
        }
        tracing::info!(%tablet, %right, %seq, "absorb record staged");
        Ok(Outcome {
            ts,
            position: Some(Position { tablet, epoch, seq }),
            observed: seq,
            result: OpResult::Done,
        })
    }
}
