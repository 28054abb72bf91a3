//! Rollups: what a series keeps of a week past raw retention (a table's
//! `rollup_retention_weeks`).
//!
//! Before the keeper deletes a week's raw samples it sums each series up per
//! five-minute bucket ([`BUCKET_MS`], aligned to the epoch): the count, sum, min and
//! max of its values and its last sample. One row holds a series' buckets of one
//! two-hour window ([`crate::keeper::WINDOW_MS`]); the series rows and the label
//! index of the week stay, so selectors match there as before.
//!
//! A query over such a week reads the rollups as one sample per bucket, at the
//! time of the bucket's last sample, whose value is the aggregate its function
//! needs (as Thanos's downsampling does): `min_over_time` the minimum,
//! `max_over_time` the maximum, `sum_over_time` the sum, `count_over_time` the
//! count (the function then sums them, and raw samples of kept weeks count as 1
//! each), `avg_over_time` the bucket's mean, and everything else (plain selectors,
//! `rate`, `increase`, `last_over_time`, ...) the last value. So
//! `min/max/sum/count_over_time` over whole buckets answer as the raw samples
//! would; `avg_over_time` does when the buckets hold equally many samples; `rate`
//! and the like see a series sampled every five minutes (a counter reset inside a
//! bucket that climbs past its old value within it is not seen). Staleness markers
//! are not rolled up.

use crate::functions::is_stale;
use std::collections::BTreeMap;

/// A rollup bucket's width: five minutes.
pub const BUCKET_MS: i64 = 300_000;
/// Encoding version of a rollup row.
const VERSION: u8 = 1;
/// Bytes of one bucket in a row.
const BUCKET_BYTES: usize = 44;

/// One five-minute bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// When the bucket's last sample was taken (ms); the bucket is the one holding it.
    pub last_ts: i64,
    /// Samples summed up.
    pub count: u32,
    /// Their sum.
    pub sum: f64,
    /// Their minimum (NaN only when every value is NaN, as Prometheus's `min_over_time`).
    pub min: f64,
    /// Their maximum (likewise).
    pub max: f64,
    /// The last sample's value.
    pub last: f64,
}

impl Bucket {
    fn of(t: i64, v: f64) -> Bucket {
        Bucket {
            last_ts: t,
            count: 1,
            sum: v,
            min: v,
            max: v,
            last: v,
        }
    }

    fn add(&mut self, t: i64, v: f64) {
        self.count += 1;
        self.sum += v;
        if self.min.is_nan() || v < self.min {
            self.min = v;
        }
        if self.max.is_nan() || v > self.max {
            self.max = v;
        }
        if t >= self.last_ts {
            self.last_ts = t;
            self.last = v;
        }
    }
}

/// The bucket (its start) holding `t`.
pub fn bucket_of(t: i64) -> i64 {
    t.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// Sums up `samples` (time order, one per timestamp) per bucket, grouped by the
/// window (its start) each bucket lies in; staleness markers are left out.
pub fn roll(samples: &[(i64, f64)]) -> BTreeMap<i64, Vec<Bucket>> {
    let mut windows: BTreeMap<i64, Vec<Bucket>> = BTreeMap::new();
    for &(t, v) in samples {
        if is_stale(v) {
            continue;
        }
        let window = crate::keeper::window_of(t);
        let buckets = windows.entry(window).or_default();
        match buckets.last_mut() {
            Some(b) if bucket_of(b.last_ts) == bucket_of(t) => b.add(t, v),
            _ => buckets.push(Bucket::of(t, v)),
        }
    }
    windows
}

/// Adds the buckets of `more` (in time order) to `into` (in time order): the same
/// bucket in both sums up both.
pub fn combine(into: &mut Vec<Bucket>, more: &[Bucket]) {
    let mut merged: BTreeMap<i64, Bucket> =
        into.drain(..).map(|b| (bucket_of(b.last_ts), b)).collect();
    for m in more {
        merged
            .entry(bucket_of(m.last_ts))
            .and_modify(|b| {
                b.count += m.count;
                b.sum += m.sum;
                if b.min.is_nan() || m.min < b.min {
                    b.min = m.min;
                }
                if b.max.is_nan() || m.max > b.max {
                    b.max = m.max;
                }
                if m.last_ts >= b.last_ts {
                    b.last_ts = m.last_ts;
                    b.last = m.last;
                }
            })
            .or_insert(*m);
    }
    into.extend(merged.into_values());
}

/// A rollup row's value: the newest nonce of the chunks summed up, then the
/// buckets.
pub fn encode(nonce: u64, buckets: &[Bucket]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + buckets.len() * BUCKET_BYTES);
    out.push(VERSION);
    out.extend_from_slice(&nonce.to_le_bytes());
    for b in buckets {
        out.extend_from_slice(&b.last_ts.to_le_bytes());
        out.extend_from_slice(&b.count.to_le_bytes());
        for f in [b.sum, b.min, b.max, b.last] {
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
    out
}

/// Why a rollup row does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rollup row: {0}")]
pub struct DecodeError(&'static str);

/// A rollup row's nonce and buckets.
pub fn decode(bytes: &[u8]) -> Result<(u64, Vec<Bucket>), DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError("empty"))?;
    if version != VERSION {
        return Err(DecodeError("unknown version"));
    }
    if rest.len() < 8 || (rest.len() - 8) % BUCKET_BYTES != 0 {
        return Err(DecodeError("truncated"));
    }
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let nonce = u64_at(rest, 0);
    let buckets = rest[8..]
        .chunks_exact(BUCKET_BYTES)
        .map(|b| Bucket {
            last_ts: u64_at(b, 0) as i64,
            count: u32::from_le_bytes(b[8..12].try_into().expect("4")),
            sum: f64::from_bits(u64_at(b, 12)),
            min: f64::from_bits(u64_at(b, 20)),
            max: f64::from_bits(u64_at(b, 28)),
            last: f64::from_bits(u64_at(b, 36)),
        })
        .collect();
    Ok((nonce, buckets))
}

/// Which aggregate of a bucket a selector reads over rolled-up weeks (the function
/// it is the argument of decides; see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// The last value (plain selectors, `rate`, and every other function).
    Last,
    /// The number of samples (`count_over_time`, evaluated as a sum of them).
    Count,
    /// The sum (`sum_over_time`).
    Sum,
    /// The minimum (`min_over_time`).
    Min,
    /// The maximum (`max_over_time`).
    Max,
    /// The mean (`avg_over_time`).
    Avg,
}

impl Aggregate {
    /// The aggregate an argument of the function `name` reads.
    pub fn for_function(name: &str) -> Aggregate {
        match name {
            "count_over_time" => Aggregate::Count,
            "sum_over_time" => Aggregate::Sum,
            "min_over_time" => Aggregate::Min,
            "max_over_time" => Aggregate::Max,
            "avg_over_time" => Aggregate::Avg,
            _ => Aggregate::Last,
        }
    }

    /// The name it goes by in the rewritten query's marker label.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Last => "last",
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Avg => "avg",
        }
    }

    /// The aggregate of that name.
    pub fn parse(name: &str) -> Option<Aggregate> {
        [
            Aggregate::Last,
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Avg,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// A bucket as the one sample this aggregate reads.
    pub fn sample(self, b: &Bucket) -> (i64, f64) {
        let v = match self {
            Aggregate::Last => b.last,
            Aggregate::Count => f64::from(b.count),
            Aggregate::Sum => b.sum,
            Aggregate::Min => b.min,
            Aggregate::Max => b.max,
            Aggregate::Avg => b.sum / f64::from(b.count),
        };
        (b.last_ts, v)
    }

    /// A raw sample of a week still kept, as this aggregate reads it next to
    /// rolled-up ones (a count reads each sample as 1).
    pub fn raw(self, (t, v): (i64, f64)) -> (i64, f64) {
        match self {
            Aggregate::Count if !is_stale(v) => (t, 1.0),
            _ => (t, v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_sum_up_five_minutes_each_and_skip_staleness_markers() {
        let base = 1_764_000_000_000 - 1_764_000_000_000 % crate::keeper::WINDOW_MS;
        let mut samples: Vec<(i64, f64)> = (0..40).map(|i| (base + i * 15_000, i as f64)).collect();
        samples.push((
            base + 40 * 15_000,
            f64::from_bits(crate::functions::STALE_NAN_BITS),
        ));
        samples.push((base + crate::keeper::WINDOW_MS, 7.0));
        let windows = roll(&samples);
        assert_eq!(windows.len(), 2);
        let first = &windows[&base];
        assert_eq!(first.len(), 2);
        assert_eq!(
            first[0],
            Bucket {
                last_ts: base + 19 * 15_000,
                count: 20,
                sum: (0..20).sum::<i64>() as f64,
                min: 0.0,
                max: 19.0,
                last: 19.0,
            }
        );
        assert_eq!(first[1].count, 20);
        assert_eq!(windows[&(base + crate::keeper::WINDOW_MS)][0].last, 7.0);
        assert_eq!(Aggregate::Avg.sample(&first[0]), (base + 19 * 15_000, 9.5));
        assert_eq!(Aggregate::Count.raw((base, 5.0)), (base, 1.0));
        let stale = f64::from_bits(crate::functions::STALE_NAN_BITS);
        assert!(is_stale(Aggregate::Count.raw((base, stale)).1));
    }

    #[test]
    fn combining_rollups_equals_rolling_everything_at_once() {
        let base = 1_764_000_000_000 - 1_764_000_000_000 % crate::keeper::WINDOW_MS;
        let all: Vec<(i64, f64)> = (0..60)
            .map(|i| (base + i * 10_000, (i % 7) as f64))
            .collect();
        let (even, odd): (Vec<_>, Vec<_>) = all.iter().partition(|(t, _)| (t / 10_000) % 2 == 0);
        let mut parts = roll(&even).remove(&base).unwrap();
        combine(&mut parts, &roll(&odd)[&base]);
        assert_eq!(parts, roll(&all)[&base]);
    }

    proptest! {
        #[test]
        fn rows_round_trip_bit_for_bit(
            nonce: u64,
            buckets in proptest::collection::vec((any::<i64>(), any::<u32>(), any::<f64>(), any::<f64>(), any::<f64>(), any::<f64>()), 0..30),
        ) {
            let buckets: Vec<Bucket> = buckets
                .into_iter()
                .map(|(last_ts, count, sum, min, max, last)| Bucket { last_ts, count, sum, min, max, last })
                .collect();
            let (n, back) = decode(&encode(nonce, &buckets)).unwrap();
            prop_assert_eq!(n, nonce);
            prop_assert_eq!(back.len(), buckets.len());
            for (a, b) in back.iter().zip(&buckets) {
                prop_assert_eq!((a.last_ts, a.count), (b.last_ts, b.count));
                for (x, y) in [(a.sum, b.sum), (a.min, b.min), (a.max, b.max), (a.last, b.last)] {
                    prop_assert_eq!(x.to_bits(), y.to_bits());
                }
            }
        }
    }

    #[test]
    fn bad_rows_are_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&encode(1, &[])[..5]).is_err());
        let mut row = encode(1, &[Bucket::of(1, 1.0)]);
        row.pop();
        assert!(decode(&row).is_err());
    }
}
