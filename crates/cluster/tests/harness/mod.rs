//! An in-process cluster for deterministic tests of strong replication and the
//! metadata group: each node's real machinery (a RocksDB store, its metadata member,
//! the strong policy, the router, the internal gRPC services) runs in this process,
//! and the nodes talk over an in-memory network whose links a test delays, stalls or
//! cuts — TiKV's `test_raftstore` with `transport_simulate`, at the level of the
//! byte streams gRPC runs on ([`datalayer_cluster::pool::Dialer`]).
//!
//! A rule matches the bytes flowing from one node to another on one lane (any of
//! them when unset): `Delay` holds every chunk for that long after it was sent,
//! `Stall` holds it until the rule is lifted (a partition: the sender's HTTP/2
//! keepalive gives up on the connection after a few seconds, and new connections are
//! refused). [`Net::cut`] resets a node's open connections, as a crash does.

use datalayer_cluster::meta::{Lease, MetaOptions, RaftCatalog};
use datalayer_cluster::pool::{ChannelPool, Dialer, Lane};
use datalayer_cluster::strong::{
    Config as StrongConfig, ReplicationService, StrongFailover, StrongPolicy, StrongTablets,
};
use datalayer_cluster::{Catalog, PolicyKind, Router, TableDesc, TableSpec, TabletDesc};
use datalayer_store::{HybridClock, NodeId, RocksTabletEngine, TabletEngine};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// Bytes buffered in each direction of an in-memory connection.
const PIPE_BYTES: usize = 256 << 10;

/// What a rule does to the bytes it matches.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Each chunk arrives this long after it was sent.
    Delay(Duration),
    /// Nothing arrives until the rule is lifted; new connections are refused.
    Stall,
}

/// Which bytes a rule matches: from one node's address to another's on one lane
/// (`None`: any).
#[derive(Debug, Clone)]
pub struct Rule {
    pub from: Option<String>,
    pub to: Option<String>,
    pub lane: Option<Lane>,
    pub action: Action,
}

impl Rule {
    /// Every byte from `from` to `to` on `lane`.
    pub fn link(from: &str, to: &str, lane: Lane, action: Action) -> Rule {
        Rule {
            from: Some(from.into()),
            to: Some(to.into()),
            lane: Some(lane),
            action,
        }
    }

    fn matches(&self, from: &str, to: &str, lane: Lane) -> bool {
        self.from.as_deref().is_none_or(|f| f == from)
            && self.to.as_deref().is_none_or(|t| t == to)
            && self.lane.is_none_or(|l| l == lane)
    }
}

/// A rule's handle, to lift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(u64);

struct Link {
    ends: [String; 2],
    task: AbortHandle,
}

#[derive(Default)]
struct NetState {
    servers: HashMap<String, mpsc::UnboundedSender<DuplexStream>>,
    rules: Vec<(RuleId, Rule)>,
    next_rule: u64,
    links: Vec<Link>,
}

/// The in-memory network.
#[derive(Clone)]
pub struct Net {
    state: Arc<parking_lot::Mutex<NetState>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Net {
    fn new() -> Net {
        Net {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// Applies `rule` from now on (to open connections too).
    pub fn add(&self, rule: Rule) -> RuleId {
        let id = {
            let mut s = self.state.lock();
            s.next_rule += 1;
            let id = RuleId(s.next_rule);
            s.rules.push((id, rule));
            id
        };
        self.changed.send_modify(|n| *n += 1);
        id
    }

    /// Lifts a rule: what it held back flows on.
    pub fn lift(&self, id: RuleId) {
        self.state.lock().rules.retain(|(r, _)| *r != id);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Resets every open connection to or from `addr` (as when its process dies).
    pub fn cut(&self, addr: &str) {
        let mut s = self.state.lock();
        s.links.retain(|l| {
            let mine = l.ends.iter().any(|e| e == addr);
            if mine {
                l.task.abort();
            }
            !mine
        });
    }

    /// What happens now to bytes from `from` to `to` on `lane`: a stall wins over
    /// delays, the longest delay over shorter ones.
    fn verdict(&self, from: &str, to: &str, lane: Lane) -> Option<Action> {
        let s = self.state.lock();
        let mut verdict = None;
        for (_, r) in s.rules.iter().filter(|(_, r)| r.matches(from, to, lane)) {
            verdict = match (verdict, r.action) {
                (_, Action::Stall) | (Some(Action::Stall), _) => Some(Action::Stall),
                (Some(Action::Delay(a)), Action::Delay(b)) => Some(Action::Delay(a.max(b))),
                (None, d) => Some(d),
            };
        }
        verdict
    }

    fn serve(&self, addr: &str) -> mpsc::UnboundedReceiver<DuplexStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state.lock().servers.insert(addr.to_string(), tx);
        rx
    }

    fn dial(&self, from: &str, to: &str, lane: Lane) -> io::Result<DuplexStream> {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, format!("{to} refused"));
        let stalled = |a: &str, b: &str| matches!(self.verdict(a, b, lane), Some(Action::Stall));
        if stalled(from, to) || stalled(to, from) {
            return Err(refused());
        }
        let server = self
            .state
            .lock()
            .servers
            .get(to)
            .cloned()
            .ok_or_else(refused)?;
        let (client, client_far) = tokio::io::duplex(PIPE_BYTES);
        let (server_far, server_near) = tokio::io::duplex(PIPE_BYTES);
        server.send(server_near).map_err(|_| refused())?;
        let (cr, cw) = tokio::io::split(client_far);
        let (sr, sw) = tokio::io::split(server_far);
        let (net, a, b) = (self.clone(), from.to_string(), to.to_string());
        let task = tokio::spawn(async move {
            // The connection ends when either side closes it.
            tokio::select! {
                _ = pump(net.clone(), a.clone(), b.clone(), lane, cr, sw) => {}
                _ = pump(net, b, a, lane, sr, cw) => {}
            }
        });
        self.state.lock().links.push(Link {
            ends: [from.to_string(), to.to_string()],
            task: task.abort_handle(),
        });
        Ok(client)
    }
}

/// Carries bytes from `from` to `to` as the rules say.
async fn pump(
    net: Net,
    from: String,
    to: String,
    lane: Lane,
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = r.read(&mut buf).await
            && n > 0
            && tx.send((Instant::now(), buf[..n].to_vec())).is_ok()
        {}
    };
    let write = async move {
        let mut changed = net.changed.subscribe();
        while let Some((sent, bytes)) = rx.recv().await {
            loop {
                changed.borrow_and_update();
                match net.verdict(&from, &to, lane) {
                    None => break,
                    Some(Action::Delay(d)) if Instant::now() >= sent + d => break,
                    Some(Action::Delay(d)) => tokio::select! {
                        _ = tokio::time::sleep_until((sent + d).into()) => {}
                        _ = changed.changed() => {}
                    },
                    Some(Action::Stall) => {
                        if changed.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
}

/// One node's dialer: its connections start at its own address.
struct NodeDialer {
    me: String,
    net: Net,
}

impl Dialer for NodeDialer {
    fn dial(&self, addr: &str, lane: Lane) -> io::Result<DuplexStream> {
        self.net.dial(&self.me, addr, lane)
    }
}

/// Timing settings of the in-process cluster: short, so that tests of failover and
/// replacement run in seconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// A master silent this long loses its tablets.
    pub lease: Duration,
    /// A voter silent this long gives its place to a learner.
    pub dead_voter: Duration,
    /// A follower behind its master this long leaves the in-sync set.
    pub replica_lag: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease: Duration::from_secs(2),
            dead_voter: Duration::from_secs(2),
            replica_lag: Duration::from_millis(1500),
        }
    }
}

/// One node of the in-process cluster.
pub struct TestNode {
    pub id: NodeId,
    pub addr: String,
    pub catalog: Arc<RaftCatalog>,
    pub strong: Arc<StrongPolicy>,
    pub router: Arc<Router>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts a node: with `seed`, it joins the cluster through that address;
    /// without, it founds one as node 1.
    async fn start(net: &Net, index: usize, seed: Option<&str>, timing: &Timing) -> TestNode {
        let addr = format!("node{index}");
        let dir = tempfile::tempdir().expect("tempdir");
        let engine: Arc<dyn TabletEngine> = Arc::new(
            RocksTabletEngine::open(dir.path().join("db"), &Default::default())
                .expect("open store"),
        );
        let incoming = net.serve(&addr);
        let pool = Arc::new(ChannelPool::with_dialer(Arc::new(NodeDialer {
            me: addr.clone(),
            net: net.clone(),
        })));
        let (id, bootstrap) = match seed {
            None => (NodeId(1), true),
            Some(seed) => (join(&pool, seed, &addr).await, false),
        };
        let lease = Arc::new(Lease::new(timing.lease, Duration::from_millis(100)));
        let catalog = RaftCatalog::start(
            engine.clone(),
            id,
            addr.clone(),
            bootstrap,
            MetaOptions {
                voters: 3,
                dead_voter_timeout: timing.dead_voter,
                // Replicas stay where they are for the length of a test.
                dead_node_timeout: Duration::from_secs(3600),
                rebalance: false,
                lease: lease.clone(),
                pool,
            },
        )
        .await
        .expect("start the metadata member");
        let config = StrongConfig {
            replica_lag_ms: timing.replica_lag.as_millis() as u64,
            ..StrongConfig::default()
        };
        let strong = Arc::new(StrongPolicy::new(
            catalog.clone(),
            Arc::new(
                StrongTablets::start(
                    engine,
                    Arc::new(HybridClock::new()),
                    config,
                    lease,
                    dir.path().join("snapshots"),
                )
                .expect("start strong"),
            ),
        ));
        catalog.add_controller_hook(Arc::new(StrongFailover::default()));
        let mut router = Router::new(catalog.clone());
        router.register(strong.clone());
        let router = Arc::new(router);
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(incoming);
        let server = tonic::transport::Server::builder()
            .add_service(datalayer_api::internal::v1::raft_server::RaftServer::new(
                datalayer_cluster::meta::network::RaftService::new(catalog.clone()),
            ))
            .add_service(
                datalayer_api::internal::v1::replication_server::ReplicationServer::new(
                    ReplicationService::new(strong.clone()),
                )
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming(tokio_stream::StreamExt::map(incoming, Ok::<_, io::Error>));
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        // Ready once registered with the group and reconciled with its metadata.
        within(Duration::from_secs(30), "the node registers", async {
            loop {
                if catalog.wait_for_leader().await.is_ok()
                    && catalog
                        .register(addr.clone(), format!("{addr}-http"))
                        .await
                        .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        router.start().await.expect("router starts");
        TestNode {
            id,
            addr,
            catalog,
            strong,
            router,
            server,
            _dir: dir,
        }
    }

    /// This node's copy of a tablet's log: where it ends.
    pub fn log_end(&self, tablet: &TabletDesc) -> u64 {
        self.strong
            .tablets()
            .replica_position(tablet.id)
            .expect("replica position")
            .map_or(0, |(_, end)| end.0)
    }

    async fn stop(self) {
        self.server.abort();
        self.router.stop().await;
        self.catalog.shutdown().await;
    }
}

/// Asks the seed for a node id (the seed may still be electing itself).
async fn join(pool: &ChannelPool, seed: &str, addr: &str) -> NodeId {
    within(Duration::from_secs(30), "the node joins", async {
        loop {
            match datalayer_cluster::meta::join(pool, seed, addr.into(), format!("{addr}-http"))
                .await
            {
                Ok(id) => return id,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
}

/// Runs `f`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not within {limit:?}"),
    }
}

/// Waits until `cond` holds, checking every 20 ms; fails the test after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within(limit, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The in-process cluster.
pub struct Cluster {
    pub net: Net,
    pub nodes: Vec<TestNode>,
    timing: Timing,
}

impl Cluster {
    /// `n` nodes, started one after the other, the first founding the cluster; returns
    /// once the metadata group has its voters (three, or every node when fewer).
    pub async fn start(n: usize, timing: Timing) -> Cluster {
        let mut cluster = Cluster {
            net: Net::new(),
            nodes: Vec::new(),
            timing,
        };
        for _ in 0..n {
            cluster.add_node().await;
        }
        let want = if n >= 3 { 3 } else { 1 };
        let leader = cluster.nodes[0].catalog.clone();
        eventually(
            Duration::from_secs(30),
            "the metadata group has its voters",
            || voters(&leader).len() == want,
        )
        .await;
        cluster
    }

    /// Starts one more node, joining through node 1.
    pub async fn add_node(&mut self) -> &TestNode {
        let seed = self.nodes.first().map(|n| n.addr.clone());
        let index = self.nodes.len() + 1;
        let node = TestNode::start(&self.net, index, seed.as_deref(), &self.timing).await;
        self.nodes.push(node);
        self.nodes.last().expect("just added")
    }

    /// The node with that id.
    pub fn node(&self, id: NodeId) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// Creates a strong table of one tablet with `replicas` replicas, and waits
    /// until its master serves and every replica is in sync.
    pub async fn create_table(&self, name: &str, replicas: u32) -> TabletDesc {
        let spec = TableSpec {
            name: name.into(),
            policy: PolicyKind::Strong,
            replication_factor: replicas,
            version_retention_secs: 0,
            options: Default::default(),
            split_keys: Vec::new(),
        };
        within(Duration::from_secs(30), "the table is created", async {
            loop {
                if self.nodes[0]
                    .router
                    .create_table(spec.clone(), true)
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        self.wait_in_sync(name, replicas as usize).await
    }

    /// The tablet of a one-tablet table as node 1 knows it.
    pub fn tablet(&self, table: &str) -> TabletDesc {
        self.table(table).tablets[0].clone()
    }

    /// The table as node 1 knows it.
    pub fn table(&self, table: &str) -> Arc<TableDesc> {
        self.nodes[0].catalog.table(table).expect("table")
    }

    /// Waits until the table's tablet has `n` replicas in sync, and returns it.
    pub async fn wait_in_sync(&self, table: &str, n: usize) -> TabletDesc {
        eventually(Duration::from_secs(30), "the replicas are in sync", || {
            self.tablet(table).in_sync.len() == n
        })
        .await;
        self.tablet(table)
    }

    /// Stops every node.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// The metadata group's voter sets as `catalog`'s member sees them: one, or the old
/// and the new one while a change is in joint consensus.
pub fn voter_sets(catalog: &RaftCatalog) -> Vec<Vec<u64>> {
    catalog
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_joint_config()
        .iter()
        .map(|set| set.iter().copied().collect())
        .collect()
}

/// The metadata group's voters as `catalog`'s member sees them, once no change is
/// under way (empty while one is).
pub fn voters(catalog: &RaftCatalog) -> Vec<u64> {
    match voter_sets(catalog).as_slice() {
        [one] => one.clone(),
        _ => Vec::new(),
    }
}
