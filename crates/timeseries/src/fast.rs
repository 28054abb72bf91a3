//! Range queries of the most common shapes, series by series: `SELECTOR`,
//! `FN(SELECTOR[RANGE])` and `AGG [by|without (...)] (` one of those `)`, with `FN` a
//! per-series function (`rate`, `increase`, `delta`, `irate`, `idelta`,
//! `*_over_time`) and `AGG` one of `sum`, `avg`, `min`, `max`, `count`.
//!
//! [`crate::promql::range`] evaluates any expression step by step, selecting and
//! copying every series at every step; this selects once, computes each series'
//! value at every step from slices of its samples, and combines the groups of an
//! aggregation with the same function in the same order as the general path
//! ([`crate::aggregate::combine`]), so the answers are the same to the bit (tested
//! against the general path). Other shapes answer `None`: the general path takes
//! them.

use crate::aggregate::{AggOp, Grouping, LabelSet, combine};
use crate::functions::{self, OverTime, RateKind};
use crate::labels::METRIC_NAME;
use crate::promql::{MemorySource, Selection, Series, SeriesSource, selections};
use promql_parser::parser::{Expr, LabelModifier};
use std::collections::BTreeMap;

/// A per-series function of a window: `(window, window end, range) → value`.
type Ranged = fn(&[(i64, f64)], i64, i64) -> Option<f64>;

/// What one series computes at a step.
enum PerSeries {
    /// The selector's sample (lookback), labels kept.
    Instant,
    /// A function of the window; whether it keeps the metric name.
    Window(Ranged, bool),
}

fn ranged(name: &str) -> Option<(Ranged, bool)> {
    let f: Ranged = match name {
        "rate" => |w, e, r| functions::extrapolated_rate(w, e, r, RateKind::Rate),
        "increase" => |w, e, r| functions::extrapolated_rate(w, e, r, RateKind::Increase),
        "delta" => |w, e, r| functions::extrapolated_rate(w, e, r, RateKind::Delta),
        "irate" => |w, _, _| functions::instant_rate(w, true),
        "idelta" => |w, _, _| functions::instant_rate(w, false),
        "avg_over_time" => |w, _, _| functions::over_time(w, OverTime::Avg),
        "min_over_time" => |w, _, _| functions::over_time(w, OverTime::Min),
        "max_over_time" => |w, _, _| functions::over_time(w, OverTime::Max),
        "sum_over_time" => |w, _, _| functions::over_time(w, OverTime::Sum),
        "count_over_time" => |w, _, _| functions::over_time(w, OverTime::Count),
        "last_over_time" => |w, _, _| functions::over_time(w, OverTime::Last),
        _ => return None,
    };
    Some((f, name == "last_over_time"))
}

fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// The shape of a per-series expression: what each series computes, the range (ms,
/// 0 for an instant selector) and the offset (ms).
fn per_series(e: &Expr) -> Option<(PerSeries, i64, i64)> {
    match unparen(e) {
        Expr::VectorSelector(vs) if vs.at.is_none() => {
            Some((PerSeries::Instant, 0, offset(&vs.offset)))
        }
        Expr::Call(call) if call.args.args.len() == 1 => {
            let (f, keep) = ranged(call.func.name)?;
            match unparen(&call.args.args[0]) {
                Expr::MatrixSelector(ms) if ms.vs.at.is_none() => Some((
                    PerSeries::Window(f, keep),
                    ms.range.as_millis() as i64,
                    offset(&ms.vs.offset),
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

fn offset(o: &Option<promql_parser::parser::Offset>) -> i64 {
    match o {
        None => 0,
        Some(promql_parser::parser::Offset::Pos(d)) => d.as_millis() as i64,
        Some(promql_parser::parser::Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

/// Evaluates `expr` at every step from `start_ms` to `end_ms` when it has one of the
/// shapes above (`None` otherwise): each result series with its points, in label
/// order, as [`crate::promql::range`] answers.
pub fn range(
    source: &MemorySource,
    expr: &Expr,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Option<Vec<Series>> {
    if step_ms <= 0 || end_ms < start_ms {
        return None;
    }
    let (agg, inner) = match unparen(expr) {
        Expr::Aggregate(a) if a.param.is_none() => {
            let op = match a.op.to_string().as_str() {
                "sum" => AggOp::Sum,
                "avg" => AggOp::Avg,
                "min" => AggOp::Min,
                "max" => AggOp::Max,
                "count" => AggOp::Count,
                _ => return None,
            };
            let grouping = match &a.modifier {
                None => Grouping::By(Vec::new()),
                Some(LabelModifier::Include(l)) => Grouping::By(l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => Grouping::Without(l.labels.clone()),
            };
            (Some((op, grouping)), a.expr.as_ref())
        }
        e => (None, e),
    };
    let (per, range, off) = per_series(inner)?;
    let Ok(sel) = selections(inner, start_ms, end_ms) else {
        return None;
    };
    let [
        Selection {
            matchers,
            from_ms,
            to_ms,
        },
    ] = sel.as_slice()
    else {
        return None;
    };
    let steps: Vec<i64> = (0..)
        .map(|i| start_ms + i * step_ms)
        .take_while(|t| *t <= end_ms)
        .collect();
    // Each series' labels after the function, and its value at every step.
    let mut results: Vec<(LabelSet, Vec<Option<f64>>)> = Vec::new();
    for (mut labels, samples) in source.select(matchers, *from_ms, *to_ms) {
        let values: Vec<Option<f64>> = match per {
            PerSeries::Instant => steps
                .iter()
                .map(|t| {
                    functions::instant(&samples, t - off, functions::LOOKBACK_MS).map(|(_, v)| v)
                })
                .collect(),
            PerSeries::Window(f, keep) => {
                if !keep {
                    labels.remove(METRIC_NAME);
                }
                // Range functions never see staleness markers.
                let kept: Vec<(i64, f64)> = samples
                    .into_iter()
                    .filter(|(_, v)| !functions::is_stale(*v))
                    .collect();
                steps
                    .iter()
                    .map(|t| {
                        let end = t - off;
                        let start = end.saturating_sub(range);
                        let a = kept.partition_point(|(t, _)| *t < start);
                        let b = kept.partition_point(|(t, _)| *t <= end);
                        f(&kept[a..b.max(a)], end, range)
                    })
                    .collect()
            }
        };
        results.push((labels, values));
    }
    if agg.is_none() {
        // Two series with one label set once the name is dropped: the general path's
        // (and Prometheus's) business.
        let mut seen = std::collections::BTreeSet::new();
        if !results.iter().all(|(l, _)| seen.insert(l)) {
            return None;
        }
    }
    let mut out: BTreeMap<LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
    match agg {
        None => {
            for (labels, values) in results {
                let points: Vec<(i64, f64)> = steps
                    .iter()
                    .zip(values)
                    .filter_map(|(t, v)| v.map(|v| (*t, v)))
                    .collect();
                if !points.is_empty() {
                    out.entry(labels).or_default().extend(points);
                }
            }
        }
        Some((op, grouping)) => {
            // Groups and their members in input order, as the general path has them.
            let mut groups: BTreeMap<LabelSet, Vec<usize>> = BTreeMap::new();
            for (i, (labels, _)) in results.iter().enumerate() {
                groups.entry(grouping.key(labels)).or_default().push(i);
            }
            for (key, members) in groups {
                let mut points = Vec::new();
                for (s, t) in steps.iter().enumerate() {
                    let mut values = members.iter().filter_map(|m| results[*m].1[s]).peekable();
                    if values.peek().is_some() {
                        points.push((*t, combine(op, values)));
                    }
                }
                if !points.is_empty() {
                    out.insert(key, points);
                }
            }
        }
    }
    Some(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql;

    fn source() -> MemorySource {
        let mut series = Vec::new();
        for (job, step_s, reset_at) in [
            ("a", 15, 20),
            ("d", 10, 1000),
            ("b", 30, 7),
            ("c", 15, 1000),
        ] {
            for instance in 0..2 {
                let labels: LabelSet = [
                    ("__name__", "m"),
                    ("job", job),
                    ("instance", &instance.to_string()),
                ]
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
                let mut v = 0.0;
                let mut samples = Vec::new();
                for i in 0..120i64 {
                    if i % 17 == 5 {
                        continue; // a gap
                    }
                    v = if i == reset_at {
                        1.0
                    } else {
                        v + (i % 7) as f64 + instance as f64 * 0.25
                    };
                    samples.push((i * step_s * 1000 + instance * 700, v));
                }
                if job == "c" {
                    samples.push((121 * 15_000, f64::from_bits(functions::STALE_NAN_BITS)));
                }
                series.push((labels, samples));
            }
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        MemorySource(series)
    }

    #[test]
    fn the_fast_path_answers_as_the_general_one_to_the_bit() {
        let source = source();
        let exprs = [
            "m",
            "m offset 1m",
            "rate(m[1m])",
            "increase(m[2m])",
            "delta(m[90s])",
            "irate(m[1m])",
            "idelta(m[45s])",
            "avg_over_time(m[5m])",
            "last_over_time(m[1m])",
            "count_over_time(m{job=~\"a|c\"}[1m])",
            "sum by (job) (rate(m[1m]))",
            "avg without (instance) (increase(m[3m]))",
            "min(m)",
            "max by (instance) (max_over_time(m[2m]))",
            "count(rate(m[30s]))",
            "(sum(rate(m[5m] offset 30s)))",
        ];
        for text in exprs {
            let expr = promql::parse(text).unwrap();
            for (start, end, step) in [
                (0, 1_800_000, 15_000),
                (250_000, 2_000_000, 7_000),
                (60_000, 60_000, 1000),
            ] {
                let fast = range(&source, &expr, start, end, step)
                    .unwrap_or_else(|| panic!("{text}: no fast path"));
                let general = promql::range(&source, &expr, start, end, step).unwrap();
                let bits = |s: &Vec<Series>| -> Vec<(LabelSet, Vec<(i64, u64)>)> {
                    s.iter()
                        .map(|(l, p)| {
                            (
                                l.clone(),
                                p.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
                            )
                        })
                        .collect()
                };
                assert_eq!(
                    bits(&fast),
                    bits(&general),
                    "{text} over {start}..{end} step {step}"
                );
            }
        }
        for other in [
            "topk(1, m)",
            "m * 2",
            "rate(m[1m]) > 0",
            "abs(m)",
            "sum(m) + 1",
        ] {
            assert!(
                range(&source, &promql::parse(other).unwrap(), 0, 60_000, 1000).is_none(),
                "{other}"
            );
        }
    }
}
