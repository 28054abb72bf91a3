//! Durability under `kill -9`: concurrent clients write while the node is killed at a
//! random moment; after a restart every acknowledged write reads back with its value.
//! Writes in flight at the kill may or may not be there, but never half a batch.

use datalayer_client::put;
use datalayer_tests::TestNode;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 20;
const CLIENTS: usize = 8;
/// Acknowledged writes each round must see before the kill, so an idle node cannot pass.
const MIN_ACKED_BEFORE_KILL: usize = 50;

/// What the clients know: acknowledged batches, and batches whose answer never came.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    in_flight: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut node = TestNode::start().expect("node starts");
    let mut admin = node.client().await.expect("connect");
    admin
        .create_table("d", Default::default())
        .await
        .expect("create table");
    let mut ledger = Ledger::default();
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let shared = Arc::new(Mutex::new(Ledger::default()));
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let addr = node.grpc.to_string();
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = datalayer_client::Client::connect(&addr).await else {
                    return;
                };
                for i in 0.. {
                    // Alternate single puts and 3-key batches, values unique per write.
                    let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..if i % 2 == 0 { 1 } else { 3 })
                        .map(|j| {
                            let key = format!("r{round:02}-c{client}-{i:06}-{j}").into_bytes();
                            let value = format!("value-{round}-{client}-{i}-{j}").into_bytes();
                            (key, value)
                        })
                        .collect();
                    let muts = batch.iter().map(|(k, v)| put(k, v)).collect();
                    shared.lock().expect("ledger").in_flight.push(batch.clone());
                    match c.write("d", muts).await {
                        Ok(_) => {
                            let mut l = shared.lock().expect("ledger");
                            l.in_flight.retain(|b| b != &batch);
                            l.acked.extend(batch);
                        }
                        // The node died: the outcome of this batch is unknown.
                        Err(_) => return,
                    }
                }
            }));
        }
        // Kill at a random moment once enough writes were acknowledged.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while shared.lock().expect("ledger").acked.len() < MIN_ACKED_BEFORE_KILL {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: writes are not being acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let extra = rand::rng().random_range(0..200u64);
        tokio::time::sleep(Duration::from_millis(extra)).await;
        node.kill();
        for t in tasks {
            t.await.expect("client task");
        }
        let round_ledger = std::mem::take(&mut *shared.lock().expect("ledger"));
        total_acked += round_ledger.acked.len();
        ledger.acked.extend(round_ledger.acked);
        ledger.in_flight.extend(round_ledger.in_flight);

        node.restart().expect("restart after kill -9");
        let mut c = node.client().await.expect("connect after restart");
        let keys: Vec<&Vec<u8>> = ledger.acked.keys().collect();
        for chunk in keys.chunks(500) {
            let resp = c
                .kv()
                .batch_get(datalayer_api::v1::BatchGetRequest {
                    table: "d".into(),
                    keys: chunk.iter().map(|k| k.to_vec()).collect(),
                    at_timestamp: 0,
                    ..Default::default()
                })
                .await
                .expect("batch get after restart")
                .into_inner();
            for r in resp.results {
                let want = &ledger.acked[&r.key];
                assert!(
                    r.found,
                    "round {round}: acknowledged key {:?} lost",
                    String::from_utf8_lossy(&r.key)
                );
                assert_eq!(&r.value, want, "round {round}: wrong value");
            }
        }
        // A batch whose answer was lost is all there or not there at all.
        for batch in &ledger.in_flight {
            let mut present = 0;
            for (k, v) in batch {
                if let Some(got) = c.get("d", k).await.expect("get") {
                    assert_eq!(&got.value, v);
                    present += 1;
                }
            }
            assert!(
                present == 0 || present == batch.len(),
                "round {round}: torn batch {present}/{}",
                batch.len()
            );
        }
        let rows = c.scan("d", b"", b"", 0, false).await.expect("scan");
        let in_flight_keys: usize = ledger.in_flight.iter().map(Vec::len).sum();
        assert!(
            rows.len() >= ledger.acked.len() && rows.len() <= ledger.acked.len() + in_flight_keys
        );
    }
    assert!(total_acked >= ROUNDS * MIN_ACKED_BEFORE_KILL);
    eprintln!("{ROUNDS} kill -9 rounds, {total_acked} acknowledged writes checked");
}

/// Table creations and drops are acknowledged once the metadata group has them on
/// disk: a `kill -9` right after the answer loses none of them.
#[tokio::test]
async fn acknowledged_table_changes_survive_kill_9() {
    let mut node = TestNode::start().expect("node starts");
    for round in 0..5 {
        let mut c = node.client().await.expect("connect");
        c.create_table(&format!("t{round}"), Default::default())
            .await
            .expect("create");
        if round > 0 {
            assert!(
                c.drop_table(&format!("t{}", round - 1), false)
                    .await
                    .expect("drop")
            );
        }
        node.kill();
        node.restart().expect("restart after kill -9");
        let mut c = node.client().await.expect("connect");
        let names: Vec<String> = c
            .list_tables()
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec![format!("t{round}")], "round {round}");
        c.put(&format!("t{round}"), b"k", b"v")
            .await
            .expect("the table serves after restart");
    }
}
