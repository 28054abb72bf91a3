//! The node's HTTP endpoint: Prometheus `/metrics` and `/health`.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::routing::get;
use datalayer_store::TabletEngine;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    engine: Arc<dyn TabletEngine>,
}

async fn metrics(
    State(s): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(s.engine.stats()),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

/// Serves HTTP until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics_: Arc<Metrics>,
    engine: Arc<dyn TabletEngine>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(AppState {
            metrics: metrics_,
            engine,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
