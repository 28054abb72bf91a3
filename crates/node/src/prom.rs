//! The Prometheus APIs of `timeseries` tables on the node's HTTP address, under
//! `/prometheus/TABLE` (a Prometheus URL prefix, so one node serves many tables):
//!
//! - `POST /prometheus/TABLE/api/v1/write`: the remote-write receiver (a
//!   snappy-compressed protobuf `WriteRequest`, remote-write 1.0), as a Prometheus
//!   server's `remote_write` sends it. 204 when stored; 400 with the reason for a
//!   request that cannot be stored (Prometheus drops it); 503 when it may succeed
//!   later (Prometheus retries).
//! - `GET|POST /prometheus/TABLE/api/v1/{query, query_range, series, labels,
//!   label/NAME/values}`, `status/buildinfo`, and `metadata` and `query_exemplars`
//!   (empty: neither is kept): the HTTP query API, answering in
//!   Prometheus's JSON (`{"status":"success","data":...}`, errors as
//!   `{"status":"error","errorType":...,"error":...}`), so Grafana's Prometheus data
//!   source and other Prometheus API clients work against it.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datalayer_cluster::{Error, ErrorKind};
use datalayer_timeseries::policy::Instant;
use datalayer_timeseries::promql;
use datalayer_timeseries::{SeriesSamples, TimeseriesPolicy};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest remote-write or query body accepted, compressed.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Largest remote-write body once decompressed.
pub const MAX_DECODED_BYTES: usize = 256 << 20;
/// Default lookback of `series` and `labels` without `start`: six hours, as
/// Prometheus's query API reads the head block.
const DEFAULT_SPAN_MS: i64 = 6 * 3_600_000;

use datalayer_api::prompb::WriteRequest;

/// The routes, over the node's time-series policy.
pub fn routes(policy: Arc<TimeseriesPolicy>) -> axum::Router {
    axum::Router::new()
        .route("/prometheus/{table}/api/v1/write", post(remote_write))
        .route("/prometheus/{table}/api/v1/query", get(query).post(query))
        .route(
            "/prometheus/{table}/api/v1/query_range",
            get(query_range).post(query_range),
        )
        .route(
            "/prometheus/{table}/api/v1/series",
            get(series).post(series),
        )
        .route(
            "/prometheus/{table}/api/v1/labels",
            get(labels).post(labels),
        )
        .route(
            "/prometheus/{table}/api/v1/label/{name}/values",
            get(label_values),
        )
        .route(
            "/prometheus/{table}/api/v1/status/buildinfo",
            get(buildinfo),
        )
        .route("/prometheus/{table}/api/v1/metadata", get(metadata))
        .route(
            "/prometheus/{table}/api/v1/query_exemplars",
            get(exemplars).post(exemplars),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(policy)
}

/// An API error: Prometheus's status code and `errorType` for the error's kind.
struct ApiError(StatusCode, &'static str, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let (code, kind) = match e.kind() {
            ErrorKind::InvalidArgument | ErrorKind::CrossTablet => {
                (StatusCode::BAD_REQUEST, "bad_data")
            }
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::NotSupported => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            k if k.retryable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError(code, kind, e.to_string())
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_data", message.into())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.1, "error": self.2});
        (self.0, json_body(&body)).into_response()
    }
}

/// A JSON body with its content type.
fn json_body(value: &Json) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn success(data: Json) -> Response {
    json_body(&json!({"status": "success", "data": data})).into_response()
}

/// Decodes `%XX` and `+` of a form value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parameters of a request: its query string and, for a form POST, its body.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(query: Option<String>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut pairs = Vec::new();
        let mut add = |text: &str| {
            for part in text.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = part.split_once('=').unwrap_or((part, ""));
                pairs.push((percent_decode(k), percent_decode(v)));
            }
        };
        if let Some(q) = query {
            add(&q);
        }
        let form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            add(&String::from_utf8_lossy(body));
        }
        Params(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| parse_time(v).map_err(|e| bad(format!("invalid parameter {name:?}: {e}"))))
            .transpose()
    }

    fn selectors(&self) -> Result<Vec<Vec<promql_parser::label::Matcher>>, ApiError> {
        self.all("match[]")
            .into_iter()
            .map(|m| {
                promql::parse_selector(m)
                    .map_err(|e| bad(format!("invalid parameter \"match[]\": {e}")))
            })
            .collect()
    }

    /// `start` and `end` of a listing: the last six hours by default.
    fn span(&self) -> Result<(i64, i64), ApiError> {
        let end = self
            .time("end")?
            .unwrap_or_else(datalayer_timeseries::policy::now_ms);
        let start = self.time("start")?.unwrap_or(end - DEFAULT_SPAN_MS);
        Ok((start, end))
    }
}

/// A time as the Prometheus API takes it: RFC 3339, or (fractional) Unix seconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e15 {
            return Err(format!("cannot parse {text:?} to a valid timestamp"));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {text:?} to a valid timestamp"))
}

/// A duration as the Prometheus API takes it: (fractional) seconds, or a PromQL
/// duration (`15s`, `1m30s`, `2h`, `1d`, `500ms`).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let err = || format!("cannot parse {text:?} to a valid duration");
    if let Ok(secs) = text.parse::<f64>() {
        if !secs.is_finite() || secs <= 0.0 || secs > 9.2e15 {
            return Err(err());
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        rest = &rest[unit_len..];
    }
    if total <= 0 {
        return Err(err());
    }
    Ok(total)
}

/// A sample value as Prometheus writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn point(t_ms: i64, v: f64) -> Json {
    json!([t_ms as f64 / 1000.0, format_value(v)])
}

fn metric(labels: BTreeMap<String, String>) -> Json {
    Json::Object(
        labels
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect(),
    )
}

/// A matrix answer: each series with its points.
fn matrix_json(series: Vec<datalayer_timeseries::promql::Series>) -> Json {
    let result: Vec<Json> = series
        .into_iter()
        .map(|(l, points)| {
            json!({
                "metric": metric(l),
                "values": points.into_iter().map(|(t, v)| point(t, v)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"resultType": "matrix", "result": result})
}

async fn remote_write(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let len = snap::raw::decompress_len(&body).map_err(|e| {
        bad(format!(
            "the body is not snappy-compressed (block format): {e}"
        ))
    })?;
    if len > MAX_DECODED_BYTES {
        return Err(bad(format!(
            "the body decompresses to {len} bytes: at most {MAX_DECODED_BYTES}"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .map_err(|e| {
            bad(format!(
                "the body is not snappy-compressed (block format): {e}"
            ))
        })?;
    let request = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| bad(format!("the body is not a remote-write WriteRequest: {e}")))?;
    let mut batch = Vec::with_capacity(request.timeseries.len());
    for ts in request.timeseries {
        if ts.samples.is_empty() {
            continue; // exemplars or histograms only: not stored
        }
        let labels = policy
            .labels(ts.labels.into_iter().map(|l| (l.name, l.value)))
            .map_err(ApiError::from)?;
        batch.push(SeriesSamples {
            labels,
            samples: ts
                .samples
                .into_iter()
                .map(|s| (s.timestamp, s.value))
                .collect(),
        });
    }
    if !batch.is_empty() {
        policy.write(&table, batch, None).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn query(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::of(q, &headers, &body);
    let text = p
        .get("query")
        .ok_or_else(|| bad("missing parameter \"query\""))?;
    let t = p
        .time("time")?
        .unwrap_or_else(datalayer_timeseries::policy::now_ms);
    let data = match policy.query(&table, text, t).await? {
        Instant::Matrix(series) => matrix_json(series),
        Instant::Scalar(v) => json!({"resultType": "scalar", "result": point(t, v)}),
        Instant::Vector(v) => json!({
            "resultType": "vector",
            "result": v.into_iter().map(|(l, v)| json!({"metric": metric(l), "value": point(t, v)})).collect::<Vec<_>>(),
        }),
    };
    Ok(success(data))
}

async fn query_range(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::of(q, &headers, &body);
    let text = p
        .get("query")
        .ok_or_else(|| bad("missing parameter \"query\""))?;
    let start = p
        .time("start")?
        .ok_or_else(|| bad("missing parameter \"start\""))?;
    let end = p
        .time("end")?
        .ok_or_else(|| bad("missing parameter \"end\""))?;
    let step = p
        .get("step")
        .ok_or_else(|| bad("missing parameter \"step\""))?;
    let step = parse_duration(step).map_err(|e| bad(format!("invalid parameter \"step\": {e}")))?;
    if end < start {
        return Err(bad(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let series = policy.query_range(&table, text, start, end, step).await?;
    Ok(success(matrix_json(series)))
}

async fn series(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::of(q, &headers, &body);
    let selectors = p.selectors()?;
    if selectors.is_empty() {
        return Err(bad("no match[] parameter provided"));
    }
    let (start, end) = p.span()?;
    let found = policy.series(&table, &selectors, start, end).await?;
    Ok(success(Json::Array(
        found.into_iter().map(metric).collect(),
    )))
}

async fn labels(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::of(q, &headers, &body);
    let (start, end) = p.span()?;
    let names = policy
        .label_values(&table, None, &p.selectors()?, start, end)
        .await?;
    Ok(success(json!(names)))
}

async fn label_values(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path((table, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = Params::of(q, &headers, &[]);
    let (start, end) = p.span()?;
    let values = policy
        .label_values(&table, Some(&name), &p.selectors()?, start, end)
        .await?;
    Ok(success(json!(values)))
}

/// Metric metadata (type, help, unit): DataLayer does not keep it (remote write
/// sends it apart from the samples), so the answer is empty, as Prometheus's is for
/// a metric it has no metadata of.
async fn metadata(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
) -> Result<Response, ApiError> {
    policy.table(&table).await?;
    Ok(success(json!({})))
}

/// Exemplars: not kept (remote write's exemplars are skipped), so none.
async fn exemplars(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
) -> Result<Response, ApiError> {
    policy.table(&table).await?;
    Ok(success(json!([])))
}

async fn buildinfo(
    State(policy): State<Arc<TimeseriesPolicy>>,
    Path(table): Path<String>,
) -> Result<Response, ApiError> {
    policy.table(&table).await?;
    Ok(success(json!({
        "version": "2.42.0",
        "revision": concat!("datalayer-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_durations_and_values_parse_and_print_as_prometheus_does() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        for bad in ["", "0", "-1", "5x", "m", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }

    #[test]
    fn form_values_decode() {
        assert_eq!(
            percent_decode("sum%28rate%28x%5B5m%5D%29%29+by"),
            "sum(rate(x[5m])) by"
        );
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        let p = Params::of(
            Some("match[]=up&match%5B%5D=x&start=1".into()),
            &HeaderMap::new(),
            b"",
        );
        assert_eq!(p.all("match[]"), ["up", "x"]);
        assert_eq!(p.get("start"), Some("1"));
    }
}
