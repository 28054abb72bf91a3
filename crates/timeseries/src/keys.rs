//! The row layout of a `timeseries` table in its strong tablets.
//!
//! Every row of a week sits under the week's prefix `w | week`, so a week is one
//! key range: retention deletes it whole and a query reads only the weeks it
//! covers. Within a week, in key order:
//!
//! ```text
//! w | week | 'l' | u16 name len | name | u16 value len | value | series id   → ()          label index
//! w | week | 'r' | series id | window start                                  → 5-minute rollups
//! w | week | 's' | series id                                                → labels      series
//! w | week | 'x' | series id | first ts | nonce                              → Gorilla chunk
//! ```
//!
//! The label index and the series come before the samples, so the samples of a week
//! can be cut into sub-ranges by series id (a hot week's tablet split at
//! `w | week | 'x' | id`) while the index stays in one piece. A series' chunks sort
//! by their first timestamp; `nonce` tells apart chunks written by different
//! requests (it is the writing node's clock, so a later write has a larger one) and
//! for a timestamp written twice the larger nonce's value stands.
//!
//! Integers are big-endian; signed ones (weeks, timestamps) have their sign bit
//! flipped so they sort as numbers.

use crate::labels::SeriesId;
use crate::week::Week;

const WEEK_TAG: u8 = b'w';
const INDEX_TAG: u8 = b'l';
const ROLLUP_TAG: u8 = b'r';
const SERIES_TAG: u8 = b's';
const CHUNK_TAG: u8 = b'x';

fn signed(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsigned(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// The first key of `week`.
pub fn week_start(week: Week) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(WEEK_TAG);
    k.extend_from_slice(&week.key());
    k
}

/// The key range `[start, end)` of `week`.
pub fn week_range(week: Week) -> (Vec<u8>, Vec<u8>) {
    (week_start(week), week_start(week.next()))
}

fn week_tagged(week: Week, tag: u8) -> Vec<u8> {
    let mut k = week_start(week);
    k.push(tag);
    k
}

/// The range of a week's rows of one kind.
fn tag_range(week: Week, tag: u8) -> (Vec<u8>, Vec<u8>) {
    (week_tagged(week, tag), week_tagged(week, tag + 1))
}

/// The key of a series' labels in `week`.
pub fn series_key(week: Week, id: SeriesId) -> Vec<u8> {
    let mut k = week_tagged(week, SERIES_TAG);
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The range of every series of `week`.
pub fn series_range(week: Week) -> (Vec<u8>, Vec<u8>) {
    tag_range(week, SERIES_TAG)
}

/// The series id of a series key.
pub fn parse_series_key(key: &[u8]) -> Option<SeriesId> {
    let id = key.get(10..18)?;
    (key.len() == 18 && key[9] == SERIES_TAG)
        .then(|| SeriesId(u64::from_be_bytes(id.try_into().expect("8 bytes"))))
}

fn push_text(k: &mut Vec<u8>, s: &str) {
    k.extend_from_slice(&(s.len() as u16).to_be_bytes());
    k.extend_from_slice(s.as_bytes());
}

/// The index key saying series `id` has label `name="value"` in `week`.
pub fn index_key(week: Week, name: &str, value: &str, id: SeriesId) -> Vec<u8> {
    let mut k = week_tagged(week, INDEX_TAG);
    push_text(&mut k, name);
    push_text(&mut k, value);
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The range of index keys of label `name` (with `value`, when given) in `week`.
pub fn index_range(week: Week, name: &str, value: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut start = week_tagged(week, INDEX_TAG);
    push_text(&mut start, name);
    if let Some(value) = value {
        push_text(&mut start, value);
    }
    let end = prefix_end(&start);
    (start, end)
}

/// The range of the whole label index of `week`.
pub fn whole_index_range(week: Week) -> (Vec<u8>, Vec<u8>) {
    tag_range(week, INDEX_TAG)
}

/// The label name, value and series of an index key.
pub fn parse_index_key(key: &[u8]) -> Option<(String, String, SeriesId)> {
    if key.get(9) != Some(&INDEX_TAG) {
        return None;
    }
    let mut rest = &key[10..];
    let mut text = || {
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
        rest = &rest[2 + len..];
        Some(s)
    };
    let (name, value) = (text()?, text()?);
    let id = u64::from_be_bytes(rest.try_into().ok()?);
    Some((name, value, SeriesId(id)))
}

/// The key of a chunk of series `id` in `week` whose first sample is at `first_ts`.
pub fn chunk_key(week: Week, id: SeriesId, first_ts: i64, nonce: u64) -> Vec<u8> {
    let mut k = chunk_prefix(week, id);
    k.extend_from_slice(&signed(first_ts));
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

/// The range of every chunk of series `id` in `week`.
pub fn chunk_prefix(week: Week, id: SeriesId) -> Vec<u8> {
    let mut k = week_tagged(week, CHUNK_TAG);
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The range of every chunk of `week`.
pub fn chunk_range(week: Week) -> (Vec<u8>, Vec<u8>) {
    tag_range(week, CHUNK_TAG)
}

/// Where a week's chunks are cut into `2^bits` sub-ranges by series id: the start
/// of sub-range `i`.
pub fn chunk_split_key(week: Week, i: u64, bits: u32) -> Vec<u8> {
    let mut k = week_tagged(week, CHUNK_TAG);
    k.extend_from_slice(&(i << (64 - bits)).to_be_bytes());
    k
}

/// The key of the rollups of series `id` over the window starting at `window`.
pub fn rollup_key(week: Week, id: SeriesId, window: i64) -> Vec<u8> {
    let mut k = rollup_prefix(week, id);
    k.extend_from_slice(&signed(window));
    k
}

/// The range of every rollup row of series `id` in `week`.
pub fn rollup_prefix(week: Week, id: SeriesId) -> Vec<u8> {
    let mut k = week_tagged(week, ROLLUP_TAG);
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The range of every rollup row of `week`.
pub fn rollup_range(week: Week) -> (Vec<u8>, Vec<u8>) {
    tag_range(week, ROLLUP_TAG)
}

/// A rollup key's week, series and window start.
pub fn parse_rollup_key(key: &[u8]) -> Option<(Week, SeriesId, i64)> {
    if key.len() != 26 || key[0] != WEEK_TAG || key[9] != ROLLUP_TAG {
        return None;
    }
    let week = Week(unsigned(&key[1..9])?);
    let id = SeriesId(u64::from_be_bytes(key[10..18].try_into().ok()?));
    Some((week, id, unsigned(&key[18..26])?))
}

/// The week a key of a `timeseries` table falls in (`None` before every week).
pub fn week_of_key(key: &[u8]) -> Option<Week> {
    if key.first() != Some(&WEEK_TAG) || key.len() < 9 {
        return None;
    }
    unsigned(&key[1..9]).map(Week)
}

/// A chunk key's week, series, first timestamp and nonce.
pub fn parse_chunk_key(key: &[u8]) -> Option<(Week, SeriesId, i64, u64)> {
    if key.len() != 34 || key[0] != WEEK_TAG || key[9] != CHUNK_TAG {
        return None;
    }
    let week = Week(unsigned(&key[1..9])?);
    let id = SeriesId(u64::from_be_bytes(key[10..18].try_into().ok()?));
    let first = unsigned(&key[18..26])?;
    let nonce = u64::from_be_bytes(key[26..34].try_into().ok()?);
    Some((week, id, first, nonce))
}

/// The first key after every key that begins with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_keys_round_trip_and_sort(
            w in -3000i64..3000, id: u64, t1: i64, t2: i64, n1: u64, n2: u64,
        ) {
            let week = Week(w);
            let (a, b) = (chunk_key(week, SeriesId(id), t1, n1), chunk_key(week, SeriesId(id), t2, n2));
            prop_assert_eq!(parse_chunk_key(&a), Some((week, SeriesId(id), t1, n1)));
            prop_assert_eq!(a.cmp(&b), (t1, n1).cmp(&(t2, n2)));
            let (start, end) = week_range(week);
            prop_assert!(start <= a && a < end);
            let prefix = chunk_prefix(week, SeriesId(id));
            prop_assert!(a.starts_with(&prefix));
        }

        #[test]
        fn index_keys_round_trip(w in -100i64..100, name in "[a-z_]{1,8}", value in "\\PC{0,12}", id: u64) {
            let week = Week(w);
            let k = index_key(week, &name, &value, SeriesId(id));
            prop_assert_eq!(parse_index_key(&k), Some((name.clone(), value.clone(), SeriesId(id))));
            let (s, e) = index_range(week, &name, Some(&value));
            prop_assert!(s <= k && k < e);
            let (s, e) = index_range(week, &name, None);
            prop_assert!(s <= k && k < e);
            let (s, e) = whole_index_range(week);
            prop_assert!(s <= k && k < e);
        }
    }

    #[test]
    fn a_week_holds_index_then_series_then_chunks() {
        let week = Week(2900);
        let id = SeriesId(u64::MAX);
        let index = index_key(week, "job", "x", id);
        let series = series_key(week, id);
        let chunk = chunk_key(week, SeriesId(0), i64::MIN, 0);
        let rollup = rollup_key(week, id, i64::MAX);
        assert!(index < rollup && rollup < series && series < chunk);
        assert_eq!(parse_rollup_key(&rollup), Some((week, id, i64::MAX)));
        assert_eq!(week_of_key(&rollup), Some(week));
        assert_eq!(week_of_key(b""), None);
        assert_eq!(parse_series_key(&series), Some(id));
        let (_, end) = week_range(week);
        assert!(chunk_key(week, id, i64::MAX, u64::MAX) < end);
        assert!(week_range(Week(2899)).1 == week_start(week));
        // Sub-range split keys lie among the chunks, in order.
        let halves = chunk_split_key(week, 1, 1);
        assert!(chunk_key(week, SeriesId(1 << 62), 0, 0) < halves);
        assert!(halves <= chunk_key(week, SeriesId(1 << 63), i64::MIN, 0));
    }
}
