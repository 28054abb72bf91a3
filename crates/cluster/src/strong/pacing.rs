//! The decisions of one replication stream, without I/O ([`Shipper`]): when to send
//! the next call to a follower and from where, and what an answer acknowledges. The
//! shipper task in [`super::ship`] feeds it what it sees (the master's staged and
//! durable ends, the pacer, the clock) and carries out what it returns, as openraft's
//! engine returns commands to its runtime.
//!
//! - **Window.** A follower that keeps up has one call in flight: what the master
//!   stages meanwhile goes out in the next call, when the follower answers, so the
//!   follower syncs once per call. A follower catching up gets full calls back to
//!   back, up to [`WINDOW`] unanswered.
//! - **Alignment.** An in-sync follower other than the pacer (the tablet's lowest-id
//!   in-sync follower) holds staged records back, at most [`ALIGN_MAX`], to send them
//!   with the pacer's next call: every follower then answers about when the pacer
//!   does, which is when `acks=all` completes.
//! - **Linger.** After an answer the pacer's next call waits, at most [`LINGER_MAX`],
//!   until as many records are staged as the writers its last call released are
//!   expected to bring back: one full call rather than two half-full ones.
//! - **Heartbeat.** An idle stream sends an empty call every [`HEARTBEAT`]; the first
//!   call of a stream only asks where the follower's log ends.

use datalayer_store::{NodeId, Seq};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most records in one replication call.
pub(super) const MAX_RECORDS: usize = 512;
/// An idle shipper sends an empty call this often (the follower learns the high
/// watermark, the master learns the follower is alive).
pub(super) const HEARTBEAT: Duration = Duration::from_millis(300);
/// How long one replication call may take.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Full replication calls a shipper keeps unanswered on its stream while a follower
/// catches up (a follower that keeps up has one call in flight).
pub(super) const WINDOW: usize = 4;
/// The longest an in-sync follower's shipper holds records back to send them with
/// the pacer's next call.
pub(super) const ALIGN_MAX: Duration = Duration::from_millis(2);
/// The longest the pacer's shipper waits after an answer for the writes it expects
/// before sending what is staged.
pub(super) const LINGER_MAX: Duration = Duration::from_millis(1);

/// What the shipper sees when it decides.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// Now.
    pub now: Instant,
    /// Where the records the master's writer staged end (possibly beyond its durable
    /// end, while it syncs them).
    pub staged_end: Seq,
    /// The follower is in the tablet's in-sync set.
    pub in_sync: bool,
    /// The tablet's pacer, if any.
    pub pacer: Option<NodeId>,
    /// The pacer started a call since this shipper last sent records.
    pub pace_changed: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Send a call with the records from this seq on (up to a call's worth).
    Send(Seq),
    /// Send an empty call (a heartbeat, or the first call asking for the position).
    Probe,
    /// Nothing now: wait for an answer, a change of the master's view or
    /// [`Shipper::deadline`].
    Wait,
}

/// A call sent and not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    /// The master's durable log end when its records were read: reaching it means
    /// the follower caught up.
    target: Seq,
    sent: Instant,
    /// Records it carried.
    carried: u64,
}

/// The last answer, as the pacer's shipper remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answered {
    at: Instant,
    /// Records the next call is expected to carry: those staged when the answer
    /// came, plus one new write from each writer the answered call released (a client
    /// waiting for its write to commit sends its next one about then).
    expected: u64,
}

/// One replication stream's state.
#[derive(Debug)]
pub(super) struct Shipper {
    follower: NodeId,
    in_flight: VecDeque<Call>,
    /// Where the follower's log ends (plus one), as it last answered.
    next: Option<Seq>,
    /// Where the next call starts, counting the calls in flight as taken; unknown
    /// until the follower first answers.
    cursor: Option<Seq>,
    last_sent: Option<Instant>,
    last_answer: Option<Answered>,
    /// While holding records back for the pacer's next call: until when.
    align_until: Option<Instant>,
    /// The pacer started a call since this follower's last one.
    pacer_called: bool,
    /// While the pacer's next call waits for more records: until when.
    linger_until: Option<Instant>,
}

impl Shipper {
    /// A new stream to `follower`, whose log is known to end before `next` (if known).
    pub(super) fn new(follower: NodeId, next: Option<Seq>) -> Shipper {
        Shipper {
            follower,
            in_flight: VecDeque::new(),
            next,
            cursor: next,
            last_sent: None,
            last_answer: None,
            align_until: None,
            pacer_called: false,
            linger_until: None,
        }
    }

    /// Where the follower's log ends (plus one), as it last answered.
    pub(super) fn next(&self) -> Option<Seq> {
        self.next
    }

    /// The next step. Call it until it answers [`Step::Wait`], carrying out each
    /// [`Step::Send`] or [`Step::Probe`] and reporting it with [`Shipper::sent`].
    pub(super) fn step(&mut self, seen: &Seen) -> Step {
        self.linger_until = None;
        if self.in_flight.len() >= WINDOW {
            return Step::Wait;
        }
        let now = seen.now;
        let staged_end = seen.staged_end;
        let idle = self.in_flight.is_empty()
            && self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= HEARTBEAT);
        let fills_a_call = self
            .cursor
            .is_some_and(|n| staged_end.0 >= n.0 + MAX_RECORDS as u64 - 1);
        // While a call is in flight, records that would not fill one wait for its
        // answer and go out together in the next.
        if !self.in_flight.is_empty() && !fills_a_call {
            return Step::Wait;
        }
        let has_records = self.cursor.is_some_and(|n| n <= staged_end);
        let behind_pacer = !fills_a_call
            && has_records
            && seen.in_sync
            && seen.pacer.is_some_and(|p| p != self.follower)
            && !self.pacer_called
            && !seen.pace_changed;
        if behind_pacer {
            let until = *self.align_until.get_or_insert(now + ALIGN_MAX);
            if now < until {
                return Step::Wait;
            }
        }
        if let (Some(n), Some(answer)) = (self.cursor, self.last_answer)
            && !fills_a_call
            && has_records
            && seen.pacer == Some(self.follower)
            && staged_end.0 + 1 - n.0 < answer.expected
        {
            let until = answer.at + LINGER_MAX;
            if now < until {
                self.linger_until = Some(until);
                return Step::Wait;
            }
        }
        match self.cursor {
            Some(n) if n <= staged_end => Step::Send(n),
            _ if idle => Step::Probe,
            _ => Step::Wait,
        }
    }

    /// A call went out at `now`, read when the master's durable end was
    /// `master_end`, carrying `records` records up to `sent_end` (none for a probe).
    pub(super) fn sent(
        &mut self,
        now: Instant,
        master_end: Seq,
        records: u64,
        sent_end: Option<Seq>,
    ) {
        self.in_flight.push_back(Call {
            target: master_end,
            sent: now,
            carried: records,
        });
        self.last_sent = Some(now);
        if let Some(end) = sent_end {
            self.align_until = None;
            self.pacer_called = false;
            self.cursor = Some(end.next());
        }
    }

    /// The pacer started a call while this shipper held records back for it.
    pub(super) fn pacer_called(&mut self) {
        self.pacer_called = true;
    }

    /// The follower answered the oldest call in flight with its durable log end, at
    /// `now`, while the master had staged up to `staged_end`. Returns the master's
    /// end that call was read at (the follower caught up if its end reached it), or
    /// `None` for an answer to no call (the stream is broken).
    pub(super) fn answered(&mut self, now: Instant, log_end: Seq, staged_end: Seq) -> Option<Seq> {
        let call = self.in_flight.pop_front()?;
        let waiting = self
            .cursor
            .map_or(0, |c| (staged_end.0 + 1).saturating_sub(c.0));
        self.last_answer = Some(Answered {
            at: now,
            expected: waiting + call.carried,
        });
        let next = log_end.next();
        self.next = Some(next);
        // The first answer gives the follower's position; once every call is
        // answered, a follower that did not take them all (a gap, or a suffix cut) is
        // resumed from its own log end.
        if self.cursor.is_none() || (self.in_flight.is_empty() && self.cursor != self.next) {
            self.cursor = self.next;
        }
        Some(call.target)
    }

    /// When to look again if nothing happens: the oldest call's timeout, the next
    /// heartbeat, or the end of an alignment or linger wait.
    pub(super) fn deadline(&self, now: Instant) -> Instant {
        let deadline = match self.in_flight.front() {
            Some(call) => call.sent + CALL_TIMEOUT,
            None => self.last_sent.map_or(now, |t| t + HEARTBEAT),
        };
        [self.align_until, self.linger_until]
            .into_iter()
            .flatten()
            .fold(deadline, Instant::min)
    }

    /// Whether the oldest call in flight went unanswered for too long.
    pub(super) fn timed_out(&self, now: Instant) -> bool {
        self.in_flight
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.sent) >= CALL_TIMEOUT)
    }

    /// Whether it holds records back for the pacer's next call.
    pub(super) fn aligning(&self) -> bool {
        self.align_until.is_some()
    }

    /// Whether new staged records can go out at once (the position is known and no
    /// call is in flight, whose answer would send them).
    pub(super) fn ready_for_records(&self) -> bool {
        self.cursor.is_some() && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(2);
    const OTHER: NodeId = NodeId(3);

    fn seen(now: Instant, staged_end: u64) -> Seen {
        Seen {
            now,
            staged_end: Seq(staged_end),
            in_sync: true,
            pacer: Some(ME),
            pace_changed: false,
        }
    }

    /// A stream whose follower answered the first probe: its log ends at `end`.
    fn positioned(now: Instant, end: u64) -> Shipper {
        let mut s = Shipper::new(ME, None);
        assert_eq!(s.step(&seen(now, end)), Step::Probe);
        s.sent(now, Seq(end), 0, None);
        assert_eq!(s.step(&seen(now, end)), Step::Wait, "one probe at a time");
        assert_eq!(s.answered(now, Seq(end), Seq(end)), Some(Seq(end)));
        s
    }

    #[test]
    fn the_first_call_asks_where_the_follower_is_then_records_follow() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        assert_eq!(s.next(), Some(Seq(11)));
        assert_eq!(
            s.step(&seen(t, 10)),
            Step::Wait,
            "nothing new, and a heartbeat is not due"
        );
        assert_eq!(s.step(&seen(t, 12)), Step::Send(Seq(11)));
    }

    #[test]
    fn a_follower_that_keeps_up_has_one_call_in_flight() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        s.sent(t, Seq(12), 2, Some(Seq(12)));
        assert_eq!(
            s.step(&seen(t, 20)),
            Step::Wait,
            "the answer sends the next"
        );
        assert_eq!(s.answered(t, Seq(12), Seq(20)), Some(Seq(12)));
        let later = t + LINGER_MAX;
        assert_eq!(s.step(&seen(later, 20)), Step::Send(Seq(13)));
    }

    #[test]
    fn a_follower_catching_up_gets_full_calls_up_to_the_window() {
        let t = Instant::now();
        let mut s = positioned(t, 0);
        let far = 10 * MAX_RECORDS as u64;
        for i in 0..WINDOW as u64 {
            let from = 1 + i * MAX_RECORDS as u64;
            assert_eq!(s.step(&seen(t, far)), Step::Send(Seq(from)));
            s.sent(
                t,
                Seq(far),
                MAX_RECORDS as u64,
                Some(Seq(from + MAX_RECORDS as u64 - 1)),
            );
        }
        assert_eq!(s.step(&seen(t, far)), Step::Wait, "the window is full");
    }

    #[test]
    fn a_follower_other_than_the_pacer_waits_for_the_pacers_call_at_most_align_max() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        let behind = |now| Seen {
            pacer: Some(OTHER),
            ..seen(now, 11)
        };
        assert_eq!(s.step(&behind(t)), Step::Wait);
        assert!(s.aligning());
        assert_eq!(s.deadline(t), t + ALIGN_MAX);
        s.pacer_called();
        assert_eq!(
            s.step(&behind(t)),
            Step::Send(Seq(11)),
            "goes out with the pacer's call"
        );
        s.sent(t, Seq(11), 1, Some(Seq(11)));
        assert!(!s.aligning());
        s.answered(t, Seq(11), Seq(11));
        // Without the pacer's call, at most ALIGN_MAX late.
        assert_eq!(
            s.step(&Seen {
                staged_end: Seq(12),
                ..behind(t)
            }),
            Step::Wait
        );
        let late = t + ALIGN_MAX;
        assert_eq!(
            s.step(&Seen {
                staged_end: Seq(12),
                ..behind(late)
            }),
            Step::Send(Seq(12))
        );
        // A follower outside the set does not wait.
        s.sent(late, Seq(12), 1, Some(Seq(12)));
        s.answered(late, Seq(12), Seq(12));
        let out = Seen {
            in_sync: false,
            staged_end: Seq(13),
            ..behind(late)
        };
        assert_eq!(s.step(&out), Step::Send(Seq(13)));
    }

    #[test]
    fn the_pacer_lingers_for_the_writers_its_last_call_released() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        // A call carrying 4 records (4 writers), answered while 2 more were staged.
        s.sent(t, Seq(14), 4, Some(Seq(14)));
        assert_eq!(s.answered(t, Seq(14), Seq(16)), Some(Seq(14)));
        // 6 are expected in the next call; 3 are staged: it lingers.
        assert_eq!(s.step(&seen(t, 17)), Step::Wait);
        assert_eq!(s.deadline(t), t + LINGER_MAX);
        assert_eq!(
            s.step(&seen(t, 20)),
            Step::Send(Seq(15)),
            "all six are there"
        );
        // Writers that do not come back cost at most LINGER_MAX.
        let mut s = positioned(t, 10);
        s.sent(t, Seq(14), 4, Some(Seq(14)));
        s.answered(t, Seq(14), Seq(14));
        assert_eq!(s.step(&seen(t, 15)), Step::Wait);
        assert_eq!(s.step(&seen(t + LINGER_MAX, 15)), Step::Send(Seq(15)));
    }

    #[test]
    fn a_single_writers_next_write_is_what_the_pacer_expects() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        s.sent(t, Seq(11), 1, Some(Seq(11)));
        s.answered(t, Seq(11), Seq(11));
        assert_eq!(s.step(&seen(t, 12)), Step::Send(Seq(12)), "it never waits");
    }

    #[test]
    fn an_idle_stream_sends_a_heartbeat_and_a_silent_follower_times_out() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        assert_eq!(s.deadline(t), t + HEARTBEAT);
        assert_eq!(s.step(&seen(t + HEARTBEAT, 10)), Step::Probe);
        s.sent(t + HEARTBEAT, Seq(10), 0, None);
        assert!(!s.timed_out(t + HEARTBEAT + CALL_TIMEOUT - Duration::from_millis(1)));
        assert!(s.timed_out(t + HEARTBEAT + CALL_TIMEOUT));
        assert_eq!(s.deadline(t + HEARTBEAT), t + HEARTBEAT + CALL_TIMEOUT);
    }

    #[test]
    fn a_follower_that_did_not_take_every_call_is_resumed_from_its_log_end() {
        let t = Instant::now();
        let mut s = positioned(t, 10);
        s.sent(t, Seq(20), 5, Some(Seq(15)));
        // It cut a suffix and holds only up to 8.
        s.answered(t, Seq(8), Seq(20));
        assert_eq!(s.next(), Some(Seq(9)));
        assert_eq!(s.step(&seen(t + LINGER_MAX, 20)), Step::Send(Seq(9)));
    }

    #[test]
    fn an_answer_to_no_call_breaks_the_stream() {
        let mut s = Shipper::new(ME, Some(Seq(5)));
        assert_eq!(s.answered(Instant::now(), Seq(4), Seq(4)), None);
    }
}
