//! The per-series functions against Prometheus itself: series with gaps, counter
//! resets and staleness markers are written as a `promtool test rules` file whose
//! expected values are what `datalayer_timeseries::functions` computes; promtool
//! (Debian's `prometheus` package) evaluates every expression and must find the same
//! values. A file with one value off must fail, so the comparison is known to bite.

use datalayer_timeseries::aggregate::{AggOp, Grouping, LabelSet, aggregate};
use datalayer_timeseries::functions::{
    self, LOOKBACK_MS, OverTime, RateKind, STALE_NAN_BITS, extrapolated_rate, instant,
    instant_rate, over_time,
};
use std::fmt::Write as _;
use std::process::Command;

/// Seconds between input samples (promtool's `interval`).
const STEP_S: i64 = 15;

/// A small deterministic generator (xorshift64*), so the series are the same on
/// every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One input series: its samples (`None`: no sample at that step) for promtool's
/// notation and for the functions.
struct Series {
    name: &'static str,
    steps: Vec<Option<f64>>,
}

impl Series {
    fn samples(&self) -> Vec<(i64, f64)> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as i64 * STEP_S * 1000, v)))
            .collect()
    }

    fn notation(&self) -> String {
        self.steps
            .iter()
            .map(|v| match v {
                None => "_".to_string(),
                Some(v) if v.to_bits() == STALE_NAN_BITS => "stale".to_string(),
                Some(v) => format!("{v}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn series(rng: &mut Rng) -> Vec<Series> {
    let steps = 120;
    // A counter with gaps and resets.
    let mut c = Vec::new();
    let mut value = 0.0;
    for _ in 0..steps {
        match rng.below(20) {
            0 => c.push(None),
            1 => {
                value = rng.below(5) as f64;
                c.push(Some(value));
            }
            _ => {
                value += rng.below(40) as f64 / 4.0;
                c.push(Some(value));
            }
        }
    }
    // A gauge with gaps, going up and down.
    let mut g = Vec::new();
    for _ in 0..steps {
        g.push((rng.below(8) != 0).then(|| rng.below(2000) as f64 / 8.0 - 100.0));
    }
    // A series that ends (a staleness marker), then comes back.
    let mut s: Vec<Option<f64>> = (0..steps).map(|i| Some(i as f64)).collect();
    s[60] = Some(f64::from_bits(STALE_NAN_BITS));
    for v in &mut s[61..80] {
        *v = None;
    }
    // A counter that starts from 1 at 75 s: its zero point lies one spacing before
    // its first sample, where Prometheus 2 and 3 extrapolate differently.
    let z: Vec<Option<f64>> = (0..steps)
        .map(|i| (i >= 5).then(|| (i - 4) as f64))
        .collect();
    vec![
        Series {
            name: "c",
            steps: c,
        },
        Series {
            name: "z",
            steps: z,
        },
        Series {
            name: "g",
            steps: g,
        },
        Series {
            name: "s",
            steps: s,
        },
    ]
}

/// An expression, and how the functions compute it from one series' samples at a
/// time (ms).
type Eval = Box<dyn Fn(&[(i64, f64)], i64) -> Option<f64>>;

fn ranged(range_s: i64, f: impl Fn(&[(i64, f64)], i64, i64) -> Option<f64> + 'static) -> Eval {
    Box::new(move |s, t| f(&functions::window(s, t, range_s * 1000), t, range_s * 1000))
}

fn expressions() -> Vec<(String, Eval)> {
    let mut out: Vec<(String, Eval)> = Vec::new();
    for range in [30, 60, 95, 300] {
        let kinds = [
            ("rate", RateKind::Rate),
            ("increase", RateKind::Increase),
            ("delta", RateKind::Delta),
        ];
        for (name, kind) in kinds {
            out.push((
                format!("{name}(X[{range}s])"),
                ranged(range, move |w, t, r| extrapolated_rate(w, t, r, kind)),
            ));
        }
        out.push((
            format!("irate(X[{range}s])"),
            ranged(range, |w, _, _| instant_rate(w, true)),
        ));
        out.push((
            format!("idelta(X[{range}s])"),
            ranged(range, |w, _, _| instant_rate(w, false)),
        ));
        for (name, f) in [
            ("avg", OverTime::Avg),
            ("min", OverTime::Min),
            ("max", OverTime::Max),
            ("sum", OverTime::Sum),
            ("count", OverTime::Count),
            ("last", OverTime::Last),
        ] {
            out.push((
                format!("{name}_over_time(X[{range}s])"),
                ranged(range, move |w, _, _| over_time(w, f)),
            ));
        }
    }
    out.push((
        "X".into(),
        Box::new(|s, t| instant(s, t, LOOKBACK_MS).map(|(_, v)| v)),
    ));
    out
}

/// The test file: every expression on every series at several times, expecting
/// the functions' values (`off`: the first value found is written one too high).
fn test_file(off: bool) -> (String, usize) {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let series = series(&mut rng);
    let mut yaml = String::from("rule_files: []\nevaluation_interval: 1m\ntests:\n");
    writeln!(yaml, "  - interval: {STEP_S}s\n    input_series:").unwrap();
    for s in &series {
        writeln!(
            yaml,
            "      - series: '{}'\n        values: '{}'",
            s.name,
            s.notation()
        )
        .unwrap();
    }
    writeln!(yaml, "    promql_expr_test:").unwrap();
    let mut checked = 0;
    let mut spoiled = !off;
    for (expr, eval) in expressions() {
        for s in &series {
            let samples = s.samples();
            // Times on, between and past the samples, into the staleness gap.
            for t_s in [
                40, 97, 300, 451, 600, 899, 905, 1000, 1150, 1190, 1500, 1785, 2000,
            ] {
                let got = eval(&samples, t_s * 1000);
                let expr = expr.replace('X', s.name);
                writeln!(
                    yaml,
                    "      - expr: '{expr}'\n        eval_time: {t_s}s\n        exp_samples:"
                )
                .unwrap();
                if let Some(mut v) = got {
                    if !spoiled && v.is_finite() {
                        v += 1.0;
                        spoiled = true;
                    }
                    // A function drops the metric name, but last_over_time keeps it.
                    let keeps = expr == s.name || expr.starts_with("last_over_time");
                    let labels = if keeps { s.name } else { "{}" };
                    assert!(!v.is_nan(), "{expr} at {t_s}s is NaN: no data makes one");
                    let value = format!("{v:?}");
                    writeln!(
                        yaml,
                        "          - labels: '{labels}'\n            value: {value}"
                    )
                    .unwrap();
                    checked += 1;
                } else {
                    yaml.truncate(yaml.trim_end_matches("exp_samples:\n").len());
                    writeln!(yaml, "exp_samples: []").unwrap();
                }
            }
        }
    }
    (yaml, checked)
}

/// Asserts that promtool passes the test file `yaml`.
fn passes(yaml: &str, name: &str) {
    let out = promtool(yaml, name);
    assert!(
        out.status.success(),
        "promtool disagrees:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool(yaml: &str, name: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("datalayer-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("promtool (Debian package prometheus) must be installed");
    let _ = std::fs::remove_file(&path);
    out
}

#[test]
fn the_functions_agree_with_prometheus() {
    let (yaml, checked) = test_file(false);
    assert!(checked > 500, "only {checked} values compared");
    passes(&yaml, "agree.yml");
    let (spoiled, _) = test_file(true);
    let out = promtool(&spoiled, "spoiled.yml");
    assert!(
        !out.status.success(),
        "promtool accepted a value one too high"
    );
}

/// The labels as promtool reads them: `name{a="x",...}`.
fn promql_labels(labels: &LabelSet) -> String {
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(n, _)| n.as_str() != "__name__")
        .map(|(n, v)| format!("{n}=\"{v}\""))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

#[test]
fn aggregations_agree_with_prometheus() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    // Counters of 6 instances, two per job, with gaps. Values are multiples of 1/8
    // and groups hold two: sums and means are then exact whatever order Prometheus
    // adds them in (it does not fix one).
    let series: Vec<(LabelSet, Series)> = (0..6)
        .map(|i| {
            let labels: LabelSet = [
                ("__name__", "m"),
                ("job", ["a", "a", "b", "b", "c", "c"][i]),
                ("i", ["1", "2", "3", "4", "5", "6"][i]),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
            let mut value = 0.0;
            let steps = (0..60)
                .map(|_| {
                    value += rng.below(1000) as f64 / 8.0;
                    (rng.below(10) != 0).then_some(value)
                })
                .collect();
            (labels, Series { name: "m", steps })
        })
        .collect();
    let by = |names: &[&str]| Grouping::By(names.iter().map(|n| n.to_string()).collect());
    let without = |names: &[&str]| Grouping::Without(names.iter().map(|n| n.to_string()).collect());
    let cases: Vec<(&str, AggOp, Grouping, bool)> = vec![
        ("sum by (job) (E)", AggOp::Sum, by(&["job"]), false),
        ("avg without (i) (E)", AggOp::Avg, without(&["i"]), false),
        (
            "sum without (job) (E)",
            AggOp::Sum,
            without(&["job"]),
            false,
        ),
        ("min by (job) (E)", AggOp::Min, by(&["job"]), false),
        ("max (E)", AggOp::Max, by(&[]), false),
        ("count by (job) (E)", AggOp::Count, by(&["job"]), false),
        ("topk(2, E)", AggOp::Topk(2), by(&[]), false),
        (
            "bottomk by (job) (1, E)",
            AggOp::Bottomk(1),
            by(&["job"]),
            false,
        ),
        // Rounded first: a sum of inexact values depends on the order Prometheus
        // adds them in, which it does not fix.
        (
            "sum by (job) (round(rate(E[1m]) * 1000))",
            AggOp::Sum,
            by(&["job"]),
            true,
        ),
        ("max by (job) (rate(E[1m]))", AggOp::Max, by(&["job"]), true),
        ("topk(3, rate(E[1m]))", AggOp::Topk(3), by(&[]), true),
    ];
    let mut yaml = String::from("rule_files: []\nevaluation_interval: 1m\ntests:\n");
    writeln!(yaml, "  - interval: {STEP_S}s\n    input_series:").unwrap();
    for (labels, s) in &series {
        writeln!(
            yaml,
            "      - series: '{}'\n        values: '{}'",
            promql_labels(labels),
            s.notation()
        )
        .unwrap();
    }
    writeln!(yaml, "    promql_expr_test:").unwrap();
    let mut checked = 0;
    for (expr, op, grouping, rated) in &cases {
        for t_s in [60, 200, 301, 450, 600, 751, 880, 1100] {
            let t = t_s * 1000;
            let input: Vec<(LabelSet, f64)> = series
                .iter()
                .filter_map(|(labels, s)| {
                    let samples = s.samples();
                    if *rated {
                        let w = functions::window(&samples, t, 60_000);
                        let mut v = extrapolated_rate(&w, t, 60_000, RateKind::Rate)?;
                        if expr.contains("round") {
                            // Prometheus's round(v): floor(v + 0.5).
                            v = (v * 1000.0 + 0.5).floor();
                        }
                        let mut labels = labels.clone();
                        labels.remove("__name__");
                        Some((labels, v))
                    } else {
                        instant(&samples, t, LOOKBACK_MS).map(|(_, v)| (labels.clone(), v))
                    }
                })
                .collect();
            let expr = expr.replace('E', "m");
            writeln!(
                yaml,
                "      - expr: '{expr}'\n        eval_time: {t_s}s\n        exp_samples:"
            )
            .unwrap();
            for (labels, v) in aggregate(*op, grouping, &input) {
                writeln!(
                    yaml,
                    "          - labels: '{}'\n            value: {v:?}",
                    promql_labels(&labels)
                )
                .unwrap();
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} values compared");
    passes(&yaml, "aggregations.yml");
}

#[test]
fn promql_expressions_agree_with_prometheus() {
    use datalayer_timeseries::promql::{self, MemorySource, Value};
    let mut rng = Rng(0x00c0_ffee_1234_5678);
    // Two jobs of two instances; values multiples of 1/8 (see above).
    let series: Vec<(LabelSet, Series)> = (0..4)
        .map(|i| {
            let labels: LabelSet = [
                ("__name__", "m"),
                ("job", ["a", "a", "b", "b"][i]),
                ("i", ["1", "2", "3", "4"][i]),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
            let mut value = 0.0;
            let steps = (0..60)
                .map(|_| {
                    value += rng.below(800) as f64 / 8.0;
                    (rng.below(10) != 0).then_some(value)
                })
                .collect();
            (labels, Series { name: "m", steps })
        })
        .collect();
    let source = MemorySource(
        series
            .iter()
            .map(|(l, s)| (l.clone(), s.samples()))
            .collect(),
    );
    let queries = [
        "m",
        r#"m{job="a"}"#,
        r#"m{i=~"1|3"}"#,
        r#"m{job!="a"}"#,
        r#"m{i!~"[12]"}"#,
        "m offset 1m",
        "-m",
        "m * 2 + 1",
        "100 - m",
        "m / 8",
        "m % 7",
        "m > 1500",
        "m <= bool 1500",
        "2 ^ 10 - 24",
        "rate(m[1m]) * 60",
        "increase(m[2m] offset 30s)",
        "irate(m[1m])",
        "max_over_time(m[90s])",
        "last_over_time(m[1m])",
        "topk(2, m)",
        "bottomk by (job) (1, m) / 2",
        "max by (job) (rate(m[1m]))",
        "count without (i) (m > 1000)",
        "sum by (job) (round(rate(m[1m]) * 1000))",
        "abs(m - 2000)",
        "floor(m / 3)",
        "ceil(m / 3)",
        "time()",
    ];
    let mut yaml = String::from("rule_files: []\nevaluation_interval: 1m\ntests:\n");
    writeln!(yaml, "  - interval: {STEP_S}s\n    input_series:").unwrap();
    for (labels, s) in &series {
        writeln!(
            yaml,
            "      - series: '{}'\n        values: '{}'",
            promql_labels(labels),
            s.notation()
        )
        .unwrap();
    }
    writeln!(yaml, "    promql_expr_test:").unwrap();
    let mut checked = 0;
    for q in queries {
        let expr = promql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        for t_s in [0, 60, 200, 301, 450, 600, 751, 880, 1100] {
            let value =
                promql::instant(&source, &expr, t_s * 1000).unwrap_or_else(|e| panic!("{q}: {e}"));
            let elements = match value {
                // promtool checks a scalar as one element without labels.
                Value::Scalar(v) => vec![(LabelSet::new(), v)],
                Value::Vector(v) => v,
            };
            writeln!(
                yaml,
                "      - expr: '{q}'\n        eval_time: {t_s}s\n        exp_samples:"
            )
            .unwrap();
            if elements.is_empty() {
                yaml.truncate(yaml.trim_end_matches("exp_samples:\n").len());
                writeln!(yaml, "exp_samples: []").unwrap();
            }
            for (labels, v) in elements {
                writeln!(
                    yaml,
                    "          - labels: '{}'\n            value: {v:?}",
                    promql_labels(&labels)
                )
                .unwrap();
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "only {checked} values compared");
    passes(&yaml, "promql.yml");
}
