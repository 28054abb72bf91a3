//! [`TestCluster`]: several node processes on loopback forming one cluster, each on
//! fixed ports so a restarted node keeps its address.

use super::{TestNode, wait_until};
use anyhow::{Result, anyhow};
use datalayer_api::v1 as pb;
use datalayer_client::Client;
use std::time::Duration;

/// How long cluster-wide conditions may take to hold.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// Builds a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct Builder {
    nodes: usize,
    meta_voters: usize,
    dead_voter_secs: u64,
    extra: Vec<String>,
}

/// Several nodes forming one cluster.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<TestNode>,
    config: Builder,
}

/// A port that is free now, chosen below the kernel's ephemeral range: a port the
/// kernel handed out could be taken by some process's outgoing connection before the
/// node binds it.
/// Tests of one binary run in parallel, so ports are handed out from one counter that
/// starts at a random point of the range.
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        rand::rng().random_range(20_000..26_000),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..1000 {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if port >= 32_000 {
            break;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(anyhow!("no free port below the ephemeral range"))
}

impl Builder {
    /// How many nodes (default 3).
    pub fn nodes(mut self, n: usize) -> Builder {
        self.nodes = n;
        self
    }

    /// Voters of the metadata group (default 3).
    pub fn meta_voters(mut self, n: usize) -> Builder {
        self.meta_voters = n;
        self
    }

    /// Seconds before a silent voter is replaced by a learner (default 10).
    pub fn dead_voter_secs(mut self, secs: u64) -> Builder {
        self.dead_voter_secs = secs;
        self
    }

    /// More `datalayer start` flags for every node.
    pub fn args(mut self, args: &[&str]) -> Builder {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts node 1, then the others joining through it, and waits until every node
    /// is registered and the metadata group has its voters.
    fn node_args(&self, join: Option<&TestNode>) -> Result<Vec<String>> {
        let mut args = vec![
            "--grpc-addr".to_string(),
            format!("127.0.0.1:{}", free_port()?),
            "--http-addr".to_string(),
            format!("127.0.0.1:{}", free_port()?),
            "--meta-voters".into(),
            self.meta_voters.to_string(),
            "--dead-voter-secs".into(),
            self.dead_voter_secs.to_string(),
        ];
        if let Some(seed) = join {
            args.push("--join".into());
            args.push(seed.grpc.to_string());
        }
        args.extend(self.extra.iter().cloned());
        Ok(args)
    }

    pub async fn build(self) -> Result<TestCluster> {
        let mut nodes: Vec<TestNode> = Vec::new();
        for i in 0..self.nodes {
            let args = self.node_args(nodes.first())?;
            nodes.push(TestNode::start_with(&args).map_err(|e| anyhow!("node {}: {e}", i + 1))?);
        }
        let cluster = TestCluster {
            nodes,
            config: self.clone(),
        };
        // The group never sits at an even number of voters: with fewer nodes than it
        // wants, it has the largest odd number it can.
        let voters = self.meta_voters.min(self.nodes);
        let (want_nodes, want_voters) = (self.nodes, voters - (1 - voters % 2));
        cluster
            .wait_for_status(
                0,
                "every node registered and the voters promoted",
                move |s| {
                    s.nodes.len() == want_nodes
                        && s.nodes.iter().filter(|n| n.meta_role == "voter").count() == want_voters
                },
            )
            .await?;
        Ok(cluster)
    }
}

impl TestCluster {
    /// A builder: 3 nodes, 3 metadata voters.
    pub fn builder() -> Builder {
        Builder {
            nodes: 3,
            meta_voters: 3,
            dead_voter_secs: 10,
            extra: Vec::new(),
        }
    }

    /// Starts one more node, joining through node 1; returns its index.
    pub fn add_node(&mut self) -> Result<usize> {
        let args = self.config.node_args(self.nodes.first())?;
        self.nodes.push(TestNode::start_with(&args)?);
        Ok(self.nodes.len() - 1)
    }

    /// Kills every node, then starts them all again at once: no node can become
    /// ready before a majority of the metadata voters is back.
    pub fn kill_and_restart_all(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            n.kill();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .nodes
                .iter_mut()
                .map(|n| scope.spawn(move || n.restart()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow!("restart thread panicked"))?)
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(())
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// Node `i`, mutably (to kill, stop or restart it).
    pub fn node_mut(&mut self, i: usize) -> &mut TestNode {
        &mut self.nodes[i]
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A client of node `i`.
    pub async fn client(&self, i: usize) -> Result<Client> {
        self.nodes[i].client().await
    }

    /// Node `i`'s status.
    pub async fn status(&self, i: usize) -> Result<pb::NodeStatusResponse> {
        Ok(self.client(i).await?.node_status().await?)
    }

    /// Waits until node `i`'s status satisfies `pred`.
    pub async fn wait_for_status(
        &self,
        i: usize,
        what: &str,
        pred: impl Fn(&pb::NodeStatusResponse) -> bool,
    ) -> Result<()> {
        let addr = self.nodes[i].grpc.to_string();
        let pred = &pred;
        // The last status seen, for the error when the wait times out.
        let last = std::sync::Mutex::new(None::<pb::NodeStatusResponse>);
        let last = &last;
        let waited = wait_until(what, CLUSTER_WAIT, || {
            let addr = addr.clone();
            async move {
                let Ok(mut c) = Client::connect(&addr).await else {
                    return false;
                };
                let Ok(s) = c.node_status().await else {
                    return false;
                };
                let holds = pred(&s);
                *last.lock().expect("not poisoned") = Some(s);
                holds
            }
        })
        .await;
        waited.map_err(|e| {
            let log = self.nodes[i].log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow!(
                "{e}\nlast status of node {}: {:?}\nits log's last lines:\n{}",
                i + 1,
                last.lock().expect("not poisoned"),
                tail.join("\n")
            )
        })
    }

    /// Log end and digest of node `i`'s replica of `table`'s first tablet (`None` when
    /// it holds none; `Err` when the node did not answer), from `datalayer table digest`.
    pub fn replica_digest(&self, i: usize, table: &str) -> Result<Option<(u64, u64)>, String> {
        let o = self.nodes[i].cli(&["--json", "table", "digest", table]);
        if !o.status.success() {
            return Err(crate::stderr(&o));
        }
        let v = crate::json(&o);
        Ok(v["tablets"][0]["log_end"]
            .as_u64()
            .zip(v["tablets"][0]["digest"].as_u64()))
    }

    /// The index of the node that leads the metadata group, as node `asking` sees it.
    pub async fn meta_leader(&self, asking: usize) -> Result<usize> {
        let leader = self.status(asking).await?.meta_leader;
        self.index_of(leader)
    }

    /// The index of the running node with this id (nodes join in order, so node `i`
    /// has id `i + 1`).
    pub fn index_of(&self, id: u64) -> Result<usize> {
        let i = (id as usize).wrapping_sub(1);
        match self.nodes.get(i) {
            Some(n) if n.is_running() => Ok(i),
            _ => Err(anyhow!("no running node has id {id}")),
        }
    }
}
