//! PromQL's aggregations over an instant vector, by Prometheus's rules as of 2.x:
//! `sum`, `avg`, `min`, `max`, `count`, `topk` and `bottomk`, grouped `by` or
//! `without` labels (the metric name always goes, except for `topk`/`bottomk`, which
//! return their input elements whole).

use std::collections::BTreeMap;

/// A label set of a vector element (the metric name under `__name__`, if any).
pub type LabelSet = BTreeMap<String, String>;

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    /// `sum`.
    Sum,
    /// `avg`.
    Avg,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `count`.
    Count,
    /// `topk(k, ...)`: the k largest of each group.
    Topk(usize),
    /// `bottomk(k, ...)`: the k smallest of each group.
    Bottomk(usize),
}

/// How elements are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// `by (labels)`: the groups are the values of these labels (none: one group).
    By(Vec<String>),
    /// `without (labels)`: every label but these (and the metric name).
    Without(Vec<String>),
}

impl Grouping {
    /// The labels of `labels`' group.
    pub fn key(&self, labels: &LabelSet) -> LabelSet {
        match self {
            Grouping::By(names) => labels
                .iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            Grouping::Without(names) => labels
                .iter()
                .filter(|(n, _)| n.as_str() != crate::labels::METRIC_NAME && !names.contains(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Aggregates `input` (one value per label set); groups come out in label order.
pub fn aggregate(
    op: AggOp,
    grouping: &Grouping,
    input: &[(LabelSet, f64)],
) -> Vec<(LabelSet, f64)> {
    let mut groups: BTreeMap<LabelSet, Vec<&(LabelSet, f64)>> = BTreeMap::new();
    for element in input {
        groups
            .entry(grouping.key(&element.0))
            .or_default()
            .push(element);
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let value = match op {
            AggOp::Sum | AggOp::Count | AggOp::Avg | AggOp::Min | AggOp::Max => {
                combine(op, members.iter().map(|(_, v)| *v))
            }
            AggOp::Topk(k) | AggOp::Bottomk(k) => {
                let top = matches!(op, AggOp::Topk(_));
                let mut members = members;
                // NaNs sort last either way, as Prometheus keeps them out while it can.
                members.sort_by(|a, b| {
                    let (x, y) = (a.1, b.1);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
                out.extend(members.into_iter().take(k).cloned());
                continue;
            }
        };
        out.push((key, value));
    }
    out
}

/// One group's value of `sum`, `count`, `avg`, `min` or `max` over its members'
/// values, in input order (`topk` and `bottomk` keep elements: not here).
pub fn combine(op: AggOp, values: impl Iterator<Item = f64>) -> f64 {
    match op {
        AggOp::Sum => values.sum(),
        AggOp::Count => values.count() as f64,
        AggOp::Avg => mean(values),
        // A NaN loses to any number (Prometheus's min and max).
        AggOp::Min => values.fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        AggOp::Max => values.fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        AggOp::Topk(_) | AggOp::Bottomk(_) => f64::NAN,
    }
}

/// The mean as Prometheus 2's `avg` computes it: incrementally (a sum of large
/// values does not overflow), infinities kept.
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut mean, mut count) = (0.0f64, 0.0);
    for v in values {
        count += 1.0;
        if count == 1.0 {
            mean = v;
            continue;
        }
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        mean += (v - mean) / count;
    }
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(pairs: &[(&str, &str)], v: f64) -> (LabelSet, f64) {
        (
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            v,
        )
    }

    #[test]
    fn groups_by_and_without_labels() {
        let input = [
            el(&[("__name__", "up"), ("job", "a"), ("i", "1")], 1.0),
            el(&[("__name__", "up"), ("job", "a"), ("i", "2")], 3.0),
            el(&[("__name__", "up"), ("job", "b"), ("i", "1")], 10.0),
        ];
        let by_job = Grouping::By(vec!["job".into()]);
        assert_eq!(
            aggregate(AggOp::Sum, &by_job, &input),
            vec![el(&[("job", "a")], 4.0), el(&[("job", "b")], 10.0)]
        );
        let without_i = Grouping::Without(vec!["i".into()]);
        assert_eq!(
            aggregate(AggOp::Avg, &without_i, &input),
            vec![el(&[("job", "a")], 2.0), el(&[("job", "b")], 10.0)]
        );
        assert_eq!(
            aggregate(AggOp::Count, &Grouping::By(vec![]), &input),
            vec![el(&[], 3.0)]
        );
        let top = aggregate(AggOp::Topk(1), &by_job, &input);
        assert_eq!(
            top,
            vec![input[1].clone(), input[2].clone()],
            "whole elements"
        );
        let bottom = aggregate(AggOp::Bottomk(2), &Grouping::By(vec![]), &input);
        assert_eq!(bottom, vec![input[0].clone(), input[1].clone()]);
        let nan = [el(&[("i", "1")], f64::NAN), el(&[("i", "2")], 2.0)];
        assert_eq!(aggregate(AggOp::Max, &Grouping::By(vec![]), &nan)[0].1, 2.0);
        assert_eq!(
            aggregate(AggOp::Topk(1), &Grouping::By(vec![]), &nan)[0].1,
            2.0
        );
    }
}
