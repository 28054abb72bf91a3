//! The master's evaluation of a write op, a pure core: from the op and what the
//! tablet holds now (as the group's earlier writes left it), the records to write and
//! the op's result. The writer stages what it returns ([`super::Writer::stage`]).
//!
//! - A batch writes its mutations as they are, in one record.
//! - A range deletion deletes the range's live keys, at most [`DELETES_PER_RECORD`]
//!   per record (the records of one op commit together); an empty range writes nothing.
//! - A compare-and-set writes only when its condition holds; otherwise it writes
//!   nothing and answers what the key holds.
//! - An increment reads a decimal `i64` (absent is 0) and writes the sum; a value that
//!   is no integer, or a sum that overflows, fails the op and writes nothing.

use super::{Expected, OpResult, WriteOp};
use crate::error::{Error, Result};
use datalayer_store::{KeyRange, Mutation, Versioned};

/// Most deletes in one record of a `DeleteRange`.
pub(super) const DELETES_PER_RECORD: usize = 1000;

/// What an op reads: the tablet's current state.
pub(super) trait Current {
    /// The newest value of `key` (`None`: absent or deleted).
    fn get(&self, key: &[u8]) -> Result<Option<Versioned>>;
    /// The keys of `range` that hold a value, in order.
    fn live_keys(&self, range: &KeyRange) -> Result<Vec<Vec<u8>>>;
}

/// The records `op` writes (each a list of mutations; none when it writes nothing)
/// and its result.
pub(super) fn evaluate(
    op: WriteOp,
    current: &impl Current,
) -> Result<(Vec<Vec<Mutation>>, OpResult)> {
    Ok(match op {
        WriteOp::Batch(mutations) => (vec![mutations], OpResult::Done),
        WriteOp::DeleteRange(range) => {
            let keys = current.live_keys(&range)?;
            let count = keys.len() as u64;
            let records = keys
                .chunks(DELETES_PER_RECORD)
                .map(|c| {
                    c.iter()
                        .map(|k| Mutation::Delete { key: k.clone() })
                        .collect()
                })
                .collect();
            (records, OpResult::RangeDeleted(count))
        }
        WriteOp::CompareAndSet { key, expected, new } => {
            let now = current.get(&key)?;
            let holds = match expected {
                Expected::Absent => now.is_none(),
                Expected::Version(v) => now.as_ref().is_some_and(|c| c.ts == v),
            };
            if !holds {
                return Ok((Vec::new(), OpResult::Mismatch(now)));
            }
            let m = match new {
                Some(value) => Mutation::Put { key, value },
                None => Mutation::Delete { key },
            };
            (vec![vec![m]], OpResult::Done)
        }
        WriteOp::Increment { key, delta } => {
            let now = match current.get(&key)? {
                None => 0i64,
                Some(v) => std::str::from_utf8(&v.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(Error::NotAnInteger)?,
            };
            let value = now.checked_add(delta).ok_or(Error::NotAnInteger)?;
            let m = Mutation::Put {
                key,
                value: value.to_string().into_bytes(),
            };
            (vec![vec![m]], OpResult::Counter(value))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::Timestamp;
    use std::collections::BTreeMap;

    /// A tablet as a map of its live keys.
    struct Map(BTreeMap<Vec<u8>, Versioned>);

    impl Current for Map {
        fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
            Ok(self.0.get(key).cloned())
        }
        fn live_keys(&self, range: &KeyRange) -> Result<Vec<Vec<u8>>> {
            Ok(self
                .0
                .keys()
                .filter(|k| range.contains(k))
                .cloned()
                .collect())
        }
    }

    fn map(entries: &[(&str, &str, u64)]) -> Map {
        Map(entries
            .iter()
            .map(|(k, v, ts)| {
                (
                    k.as_bytes().to_vec(),
                    Versioned {
                        ts: Timestamp(*ts),
                        value: v.as_bytes().to_vec(),
                    },
                )
            })
            .collect())
    }

    fn put(k: &str, v: &str) -> Mutation {
        Mutation::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn cas(key: &str, expected: Expected, new: Option<&str>) -> WriteOp {
        WriteOp::CompareAndSet {
            key: key.into(),
            expected,
            new: new.map(Into::into),
        }
    }

    #[test]
    fn a_batch_is_one_record_as_given() {
        let batch = vec![put("a", "1"), Mutation::Delete { key: "b".into() }];
        let (records, result) = evaluate(WriteOp::Batch(batch.clone()), &map(&[])).unwrap();
        assert_eq!(records, vec![batch]);
        assert_eq!(result, OpResult::Done);
    }

    #[test]
    fn a_range_deletion_deletes_the_live_keys_of_its_range_only() {
        let current = map(&[("a", "1", 1), ("b", "2", 2), ("c", "3", 3), ("d", "4", 4)]);
        let range = KeyRange {
            start: b"b".to_vec(),
            end: Some(b"d".to_vec()),
        };
        let (records, result) = evaluate(WriteOp::DeleteRange(range), &current).unwrap();
        assert_eq!(
            records,
            vec![vec![
                Mutation::Delete { key: "b".into() },
                Mutation::Delete { key: "c".into() }
            ]]
        );
        assert_eq!(result, OpResult::RangeDeleted(2));
    }

    #[test]
    fn a_large_range_deletion_spreads_over_records_and_an_empty_one_writes_nothing() {
        let keys: Vec<(String, &str, u64)> =
            (0..2500).map(|i| (format!("k{i:05}"), "v", 1)).collect();
        let refs: Vec<(&str, &str, u64)> =
            keys.iter().map(|(k, v, t)| (k.as_str(), *v, *t)).collect();
        let (records, result) = evaluate(
            WriteOp::DeleteRange(KeyRange {
                start: Vec::new(),
                end: None,
            }),
            &map(&refs),
        )
        .unwrap();
        assert_eq!(
            records.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![DELETES_PER_RECORD, DELETES_PER_RECORD, 500]
        );
        assert_eq!(result, OpResult::RangeDeleted(2500));
        let (records, result) = evaluate(
            WriteOp::DeleteRange(KeyRange {
                start: Vec::new(),
                end: None,
            }),
            &map(&[]),
        )
        .unwrap();
        assert!(records.is_empty());
        assert_eq!(result, OpResult::RangeDeleted(0));
    }

    #[test]
    fn compare_and_set_writes_only_when_its_condition_holds() {
        let current = map(&[("k", "old", 7)]);
        let (records, result) = evaluate(
            cas("k", Expected::Version(Timestamp(7)), Some("new")),
            &current,
        )
        .unwrap();
        assert_eq!(records, vec![vec![put("k", "new")]]);
        assert_eq!(result, OpResult::Done);
        let (records, result) =
            evaluate(cas("k", Expected::Version(Timestamp(7)), None), &current).unwrap();
        assert_eq!(records, vec![vec![Mutation::Delete { key: "k".into() }]]);
        assert_eq!(result, OpResult::Done);
        let (records, result) =
            evaluate(cas("new", Expected::Absent, Some("v")), &current).unwrap();
        assert_eq!(records, vec![vec![put("new", "v")]]);
        assert_eq!(result, OpResult::Done);
    }

    #[test]
    fn a_failed_compare_and_set_writes_nothing_and_answers_what_the_key_holds() {
        let current = map(&[("k", "old", 7)]);
        let held = current.get(b"k").unwrap();
        for op in [
            cas("k", Expected::Version(Timestamp(6)), Some("new")),
            cas("k", Expected::Absent, Some("new")),
        ] {
            let (records, result) = evaluate(op, &current).unwrap();
            assert!(records.is_empty());
            assert_eq!(result, OpResult::Mismatch(held.clone()));
        }
        let (records, result) = evaluate(
            cas("gone", Expected::Version(Timestamp(1)), Some("v")),
            &current,
        )
        .unwrap();
        assert!(records.is_empty());
        assert_eq!(result, OpResult::Mismatch(None));
    }

    #[test]
    fn an_increment_adds_to_a_decimal_integer_an_absent_key_counting_as_zero() {
        let current = map(&[("n", "-5", 1)]);
        let inc = |key: &str, delta| WriteOp::Increment {
            key: key.into(),
            delta,
        };
        let (records, result) = evaluate(inc("n", 7), &current).unwrap();
        assert_eq!(records, vec![vec![put("n", "2")]]);
        assert_eq!(result, OpResult::Counter(2));
        let (records, result) = evaluate(inc("absent", -3), &current).unwrap();
        assert_eq!(records, vec![vec![put("absent", "-3")]]);
        assert_eq!(result, OpResult::Counter(-3));
    }

    #[test]
    fn an_increment_of_a_non_integer_or_past_the_range_fails_and_writes_nothing() {
        let current = map(&[("text", "seven", 1), ("max", &i64::MAX.to_string(), 1)]);
        for (key, delta) in [("text", 1), ("max", 1)] {
            let r = evaluate(
                WriteOp::Increment {
                    key: key.into(),
                    delta,
                },
                &current,
            );
            assert!(matches!(r, Err(Error::NotAnInteger)), "{key}: {r:?}");
        }
    }
}
