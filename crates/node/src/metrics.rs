//! Prometheus metrics of the node, served at `/metrics`.

use datalayer_store::EngineStats;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The node's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    group_commits: IntCounter,
    records: IntCounter,
    forwarded: IntCounterVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "datalayer_node_requests_total",
                "gRPC requests served, by method and status code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "datalayer_node_request_duration_seconds",
                "gRPC request latency, by method",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            &["method"],
        )
        .expect("valid metric");
        let group_commits = IntCounter::new(
            "datalayer_store_group_commits_total",
            "Synced write batches (each one WAL sync shared by its writers)",
        )
        .expect("valid metric");
        let records = IntCounter::new(
            "datalayer_store_records_appended_total",
            "Oplog records written by those batches",
        )
        .expect("valid metric");
        let forwarded = IntCounterVec::new(
            Opts::new(
                "datalayer_node_forwarded_total",
                "KV requests this node forwarded to the tablet's master, by method",
            ),
            &["method"],
        )
        .expect("valid metric");
        for c in [
            Box::new(forwarded.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(group_commits.clone()),
            Box::new(records.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            latency,
            group_commits,
            records,
            forwarded,
        }
    }

    /// Records one request forwarded to another node.
    pub fn forwarded(&self, method: &str) {
        self.forwarded.with_label_values(&[method]).inc();
    }

    /// Records one finished request.
    pub fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.latency.with_label_values(&[method]).observe(seconds);
    }

    /// The text exposition, with the store's counters brought up to date.
    pub fn render(&self, stats: EngineStats) -> String {
        self.group_commits
            .inc_by(stats.group_commits.saturating_sub(self.group_commits.get()));
        self.records
            .inc_by(stats.records_appended.saturating_sub(self.records.get()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The name a gRPC code has in the `code` label (its `Debug` form, without formatting
/// one on every request).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_labels_are_the_codes_debug_names() {
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
