//! Gorilla compression of a series' samples (Pelkonen et al., VLDB 2015, as
//! Prometheus's chunks do it): timestamps as delta-of-deltas in variable-width
//! buckets, values as the XOR with the previous value, written with the leading and
//! trailing zero counts it shares with the window before.
//!
//! A block is a sample count (LEB128) and the bits. Appending costs O(1), so the open
//! block of a series grows sample by sample. Timestamps are milliseconds (i64) and
//! must increase strictly within a block; any gap fits (a delta-of-delta past the
//! widest bucket is written whole, in 64 bits). Values are kept bit for bit: every
//! NaN, including Prometheus's staleness marker, decodes to the same bits.

use thiserror::Error;

/// Why a sample cannot be appended, or a block does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    /// Timestamps must increase within a block.
    #[error("sample at {got} ms is not after the block's last sample at {last} ms")]
    OutOfOrder {
        /// The block's last timestamp.
        last: i64,
        /// The one appended.
        got: i64,
    },
    /// The bytes end before the samples they announce.
    #[error("the block is cut short: {0}")]
    Truncated(&'static str),
}

/// The delta-of-delta buckets after the `0` for "same delta": a prefix of ones
/// ending in a zero (the last bucket has none), and the width of the value.
const BUCKETS: [(u64, u32, u32); 4] = [
    // (prefix bits, prefix length, value width)
    (0b10, 2, 14),
    (0b110, 3, 17),
    (0b1110, 4, 20),
    (0b1111, 4, 64),
];

/// A growing block.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    bits: BitWriter,
    count: u64,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    /// The leading and trailing zeros of the last XOR window (`None` before one).
    window: Option<(u32, u32)>,
}

impl Encoder {
    /// An empty block.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Samples in the block.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last sample's timestamp (`None` when empty).
    pub fn last_timestamp(&self) -> Option<i64> {
        (self.count > 0).then_some(self.last_t)
    }

    /// Appends a sample; its timestamp must be after the last one.
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), BlockError> {
        let v = v.to_bits();
        if self.count == 0 {
            self.bits.write(t as u64, 64);
            self.bits.write(v, 64);
            self.last_delta = 0;
        } else {
            if t <= self.last_t {
                return Err(BlockError::OutOfOrder {
                    last: self.last_t,
                    got: t,
                });
            }
            // Wrapping: deltas of timestamps far apart still round-trip.
            let delta = t.wrapping_sub(self.last_t);
            self.write_dod(delta.wrapping_sub(self.last_delta));
            self.last_delta = delta;
            self.write_xor(v ^ self.last_v);
        }
        self.last_t = t;
        self.last_v = v;
        self.count += 1;
        Ok(())
    }

    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.bits.write(0, 1);
            return;
        }
        for (prefix, len, width) in BUCKETS {
            if width == 64 || fits(dod, width) {
                self.bits.write(prefix, len);
                self.bits.write(dod as u64 & mask(width), width);
                return;
            }
        }
    }

    fn write_xor(&mut self, x: u64) {
        if x == 0 {
            self.bits.write(0, 1);
            return;
        }
        self.bits.write(1, 1);
        // At most 31 leading zeros fit the 5-bit field.
        let (lead, trail) = (x.leading_zeros().min(31), x.trailing_zeros());
        if let Some((l, t)) = self.window
            && lead >= l
            && trail >= t
        {
            self.bits.write(0, 1);
            self.bits.write(x >> t, 64 - l - t);
            return;
        }
        let significant = 64 - lead - trail;
        self.bits.write(1, 1);
        self.bits.write(lead as u64, 5);
        // 64 significant bits are written as 0 (a window is never empty).
        self.bits.write(significant as u64 & 63, 6);
        self.bits.write(x >> trail, significant);
        self.window = Some((lead, trail));
    }

    /// The block's bytes: the sample count, then the bits.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bits.bytes.len() + 10);
        let mut n = self.count;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(&self.bits.bytes);
        out
    }
}

/// Whether `v` fits `width` bits as Prometheus's buckets count: from
/// -(2^(width-1) - 1) to 2^(width-1).
fn fits(v: i64, width: u32) -> bool {
    let half = 1i64 << (width - 1);
    -(half - 1) <= v && v <= half
}

fn mask(width: u32) -> u64 {
    if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// The samples of a block, in order.
pub fn decode(block: &[u8]) -> Result<Vec<(i64, f64)>, BlockError> {
    let mut at = 0;
    let mut count = 0u64;
    let mut shift = 0;
    loop {
        let byte = *block
            .get(at)
            .ok_or(BlockError::Truncated("no sample count"))?;
        at += 1;
        if shift >= 64 {
            return Err(BlockError::Truncated("a sample count past 64 bits"));
        }
        count |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut r = BitReader {
        bytes: &block[at..],
        pos: 0,
    };
    // A sample takes at least two bits: a count past that is not this block's.
    if count > (r.bytes.len() as u64 * 8) / 2 + 1 {
        return Err(BlockError::Truncated("fewer bits than samples"));
    }
    let mut out = Vec::with_capacity(count as usize);
    if count == 0 {
        return Ok(out);
    }
    let mut t = r.read(64)? as i64;
    let mut v = r.read(64)?;
    out.push((t, f64::from_bits(v)));
    let (mut delta, mut window) = (0i64, (0u32, 0u32));
    for _ in 1..count {
        let dod = if r.read(1)? == 0 {
            0
        } else {
            let mut width = 64;
            for (_, _, w) in &BUCKETS[..3] {
                if r.read(1)? == 0 {
                    width = *w;
                    break;
                }
            }
            let raw = r.read(width)?;
            if width == 64 {
                raw as i64
            } else if raw > 1u64 << (width - 1) {
                raw as i64 - (1i64 << width)
            } else {
                raw as i64
            }
        };
        delta = delta.wrapping_add(dod);
        t = t.wrapping_add(delta);
        if r.read(1)? == 1 {
            if r.read(1)? == 1 {
                let lead = r.read(5)? as u32;
                let significant = match r.read(6)? as u32 {
                    0 => 64,
                    n => n,
                };
                if lead + significant > 64 {
                    return Err(BlockError::Truncated("an XOR window past 64 bits"));
                }
                window = (lead, 64 - lead - significant);
            }
            let (lead, trail) = window;
            v ^= r.read(64 - lead - trail)? << trail;
        }
        out.push((t, f64::from_bits(v)));
    }
    Ok(out)
}

#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0: it is full, or there is none).
    used: u32,
}

impl BitWriter {
    /// Writes the low `n` bits of `v`, most significant first.
    fn write(&mut self, v: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let room = 8 - self.used;
            let take = room.min(left);
            let chunk = ((v >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.last_mut().expect("pushed above");
            *last |= chunk << (room - take);
            self.used = (self.used + take) % 8;
            left -= take;
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: u32) -> Result<u64, BlockError> {
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = *self
                .bytes
                .get(self.pos / 8)
                .ok_or(BlockError::Truncated("fewer bits than samples"))?;
            let used = (self.pos % 8) as u32;
            let room = 8 - used;
            let take = room.min(left);
            let chunk = (byte >> (room - take)) & ((1u16 << take) - 1) as u8;
            v = (v << take) | u64::from(chunk);
            self.pos += take as usize;
            left -= take;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Prometheus's staleness marker.
    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
        let mut e = Encoder::new();
        for (t, v) in samples {
            e.append(*t, *v).expect("in order");
        }
        e.bytes()
    }

    fn same_bits(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    #[test]
    fn a_regular_series_takes_under_two_bytes_per_sample() {
        // Scraped every 15 s (a few late by a millisecond), a counter that moves by
        // small steps now and then.
        let samples: Vec<(i64, f64)> = (0..1000)
            .map(|i| {
                let late = i64::from(i % 50 == 0);
                (1_700_000_000_000 + i * 15_000 + late, (i / 4 * 3) as f64)
            })
            .collect();
        let block = encode(&samples);
        assert!(same_bits(&decode(&block).unwrap(), &samples));
        let per_sample = block.len() as f64 / samples.len() as f64;
        assert!(per_sample < 2.0, "{per_sample} bytes per sample");
    }

    #[test]
    fn nan_staleness_markers_and_extremes_keep_their_bits() {
        let samples = [
            (i64::MIN + 1, 1.0),
            (-5, f64::from_bits(STALE_NAN)),
            (0, f64::NAN),
            (1, -0.0),
            (2, f64::INFINITY),
            (i64::MAX, f64::MIN_POSITIVE),
        ];
        let got = decode(&encode(&samples)).unwrap();
        assert!(same_bits(&got, &samples), "{got:?}");
    }

    #[test]
    fn out_of_order_and_repeated_timestamps_are_refused() {
        let mut e = Encoder::new();
        e.append(10, 1.0).unwrap();
        assert_eq!(
            e.append(10, 2.0),
            Err(BlockError::OutOfOrder { last: 10, got: 10 })
        );
        assert!(e.append(9, 2.0).is_err());
        assert_eq!(e.len(), 1, "nothing appended");
        assert_eq!(decode(&e.bytes()).unwrap(), vec![(10, 1.0)]);
    }

    #[test]
    fn a_cut_block_is_an_error_not_a_panic() {
        let samples: Vec<(i64, f64)> = (0..50).map(|i| (i * 1000, i as f64 * 1.5)).collect();
        let block = encode(&samples);
        for cut in 0..block.len() {
            assert!(decode(&block[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0xff; 12]).is_err());
    }

    proptest! {
        #[test]
        fn every_block_decodes_to_what_was_appended(
            start in any::<i64>(),
            gaps in proptest::collection::vec(1u64..=u64::MAX >> 1, 0..200),
            values in proptest::collection::vec(any::<u64>(), 201),
            small in any::<bool>(),
        ) {
            // Small gaps (the usual case) or any gap at all.
            let mut samples = vec![(start, f64::from_bits(values[0]))];
            let mut t = start;
            for (i, gap) in gaps.iter().enumerate() {
                let gap = if small { (*gap % 30_000 + 1) as i64 } else { *gap as i64 };
                let Some(next) = t.checked_add(gap) else { break };
                t = next;
                let v = if small { (values[i + 1] % 100) as f64 } else { f64::from_bits(values[i + 1]) };
                samples.push((t, v));
            }
            let got = decode(&encode(&samples)).unwrap();
            prop_assert!(same_bits(&got, &samples));
        }
    }
}
