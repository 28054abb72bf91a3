//! Deterministic tests of the cases the process tests reach only by luck, on the
//! in-process cluster (`harness`): a follower answering late, a pacer dying in the
//! middle of a call, a dead voter replaced while a learner catches up. Each case is
//! forced by the network's rules, and each assertion is about what a user relies on:
//! what an acknowledged write is held by, that writes go on, that the metadata group
//! stays writable and odd.

mod harness;

use datalayer_cluster::pool::Lane;
use datalayer_cluster::strong::{Acks, WriteOptions};
use datalayer_cluster::{Catalog, PolicyKind, TableSpec, TabletDesc};
use datalayer_store::{Mutation, NodeId};
use harness::{Action, Cluster, Rule, Timing, eventually, voter_sets, voters, within};
use std::time::Duration;

/// The in-process clusters share the machine's two cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn put(key: &str) -> Vec<Mutation> {
    vec![Mutation::Put {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
    }]
}

fn acks(acks: Acks) -> WriteOptions {
    WriteOptions {
        acks: Some(acks),
        request: None,
    }
}

/// The tablet's master and its followers, the pacer (the lowest-id in-sync
/// follower) first.
fn roles(tablet: &TabletDesc) -> (NodeId, Vec<NodeId>) {
    let mut followers: Vec<NodeId> = tablet
        .replicas
        .iter()
        .copied()
        .filter(|n| *n != tablet.master)
        .collect();
    followers.sort();
    (tablet.master, followers)
}

/// A follower whose acks come late is waited for by `acks=all` (what such a write
/// acknowledges is on it) and not by a quorum write (answered while the late follower
/// does not hold it yet); late within the lag, it stays in the in-sync set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_follower_is_waited_for_by_acks_all_only() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, Timing::default()).await;
    let tablet = cluster.create_table("late", 3).await;
    let (master, followers) = roles(&tablet);
    let late = cluster.node(followers[0]);
    let m = cluster.node(master);
    // The pacer holds everything once (a follower never caught up counts as behind
    // since the mastership began), then its records arrive half a second after they
    // are sent.
    m.strong
        .write("late", put("first"), acks(Acks::All))
        .await
        .expect("a first acks=all write");
    let rule = cluster.net.add(Rule::link(
        &m.addr,
        &late.addr,
        Lane::Replication,
        Action::Delay(Duration::from_millis(500)),
    ));
    for i in 0..5 {
        let quorum = m
            .strong
            .write("late", put(&format!("q{i}")), acks(Acks::Count(2)))
            .await
            .expect("a quorum write");
        let seq = quorum.position.expect("written").seq.0;
        assert!(
            late.log_end(&tablet) < seq,
            "a quorum write waited for the late follower"
        );
        let all = m
            .strong
            .write("late", put(&format!("a{i}")), acks(Acks::All))
            .await
            .expect("an acks=all write");
        let seq = all.position.expect("written").seq.0;
        assert!(
            late.log_end(&tablet) >= seq,
            "an acks=all write was answered before the late follower held it (write {i}, in sync: {:?})",
            cluster.tablet("late").in_sync
        );
    }
    assert!(
        cluster.tablet("late").in_sync.contains(&late.id),
        "a follower late within the lag left the in-sync set"
    );
    cluster.net.lift(rule);
    cluster.stop().await;
}

/// The pacer stops answering in the middle of a call (its link stalls while writes
/// stream): quorum writes go on through the other follower and none is left
/// ambiguous; the keeper drops the pacer from the in-sync set, after which `acks=all`
/// writes complete without it; once the link heals it catches up and rejoins, holding
/// every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_when_the_pacer_dies_mid_call() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, Timing::default()).await;
    let tablet = cluster.create_table("pacer", 3).await;
    let (master, followers) = roles(&tablet);
    let (m, pacer, other) = (
        cluster.node(master),
        cluster.node(followers[0]),
        cluster.node(followers[1]),
    );
    let writer = {
        let strong = m.strong.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..400 {
                let r = strong
                    .write("pacer", put(&format!("k{i:04}")), acks(Acks::Count(2)))
                    .await;
                answers.push(r);
            }
            answers
        })
    };
    // Stall the pacer's replication both ways once writes are streaming to it.
    eventually(Duration::from_secs(10), "writes reach the pacer", || {
        pacer.log_end(&tablet) > 20
    })
    .await;
    let to = cluster.net.add(Rule::link(
        &m.addr,
        &pacer.addr,
        Lane::Replication,
        Action::Stall,
    ));
    let from = cluster.net.add(Rule::link(
        &pacer.addr,
        &m.addr,
        Lane::Replication,
        Action::Stall,
    ));
    let answers = within(Duration::from_secs(60), "the writes finish", writer)
        .await
        .expect("writer task");
    for (i, a) in answers.iter().enumerate() {
        assert!(
            a.is_ok(),
            "write {i} failed while the pacer was dead: {a:?}"
        );
    }
    eventually(
        Duration::from_secs(20),
        "the keeper drops the dead pacer",
        || !cluster.tablet("pacer").in_sync.contains(&pacer.id),
    )
    .await;
    let all = m
        .strong
        .write("pacer", put("after"), acks(Acks::All))
        .await
        .expect("acks=all without the dead pacer");
    let seq = all.position.expect("written").seq.0;
    assert!(other.log_end(&tablet) >= seq);
    cluster.net.lift(to);
    cluster.net.lift(from);
    cluster.wait_in_sync("pacer", 3).await;
    let end = m.log_end(&tablet);
    eventually(
        Duration::from_secs(20),
        "the pacer holds every write",
        || pacer.log_end(&tablet) >= end,
    )
    .await;
    cluster.stop().await;
}

/// A voter dies while a fourth node is still catching up as a learner (its metadata
/// arrives late): the group stays writable on its two live voters, never has an even
/// number of voters, and gives the dead voter's place to the learner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_voter_is_replaced_by_a_learner_catching_up() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, Timing::default()).await;
    let leader = cluster.nodes[0].catalog.leader().expect("a leader").0;
    // A voter other than the leader and node 1, whose member records every voter set
    // it sees (both of a joint configuration) until told to stop.
    let dead = [NodeId(2), NodeId(3)]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a voter other than the leader");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let seen = {
        let catalog = cluster.nodes[0].catalog.clone();
        let mut metrics = catalog.raft().metrics();
        tokio::spawn(async move {
            let mut seen: Vec<Vec<Vec<u64>>> = Vec::new();
            loop {
                metrics.borrow_and_update();
                let sets = voter_sets(&catalog);
                if seen.last() != Some(&sets) {
                    seen.push(sets);
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return seen },
                    _ = stopped.changed() => return seen,
                }
            }
        })
    };
    // The learner's link is slow (a round trip must stay within the group's heartbeat
    // interval, 100 ms, for its appends to get through at all).
    let slow = cluster.net.add(Rule {
        from: None,
        to: Some("node4".into()),
        lane: Some(Lane::Metadata),
        action: Action::Delay(Duration::from_millis(40)),
    });
    cluster.add_node().await;
    // The learner stops hearing the group, the voter dies, and the group goes on
    // writing: the learner is left behind.
    let frozen = cluster.net.add(Rule {
        from: None,
        to: Some("node4".into()),
        lane: Some(Lane::Metadata),
        action: Action::Stall,
    });
    let dead_addr = cluster.node(dead).addr.clone();
    let stalls = [
        cluster.net.add(Rule {
            from: Some(dead_addr.clone()),
            to: None,
            lane: None,
            action: Action::Stall,
        }),
        cluster.net.add(Rule {
            from: None,
            to: Some(dead_addr.clone()),
            lane: None,
            action: Action::Stall,
        }),
    ];
    cluster.net.cut(&dead_addr);
    let live = cluster
        .nodes
        .iter()
        .find(|n| n.id != dead && n.id.0 != 4)
        .expect("a live voter");
    // The group stays writable while the voter is dead.
    for i in 0..20 {
        within(Duration::from_secs(20), "a table is created", async {
            loop {
                let spec = TableSpec {
                    name: format!("while-dead-{i}"),
                    policy: PolicyKind::Strong,
                    replication_factor: 1,
                    version_retention_secs: 0,
                    options: Default::default(),
                    split_keys: Vec::new(),
                };
                if live.router.create_table(spec, true).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    // The learner catches up over its slow link, then takes the dead voter's place.
    cluster.net.lift(frozen);
    let catalog = live.catalog.clone();
    eventually(
        Duration::from_secs(30),
        "the learner takes the dead voter's place",
        || {
            let v = voters(&catalog);
            v.len() == 3 && v.contains(&4) && !v.contains(&dead.0)
        },
    )
    .await;
    assert_eq!(cluster.node(NodeId(4)).catalog.tables().len(), 20);
    cluster.net.lift(slow);
    for s in stalls {
        cluster.net.lift(s);
    }
    let _ = stop.send(true);
    let seen = seen.await.expect("recorder");
    cluster.stop().await;
    assert!(
        seen.iter().flatten().all(|set| set.len() % 2 == 1),
        "the group had an even number of voters: {seen:?}"
    );
}
