//! What PromQL computes from one series' samples, by Prometheus's rules as of 2.x
//! (the Debian release the tests compare with, 2.42): instant selection with a
//! lookback, range windows closed at both ends (`[end - range, end]`; Prometheus
//! 3 leaves the start out, which differs only for a sample exactly on it),
//! staleness markers, and `rate`/`increase`/`delta` with
//! Prometheus's extrapolation to the window's bounds (`extrapolatedRate` in
//! promql/functions.go), `irate`/`idelta` and the `*_over_time` functions.
//!
//! Samples are `(timestamp ms, value)` in timestamp order.

/// Prometheus's staleness marker: the NaN a scrape writes when a series ends.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The default lookback of an instant selector (Prometheus's `--query.lookback-delta`).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Whether `v` is the staleness marker (not just any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The samples in the window `[end_ms - range_ms, end_ms]`, staleness markers left
/// out (range functions never see them).
pub fn window(samples: &[(i64, f64)], end_ms: i64, range_ms: i64) -> Vec<(i64, f64)> {
    let start = end_ms.saturating_sub(range_ms);
    let from = samples.partition_point(|(t, _)| *t < start);
    let to = samples.partition_point(|(t, _)| *t <= end_ms);
    samples[from..to.max(from)]
        .iter()
        .copied()
        .filter(|(_, v)| !is_stale(*v))
        .collect()
}

/// An instant selector's sample at `t_ms`: the latest in `[t - lookback, t]`, none
/// when that one is a staleness marker (the series ended).
pub fn instant(samples: &[(i64, f64)], t_ms: i64, lookback_ms: i64) -> Option<(i64, f64)> {
    let to = samples.partition_point(|(t, _)| *t <= t_ms);
    let (t, v) = *samples[..to].last()?;
    (t >= t_ms.saturating_sub(lookback_ms) && !is_stale(v)).then_some((t, v))
}

/// What kind of rate to extrapolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// `rate`: per second, counter resets compensated.
    Rate,
    /// `increase`: over the window, counter resets compensated.
    Increase,
    /// `delta`: over the window, a gauge (no resets).
    Delta,
}

/// `rate`, `increase` or `delta` over the window `[end - range, end]` holding
/// `samples` (as [`window`] selects them): none with fewer than two samples.
pub fn extrapolated_rate(
    samples: &[(i64, f64)],
    end_ms: i64,
    range_ms: i64,
    kind: RateKind,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let counter = kind != RateKind::Delta;
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut previous = 0.0;
        for (_, v) in samples {
            if *v < previous {
                result += previous;
            }
            previous = *v;
        }
    }
    let range_start = end_ms - range_ms;
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (end_ms - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average = sampled / (samples.len() - 1) as f64;
    // Prometheus 2's order: a counter does not go below zero, so first no farther
    // back than its zero point; then a bound within 110% of the average spacing is
    // extrapolated to, a farther one by half the average spacing only. (Prometheus
    // 3 takes the zero point after the threshold, which differs when the zero point
    // lies between half a spacing and 110% of one.)
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if kind == RateKind::Rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` (a counter, per second) or `idelta` (a gauge) from the last two samples
/// of a window.
pub fn instant_rate(samples: &[(i64, f64)], counter: bool) -> Option<f64> {
    let [.., (t0, v0), (t1, v1)] = samples else {
        return None;
    };
    let change = if counter && v1 < v0 { *v1 } else { v1 - v0 };
    if !counter {
        return Some(change);
    }
    let seconds = (t1 - t0) as f64 / 1000.0;
    (seconds > 0.0).then(|| change / seconds)
}

/// The `*_over_time` functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverTime {
    /// `avg_over_time`.
    Avg,
    /// `min_over_time`.
    Min,
    /// `max_over_time`.
    Max,
    /// `sum_over_time`.
    Sum,
    /// `count_over_time`.
    Count,
    /// `last_over_time`.
    Last,
}

/// A `*_over_time` function over a window's samples: none for an empty window.
pub fn over_time(samples: &[(i64, f64)], f: OverTime) -> Option<f64> {
    let values = samples.iter().map(|(_, v)| *v);
    let (_, last) = *samples.last()?;
    Some(match f {
        OverTime::Count => samples.len() as f64,
        OverTime::Last => last,
        OverTime::Sum => {
            let (sum, c) = values.fold((0.0, 0.0), |(sum, c), v| kahan_add(v, sum, c));
            sum + c
        }
        OverTime::Avg => {
            // As Prometheus does: a compensated running mean (large values do not
            // overflow a sum), infinities kept.
            let (mut mean, mut c, mut count) = (0.0f64, 0.0, 0.0);
            for v in values {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                (mean, c) = kahan_add(v / count - mean / count, mean, c);
            }
            if mean.is_infinite() { mean } else { mean + c }
        }
        // NaN only when every value is NaN (Prometheus's min/max skip NaNs).
        OverTime::Min => values.fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        OverTime::Max => values.fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
    })
}

/// Adds `inc` to `sum` with Neumaier's compensation `c` (Prometheus's
/// `kahanSumInc`): the sum and the compensation after.
fn kahan_add(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: f64 = f64::from_bits(STALE_NAN_BITS);

    /// A counter scraped every 15 s from t=15 s, rising by 10 each time.
    fn counter() -> Vec<(i64, f64)> {
        (1..=20).map(|i| (i * 15_000, (i * 10) as f64)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn windows_hold_both_bounds_and_leave_staleness_markers_out() {
        let s = counter();
        let w = window(&s, 60_000, 30_000);
        assert_eq!(
            w,
            vec![(30_000, 20.0), (45_000, 30.0), (60_000, 40.0)],
            "[30 s, 60 s]"
        );
        let mut s = s;
        s.push((301_000, STALE));
        assert_eq!(window(&s, 310_000, 20_000), vec![(300_000, 200.0)]);
    }

    #[test]
    fn an_instant_selector_looks_back_five_minutes_and_stops_at_a_staleness_marker() {
        let mut s = counter();
        assert_eq!(instant(&s, 61_000, LOOKBACK_MS), Some((60_000, 40.0)));
        assert_eq!(instant(&s, 10_000, LOOKBACK_MS), None, "before the first");
        assert_eq!(
            instant(&s, 300_000 + LOOKBACK_MS, LOOKBACK_MS),
            Some((300_000, 200.0))
        );
        assert_eq!(instant(&s, 300_000 + LOOKBACK_MS + 1, LOOKBACK_MS), None);
        s.push((310_000, STALE));
        assert_eq!(instant(&s, 311_000, LOOKBACK_MS), None, "the series ended");
    }

    #[test]
    fn rate_and_increase_extrapolate_as_prometheus_does() {
        let s = counter();
        // rate(x[1m]) at 5 m: samples at 4 m .. 5 m (5 of them, 10 apart) on both
        // bounds: 40 over 60 s, nothing to extrapolate.
        let w = window(&s, 300_000, 60_000);
        assert_eq!(w.len(), 5);
        let increase = extrapolated_rate(&w, 300_000, 60_000, RateKind::Increase).unwrap();
        assert!(close(increase, 40.0), "{increase}");
        // At 5 m 5 s: 4 m 15 s .. 5 m, the first 10 s after the start (within 110%
        // of the 15 s spacing: to the bound), the last 5 s before the end (to it):
        // 30 over 45 s, extrapolated to 60 s.
        let w = window(&s, 305_000, 60_000);
        assert_eq!(w.len(), 4);
        let increase = extrapolated_rate(&w, 305_000, 60_000, RateKind::Increase).unwrap();
        assert!(close(increase, 40.0), "{increase}");
        let rate = extrapolated_rate(&w, 305_000, 60_000, RateKind::Rate).unwrap();
        assert!(close(rate, 40.0 / 60.0), "{rate}");
        // Off the bounds by more than 110% of the spacing: half a spacing each way.
        let w = window(&s, 400_000, 200_000);
        let increase = extrapolated_rate(&w, 400_000, 200_000, RateKind::Increase).unwrap();
        // Samples 210 s .. 300 s (7 of them): 60 over 90 s, extended by 10 s at the
        // start (the first sample is 10 s in, within 16.5 s: to the bound) and by
        // 7.5 s at the end (100 s away: half a spacing): (90 + 10 + 7.5) / 90.
        assert_eq!(w.first(), Some(&(210_000, 140.0)));
        assert!(
            close(increase, 60.0 * (90.0 + 10.0 + 7.5) / 90.0),
            "{increase}"
        );
        assert_eq!(
            extrapolated_rate(&w[..1], 400_000, 200_000, RateKind::Rate),
            None
        );
    }

    #[test]
    fn a_counter_reset_is_compensated_and_the_zero_point_bounds_extrapolation() {
        // 5, 10, reset to 2, 7: an increase of 5 + 2 + 5 = 12 sampled.
        let s = [(10_000, 5.0), (20_000, 10.0), (30_000, 2.0), (40_000, 7.0)];
        let inc = extrapolated_rate(&s, 40_000, 40_000, RateKind::Increase).unwrap();
        // To the start: 10 s (within 11 s); the zero point 30 * 5/12 = 12.5 s back is
        // farther, so 10 s stands: 12 * 40 / 30.
        assert!(close(inc, 12.0 * 40.0 / 30.0), "{inc}");
        // A counter starting near zero is not extrapolated below zero.
        let s = [(10_000, 1.0), (20_000, 11.0), (30_000, 21.0)];
        let inc = extrapolated_rate(&s, 30_000, 30_000, RateKind::Increase).unwrap();
        // To the start: 10 s, but zero lies 20 * 1/20 = 1 s back: (20 + 1) / 20.
        assert!(close(inc, 20.0 * 21.0 / 20.0), "{inc}");
        // delta is a gauge's: no reset compensation, no zero point.
        let g = [(10_000, 5.0), (20_000, 10.0), (30_000, 2.0)];
        let d = extrapolated_rate(&g, 30_000, 30_000, RateKind::Delta).unwrap();
        assert!(close(d, -3.0 * 30.0 / 20.0), "{d}");
    }

    #[test]
    fn irate_idelta_and_over_time() {
        let s = [(10_000, 5.0), (20_000, 10.0), (25_000, 2.0)];
        assert_eq!(
            instant_rate(&s, true),
            Some(2.0 / 5.0),
            "a reset: from zero"
        );
        assert_eq!(instant_rate(&s[..2], true), Some(0.5));
        assert_eq!(instant_rate(&s, false), Some(-8.0));
        assert_eq!(instant_rate(&s[..1], true), None);
        assert_eq!(over_time(&s, OverTime::Count), Some(3.0));
        assert_eq!(over_time(&s, OverTime::Sum), Some(17.0));
        assert!(close(over_time(&s, OverTime::Avg).unwrap(), 17.0 / 3.0));
        assert_eq!(over_time(&s, OverTime::Min), Some(2.0));
        assert_eq!(over_time(&s, OverTime::Max), Some(10.0));
        assert_eq!(over_time(&s, OverTime::Last), Some(2.0));
        assert_eq!(over_time(&[], OverTime::Sum), None);
        let nan = [(1, f64::NAN), (2, 3.0)];
        assert_eq!(over_time(&nan, OverTime::Max), Some(3.0), "NaNs skipped");
    }
}
