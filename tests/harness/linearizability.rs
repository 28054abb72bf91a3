//! A linearizability checker for histories of one register: the Wing–Gong search with
//! Lowe's memoization of (linearized set, state), as in Knossos and Porcupine.
//!
//! A history is per key (linearizability is compositional, so keys are checked one by
//! one). An operation whose outcome is unknown (`ret = None`: the client timed out or
//! got an ambiguous answer) may take effect at any point after its call, or never: it
//! returns "at infinity", and linearizing it last is the same as it never happening.

use std::collections::HashSet;

/// What a client did to the register, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOp {
    /// Read: the value seen (`None`: absent).
    Read(Option<String>),
    /// Unconditional write.
    Write(String),
    /// Compare-and-set from `from` to `to`; `ok` is whether it succeeded, `None` when
    /// unknown.
    Cas {
        /// The value the register must hold.
        from: String,
        /// The value written on success.
        to: String,
        /// The answer, if one came.
        ok: Option<bool>,
    },
}

/// One operation: its call time and, when it answered, its return time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegEvent {
    /// The operation and its result.
    pub op: RegOp,
    /// When the client sent it (any monotonic unit).
    pub call: u64,
    /// When the answer came; `None` when the outcome is unknown.
    pub ret: Option<u64>,
}

/// Applies `op` to `state`: the new state, or `None` when the op's recorded result is
/// impossible in `state`.
fn step(state: &Option<String>, op: &RegOp) -> Option<Option<String>> {
    match op {
        RegOp::Read(v) => (v == state).then(|| state.clone()),
        RegOp::Write(v) => Some(Some(v.clone())),
        RegOp::Cas { from, to, ok } => {
            let matches = state.as_deref() == Some(from.as_str());
            match ok {
                Some(true) => matches.then(|| Some(to.clone())),
                Some(false) => (!matches).then(|| state.clone()),
                // Unknown: it took effect if the register held `from` at its point.
                None => Some(if matches {
                    Some(to.clone())
                } else {
                    state.clone()
                }),
            }
        }
    }
}

/// Whether the history of one register starting absent is linearizable. When it is
/// not, says how many operations the longest order tried could place.
pub fn check_register(history: &[RegEvent]) -> Result<(), usize> {
    let n = history.len();
    if n == 0 {
        return Ok(());
    }
    // Entries: (time, is_return, op). Calls sort before returns at the same time.
    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in history.iter().enumerate() {
        entries.push((e.call, false, i));
        entries.push((e.ret.unwrap_or(u64::MAX), true, i));
    }
    entries.sort();
    // A doubly linked list over the entries, with a head sentinel at index `len`.
    let len = entries.len();
    let head = len;
    const NIL: usize = usize::MAX;
    let mut next: Vec<usize> = (1..len).chain([NIL, 0]).collect();
    let mut prev: Vec<usize> = std::iter::once(head)
        .chain(0..len - 1)
        .chain([NIL])
        .collect();
    let mut ret_of = vec![0usize; n];
    let mut call_of = vec![0usize; n];
    for (pos, (_, is_ret, op)) in entries.iter().enumerate() {
        if *is_ret {
            ret_of[*op] = pos;
        } else {
            call_of[*op] = pos;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != NIL {
            prev[nx] = x;
        }
    };
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut state: Option<String> = None;
    let mut cur = next[head];
    let mut deepest = 0usize;
    while next[head] != NIL {
        if cur == NIL {
            // Nothing more can be tried at this level: backtrack.
            let Some((op, old)) = stack.pop() else {
                return Err(deepest);
            };
            state = old;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_of[op]);
            relink(&mut next, &mut prev, call_of[op]);
            cur = next[call_of[op]];
            continue;
        }
        let (_, is_ret, op) = entries[cur];
        if !is_ret {
            let event = &history[op];
            if let Some(new) = step(&state, &event.op) {
                let mut lin = linearized.clone();
                lin[op / 64] |= 1 << (op % 64);
                if cache.insert((lin.clone(), new.clone())) {
                    stack.push((op, std::mem::replace(&mut state, new)));
                    linearized = lin;
                    deepest = deepest.max(stack.len());
                    unlink(&mut next, &mut prev, call_of[op]);
                    unlink(&mut next, &mut prev, ret_of[op]);
                    cur = next[head];
                    continue;
                }
            }
            cur = next[cur];
        } else {
            // An operation returned before anything placed could explain it: undo.
            let Some((op, old)) = stack.pop() else {
                return Err(deepest);
            };
            state = old;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_of[op]);
            relink(&mut next, &mut prev, call_of[op]);
            cur = next[call_of[op]];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: RegOp, call: u64, ret: Option<u64>) -> RegEvent {
        RegEvent { op, call, ret }
    }
    fn w(v: &str) -> RegOp {
        RegOp::Write(v.into())
    }
    fn r(v: Option<&str>) -> RegOp {
        RegOp::Read(v.map(String::from))
    }
    fn cas(from: &str, to: &str, ok: Option<bool>) -> RegOp {
        RegOp::Cas {
            from: from.into(),
            to: to.into(),
            ok,
        }
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        let h = vec![
            ev(r(None), 0, Some(1)),
            ev(w("a"), 2, Some(3)),
            ev(r(Some("a")), 4, Some(5)),
            ev(cas("a", "b", Some(true)), 6, Some(7)),
            ev(cas("a", "c", Some(false)), 8, Some(9)),
            ev(r(Some("b")), 10, Some(11)),
        ];
        assert_eq!(check_register(&h), Ok(()));
        // Concurrent write and reads may see either order.
        let h = vec![
            ev(w("a"), 0, Some(10)),
            ev(r(Some("a")), 1, Some(2)),
            ev(w("b"), 3, Some(12)),
            ev(r(Some("b")), 4, Some(5)),
            ev(r(Some("b")), 13, Some(14)),
        ];
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn stale_reads_and_lost_writes_fail() {
        // A read after a completed write sees the old value: a stale read.
        let h = vec![
            ev(w("a"), 0, Some(1)),
            ev(w("b"), 2, Some(3)),
            ev(r(Some("a")), 4, Some(5)),
        ];
        assert!(check_register(&h).is_err());
        // An acknowledged write vanished.
        let h = vec![ev(w("a"), 0, Some(1)), ev(r(None), 2, Some(3))];
        assert!(check_register(&h).is_err());
        // Two compare-and-sets from the same value both succeeded.
        let h = vec![
            ev(w("a"), 0, Some(1)),
            ev(cas("a", "b", Some(true)), 2, Some(5)),
            ev(cas("a", "c", Some(true)), 3, Some(6)),
        ];
        assert!(check_register(&h).is_err());
    }

    /// Histories of a real register (each operation takes effect at a random point
    /// between its call and its return) are linearizable, however they overlap.
    #[test]
    fn histories_of_an_atomic_register_pass() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // (effect time, call, ret, op template)
            let mut ops: Vec<(u64, u64, u64, u8)> = (0..300)
                .map(|_| {
                    let call = rng.random_range(0..10_000u64);
                    let effect = call + rng.random_range(0..50);
                    let ret = effect + rng.random_range(0..50);
                    (effect, call, ret, rng.random_range(0..3u8))
                })
                .collect();
            ops.sort();
            let mut state: Option<String> = None;
            let mut h = Vec::new();
            for (i, (_, call, ret, kind)) in ops.into_iter().enumerate() {
                let op = match (kind, &state) {
                    (0, _) => RegOp::Read(state.clone()),
                    (1, Some(cur)) if i % 2 == 0 => {
                        let to = format!("c{i}");
                        let op = cas(cur, &to, Some(true));
                        state = Some(to);
                        op
                    }
                    (1, _) => cas("nope", "x", Some(false)),
                    _ => {
                        let v = format!("w{i}");
                        state = Some(v.clone());
                        RegOp::Write(v)
                    }
                };
                let ret = (i % 17 != 0 || kind == 0).then_some(ret);
                h.push(ev(op, call, ret));
            }
            assert_eq!(check_register(&h), Ok(()), "seed {seed}");
        }
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_take_effect() {
        // Never took effect.
        let h = vec![
            ev(w("a"), 0, Some(1)),
            ev(w("x"), 2, None),
            ev(r(Some("a")), 3, Some(4)),
        ];
        assert_eq!(check_register(&h), Ok(()));
        // Took effect later.
        let h = vec![
            ev(w("x"), 0, None),
            ev(r(None), 1, Some(2)),
            ev(r(Some("x")), 3, Some(4)),
        ];
        assert_eq!(check_register(&h), Ok(()));
        let h = vec![
            ev(w("a"), 0, Some(1)),
            ev(cas("a", "b", None), 2, None),
            ev(r(Some("b")), 3, Some(4)),
            ev(r(Some("b")), 5, Some(6)),
        ];
        assert_eq!(check_register(&h), Ok(()));
        // But not before it was called.
        let h = vec![ev(r(Some("x")), 0, Some(1)), ev(w("x"), 2, None)];
        assert!(check_register(&h).is_err());
    }
}
