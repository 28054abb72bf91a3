//! gRPC services: proto in, validated domain calls to the router and the policies,
//! proto out. (The internal `Replication` service lives with the strong policy.)

pub mod admin;
pub mod kv;
pub mod timeseries;

use crate::metrics::Metrics;
use std::future::Future;
use std::time::Instant;
use tonic::{Response, Status};

/// Runs a handler, recording its outcome and latency.
pub(crate) async fn timed<T>(
    metrics: &Metrics,
    method: &'static str,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = f.await;
    let code = result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    metrics.observe(method, code, start.elapsed().as_secs_f64());
    result.map(Response::new)
}
