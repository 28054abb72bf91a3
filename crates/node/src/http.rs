//! The node's HTTP endpoint: Prometheus `/metrics`, `/health`, at `/` a page that
//! shows the cluster's nodes and tablet map at a glance, and the Prometheus APIs of
//! `timeseries` tables under `/prometheus/TABLE` ([`crate::prom`]).

use crate::metrics::Metrics;
use crate::service::admin::AdminService;
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
    admin: AdminService,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Whether the node at `addr` answers its status within half a second.
async fn probe(addr: &str) -> bool {
    let ask = async {
        let mut c = datalayer_client::Client::connect(addr).await.ok()?;
        c.node_status().await.ok()
    };
    tokio::time::timeout(std::time::Duration::from_millis(500), ask)
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn page(State(s): State<AppState>) -> axum::response::Html<String> {
    let nodes = s.admin.cluster_nodes();
    let state = s.admin.catalog.state();
    let leader = s.admin.catalog.leader().map_or(0, |(id, _)| id.0);
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>DataLayer</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}\
         td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}.dead{color:#b00}.live{color:#070}</style>\
         </head><body>",
    );
    html.push_str(&format!(
        "<h1>DataLayer cluster</h1><p>Seen from node {} · metadata leader: node {leader}</p>",
        s.admin.info.node_id
    ));
    html.push_str("<h2>Nodes</h2><table><tr><th>node</th><th>gRPC</th><th>HTTP</th><th>state</th><th>metadata role</th><th>tablets</th><th>masters</th></tr>");
    for n in &nodes {
        let live = n.id == s.admin.info.node_id || probe(&n.grpc_addr).await;
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{cls}\">{cls}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            n.id,
            escape(&n.grpc_addr),
            escape(&n.http_addr),
            escape(&n.meta_role),
            n.tablets,
            n.masters,
            cls = if live { "live" } else { "dead" },
        ));
    }
    html.push_str("</table><h2>Tablets</h2><table><tr><th>table</th><th>tablet</th><th>range</th><th>master</th><th>epoch</th><th>replicas</th><th>in sync</th><th>moving</th></tr>");
    for t in state.tables.values() {
        for tb in &t.tablets {
            let end = tb
                .end
                .as_deref()
                .map_or("∞".to_string(), |e| escape(&String::from_utf8_lossy(e)));
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>[{:?}, {end})</td><td>node {}</td><td>{}</td><td>{:?}</td><td>{:?}</td><td>{}</td></tr>",
                escape(&t.name),
                tb.id.0,
                escape(&String::from_utf8_lossy(&tb.start)),
                tb.master.0,
                tb.master_epoch.0,
                tb.replicas.iter().map(|r| r.0).collect::<Vec<_>>(),
                tb.in_sync.iter().map(|r| r.0).collect::<Vec<_>>(),
                tb.moving
                    .map_or(String::new(), |m| format!("node {} → node {}", m.from.0, m.to.0)),
            ));
        }
    }
    html.push_str("</table></body></html>");
    axum::response::Html(html)
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
    admin: AdminService,
    timeseries: Arc<datalayer_timeseries::TimeseriesPolicy>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(AppState {
            metrics: metrics_,
            engine,
            admin,
        })
        .merge(crate::prom::routes(timeseries));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
