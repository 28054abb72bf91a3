//! `datalayer ts ...`: samples in and PromQL out, through the Timeseries service.

use super::client::Out;
use super::{Done, TsCmd};
use crate::prom::{format_value, parse_duration, parse_time};
use datalayer_api::v1 as pb;
use datalayer_client::Client;
use serde_json::json;
use std::io::BufRead;

/// Samples sent per write call when lines come from stdin.
const LINES_PER_WRITE: usize = 5000;

/// `now`, `now-DURATION`, RFC 3339 or Unix seconds, as ms.
fn time_arg(text: &str) -> anyhow::Result<i64> {
    let now = datalayer_timeseries::policy::now_ms();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix("now-") {
        return Ok(now - parse_duration(ago).map_err(anyhow::Error::msg)?);
    }
    parse_time(text).map_err(anyhow::Error::msg)
}

/// One sample line: `metric{label="v",...} VALUE [TIMESTAMP_MS]` (the timestamp
/// defaults to `now_ms`).
pub fn parse_line(line: &str, now_ms: i64) -> anyhow::Result<pb::TsSeries> {
    let line = line.trim();
    let split = match line.rfind('}') {
        Some(i) => i + 1,
        None => line.find(char::is_whitespace).ok_or_else(|| {
            anyhow::anyhow!("{line:?}: expected `metric{{labels}} VALUE [TIMESTAMP_MS]`")
        })?,
    };
    let (selector, rest) = line.split_at(split);
    let matchers = datalayer_timeseries::promql::parse_selector(selector)
        .map_err(|e| anyhow::anyhow!("{line:?}: {e}"))?;
    let mut labels = Vec::new();
    for m in matchers {
        if m.op != promql_parser::label::MatchOp::Equal {
            anyhow::bail!("{line:?}: labels are written `name=\"value\"`");
        }
        labels.push(pb::TsLabel {
            name: m.name,
            value: m.value,
        });
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| anyhow::anyhow!("{line:?}: the value is missing"))?;
    let value: f64 = value.parse().map_err(|_| {
        anyhow::anyhow!("{line:?}: {value:?} is not a number (NaN, +Inf and -Inf are)")
    })?;
    let timestamp_ms = match fields.next() {
        Some(t) => t
            .parse()
            .map_err(|_| anyhow::anyhow!("{line:?}: {t:?} is not a timestamp in ms"))?,
        None => now_ms,
    };
    if fields.next().is_some() {
        anyhow::bail!("{line:?}: expected `metric{{labels}} VALUE [TIMESTAMP_MS]`");
    }
    Ok(pb::TsSeries {
        labels,
        samples: vec![pb::TsSample {
            timestamp_ms,
            value,
        }],
    })
}

fn labels_text(labels: &[pb::TsLabel]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

fn labels_json(labels: &[pb::TsLabel]) -> serde_json::Value {
    json!(
        labels
            .iter()
            .map(|l| (l.name.clone(), json!(l.value)))
            .collect::<serde_json::Map<_, _>>()
    )
}

async fn write(
    c: &mut Client,
    out: Out,
    table: &str,
    lines: Vec<String>,
    acks: Option<pb::Acks>,
) -> anyhow::Result<Done> {
    let now = datalayer_timeseries::policy::now_ms();
    let from_stdin = lines.is_empty();
    let lines: Box<dyn Iterator<Item = anyhow::Result<String>>> = if from_stdin {
        Box::new(
            std::io::stdin()
                .lock()
                .lines()
                .map(|l| l.map_err(anyhow::Error::from)),
        )
    } else {
        Box::new(lines.into_iter().map(Ok))
    };
    let (mut series, mut samples) = (0u64, 0u64);
    let mut batch = Vec::new();
    let mut lines = lines.peekable();
    while lines.peek().is_some() {
        for line in lines.by_ref() {
            let line = line?;
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            batch.push(parse_line(&line, now)?);
            if batch.len() >= LINES_PER_WRITE {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let r = c
            .timeseries()
            .write(pb::TsWriteRequest {
                table: table.into(),
                series: std::mem::take(&mut batch),
                acks,
            })
            .await
            .map_err(datalayer_client::ClientError::from)?
            .into_inner();
        series += r.series;
        samples += r.samples;
    }
    out.answer(
        || json!({"series": series, "samples": samples}),
        || println!("wrote {samples} samples of {series} series"),
    );
    Ok(Done::Ok)
}

#[allow(clippy::too_many_arguments)]
async fn query(
    c: &mut Client,
    out: Out,
    table: &str,
    promql: &str,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
) -> anyhow::Result<Done> {
    let end_ms = time_arg(end.as_deref().unwrap_or("now"))?;
    let (start_ms, step_ms) = match &step {
        Some(step) => {
            let step = parse_duration(step).map_err(anyhow::Error::msg)?;
            let start = start
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("a range query (--step) needs --start"))?;
            (time_arg(start)?, step)
        }
        None if start.is_some() => anyhow::bail!("--start needs --step (a range query)"),
        None => (0, 0),
    };
    let r = c
        .timeseries()
        .query(pb::TsQueryRequest {
            table: table.into(),
            query: promql.into(),
            start_ms,
            end_ms,
            step_ms,
            ..Default::default()
        })
        .await
        .map_err(datalayer_client::ClientError::from)?
        .into_inner();
    out.answer(
        || {
            let point = |p: &pb::TsSample| json!([p.timestamp_ms as f64 / 1000.0, format_value(p.value)]);
            let result: Vec<serde_json::Value> = r
                .series
                .iter()
                .map(|s| match r.result_type.as_str() {
                    "matrix" => json!({"metric": labels_json(&s.labels), "values": s.samples.iter().map(point).collect::<Vec<_>>()}),
                    _ => json!({"metric": labels_json(&s.labels), "value": s.samples.first().map(point)}),
                })
                .collect();
            json!({"resultType": r.result_type, "result": result})
        },
        || {
            for s in &r.series {
                if r.result_type == "matrix" {
                    println!("{}", labels_text(&s.labels));
                    for p in &s.samples {
                        println!("  {} {}", p.timestamp_ms, format_value(p.value));
                    }
                } else {
                    let p = s.samples.first().cloned().unwrap_or_default();
                    let name = if r.result_type == "scalar" { "scalar".to_string() } else { labels_text(&s.labels) };
                    println!("{name} {} @{}", format_value(p.value), p.timestamp_ms);
                }
            }
        },
    );
    Ok(Done::Ok)
}

async fn series(
    c: &mut Client,
    out: Out,
    table: &str,
    selectors: Vec<String>,
    start: Option<String>,
    end: Option<String>,
) -> anyhow::Result<Done> {
    let end_ms = time_arg(end.as_deref().unwrap_or("now"))?;
    let start_ms = match start {
        Some(s) => time_arg(&s)?,
        None => end_ms - 6 * 3_600_000,
    };
    let r = c
        .timeseries()
        .series(pb::TsSeriesRequest {
            table: table.into(),
            r#match: selectors,
            start_ms,
            end_ms,
        })
        .await
        .map_err(datalayer_client::ClientError::from)?
        .into_inner();
    out.answer(
        || json!({"series": r.series.iter().map(|s| labels_json(&s.labels)).collect::<Vec<_>>()}),
        || {
            for s in &r.series {
                println!("{}", labels_text(&s.labels));
            }
        },
    );
    Ok(Done::Ok)
}

async fn labels(
    c: &mut Client,
    out: Out,
    table: &str,
    name: Option<String>,
) -> anyhow::Result<Done> {
    let end_ms = datalayer_timeseries::policy::now_ms();
    let r = c
        .timeseries()
        .labels(pb::TsLabelsRequest {
            table: table.into(),
            name: name.unwrap_or_default(),
            r#match: Vec::new(),
            start_ms: end_ms - 6 * 3_600_000,
            end_ms,
        })
        .await
        .map_err(datalayer_client::ClientError::from)?
        .into_inner();
    out.answer(
        || json!({"values": r.values}),
        || {
            for v in &r.values {
                println!("{v}");
            }
        },
    );
    Ok(Done::Ok)
}

/// Runs a `ts` command.
pub(super) async fn ts_command(
    c: &mut Client,
    out: Out,
    cmd: TsCmd,
    acks: Option<pb::Acks>,
) -> anyhow::Result<Done> {
    match cmd {
        TsCmd::Write { table, lines } => write(c, out, &table, lines, acks).await,
        TsCmd::Query {
            table,
            query: q,
            start,
            end,
            step,
        } => query(c, out, &table, &q, start, end, step).await,
        TsCmd::Series {
            table,
            selectors,
            start,
            end,
        } => series(c, out, &table, selectors, start, end).await,
        TsCmd::Labels { table, name } => labels(c, out, &table, name).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_parse() {
        let s = parse_line(r#"http_total{job="api", code="200"} 12.5 1700000000000"#, 7).unwrap();
        assert_eq!(s.samples[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!(s.samples[0].value, 12.5);
        let names: Vec<_> = s
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert!(names.contains(&("__name__", "http_total")) && names.contains(&("code", "200")));
        let s = parse_line("up 1", 7).unwrap();
        assert_eq!((s.samples[0].timestamp_ms, s.labels.len()), (7, 1));
        assert!(parse_line("up NaN", 7).unwrap().samples[0].value.is_nan());
        for bad in ["up", "up{job=~\"a\"} 1", "up one", "up 1 2 3", "up{ 1"] {
            assert!(parse_line(bad, 7).is_err(), "{bad}");
        }
    }
}
