//! Order-preserving key encoding. Pure functions, no I/O.
//!
//! A version of a user key is stored in the data column family under
//!
//! ```text
//! table id (8 bytes, big-endian) | escaped user key | 0x00 0x01 | !timestamp (8 bytes, big-endian)
//! ```
//!
//! The escape writes every `0x00` byte of the user key as `0x00 0xFF` and ends the key
//! with `0x00 0x01`, so encoded keys compare exactly as `(table, user key)` compare
//! bytewise, and no encoded key is a prefix of another's. The timestamp is inverted so
//! the versions of one key sort newest first: a seek to `(key, !t)` lands on the newest
//! version at or below `t`.

use crate::hlc::Timestamp;
use crate::ids::{Seq, TableId, TabletId};

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Length of the timestamp suffix of a version key.
pub const TS_LEN: usize = 8;

/// The error of a key that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed encoded key: {0}")]
pub struct DecodeError(pub &'static str);

/// Appends the escaped, terminated form of `key` to `out`.
pub fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    out.reserve(key.len() + 2);
    for &b in key {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.push(ESCAPE);
    out.push(TERMINATOR);
}

/// The prefix shared by every version of `key` in `table`. It also serves as the
/// inclusive lower bound of a range starting at `key`, and the exclusive upper bound
/// of a range ending at `key`.
pub fn key_prefix(table: TableId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len() + 2 + TS_LEN);
    out.extend_from_slice(&table.0.to_be_bytes());
    escape_into(key, &mut out);
    out
}

/// The encoded key of the version of `key` written at `ts`.
pub fn version_key(table: TableId, key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = key_prefix(table, key);
    out.extend_from_slice(&(!ts.0).to_be_bytes());
    out
}

/// The first encoded key of `table`.
pub fn table_start(table: TableId) -> Vec<u8> {
    table.0.to_be_bytes().to_vec()
}

/// The first encoded key after `table`.
pub fn table_end(table: TableId) -> Vec<u8> {
    (table.0 + 1).to_be_bytes().to_vec()
}

/// A decoded version key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionKey {
    /// The table the version belongs to.
    pub table: TableId,
    /// The user key.
    pub key: Vec<u8>,
    /// When the version was written.
    pub ts: Timestamp,
}

/// Decodes a key written by [`version_key`].
pub fn decode_version_key(encoded: &[u8]) -> Result<VersionKey, DecodeError> {
    if encoded.len() < 8 + 2 + TS_LEN {
        return Err(DecodeError("too short"));
    }
    let table = TableId(u64::from_be_bytes(
        encoded[..8]
            .try_into()
            .map_err(|_| DecodeError("table id"))?,
    ));
    let (body, ts_bytes) = encoded[8..].split_at(encoded.len() - 8 - TS_LEN);
    let ts = !u64::from_be_bytes(ts_bytes.try_into().map_err(|_| DecodeError("timestamp"))?);
    let key = unescape(body)?;
    Ok(VersionKey {
        table,
        key,
        ts: Timestamp(ts),
    })
}

/// Splits a version key into its prefix (see [`key_prefix`]) and its timestamp.
pub fn split_version_key(encoded: &[u8]) -> Result<(&[u8], Timestamp), DecodeError> {
    if encoded.len() < 8 + 2 + TS_LEN {
        return Err(DecodeError("too short"));
    }
    let (prefix, ts_bytes) = encoded.split_at(encoded.len() - TS_LEN);
    let ts = !u64::from_be_bytes(ts_bytes.try_into().map_err(|_| DecodeError("timestamp"))?);
    Ok((prefix, Timestamp(ts)))
}

/// Decodes the user key from a prefix made by [`key_prefix`].
pub fn decode_prefix_key(prefix: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if prefix.len() < 8 + 2 {
        return Err(DecodeError("too short"));
    }
    unescape(&prefix[8..])
}

fn unescape(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != ESCAPE {
            key.push(b);
            i += 1;
            continue;
        }
        match body.get(i + 1) {
            Some(&ESCAPED_ZERO) => {
                key.push(0);
                i += 2;
            }
            Some(&TERMINATOR) if i + 2 == body.len() => return Ok(key),
            _ => return Err(DecodeError("bad escape")),
        }
    }
    Err(DecodeError("missing terminator"))
}

/// The key of a record in the oplog column family: records of a tablet sort by seq.
pub fn oplog_key(tablet: TabletId, seq: Seq) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&tablet.0.to_be_bytes());
    out[8..].copy_from_slice(&seq.0.to_be_bytes());
    out
}

/// Decodes the seq of an oplog key.
pub fn oplog_seq(key: &[u8]) -> Result<Seq, DecodeError> {
    let bytes: [u8; 8] = key
        .get(8..16)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError("oplog key"))?;
    Ok(Seq(u64::from_be_bytes(bytes)))
}

/// The key of a tablet's replica state in the tablet column family.
pub fn tablet_state_key(tablet: TabletId) -> [u8; 8] {
    tablet.0.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_key() -> impl Strategy<Value = Vec<u8>> {
        // Bias towards the bytes the escape treats specially.
        prop::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()],
            0..24,
        )
    }

    proptest! {
        #[test]
        fn round_trip(table in any::<u64>(), key in arb_key(), ts in any::<u64>()) {
            let enc = version_key(TableId(table), &key, Timestamp(ts));
            let dec = decode_version_key(&enc).expect("decodes");
            prop_assert_eq!(dec, VersionKey { table: TableId(table), key: key.clone(), ts: Timestamp(ts) });
            let (prefix, t) = split_version_key(&enc).expect("splits");
            prop_assert_eq!(t, Timestamp(ts));
            prop_assert_eq!(decode_prefix_key(prefix).expect("prefix decodes"), key);
        }

        #[test]
        fn order_matches_table_key_then_newest_first(
            t1 in 0u64..4, k1 in arb_key(), ts1 in any::<u64>(),
            t2 in 0u64..4, k2 in arb_key(), ts2 in any::<u64>(),
        ) {
            let a = version_key(TableId(t1), &k1, Timestamp(ts1));
            let b = version_key(TableId(t2), &k2, Timestamp(ts2));
            let logical = (t1, &k1, std::cmp::Reverse(ts1)).cmp(&(t2, &k2, std::cmp::Reverse(ts2)));
            prop_assert_eq!(a.cmp(&b), logical);
        }

        #[test]
        fn versions_sit_inside_their_range_bounds(
            table in any::<u32>(), key in arb_key(), lo in arb_key(), hi in arb_key(), ts in any::<u64>(),
        ) {
            let table = TableId(u64::from(table));
            let enc = version_key(table, &key, Timestamp(ts));
            let in_range = key >= lo && key < hi;
            let in_bounds = enc >= key_prefix(table, &lo) && enc < key_prefix(table, &hi);
            prop_assert_eq!(in_range, in_bounds);
            prop_assert!(enc >= table_start(table) && enc < table_end(table));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_version_key(&bytes);
            let _ = decode_prefix_key(&bytes);
        }
    }

    #[test]
    fn empty_key_and_zero_bytes_order() {
        let t = TableId(7);
        let ts = Timestamp(5);
        let keys: [&[u8]; 5] = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"\x01"];
        for pair in keys.windows(2) {
            assert!(
                version_key(t, pair[0], ts) < version_key(t, pair[1], ts),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn oplog_keys_sort_by_tablet_then_seq() {
        assert!(oplog_key(TabletId(1), Seq(u64::MAX)) < oplog_key(TabletId(2), Seq(0)));
        assert!(oplog_key(TabletId(1), Seq(9)) < oplog_key(TabletId(1), Seq(10)));
        assert_eq!(oplog_seq(&oplog_key(TabletId(3), Seq(42))), Ok(Seq(42)));
    }
}
