//! The `datalayer.v1.Timeseries` service: samples in, PromQL out, over the node's
//! `timeseries` policy (which routes each tablet's share to its master itself).

use super::timed;
use crate::metrics::Metrics;
use crate::status::IntoStatus;
use datalayer_api::v1 as pb;
use datalayer_cluster::Error;
use datalayer_timeseries::policy::Instant;
use datalayer_timeseries::promql;
use datalayer_timeseries::{SeriesSamples, TimeseriesPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the Timeseries service of one node.
#[derive(Debug, Clone)]
pub struct TimeseriesService {
    policy: Arc<TimeseriesPolicy>,
    metrics: Arc<Metrics>,
}

impl TimeseriesService {
    /// The service over the node's policy.
    pub fn new(policy: Arc<TimeseriesPolicy>, metrics: Arc<Metrics>) -> TimeseriesService {
        TimeseriesService { policy, metrics }
    }
}

/// Functions a structured query may ask for per step, and what PromQL computes them.
const FUNCTIONS: [(&str, &str); 8] = [
    ("rate", "rate"),
    ("increase", "increase"),
    ("count", "count_over_time"),
    ("sum", "sum_over_time"),
    ("min", "min_over_time"),
    ("max", "max_over_time"),
    ("avg", "avg_over_time"),
    ("last", "last_over_time"),
];
const AGGREGATIONS: [&str; 5] = ["sum", "min", "max", "avg", "count"];

/// The PromQL a structured query stands for: `AGG by (G) (FN(SELECTOR[STEP]))`.
pub fn structured_query(
    selector: &str,
    function: &str,
    aggregation: &str,
    group_by: &[String],
    step_ms: i64,
) -> Result<String, Error> {
    if selector.trim().is_empty() {
        return Err(Error::invalid("selector", "give a query or a selector"));
    }
    promql::parse_selector(selector).map_err(|e| Error::invalid("selector", e.to_string()))?;
    let mut q = match function {
        "" => selector.to_string(),
        f => {
            let Some((_, promql_fn)) = FUNCTIONS.iter().find(|(n, _)| *n == f) else {
                return Err(Error::invalid(
                    "function",
                    format!(
                        "unknown function {f:?}: one of {}",
                        FUNCTIONS.map(|(n, _)| n).join(", ")
                    ),
                ));
            };
            if step_ms <= 0 {
                return Err(Error::invalid(
                    "step_ms",
                    "a function per step needs a step",
                ));
            }
            format!("{promql_fn}({selector}[{step_ms}ms])")
        }
    };
    match aggregation {
        "" if group_by.is_empty() => {}
        "" => {
            return Err(Error::invalid("group_by", "grouping needs an aggregation"));
        }
        a if AGGREGATIONS.contains(&a) => {
            for g in group_by {
                let ok = g
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    return Err(Error::invalid(
                        "group_by",
                        format!("{g:?} is not a label name"),
                    ));
                }
            }
            q = format!("{a} by ({}) ({q})", group_by.join(", "));
        }
        a => {
            return Err(Error::invalid(
                "aggregation",
                format!(
                    "unknown aggregation {a:?}: one of {}",
                    AGGREGATIONS.join(", ")
                ),
            ));
        }
    }
    Ok(q)
}

fn series_proto(labels: BTreeMap<String, String>, samples: Vec<(i64, f64)>) -> pb::TsSeries {
    pb::TsSeries {
        labels: labels
            .into_iter()
            .map(|(name, value)| pb::TsLabel { name, value })
            .collect(),
        samples: samples
            .into_iter()
            .map(|(timestamp_ms, value)| pb::TsSample {
                timestamp_ms,
                value,
            })
            .collect(),
    }
}

fn selectors(matches: &[String]) -> Result<Vec<Vec<promql_parser::label::Matcher>>, Error> {
    matches
        .iter()
        .map(|m| promql::parse_selector(m).map_err(|e| Error::invalid("match", e.to_string())))
        .collect()
}

fn end_or_now(end_ms: i64) -> i64 {
    if end_ms == 0 {
        datalayer_timeseries::policy::now_ms()
    } else {
        end_ms
    }
}

impl TimeseriesService {
    async fn write(&self, req: pb::TsWriteRequest) -> Result<pb::TsWriteResponse, Error> {
        let mut batch = Vec::with_capacity(req.series.len());
        for (i, s) in req.series.into_iter().enumerate() {
            let labels = self
                .policy
                .labels(s.labels.into_iter().map(|l| (l.name, l.value)))
                .map_err(|e| match e {
                    Error::InvalidArgument { message, .. } => {
                        Error::invalid(format!("series[{i}].labels"), message)
                    }
                    other => other,
                })?;
            if s.samples.is_empty() {
                return Err(Error::invalid(
                    format!("series[{i}].samples"),
                    "a series needs at least one sample",
                ));
            }
            batch.push(SeriesSamples {
                labels,
                samples: s
                    .samples
                    .into_iter()
                    .map(|p| (p.timestamp_ms, p.value))
                    .collect(),
            });
        }
        let acks = crate::service::kv::acks(req.acks)?;
        let w = self.policy.write(&req.table, batch, acks).await?;
        Ok(pb::TsWriteResponse {
            series: w.series as u64,
            samples: w.samples as u64,
            new_series: w.new_series as u64,
        })
    }

    async fn query(&self, req: pb::TsQueryRequest) -> Result<pb::TsQueryResponse, Error> {
        let query = if req.query.trim().is_empty() {
            structured_query(
                &req.selector,
                &req.function,
                &req.aggregation,
                &req.group_by,
                req.step_ms,
            )?
        } else {
            if !req.selector.is_empty() || !req.function.is_empty() || !req.aggregation.is_empty() {
                return Err(Error::invalid(
                    "query",
                    "give PromQL or the structured fields, not both",
                ));
            }
            req.query
        };
        let end = end_or_now(req.end_ms);
        if req.step_ms == 0 {
            let (result_type, series) = match self.policy.query(&req.table, &query, end).await? {
                Instant::Matrix(series) => (
                    "matrix",
                    series
                        .into_iter()
                        .map(|(l, s)| series_proto(l, s))
                        .collect(),
                ),
                Instant::Scalar(v) => (
                    "scalar",
                    vec![series_proto(BTreeMap::new(), vec![(end, v)])],
                ),
                Instant::Vector(v) => (
                    "vector",
                    v.into_iter()
                        .map(|(l, v)| series_proto(l, vec![(end, v)]))
                        .collect(),
                ),
            };
            return Ok(pb::TsQueryResponse {
                result_type: result_type.into(),
                series,
                query,
            });
        }
        let series = self
            .policy
            .query_range(&req.table, &query, req.start_ms, end, req.step_ms)
            .await?;
        Ok(pb::TsQueryResponse {
            result_type: "matrix".into(),
            series: series
                .into_iter()
                .map(|(l, s)| series_proto(l, s))
                .collect(),
            query,
        })
    }

    async fn series(&self, req: pb::TsSeriesRequest) -> Result<pb::TsSeriesResponse, Error> {
        if req.r#match.is_empty() {
            return Err(Error::invalid("match", "give at least one selector"));
        }
        let selectors = selectors(&req.r#match)?;
        let found = self
            .policy
            .series(&req.table, &selectors, req.start_ms, end_or_now(req.end_ms))
            .await?;
        Ok(pb::TsSeriesResponse {
            series: found
                .into_iter()
                .map(|l| series_proto(l, Vec::new()))
                .collect(),
        })
    }

    async fn labels(&self, req: pb::TsLabelsRequest) -> Result<pb::TsLabelsResponse, Error> {
        let selectors = selectors(&req.r#match)?;
        let name = (!req.name.is_empty()).then_some(req.name.as_str());
        let values = self
            .policy
            .label_values(
                &req.table,
                name,
                &selectors,
                req.start_ms,
                end_or_now(req.end_ms),
            )
            .await?;
        Ok(pb::TsLabelsResponse { values })
    }
}

#[tonic::async_trait]
impl pb::timeseries_server::Timeseries for TimeseriesService {
    async fn write(
        &self,
        request: Request<pb::TsWriteRequest>,
    ) -> Result<Response<pb::TsWriteResponse>, Status> {
        timed(&self.metrics, "TsWrite", async {
            self.write(request.into_inner()).await.status()
        })
        .await
    }

    async fn query(
        &self,
        request: Request<pb::TsQueryRequest>,
    ) -> Result<Response<pb::TsQueryResponse>, Status> {
        timed(&self.metrics, "TsQuery", async {
            self.query(request.into_inner()).await.status()
        })
        .await
    }

    async fn series(
        &self,
        request: Request<pb::TsSeriesRequest>,
    ) -> Result<Response<pb::TsSeriesResponse>, Status> {
        timed(&self.metrics, "TsSeries", async {
            self.series(request.into_inner()).await.status()
        })
        .await
    }

    async fn labels(
        &self,
        request: Request<pb::TsLabelsRequest>,
    ) -> Result<Response<pb::TsLabelsResponse>, Status> {
        timed(&self.metrics, "TsLabels", async {
            self.labels(request.into_inner()).await.status()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_queries_become_promql() {
        let q = |s, f, a, g: &[&str]| {
            let g: Vec<String> = g.iter().map(|s| s.to_string()).collect();
            structured_query(s, f, a, &g, 60_000)
        };
        assert_eq!(q("up", "", "", &[]).unwrap(), "up");
        assert_eq!(
            q("http_total{code=\"200\"}", "rate", "sum", &["job"]).unwrap(),
            "sum by (job) (rate(http_total{code=\"200\"}[60000ms]))"
        );
        assert_eq!(
            q("x", "last", "max", &[]).unwrap(),
            "max by () (last_over_time(x[60000ms]))"
        );
        for (s, f, a, g, field) in [
            ("", "", "", &[][..], "selector"),
            ("x{", "", "", &[][..], "selector"),
            ("x", "median", "", &[][..], "function"),
            ("x", "", "stddev", &[][..], "aggregation"),
            ("x", "", "", &["job"][..], "group_by"),
            ("x", "", "sum", &["a b"][..], "group_by"),
        ] {
            let e = q(s, f, a, g).unwrap_err();
            assert_eq!(e.field(), Some(field), "{s} {f} {a}: {e}");
        }
        // Every structured query parses as PromQL.
        assert!(promql::parse(&q("x", "rate", "avg", &["a", "b"]).unwrap()).is_ok());
    }
}
