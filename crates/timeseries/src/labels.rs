//! Series identity: a metric name and a label set, validated as Prometheus does,
//! in canonical order, hashed with xxh3 to a [`SeriesId`].
//!
//! Rules (Prometheus's classic ones): the metric name (label `__name__`) matches
//! `[a-zA-Z_:][a-zA-Z0-9_:]*`; other label names match `[a-zA-Z_][a-zA-Z0-9_]*` and
//! may not begin with `__` (reserved); a label with an empty value is no label (as
//! in Prometheus); a name appears once. Limits ([`Limits`]) bound the labels per
//! series and the bytes of each name and value, so a bad client gets an error, not
//! unbounded memory.

use thiserror::Error;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A series' identity: xxh3-64 of its canonical labels (and a seed, 0 unless two
/// label sets collided: see [`Labels::series_id_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId(pub u64);

/// What a series' labels may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Labels per series, the metric name included.
    pub labels_per_series: usize,
    /// Bytes of a label name.
    pub name_bytes: usize,
    /// Bytes of a label value.
    pub value_bytes: usize,
}

impl Default for Limits {
    /// Cortex's and Mimir's defaults.
    fn default() -> Limits {
        Limits {
            labels_per_series: 30,
            name_bytes: 1024,
            value_bytes: 2048,
        }
    }
}

/// Why a label set is refused (the label at fault, when one is).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LabelError {
    /// No `__name__` label.
    #[error("the series has no metric name (label __name__)")]
    NoMetricName,
    /// A metric name outside `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("metric name {0:?} is not [a-zA-Z_:][a-zA-Z0-9_:]*")]
    BadMetricName(String),
    /// A label name outside `[a-zA-Z_][a-zA-Z0-9_]*`, or reserved (`__...`).
    #[error("label name {0:?} is not [a-zA-Z_][a-zA-Z0-9_]* or begins with __ (reserved)")]
    BadLabelName(String),
    /// A label name given twice.
    #[error("label {0:?} is given twice")]
    Duplicate(String),
    /// More labels than [`Limits::labels_per_series`].
    #[error("{got} labels: at most {max} per series")]
    TooManyLabels {
        /// Labels given (non-empty ones).
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A name or value longer than the limit.
    #[error("label {name:?}: its {what} is {got} bytes, at most {max}")]
    TooLong {
        /// The label.
        name: String,
        /// "name" or "value".
        what: &'static str,
        /// Its bytes.
        got: usize,
        /// The limit.
        max: usize,
    },
}

/// A validated label set in canonical order (by name), the metric name included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Validates `pairs` (any order; empty values dropped) against `limits`.
    pub fn new(
        pairs: impl IntoIterator<Item = (String, String)>,
        limits: &Limits,
    ) -> Result<Labels, LabelError> {
        let mut pairs: Vec<(String, String)> =
            pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        pairs.sort();
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(LabelError::Duplicate(w[0].0.clone()));
        }
        if pairs.len() > limits.labels_per_series {
            return Err(LabelError::TooManyLabels {
                got: pairs.len(),
                max: limits.labels_per_series,
            });
        }
        let mut named = false;
        for (name, value) in &pairs {
            let too_long = |what, got, max| LabelError::TooLong {
                name: name.clone(),
                what,
                got,
                max,
            };
            if name.len() > limits.name_bytes {
                return Err(too_long("name", name.len(), limits.name_bytes));
            }
            if value.len() > limits.value_bytes {
                return Err(too_long("value", value.len(), limits.value_bytes));
            }
            if name == METRIC_NAME {
                if !valid_metric_name(value) {
                    return Err(LabelError::BadMetricName(value.clone()));
                }
                named = true;
            } else if !valid_label_name(name) {
                return Err(LabelError::BadLabelName(name.clone()));
            }
        }
        if !named {
            return Err(LabelError::NoMetricName);
        }
        Ok(Labels(pairs))
    }

    /// The metric name.
    pub fn metric(&self) -> &str {
        self.get(METRIC_NAME).unwrap_or_default()
    }

    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The labels in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The canonical bytes: each name and value followed by 0xff (a byte no UTF-8
    /// text holds, so two label sets never share them).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in &self.0 {
            out.extend_from_slice(n.as_bytes());
            out.push(0xff);
            out.extend_from_slice(v.as_bytes());
            out.push(0xff);
        }
        out
    }

    /// The labels back from their canonical bytes (as a store keeps them); `None`
    /// when the bytes are not a canonical form.
    pub fn from_canonical(bytes: &[u8]) -> Option<Labels> {
        let parts: Vec<&[u8]> = bytes.split(|b| *b == 0xff).collect();
        let (last, pairs) = parts.split_last()?;
        if !last.is_empty() || pairs.len() % 2 != 0 {
            return None;
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let pairs: Vec<(String, String)> = pairs
            .chunks(2)
            .map(|p| Some((text(p[0])?, text(p[1])?)))
            .collect::<Option<_>>()?;
        let sorted = pairs.windows(2).all(|w| w[0].0 < w[1].0);
        sorted.then_some(Labels(pairs))
    }

    /// The labels as a map (what a query answers).
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }

    /// The series id: xxh3-64 of the canonical bytes.
    pub fn series_id(&self) -> SeriesId {
        self.series_id_with(0)
    }

    /// The series id under `seed`: a store that finds another label set under an
    /// id tries the next seed (the ids of label sets are then told apart by the
    /// labels stored with each).
    pub fn series_id_with(&self, seed: u64) -> SeriesId {
        SeriesId(xxhash_rust::xxh3::xxh3_64_with_seed(
            &self.canonical(),
            seed,
        ))
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Result<Labels, LabelError> {
        Labels::new(
            pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())),
            &Limits::default(),
        )
    }

    #[test]
    fn order_does_not_change_a_series_and_empty_values_are_no_labels() {
        let a = labels(&[("__name__", "up"), ("job", "node"), ("instance", "a:9100")]).unwrap();
        let b = labels(&[
            ("instance", "a:9100"),
            ("zone", ""),
            ("job", "node"),
            ("__name__", "up"),
        ])
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.series_id(), b.series_id());
        assert_eq!(a.metric(), "up");
        assert_eq!(a.get("job"), Some("node"));
        assert_eq!(a.get("zone"), None);
        let c = labels(&[("__name__", "up"), ("job", "node2"), ("instance", "a:9100")]).unwrap();
        assert_ne!(a.series_id(), c.series_id());
        assert_ne!(
            a.series_id_with(1),
            a.series_id(),
            "another seed, another id"
        );
    }

    #[test]
    fn bad_label_sets_are_refused_with_the_label_at_fault() {
        let long = "x".repeat(2049);
        for (pairs, want) in [
            (vec![("job", "a")], LabelError::NoMetricName),
            (
                vec![("__name__", "9lives")],
                LabelError::BadMetricName("9lives".into()),
            ),
            (
                vec![("__name__", "a-b")],
                LabelError::BadMetricName("a-b".into()),
            ),
            (
                vec![("__name__", "up"), ("__meta", "x")],
                LabelError::BadLabelName("__meta".into()),
            ),
            (
                vec![("__name__", "up"), ("a:b", "x")],
                LabelError::BadLabelName("a:b".into()),
            ),
            (
                vec![("__name__", "up"), ("job", "a"), ("job", "b")],
                LabelError::Duplicate("job".into()),
            ),
            (
                vec![("__name__", "up"), ("v", long.as_str())],
                LabelError::TooLong {
                    name: "v".into(),
                    what: "value",
                    got: 2049,
                    max: 2048,
                },
            ),
        ] {
            assert_eq!(labels(&pairs), Err(want), "{pairs:?}");
        }
        let many: Vec<(String, String)> = (0..30)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .chain([("__name__".to_string(), "up".to_string())])
            .collect();
        assert_eq!(
            Labels::new(many, &Limits::default()),
            Err(LabelError::TooManyLabels { got: 31, max: 30 })
        );
        assert!(labels(&[("__name__", "node:cpu_seconds:rate5m"), ("_x", "é")]).is_ok());
    }

    proptest! {
        #[test]
        fn canonical_bytes_tell_label_sets_apart(
            a in proptest::collection::btree_map("[a-z_]{1,4}", "[a-z\\xff-]{1,4}", 0..4),
            b in proptest::collection::btree_map("[a-z_]{1,4}", "[a-z\\xff-]{1,4}", 0..4),
        ) {
            let make = |m: &std::collections::BTreeMap<String, String>| Labels::new(
                m.iter().map(|(n, v)| (n.clone(), v.clone()))
                    .filter(|(n, _)| !n.starts_with("__"))
                    .chain([("__name__".to_string(), "m".to_string())]),
                &Limits::default(),
            ).unwrap();
            let (x, y) = (make(&a), make(&b));
            prop_assert_eq!(x == y, x.canonical() == y.canonical());
        }
    }
}
