//! The node's one pool of outgoing gRPC channels: forwarding to masters, replication
//! to followers, metadata messages and proposals, liveness pings.
//!
//! A channel is opened on first use and shared by every caller of its lane (HTTP/2
//! multiplexes their calls on one connection); a caller whose call failed at the
//! transport drops it ([`ChannelPool::forget`]) and the next caller opens a new one.
//! HTTP/2 keepalive pings find a dead connection while it is idle.
//!
//! Lanes keep traffic of different urgency on separate connections: a snapshot or a
//! long replication stream never queues a heartbeat or a forwarded write behind it.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keepalive ping interval and the time to wait for its answer.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(2));

/// What a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Client requests forwarded to the node that serves them.
    Forward,
    /// A master's records and snapshots to its followers, and strong's control calls
    /// (replica status, hand-over).
    Replication,
    /// The metadata group: Raft messages, forwarded proposals, liveness pings.
    Metadata,
}

/// Opens byte streams to peers without TCP: the in-process test network, whose
/// links it can delay or cut (`crates/cluster/tests/harness`). A node dials TCP.
pub trait Dialer: Send + Sync + 'static {
    /// A stream to the node serving at `addr`, carrying `lane`'s traffic.
    fn dial(&self, addr: &str, lane: Lane) -> std::io::Result<tokio::io::DuplexStream>;
}

/// The node's outgoing channels, by address and lane.
#[derive(Default)]
pub struct ChannelPool {
    channels: parking_lot::Mutex<HashMap<(String, Lane), Channel>>,
    dialer: Option<Arc<dyn Dialer>>,
}

impl std::fmt::Debug for ChannelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPool")
            .field("channels", &self.channels.lock().len())
            .field("dialer", &self.dialer.is_some())
            .finish()
    }
}

impl ChannelPool {
    /// An empty pool that connects over TCP.
    pub fn new() -> ChannelPool {
        ChannelPool::default()
    }

    /// An empty pool that opens its connections through `dialer`.
    pub fn with_dialer(dialer: Arc<dyn Dialer>) -> ChannelPool {
        ChannelPool {
            channels: parking_lot::Mutex::default(),
            dialer: Some(dialer),
        }
    }

    /// The channel to `addr` on `lane`, opened now if there is none.
    pub async fn get(&self, addr: &str, lane: Lane) -> Result<Channel> {
        let key = (addr.to_string(), lane);
        if let Some(c) = self.channels.lock().get(&key) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::invalid("addr", format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE.0)
            .keep_alive_timeout(KEEPALIVE.1)
            .keep_alive_while_idle(true);
        let connected = match &self.dialer {
            None => endpoint.connect().await,
            Some(dialer) => {
                let (dialer, to) = (dialer.clone(), addr.to_string());
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let stream = dialer.dial(&to, lane);
                        async move { stream.map(hyper_util::rt::TokioIo::new) }
                    }))
                    .await
            }
        };
        let channel = connected.map_err(|e| Error::Unreachable {
            addr: addr.to_string(),
            reason: crate::pool::chain(&e),
        })?;
        // Two callers may have connected at once: keep the first, so both share it.
        Ok(self.channels.lock().entry(key).or_insert(channel).clone())
    }

    /// Drops the channel to `addr` on `lane` (its call failed at the transport).
    pub fn forget(&self, addr: &str, lane: Lane) {
        self.channels.lock().remove(&(addr.to_string(), lane));
    }
}

/// An error and its sources, as one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}
