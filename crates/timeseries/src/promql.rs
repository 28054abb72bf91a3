//! PromQL evaluation over a [`SeriesSource`]: the expression parsed by
//! `promql-parser`, evaluated by Prometheus 2's rules with [`crate::functions`] and
//! [`crate::aggregate`].
//!
//! Supported: number literals, parentheses, unary minus; vector selectors (name,
//! `=`/`!=`/`=~`/`!~` matchers, `offset`) and matrix selectors as function
//! arguments; `rate`, `increase`, `delta`, `irate`, `idelta`, `avg/min/max/sum/count/
//! last_over_time`, `abs`, `ceil`, `floor`, `round` (to 1), `time`; `sum`, `avg`,
//! `min`, `max`, `count`, `topk`, `bottomk` with `by`/`without`; arithmetic (`+ - * /
//! % ^`) and comparisons (with `bool`) between scalars, and between a vector and a
//! scalar. Anything else — vector-to-vector matching, subqueries, `@`, other
//! functions — is an [`EvalError::Unsupported`] naming it, never a wrong answer.

use crate::aggregate::{AggOp, Grouping, LabelSet, aggregate};
use crate::functions::{self, OverTime, RateKind};
use crate::labels::METRIC_NAME;
use crate::rollup::Aggregate;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, Offset};
use thiserror::Error;

pub use promql_parser::label::Matchers;
pub use promql_parser::parser::Expr as ParsedExpr;

/// A series as a source answers it: its labels and its `(timestamp ms, value)`
/// samples in time order.
pub type Series = (LabelSet, Vec<(i64, f64)>);

/// Where an evaluation reads series.
pub trait SeriesSource {
    /// The series matching every matcher, with their samples from `from_ms` to
    /// `to_ms` (both held), in time order.
    fn select(&self, matchers: &[Matcher], from_ms: i64, to_ms: i64) -> Vec<Series>;
}

/// The value of an expression at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// One value per label set.
    Vector(Vec<(LabelSet, f64)>),
}

/// Why an expression cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    /// The text does not parse.
    #[error("parse error: {0}")]
    Parse(String),
    /// PromQL that DataLayer does not evaluate yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// The expression is not of the type its place needs.
    #[error("{0}")]
    Type(String),
}

/// Parses `query`.
pub fn parse(query: &str) -> Result<Expr, EvalError> {
    parser::parse(query).map_err(EvalError::Parse)
}

/// Evaluates `expr` at `t_ms`.
pub fn instant(source: &dyn SeriesSource, expr: &Expr, t_ms: i64) -> Result<Value, EvalError> {
    Evaluator { source }.eval(expr, t_ms)
}

/// Evaluates `expr` at every step from `start_ms` to `end_ms`: each series (label
/// set) with its `(t, value)` points; a scalar expression is one series without
/// labels.
pub fn range(
    source: &dyn SeriesSource,
    expr: &Expr,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<Series>, EvalError> {
    if step_ms <= 0 {
        return Err(EvalError::Type("the step must be positive".into()));
    }
    let mut series: std::collections::BTreeMap<LabelSet, Vec<(i64, f64)>> = Default::default();
    let mut t = start_ms;
    while t <= end_ms {
        match instant(source, expr, t)? {
            Value::Scalar(v) => series.entry(LabelSet::new()).or_default().push((t, v)),
            Value::Vector(v) => {
                for (labels, v) in v {
                    series.entry(labels).or_default().push((t, v));
                }
            }
        }
        t += step_ms;
    }
    Ok(series.into_iter().collect())
}

/// A selector's matchers, its metric name as a `__name__` matcher among them.
fn selector_matchers(vs: &parser::VectorSelector) -> Result<Vec<Matcher>, EvalError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(EvalError::Unsupported("`or` inside a selector".into()));
    }
    let mut matchers = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    Ok(matchers)
}

/// The matchers of a series selector (`metric{label="v"}`, as `match[]` takes).
pub fn parse_selector(text: &str) -> Result<Vec<Matcher>, EvalError> {
    match parse(text)? {
        Expr::VectorSelector(vs) => selector_matchers(&vs),
        other => Err(EvalError::Type(format!(
            "{other} is not a series selector (metric{{label=\"value\"}})"
        ))),
    }
}

/// What one selector of an expression reads: its matchers and the span of time
/// (both ends held, ms).
#[derive(Debug, Clone)]
pub struct Selection {
    /// Every matcher, the metric name's included.
    pub matchers: Vec<Matcher>,
    /// The first millisecond read.
    pub from_ms: i64,
    /// The last millisecond read.
    pub to_ms: i64,
}

/// The selections an evaluation of `expr` at every time in `[start_ms, end_ms]`
/// reads, so that a source can fetch them before evaluating (a store reads each
/// once; the evaluation then runs over a [`MemorySource`] of what was fetched).
pub fn selections(expr: &Expr, start_ms: i64, end_ms: i64) -> Result<Vec<Selection>, EvalError> {
    let mut out = Vec::new();
    collect(expr, start_ms, end_ms, &mut out)?;
    Ok(out)
}

fn collect(expr: &Expr, start: i64, end: i64, out: &mut Vec<Selection>) -> Result<(), EvalError> {
    match expr {
        Expr::VectorSelector(vs) => {
            let off = offset_ms(&vs.offset);
            out.push(Selection {
                matchers: selector_matchers(vs)?,
                from_ms: start - off - functions::LOOKBACK_MS,
                to_ms: end - off,
            });
        }
        Expr::MatrixSelector(ms) => {
            let off = offset_ms(&ms.vs.offset);
            out.push(Selection {
                matchers: selector_matchers(&ms.vs)?,
                from_ms: start - off - ms.range.as_millis() as i64,
                to_ms: end - off,
            });
        }
        Expr::Paren(p) => collect(&p.expr, start, end, out)?,
        Expr::Unary(u) => collect(&u.expr, start, end, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                collect(a, start, end, out)?;
            }
        }
        Expr::Aggregate(a) => {
            collect(&a.expr, start, end, out)?;
            if let Some(p) = &a.param {
                collect(p, start, end, out)?;
            }
        }
        Expr::Binary(b) => {
            collect(&b.lhs, start, end, out)?;
            collect(&b.rhs, start, end, out)?;
        }
        Expr::Subquery(_) => return Err(EvalError::Unsupported("subqueries".into())),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

/// The label a query rewritten for rollups ([`for_rollups`]) marks each selector
/// with: the [`Aggregate`] of a bucket it reads. Label names beginning with `__`
/// are reserved, so no stored series has it; results leave it out
/// ([`strip_rollup_label`]).
pub const ROLLUP_LABEL: &str = "__rollup__";

/// `expr` as it is evaluated over weeks served from rollups: each selector marked
/// (a [`ROLLUP_LABEL`] matcher) with the aggregate its function reads, and
/// `count_over_time` made a `sum_over_time` (of the counts). See [`crate::rollup`].
pub fn for_rollups(expr: &Expr) -> Expr {
    let mut e = expr.clone();
    mark(&mut e, Aggregate::Last);
    e
}

fn mark(e: &mut Expr, agg: Aggregate) {
    let add = |vs: &mut parser::VectorSelector| {
        vs.matchers
            .matchers
            .push(Matcher::new(MatchOp::Equal, ROLLUP_LABEL, agg.name()));
    };
    match e {
        Expr::VectorSelector(vs) => add(vs),
        Expr::MatrixSelector(ms) => add(&mut ms.vs),
        Expr::Paren(p) => mark(&mut p.expr, agg),
        Expr::Unary(u) => mark(&mut u.expr, Aggregate::Last),
        Expr::Call(c) => {
            let inner = Aggregate::for_function(c.func.name);
            if c.func.name == "count_over_time"
                && let Ok(Expr::Call(sum)) = parser::parse("sum_over_time(x[1m])")
            {
                c.func = sum.func;
            }
            for a in &mut c.args.args {
                mark(a, inner);
            }
        }
        Expr::Aggregate(a) => {
            mark(&mut a.expr, Aggregate::Last);
            if let Some(p) = &mut a.param {
                mark(p, Aggregate::Last);
            }
        }
        Expr::Binary(b) => {
            mark(&mut b.lhs, Aggregate::Last);
            mark(&mut b.rhs, Aggregate::Last);
        }
        Expr::Subquery(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// The aggregate a selector's matchers ask of rollups (a [`ROLLUP_LABEL`]
/// matcher), and the other matchers.
pub fn rollup_aggregate(matchers: &[Matcher]) -> (Option<Aggregate>, Vec<Matcher>) {
    let mut agg = None;
    let rest = matchers
        .iter()
        .filter(|m| {
            if m.name == ROLLUP_LABEL && matches!(m.op, MatchOp::Equal) {
                agg = agg.or(Aggregate::parse(&m.value));
                return false;
            }
            true
        })
        .cloned()
        .collect();
    (agg, rest)
}

/// `labels` without the [`ROLLUP_LABEL`] a rewritten query's series carry.
pub fn strip_rollup_label(mut labels: LabelSet) -> LabelSet {
    labels.remove(ROLLUP_LABEL);
    labels
}

struct Evaluator<'a> {
    source: &'a dyn SeriesSource,
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn drop_name(mut labels: LabelSet) -> LabelSet {
    labels.remove(METRIC_NAME);
    labels
}

impl Evaluator<'_> {
    fn eval(&self, expr: &Expr, t: i64) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => Ok(match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(v) => {
                    Value::Vector(v.into_iter().map(|(l, v)| (drop_name(l), -v)).collect())
                }
            }),
            Expr::VectorSelector(vs) => {
                if vs.at.is_some() {
                    return Err(EvalError::Unsupported("the @ modifier".into()));
                }
                let at = t - offset_ms(&vs.offset);
                let series = self.select(vs, at - functions::LOOKBACK_MS, at)?;
                Ok(Value::Vector(
                    series
                        .into_iter()
                        .filter_map(|(l, s)| {
                            functions::instant(&s, at, functions::LOOKBACK_MS).map(|(_, v)| (l, v))
                        })
                        .collect(),
                ))
            }
            Expr::Call(call) => self.call(call, t),
            Expr::Aggregate(agg) => self.aggregate(agg, t),
            Expr::Binary(b) => self.binary(b, t),
            Expr::MatrixSelector(_) => Err(EvalError::Type(
                "a range vector is only a function's argument here".into(),
            )),
            Expr::StringLiteral(_) => Err(EvalError::Unsupported("a string expression".into())),
            Expr::Subquery(_) => Err(EvalError::Unsupported("subqueries".into())),
            Expr::Extension(_) => Err(EvalError::Unsupported("extensions".into())),
        }
    }

    fn select(
        &self,
        vs: &parser::VectorSelector,
        from: i64,
        to: i64,
    ) -> Result<Vec<Series>, EvalError> {
        Ok(self.source.select(&selector_matchers(vs)?, from, to))
    }

    /// A matrix argument: each series' samples in its window at `t`.
    fn matrix(&self, arg: &Expr, t: i64) -> Result<(Vec<Series>, i64, i64), EvalError> {
        let ms = match arg {
            Expr::MatrixSelector(ms) => ms,
            Expr::Subquery(_) => return Err(EvalError::Unsupported("subqueries".into())),
            _ => {
                return Err(EvalError::Type(format!(
                    "expected a range vector, got {arg}"
                )));
            }
        };
        if ms.vs.at.is_some() {
            return Err(EvalError::Unsupported("the @ modifier".into()));
        }
        let range = ms.range.as_millis() as i64;
        let end = t - offset_ms(&ms.vs.offset);
        let series = self.select(&ms.vs, end - range, end)?;
        let windows = series
            .into_iter()
            .map(|(l, s)| (l, functions::window(&s, end, range)))
            .collect();
        Ok((windows, end, range))
    }

    fn call(&self, call: &parser::Call, t: i64) -> Result<Value, EvalError> {
        let name = call.func.name;
        let args = &call.args.args;
        let arg = |i: usize| -> Result<&Expr, EvalError> {
            args.get(i)
                .map(|a| a.as_ref())
                .ok_or_else(|| EvalError::Type(format!("{name} needs an argument")))
        };
        let over_time = |f: OverTime| (f, name == "last_over_time");
        type Ranged = fn(&[(i64, f64)], i64, i64) -> Option<f64>;
        let ranged: Option<Ranged> = match name {
            "rate" => Some(|w, e, r| functions::extrapolated_rate(w, e, r, RateKind::Rate)),
            "increase" => Some(|w, e, r| functions::extrapolated_rate(w, e, r, RateKind::Increase)),
            "delta" => Some(|w, e, r| functions::extrapolated_rate(w, e, r, RateKind::Delta)),
            "irate" => Some(|w, _, _| functions::instant_rate(w, true)),
            "idelta" => Some(|w, _, _| functions::instant_rate(w, false)),
            _ => None,
        };
        if let Some(f) = ranged {
            let (windows, end, range) = self.matrix(arg(0)?, t)?;
            return Ok(Value::Vector(
                windows
                    .into_iter()
                    .filter_map(|(l, w)| f(&w, end, range).map(|v| (drop_name(l), v)))
                    .collect(),
            ));
        }
        let over = match name {
            "avg_over_time" => Some(over_time(OverTime::Avg)),
            "min_over_time" => Some(over_time(OverTime::Min)),
            "max_over_time" => Some(over_time(OverTime::Max)),
            "sum_over_time" => Some(over_time(OverTime::Sum)),
            "count_over_time" => Some(over_time(OverTime::Count)),
            "last_over_time" => Some(over_time(OverTime::Last)),
            _ => None,
        };
        if let Some((f, keep_name)) = over {
            let (windows, _, _) = self.matrix(arg(0)?, t)?;
            return Ok(Value::Vector(
                windows
                    .into_iter()
                    .filter_map(|(l, w)| {
                        let l = if keep_name { l } else { drop_name(l) };
                        functions::over_time(&w, f).map(|v| (l, v))
                    })
                    .collect(),
            ));
        }
        let math: Option<fn(f64) -> f64> = match name {
            "abs" => Some(f64::abs),
            "ceil" => Some(f64::ceil),
            "floor" => Some(f64::floor),
            // Prometheus rounds halves up: floor(v + 0.5).
            "round" if args.len() == 1 => Some(|v: f64| (v + 0.5).floor()),
            _ => None,
        };
        if let Some(f) = math {
            return Ok(match self.eval(arg(0)?, t)? {
                Value::Vector(v) => {
                    Value::Vector(v.into_iter().map(|(l, v)| (drop_name(l), f(v))).collect())
                }
                Value::Scalar(_) => return Err(EvalError::Type(format!("{name} takes a vector"))),
            });
        }
        match name {
            "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
            other => Err(EvalError::Unsupported(format!("the function {other}"))),
        }
    }

    fn aggregate(&self, agg: &parser::AggregateExpr, t: i64) -> Result<Value, EvalError> {
        let op_name = agg.op.to_string();
        let param = || -> Result<usize, EvalError> {
            let p = agg
                .param
                .as_ref()
                .ok_or_else(|| EvalError::Type(format!("{op_name} needs a parameter")))?;
            match self.eval(p, t)? {
                Value::Scalar(k) if k >= 1.0 => Ok(k as usize),
                Value::Scalar(_) => Ok(0),
                Value::Vector(_) => Err(EvalError::Type(format!(
                    "{op_name}'s parameter is a scalar"
                ))),
            }
        };
        let op = match op_name.as_str() {
            "sum" => AggOp::Sum,
            "avg" => AggOp::Avg,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "count" => AggOp::Count,
            "topk" => AggOp::Topk(param()?),
            "bottomk" => AggOp::Bottomk(param()?),
            other => return Err(EvalError::Unsupported(format!("the aggregation {other}"))),
        };
        let grouping = match &agg.modifier {
            None => Grouping::By(Vec::new()),
            Some(LabelModifier::Include(l)) => Grouping::By(l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => Grouping::Without(l.labels.clone()),
        };
        match self.eval(&agg.expr, t)? {
            Value::Vector(v) => Ok(Value::Vector(aggregate(op, &grouping, &v))),
            Value::Scalar(_) => Err(EvalError::Type(format!("{op_name} takes a vector"))),
        }
    }

    fn binary(&self, b: &parser::BinaryExpr, t: i64) -> Result<Value, EvalError> {
        let op = b.op.to_string();
        let return_bool = b.return_bool();
        let (lhs, rhs) = (self.eval(&b.lhs, t)?, self.eval(&b.rhs, t)?);
        let comparison = matches!(op.as_str(), "==" | "!=" | ">" | "<" | ">=" | "<=");
        let apply = |x: f64, y: f64| -> Result<f64, EvalError> {
            Ok(match op.as_str() {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                "%" => x % y,
                "^" => x.powf(y),
                "==" => f64::from(u8::from(x == y)),
                "!=" => f64::from(u8::from(x != y)),
                ">" => f64::from(u8::from(x > y)),
                "<" => f64::from(u8::from(x < y)),
                ">=" => f64::from(u8::from(x >= y)),
                "<=" => f64::from(u8::from(x <= y)),
                other => return Err(EvalError::Unsupported(format!("the operator {other}"))),
            })
        };
        match (lhs, rhs) {
            (Value::Scalar(x), Value::Scalar(y)) => {
                if comparison && !return_bool {
                    return Err(EvalError::Type(
                        "comparisons between scalars must use bool".into(),
                    ));
                }
                Ok(Value::Scalar(apply(x, y)?))
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                vector_scalar(v, s, false, comparison && !return_bool, &apply)
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                vector_scalar(v, s, true, comparison && !return_bool, &apply)
            }
            (Value::Vector(_), Value::Vector(_)) => Err(EvalError::Unsupported(
                "operators between two vectors".into(),
            )),
        }
    }
}

/// A vector and a scalar (`scalar_left`: the scalar is the left operand; `filter`: a
/// comparison without `bool`, which keeps the elements that hold as they are).
fn vector_scalar(
    v: Vec<(LabelSet, f64)>,
    s: f64,
    scalar_left: bool,
    filter: bool,
    apply: &dyn Fn(f64, f64) -> Result<f64, EvalError>,
) -> Result<Value, EvalError> {
    let mut out = Vec::new();
    for (labels, x) in v {
        let (a, b) = if scalar_left { (s, x) } else { (x, s) };
        let r = apply(a, b)?;
        if filter {
            if r == 1.0 {
                out.push((labels, x));
            }
        } else {
            out.push((drop_name(labels), r));
        }
    }
    Ok(Value::Vector(out))
}

/// An in-memory source: series and their samples (tests, and small answers).
#[derive(Debug, Clone, Default)]
pub struct MemorySource(pub Vec<Series>);

impl SeriesSource for MemorySource {
    fn select(&self, matchers: &[Matcher], from_ms: i64, to_ms: i64) -> Vec<Series> {
        self.0
            .iter()
            .filter(|(labels, _)| {
                matchers
                    .iter()
                    .all(|m| m.is_match(labels.get(&m.name).map(String::as_str).unwrap_or("")))
            })
            .map(|(labels, samples)| {
                let from = samples.partition_point(|(t, _)| *t < from_ms);
                let to = samples.partition_point(|(t, _)| *t <= to_ms);
                (labels.clone(), samples[from..to.max(from)].to_vec())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> MemorySource {
        let series = |job: &str, step: f64| {
            let labels: LabelSet = [("__name__", "m"), ("job", job)]
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            (
                labels,
                (0..40).map(|i| (i * 15_000, i as f64 * step)).collect(),
            )
        };
        MemorySource(vec![series("a", 1.0), series("b", 2.0)])
    }

    fn eval(q: &str, t: i64) -> Result<Value, EvalError> {
        instant(&source(), &parse(q)?, t)
    }

    #[test]
    fn selectors_functions_aggregations_and_arithmetic() {
        let Value::Vector(v) = eval(r#"m{job=~"a|b"}"#, 300_000).unwrap() else {
            panic!("a vector");
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1, 20.0);
        let Value::Vector(v) = eval("sum(rate(m[1m])) * 60", 300_000).unwrap() else {
            panic!("a vector");
        };
        // rate is 1/15 and 2/15 per second: 12 per minute together.
        assert!((v[0].1 - 12.0).abs() < 1e-9, "{v:?}");
        assert!(v[0].0.is_empty());
        let Value::Vector(v) = eval("m > 30", 300_000).unwrap() else {
            panic!("a vector");
        };
        assert_eq!(v.len(), 1, "a filter");
        assert_eq!(v[0].0.get("__name__").map(String::as_str), Some("m"));
        assert_eq!(eval("2 ^ 3 + 1", 0).unwrap(), Value::Scalar(9.0));
        assert_eq!(
            eval("m offset 1m", 300_000).unwrap(),
            eval("m", 240_000).unwrap()
        );
        assert_eq!(eval("time()", 5_000).unwrap(), Value::Scalar(5.0));
    }

    #[test]
    fn queries_over_rollups_mark_each_selector_with_the_aggregate_it_reads() {
        let marks = |q: &str| {
            let e = for_rollups(&parse(q).unwrap());
            let text = e.to_string();
            let aggs: Vec<Option<Aggregate>> = selections(&e, 0, 0)
                .unwrap()
                .iter()
                .map(|s| rollup_aggregate(&s.matchers).0)
                .collect();
            (text, aggs)
        };
        let (text, aggs) = marks("count_over_time(m[1h])");
        assert!(text.starts_with("sum_over_time("), "{text}");
        assert_eq!(aggs, vec![Some(Aggregate::Count)]);
        let (_, aggs) = marks("max by (job) (max_over_time(m[1h])) * 2 + m");
        assert_eq!(aggs, vec![Some(Aggregate::Max), Some(Aggregate::Last)]);
        let (_, aggs) = marks("topk(2, rate(m[5m]))");
        assert_eq!(aggs, vec![Some(Aggregate::Last)]);
        let (_, aggs) = marks("-avg_over_time(m[1h])");
        assert_eq!(aggs, vec![Some(Aggregate::Avg)]);
        // The marker matcher is taken out of what the store selects by.
        let (agg, rest) =
            rollup_aggregate(&parse_selector(r#"m{__rollup__="min",job="a"}"#).unwrap());
        assert_eq!(agg, Some(Aggregate::Min));
        assert_eq!(rest.len(), 2);
        let labels: LabelSet = [(ROLLUP_LABEL.to_string(), "min".to_string())].into();
        assert!(strip_rollup_label(labels).is_empty());
    }

    #[test]
    fn what_is_not_supported_says_so() {
        for (q, what) in [
            ("m + m", "operators between two vectors"),
            (
                "histogram_quantile(0.9, m)",
                "the function histogram_quantile",
            ),
            ("quantile(0.5, m)", "the aggregation quantile"),
            ("rate(m[5m:1m])", "subqueries"),
        ] {
            match eval(q, 0) {
                Err(EvalError::Unsupported(w)) => assert!(w.contains(what), "{q}: {w}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(matches!(eval("sum(", 0), Err(EvalError::Parse(_))));
        assert!(matches!(
            eval("1 > 2", 0),
            Err(EvalError::Type(_)) | Err(EvalError::Parse(_))
        ));
    }
}
