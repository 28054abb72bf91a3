//! Wiring of a node: store, catalog, policy, router, gRPC and HTTP servers, and the
//! background garbage collector. [`run`] returns once the node has stopped cleanly.

use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::service::admin::{AdminService, NodeInfo};
use crate::service::kv::KvService;
use anyhow::Context;
use datalayer_api::internal::v1 as internal;
use datalayer_api::v1 as pb;
use datalayer_cluster::meta::network::RaftService;
use datalayer_cluster::pool::ChannelPool;
use datalayer_cluster::strong::{ReplicationService, StrongFailover};
use datalayer_cluster::{RaftCatalog, Router, StrongPolicy, StrongTablets};
use datalayer_store::{HybridClock, NodeId, RocksTabletEngine, TabletEngine};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

/// Where a node keeps the id the cluster gave it.
const NODE_ID_KEY: &[u8] = b"node/id";
/// How long a joining node keeps trying to reach its seed.
const JOIN_WAIT: Duration = Duration::from_secs(60);
/// Seconds a stopping node waits for open connections before cutting them.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// This node's id, and whether it founds a new cluster. A node keeps the id it was
/// given forever; a fresh node without `--join` founds a cluster as node 1, a fresh
/// node with `--join` asks the seed for an id.
async fn node_identity(
    pool: &ChannelPool,
    engine: &Arc<dyn TabletEngine>,
    config: &Config,
    advertised: &str,
    http_addr: &str,
) -> anyhow::Result<(NodeId, bool)> {
    if let Some(raw) = engine.meta_get(NODE_ID_KEY)? {
        let bytes: [u8; 8] = raw
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored node id is not 8 bytes"))?;
        return Ok((NodeId(u64::from_be_bytes(bytes)), false));
    }
    let (id, bootstrap) = match &config.join {
        None => (NodeId(1), true),
        Some(seed) => {
            let deadline = Instant::now() + JOIN_WAIT;
            loop {
                match datalayer_cluster::meta::join(pool, seed, advertised.into(), http_addr.into())
                    .await
                {
                    Ok(id) => break (id, false),
                    Err(e) if Instant::now() < deadline => {
                        tracing::info!(%seed, error = %e, "join failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        return Err(e).context(format!("cannot join the cluster through {seed}"));
                    }
                }
            }
        }
    };
    engine.meta_write(&[(NODE_ID_KEY.to_vec(), id.0.to_be_bytes().to_vec())], &[])?;
    Ok((id, bootstrap))
}

/// Starts a node and serves until `shutdown` is cancelled. `on_ready` gets the bound
/// gRPC and HTTP addresses once the node serves.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(std::net::SocketAddr, std::net::SocketAddr),
) -> anyhow::Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let db_path = config.data_dir.join("db");
    let engine: Arc<dyn TabletEngine> = Arc::new(
        RocksTabletEngine::open(&db_path, &config.store)
            .with_context(|| format!("cannot open the store at {}", db_path.display()))?,
    );
    // Listen first: the cluster records the address peers reach us at.
    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} for gRPC", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", config.http_addr))?;
    let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
    let advertised = config
        .advertise_addr
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());

    // Every outgoing channel of the node: forwarding, replication, metadata.
    let pool = Arc::new(ChannelPool::new());
    let (node, bootstrap) =
        node_identity(&pool, &engine, &config, &advertised, &http_addr.to_string()).await?;
    datalayer_cluster::fail::set_node(node);
    let lease = Arc::new(datalayer_cluster::meta::Lease::new(
        Duration::from_millis(config.master_failover_ms),
        Duration::from_millis(config.max_clock_offset_ms),
    ));
    let catalog = RaftCatalog::start(
        engine.clone(),
        node,
        advertised.clone(),
        bootstrap,
        datalayer_cluster::meta::MetaOptions {
            voters: config.meta_voters,
            dead_voter_timeout: Duration::from_secs(config.dead_voter_secs),
            dead_node_timeout: Duration::from_secs(config.dead_node_secs),
            rebalance: config.rebalance,
            lease: lease.clone(),
            pool: pool.clone(),
        },
    )
    .await?;
    let clock = Arc::new(HybridClock::new());
    // The policies this node runs: each registered with the router (and its
    // controller hook with the metadata group); the data plane of each gets its own.
    let strong = Arc::new(StrongPolicy::new(
        catalog.clone(),
        Arc::new(StrongTablets::start(
            engine.clone(),
            clock,
            config.strong.clone(),
            lease,
            config.data_dir.join("snapshots"),
        )?),
    ));
    strong.start_split_triggers();
    strong.start_merge_looks();
    catalog.add_controller_hook(Arc::new(StrongFailover::default()));
    let timeseries = Arc::new(datalayer_timeseries::TimeseriesPolicy::new(
        strong.clone(),
        pool.clone(),
    ));
    let mut router = Router::new(catalog.clone());
    router.register(strong.clone());
    router.register(timeseries.clone());
    let router = Arc::new(router);
    // The servers stop after `shutdown`: a node stopping hands its tablets over first.
    let serving = CancellationToken::new();

    let metrics = Arc::new(Metrics::new());
    let max_message = config.limits.max_message_bytes;
    let kv = KvService::new(
        router.clone(),
        strong.clone(),
        pool.clone(),
        config.limits.clone(),
        metrics.clone(),
    );
    let admin = AdminService {
        router: router.clone(),
        strong: strong.clone(),
        catalog: catalog.clone(),
        engine: engine.clone(),
        limits: config.limits.clone(),
        metrics: metrics.clone(),
        info: NodeInfo {
            node_id: node.0,
            grpc_addr: advertised.clone(),
            http_addr: http_addr.to_string(),
            data_dir: config.data_dir.display().to_string(),
            started: Instant::now(),
        },
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // The gRPC server starts before the node is ready: the metadata group needs it
    // to reach this node. Health says NOT_SERVING until the node is ready.
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            pb::kv_server::KvServer::new(kv)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(
            pb::admin_server::AdminServer::new(admin.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(internal::raft_server::RaftServer::new(RaftService::new(
            catalog.clone(),
        )))
        .add_service(
            internal::replication_server::ReplicationServer::new(ReplicationService::new(
                strong.clone(),
            ))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
        )
        .add_service(
            pb::timeseries_server::TimeseriesServer::new(
                crate::service::timeseries::TimeseriesService::new(
                    timeseries.clone(),
                    metrics.clone(),
                ),
            )
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
        )
        .add_service(
            internal::layered_server::LayeredServer::new(
                datalayer_cluster::strong::LayeredService::new(strong.clone()),
            )
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            // Set on each accepted socket: the builder's tcp_nodelay does not reach a
            // listener we bound ourselves, and Nagle's algorithm with delayed ACKs adds
            // 40 ms to every multi-segment message.
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            serving.clone().cancelled_owned(),
        );
    let mut grpc = tokio::spawn(grpc);

    let ready = async {
        // Registration waits out elections and a cluster still coming up.
        loop {
            catalog.wait_for_leader().await?;
            match catalog
                .register(advertised.clone(), http_addr.to_string())
                .await
            {
                Ok(()) => break,
                Err(e) if e.retryable() => {
                    tracing::info!(error = %e, "registration with the cluster failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        router.start().await
    };
    let ready = tokio::select! {
        r = ready => r,
        _ = shutdown.cancelled() => Err(datalayer_cluster::Error::Stopping),
    };
    if let Err(e) = ready {
        shutdown.cancel();
        serving.cancel();
        finish_within(&mut grpc, Duration::from_secs(SHUTDOWN_GRACE_SECS)).await;
        router.stop().await;
        catalog.shutdown().await;
        return Err(e).context("node did not become ready");
    }
    health
        .set_serving::<pb::kv_server::KvServer<KvService>>()
        .await;
    health
        .set_serving::<pb::admin_server::AdminServer<AdminService>>()
        .await;

    let mut http = tokio::spawn(http::serve(
        http_listener,
        metrics,
        engine.clone(),
        admin,
        timeseries.clone(),
        serving.clone(),
    ));
    timeseries.set_hot_writes_per_sec(config.timeseries_hot_writes_per_sec);
    timeseries.start_keeper(
        Duration::from_millis(config.timeseries_keeper_ms.max(100)),
        shutdown.clone(),
    );
    let gc = tokio::spawn(collect_garbage_periodically(
        router.clone(),
        strong.clone(),
        Duration::from_secs(config.gc_interval_secs),
        shutdown.clone(),
    ));

    tracing::info!(%node, %grpc_addr, %http_addr, data_dir = %config.data_dir.display(), "node ready");
    on_ready(grpc_addr, http_addr);
    // Serve until asked to stop, or until a server fails on its own.
    let failed = tokio::select! {
        // The servers also finish once the token fires: look at the token first.
        biased;
        _ = shutdown.cancelled() => None,
        r = &mut grpc => Some(server_failure("gRPC", r)),
        r = &mut http => Some(server_failure("HTTP", r)),
    };
    shutdown.cancel();
    let grace = Duration::from_secs(SHUTDOWN_GRACE_SECS);
    if failed.is_none() {
        hand_over_before_stopping(&router, grace).await;
    }
    // A node that masters nothing any more leaves at once: its replicas stop (so they
    // are not put back in sync, and handed masters back, while it drains) and so does
    // its metadata member (a metadata leader lingering in its drain would refuse its
    // peers' heartbeats). A node still mastering tablets (alone, or whose hand-over
    // failed) lets their in-flight writes finish first.
    let mastering = router.still_serving();
    if !mastering {
        router.stop().await;
        catalog.shutdown().await;
    }
    // In-flight requests finish; connections still open after the grace period
    // (idle clients) are cut. A handle that already finished is not polled again.
    serving.cancel();
    finish_within(&mut grpc, grace).await;
    finish_within(&mut http, grace).await;
    let _ = gc.await;
    if mastering {
        router.stop().await;
        catalog.shutdown().await;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    tracing::info!("node stopped");
    Ok(())
}

/// A node stopping on purpose hands the tablets it masters to other in-sync replicas
/// (planned transfers: nothing is lost, and they serve on without waiting for a
/// failover), for at most `grace`; what is left fails over as after a crash.
async fn hand_over_before_stopping(router: &Router, grace: Duration) {
    match tokio::time::timeout(grace, router.hand_over_all()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(tablets = n, "handed tablets over before stopping"),
        Err(_) => tracing::warn!(
            "handing tablets over before stopping took too long; the rest will fail over"
        ),
    }
}

/// Waits up to `grace` for a task that has not finished yet, then aborts it.
async fn finish_within<T>(handle: &mut tokio::task::JoinHandle<T>, grace: Duration) {
    if !handle.is_finished() && tokio::time::timeout(grace, &mut *handle).await.is_err() {
        handle.abort();
    }
}

/// Why a server task ended before the node was asked to stop.
fn server_failure<E: Into<anyhow::Error>>(
    what: &str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("{what} server stopped unexpectedly"),
        Ok(Err(e)) => e.into().context(format!("{what} server failed")),
        Err(e) => anyhow::anyhow!("{what} server task failed: {e}"),
    }
}

async fn collect_garbage_periodically(
    router: Arc<Router>,
    strong: Arc<StrongPolicy>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let strong_tables = router
            .tables()
            .into_iter()
            .filter(|t| t.policy.on_strong_tablets());
        for table in strong_tables {
            match strong.collect_garbage(&table.name).await {
                Ok(c) if c.removed > 0 => {
                    let removed = c.removed;
                    tracing::debug!(table = %table.name, removed, "collected old versions");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(table = %table.name, error = %e, "garbage collection failed")
                }
            }
        }
    }
}
