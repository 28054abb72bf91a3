//! The KV and Admin gRPC API of a single node, end to end: semantics, limits, errors,
//! health, reflection, metrics, restart.

use datalayer_api::v1 as pb;
use datalayer_client::{Client, ErrorKind, TableOptions, delete, put};
use datalayer_tests::{TestNode, wait_until};
use std::time::Duration;

async fn node_with_table(name: &str) -> (TestNode, Client) {
    let node = TestNode::start().expect("node starts");
    let mut c = node.client().await.expect("connect");
    c.create_table(name, TableOptions::default())
        .await
        .expect("create");
    (node, c)
}

#[tokio::test]
async fn get_write_and_versions() {
    let (_node, mut c) = node_with_table("t").await;
    assert_eq!(c.get("t", b"k").await.expect("get"), None);
    let v1 = c.put("t", b"k", b"one").await.expect("put");
    let v2 = c.put("t", b"k", b"two").await.expect("put");
    assert!(v2 > v1, "versions rise");
    let got = c.get("t", b"k").await.expect("get").expect("found");
    assert_eq!((got.value.as_slice(), got.version), (&b"two"[..], v2));
    let old = c
        .get_at("t", b"k", v1)
        .await
        .expect("get at")
        .expect("found");
    assert_eq!(old.value, b"one");
    assert_eq!(c.get_at("t", b"k", v1 - 1).await.expect("get before"), None);

    // A batch is atomic and shares one version.
    let r = c
        .write("t", vec![put(b"a", b"1"), put(b"b", b"2"), delete(b"k")])
        .await
        .expect("batch");
    let pos = r.position.expect("position");
    assert!(pos.seq > 0 && pos.epoch == 1);
    let rows = c.scan("t", b"", b"", 0, false).await.expect("scan");
    let keys: Vec<_> = rows.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"a"[..], b"b"]);
    assert!(
        rows.iter().all(|row| row.version == r.version),
        "one version for the batch"
    );

    let resp = c
        .kv()
        .batch_get(pb::BatchGetRequest {
            table: "t".into(),
            keys: vec![b"b".to_vec(), b"zz".to_vec(), b"a".to_vec()],
            at_timestamp: 0,
            ..Default::default()
        })
        .await
        .expect("batch get")
        .into_inner();
    let found: Vec<_> = resp
        .results
        .iter()
        .map(|r| (r.key.clone(), r.found, r.value.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (b"b".to_vec(), true, b"2".to_vec()),
            (b"zz".to_vec(), false, vec![]),
            (b"a".to_vec(), true, b"1".to_vec())
        ]
    );
}

#[tokio::test]
async fn scan_pages_on_one_snapshot() {
    let (_node, mut c) = node_with_table("t").await;
    for chunk in (0..250u32).collect::<Vec<_>>().chunks(100) {
        let muts = chunk
            .iter()
            .map(|i| put(format!("k{i:04}").as_bytes(), b"v"))
            .collect();
        c.write("t", muts).await.expect("write");
    }
    let mut req = pb::ScanRequest {
        table: "t".into(),
        limit: 100,
        ..Default::default()
    };
    let first = c.scan_page(req.clone()).await.expect("page 1");
    assert_eq!(first.rows.len(), 100);
    assert!(first.more);
    // Writes after the first page are not seen by later pages at its timestamp.
    c.put("t", b"k0150x", b"late").await.expect("late put");
    c.delete("t", b"k0200").await.expect("late delete");
    let mut keys: Vec<Vec<u8>> = first.rows.into_iter().map(|r| r.key).collect();
    req.start = first.resume_key;
    req.at_timestamp = first.read_timestamp;
    loop {
        let page = c.scan_page(req.clone()).await.expect("page");
        keys.extend(page.rows.into_iter().map(|r| r.key));
        if !page.more {
            break;
        }
        req.start = page.resume_key;
    }
    let want: Vec<Vec<u8>> = (0..250u32)
        .map(|i| format!("k{i:04}").into_bytes())
        .collect();
    assert_eq!(keys, want, "every key once, in order, as of the first page");

    // Reverse paging through the client helper, latest state.
    let rev = c
        .scan("t", b"k0100", b"k0160", 0, true)
        .await
        .expect("reverse");
    assert_eq!(rev.len(), 61, "60 keys plus the late one");
    assert_eq!(rev[0].key, b"k0159");
    assert!(rev.windows(2).all(|w| w[0].key > w[1].key));
    let limited = c.scan("t", b"", b"", 7, false).await.expect("limit");
    assert_eq!(limited.len(), 7);
}

#[tokio::test]
async fn delete_range_cas_and_increment() {
    let (_node, mut c) = node_with_table("t").await;
    for k in ["a", "b", "c", "d"] {
        c.put("t", k.as_bytes(), b"x").await.expect("put");
    }
    assert_eq!(
        c.delete_range("t", b"b", b"d").await.expect("delete range"),
        2
    );
    let keys: Vec<_> = c
        .scan("t", b"", b"", 0, false)
        .await
        .expect("scan")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"d".to_vec()]);
    assert_eq!(c.delete_range("t", b"a", b"").await.expect("to the end"), 2);

    let r = c
        .compare_and_set("t", b"reg", None, Some(b"v1"))
        .await
        .expect("cas absent");
    assert!(r.succeeded);
    let v1 = r.new_version;
    let r = c
        .compare_and_set("t", b"reg", None, Some(b"v2"))
        .await
        .expect("cas absent again");
    assert!(!r.succeeded);
    assert_eq!(
        (
            r.current_found,
            r.current_value.as_slice(),
            r.current_version
        ),
        (true, &b"v1"[..], v1)
    );
    let r = c
        .compare_and_set("t", b"reg", Some(v1 + 1), Some(b"v2"))
        .await
        .expect("stale version");
    assert!(!r.succeeded);
    let r = c
        .compare_and_set("t", b"reg", Some(v1), Some(b"v2"))
        .await
        .expect("right version");
    assert!(r.succeeded);
    let r = c
        .compare_and_set("t", b"reg", Some(r.new_version), None)
        .await
        .expect("cas delete");
    assert!(r.succeeded);
    assert_eq!(c.get("t", b"reg").await.expect("get"), None);

    assert_eq!(c.increment("t", b"n", 5).await.expect("incr"), 5);
    assert_eq!(c.increment("t", b"n", -7).await.expect("incr"), -2);
    assert_eq!(
        c.get("t", b"n").await.expect("get").expect("found").value,
        b"-2"
    );
    c.put("t", b"s", b"text").await.expect("put");
    let err = c.increment("t", b"s", 1).await.expect_err("not an integer");
    assert_eq!(err.kind, ErrorKind::NotAnInteger);
    c.put("t", b"big", i64::MAX.to_string().as_bytes())
        .await
        .expect("put");
    let err = c.increment("t", b"big", 1).await.expect_err("overflow");
    assert_eq!(err.kind, ErrorKind::NotAnInteger);
    assert_eq!(
        c.get("t", b"big").await.expect("get").expect("found").value,
        i64::MAX.to_string().as_bytes()
    );
}

#[tokio::test]
async fn concurrent_increments_and_cas_are_atomic() {
    let (node, mut c) = node_with_table("t").await;
    let before = c.node_status().await.expect("status");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = node.client().await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for i in 0..50 {
                c.increment("t", b"counter", 1).await.expect("incr");
                let key = format!("slot{i}");
                if c.compare_and_set("t", key.as_bytes(), None, Some(b"me"))
                    .await
                    .expect("cas")
                    .succeeded
                {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.expect("task");
    }
    assert_eq!(wins, 50, "each slot is won by exactly one client");
    let v = c.get("t", b"counter").await.expect("get").expect("found");
    assert_eq!(v.value, b"800", "no increment is lost");
    let after = c.node_status().await.expect("status");
    let commits = after.group_commits - before.group_commits;
    let records = after.records_appended - before.records_appended;
    assert_eq!(
        records, 850,
        "800 increments and 50 winning compare-and-sets"
    );
    assert!(
        commits < records,
        "concurrent writers share syncs: {commits} commits for {records} records"
    );
}

#[tokio::test]
async fn limits_are_enforced_and_refused_requests_change_nothing() {
    let (_node, mut c) = node_with_table("t").await;
    let status = c.node_status().await.expect("status");
    let limits = status.limits.expect("limits");
    let max_key = limits.max_key_bytes as usize;
    let max_value = limits.max_value_bytes as usize;

    c.put("t", &vec![b'k'; max_key], b"ok")
        .await
        .expect("key at the limit");
    c.put("t", b"big", &vec![b'v'; max_value])
        .await
        .expect("value at the limit");

    let cases: Vec<(Vec<pb::Mutation>, &str)> = vec![
        (
            vec![put(&vec![b'k'; max_key + 1], b"v")],
            "mutations[0].key",
        ),
        (vec![put(b"fine", b"v"), put(b"", b"v")], "mutations[1].key"),
        (
            vec![put(b"fine", b"v"), put(b"v", &vec![0; max_value + 1])],
            "mutations[1].value",
        ),
        (
            (0..=limits.max_batch_mutations)
                .map(|i| put(format!("m{i}").as_bytes(), b"v"))
                .collect(),
            "mutations",
        ),
        (
            (0..5)
                .map(|i| put(format!("h{i}").as_bytes(), &vec![0; max_value]))
                .collect(),
            "mutations",
        ),
        (vec![], "mutations"),
        (
            vec![pb::Mutation {
                op: 0,
                key: b"fine".to_vec(),
                value: vec![],
            }],
            "mutations[0].op",
        ),
    ];
    for (muts, field) in cases {
        let err = c.write("t", muts).await.expect_err(field);
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{field}: {err}");
        assert_eq!(err.code, tonic::Code::InvalidArgument);
        assert_eq!(err.field, field);
        assert!(!err.retryable);
    }
    assert_eq!(
        c.get("t", b"fine").await.expect("get"),
        None,
        "nothing of a refused batch was written"
    );
    let rows = c.scan("t", b"", b"", 0, false).await.expect("scan");
    assert_eq!(rows.len(), 2, "only the two writes at the limits exist");

    let err = c
        .scan_page(pb::ScanRequest {
            table: "t".into(),
            limit: limits.max_scan_limit + 1,
            ..Default::default()
        })
        .await
        .expect_err("scan limit");
    assert_eq!(err.field, "limit");
    let err = c.get("t", b"").await.expect_err("empty key");
    assert_eq!(err.field, "key");

    // A scan page of large values stays under the message limit and pages on.
    for i in 0..12u8 {
        c.put("t", &[b'p', i], &vec![i; max_value])
            .await
            .expect("big value");
    }
    let page = c
        .scan_page(pb::ScanRequest {
            table: "t".into(),
            start: b"p".to_vec(),
            end: b"q".to_vec(),
            ..Default::default()
        })
        .await
        .expect("scan big");
    assert!(
        page.more && page.rows.len() < 12,
        "page cut by bytes: {} rows",
        page.rows.len()
    );
    let all = c
        .scan("t", b"p", b"q", 0, false)
        .await
        .expect("scan all big");
    assert_eq!(all.len(), 12);
}

#[tokio::test]
async fn table_admin_errors_and_describe() {
    let node = TestNode::start().expect("node");
    let mut c = node.client().await.expect("connect");
    let (t, created) = c
        .create_table(
            "t",
            TableOptions {
                version_retention_secs: 60,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    assert!(created);
    assert_eq!(t.version_retention_secs, 60);
    assert_eq!(t.replication_factor, 3);
    assert_eq!(t.tablets.len(), 1);
    let tablet = &t.tablets[0];
    assert_eq!(
        (tablet.start.as_slice(), tablet.end.as_slice()),
        (&b""[..], &b""[..]),
        "whole keyspace"
    );
    assert_eq!(tablet.master, 1);

    let err = c
        .create_table("t", TableOptions::default())
        .await
        .expect_err("exists");
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    let err = c
        .create_table(
            "s",
            TableOptions {
                policy: pb::Policy::Search,
                ..Default::default()
            },
        )
        .await
        .expect_err("search");
    assert_eq!(err.kind, ErrorKind::NotSupported);
    assert_eq!(err.code, tonic::Code::Unimplemented);
    let err = c.get("nosuch", b"k").await.expect_err("no table");
    assert_eq!(err.kind, ErrorKind::NotFound);
    let err = c.describe_table("nosuch").await.expect_err("no table");
    assert_eq!(err.kind, ErrorKind::NotFound);

    c.put("t", b"k", b"v").await.expect("put");
    let d = c.describe_table("t").await.expect("describe");
    assert!(d.tablets[0].log_end >= 2, "no-op plus the put");
    assert_eq!(d.tablets[0].high_watermark, d.tablets[0].log_end);

    assert!(c.drop_table("t", false).await.expect("drop"));
    let err = c.get("t", b"k").await.expect_err("dropped");
    assert_eq!(err.kind, ErrorKind::NotFound);
    c.create_table("t", TableOptions::default())
        .await
        .expect("recreate");
    assert_eq!(
        c.get("t", b"k").await.expect("get"),
        None,
        "a new table does not see old data"
    );
    assert!(!c.drop_table("gone", true).await.expect("if exists"));
}

#[tokio::test]
async fn old_versions_are_collected_after_the_retention() {
    let node = TestNode::start().expect("node");
    let mut c = node.client().await.expect("connect");
    c.create_table(
        "t",
        TableOptions {
            version_retention_secs: 2,
            ..Default::default()
        },
    )
    .await
    .expect("create");
    let v1 = c.put("t", b"k", b"old").await.expect("put");
    c.put("t", b"k", b"new").await.expect("put");
    assert_eq!(
        c.get_at("t", b"k", v1)
            .await
            .expect("inside retention")
            .expect("found")
            .value,
        b"old"
    );
    // Wait until the node's clock is past v1 + retention.
    let mut probe = node.client().await.expect("connect");
    wait_until("retention passes", Duration::from_secs(10), || {
        let mut p = probe.clone();
        async move {
            let clock = p.node_status().await.map(|s| s.clock).unwrap_or(0);
            (clock >> 16) > (v1 >> 16) + 2100
        }
    })
    .await
    .expect("clock moves");
    let err = c.get_at("t", b"k", v1).await.expect_err("below horizon");
    assert_eq!(err.kind, ErrorKind::TimestampCollected);
    let gc = c.collect_garbage("t").await.expect("gc");
    assert_eq!(gc.versions_removed, 1, "the shadowed version goes");
    assert_eq!(
        c.get("t", b"k").await.expect("get").expect("found").value,
        b"new"
    );
    assert_eq!(
        probe
            .collect_garbage("t")
            .await
            .expect("gc")
            .versions_removed,
        0
    );
}

#[tokio::test]
async fn data_survives_a_clean_restart() {
    let (mut node, mut c) = node_with_table("t").await;
    c.put("t", b"k", b"v").await.expect("put");
    assert_eq!(c.increment("t", b"n", 2).await.expect("incr"), 2);
    let status = node.stop().expect("stop");
    assert!(
        status.success(),
        "SIGTERM stops the node cleanly: {status}\n{}",
        node.log_text()
    );
    node.restart().expect("restart");
    let mut c = node.client().await.expect("connect");
    assert_eq!(
        c.get("t", b"k").await.expect("get").expect("found").value,
        b"v"
    );
    assert_eq!(c.increment("t", b"n", 1).await.expect("incr"), 3);
    let v = c.put("t", b"k", b"v2").await.expect("put");
    let old = c.get("t", b"n").await.expect("get").expect("found");
    assert!(
        v > old.version,
        "the clock restarts above every stored version"
    );
}

#[tokio::test]
async fn health_reflection_and_metrics() {
    let (node, mut c) = node_with_table("t").await;
    c.put("t", b"k", b"v").await.expect("put");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "datalayer.v1.Kv", "datalayer.v1.Admin"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream_once(req))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"datalayer.v1.Kv") && names.contains(&"datalayer.v1.Admin"),
        "{names:?}"
    );
    // Node-to-node services are served but not advertised to clients.
    assert!(
        !names.iter().any(|n| n.starts_with("datalayer.internal.")),
        "{names:?}"
    );

    let (code, body) = node.http_get("/health").expect("health");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = node.http_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    let writes = body
        .lines()
        .find(|l| {
            l.starts_with("datalayer_node_requests_total{")
                && l.contains("method=\"Write\"")
                && l.contains("code=\"Ok\"")
        })
        .unwrap_or_else(|| panic!("no Write counter in {body}"));
    assert!(writes.ends_with(" 1"), "one write so far: {writes}");
    assert!(
        body.contains("datalayer_store_group_commits_total"),
        "{body}"
    );
    let (code, _) = node.http_get("/nosuch").expect("404");
    assert_eq!(code, 404);
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tokio_stream::Stream<Item = T> {
    tokio_stream::iter(vec![item])
}

#[tokio::test]
async fn a_retried_write_is_answered_from_the_log_not_applied_twice() {
    let (mut node, mut c) = node_with_table("t").await;
    let mut kv = c.kv().clone();
    let id = |client, seq| Some(pb::RequestId { client, seq });
    let incr = |request_id| pb::IncrementRequest {
        table: "t".into(),
        key: b"n".to_vec(),
        delta: 5,
        acks: None,
        request_id,
        route: None,
    };
    let first = kv
        .increment(incr(id(7, 1)))
        .await
        .expect("incr")
        .into_inner();
    assert_eq!(first.value, 5);
    let again = kv
        .increment(incr(id(7, 1)))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, first, "the retry gets the original answer");
    let other = kv
        .increment(incr(id(8, 1)))
        .await
        .expect("other client")
        .into_inner();
    assert_eq!(other.value, 10, "another client's request 1 is its own");
    let next = kv
        .increment(incr(id(7, 2)))
        .await
        .expect("next")
        .into_inner();
    assert_eq!(next.value, 15);
    // An older request of a client that already wrote a newer one changes nothing.
    let stale = kv
        .increment(incr(id(7, 1)))
        .await
        .expect_err("stale request");
    assert_eq!(stale.code(), tonic::Code::InvalidArgument, "{stale:?}");
    let zero = kv.increment(incr(id(0, 3))).await.expect_err("client 0");
    assert_eq!(zero.code(), tonic::Code::InvalidArgument, "{zero:?}");
    assert_eq!(
        c.get("t", b"n").await.expect("get").expect("found").value,
        b"15"
    );

    // A compare-and-set that succeeded answers "succeeded" when retried, although its
    // condition no longer holds; the batch keeps its one version.
    let cas = pb::CompareAndSetRequest {
        table: "t".into(),
        key: b"c".to_vec(),
        expected: Some(pb::compare_and_set_request::Expected::ExpectAbsent(true)),
        new_value: b"v".to_vec(),
        request_id: id(9, 1),
        ..Default::default()
    };
    let done = kv
        .compare_and_set(cas.clone())
        .await
        .expect("cas")
        .into_inner();
    assert!(done.succeeded);
    assert_eq!(
        kv.compare_and_set(cas).await.expect("retry").into_inner(),
        done
    );
    let batch = pb::WriteRequest {
        table: "t".into(),
        mutations: vec![put(b"b", b"1")],
        request_id: id(9, 2),
        ..Default::default()
    };
    let w = kv.write(batch.clone()).await.expect("write").into_inner();
    assert_eq!(
        kv.write(batch.clone()).await.expect("retry").into_inner(),
        w
    );
    let versions = c.get("t", b"b").await.expect("get").expect("found").version;
    assert_eq!(versions, w.version);

    // The requests are recalled from the oplog after a kill -9 and restart.
    node.kill();
    node.restart().expect("restart");
    let mut c = node.client().await.expect("reconnect");
    let mut kv = c.kv().clone();
    assert_eq!(kv.write(batch).await.expect("retry").into_inner(), w);
    let again = kv
        .increment(incr(id(7, 2)))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, next);

    // The client library numbers its writes itself: a fresh client's writes apply.
    assert_eq!(c.increment("t", b"n", 1).await.expect("incr"), 16);
    assert_eq!(c.increment("t", b"n", 1).await.expect("incr"), 17);
}
