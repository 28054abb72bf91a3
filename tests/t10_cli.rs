//! The CLI contract of the README: start, table commands, put/get/del/scan, --json,
//! exit codes and messages on errors.

use datalayer_tests::{StartedNode, TestNode, binary, json, stderr, stdout};
use std::process::Command;

#[test]
fn cli_tour_with_text_and_json_output() {
    let node = TestNode::start().expect("node starts");

    let o = node.cli(&["table", "create", "users"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "created table users");

    let o = node.cli(&["--json", "table", "list"]);
    assert!(o.status.success());
    let v = json(&o);
    assert_eq!(v["tables"][0]["name"], "users");
    assert_eq!(v["tables"][0]["policy"], "strong");
    assert_eq!(v["tables"][0]["tablets"].as_array().map(Vec::len), Some(1));

    let o = node.cli(&["put", "users", "alice", "hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("OK version="));
    let o = node.cli(&["get", "users", "alice"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "hello world\n");

    let o = node.cli(&["--json", "put", "users", "bob", "b"]);
    let version = json(&o)["version"].as_u64().expect("version");
    let o = node.cli(&["--json", "get", "users", "bob"]);
    let v = json(&o);
    assert_eq!(v["found"], true);
    assert_eq!(v["value"], "b");
    assert_eq!(v["version"].as_u64(), Some(version));

    node.cli(&["put", "users", "carol", "c"]);
    let o = node.cli(&["scan", "users"]);
    assert_eq!(stdout(&o), "alice\thello world\nbob\tb\ncarol\tc\n");
    let o = node.cli(&["scan", "users", "--start", "b", "--end", "c"]);
    assert_eq!(stdout(&o), "bob\tb\n");
    let o = node.cli(&["scan", "users", "--limit", "2", "--reverse"]);
    assert_eq!(stdout(&o), "carol\tc\nbob\tb\n");
    let o = node.cli(&["--json", "scan", "users", "--limit", "1"]);
    assert_eq!(json(&o)["rows"][0]["key"], "alice");

    let o = node.cli(&["del", "users", "bob"]);
    assert!(o.status.success());
    let o = node.cli(&["get", "users", "bob"]);
    assert_eq!(o.status.code(), Some(1), "absent key exits 1");
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = node.cli(&["--json", "get", "users", "bob"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&o)["found"], false);

    // Reading at the old version still sees bob.
    let o = node.cli(&["get", "users", "bob", "--at", &version.to_string()]);
    assert_eq!(stdout(&o), "b\n");

    let o = node.cli(&["incr", "users", "visits", "5"]);
    assert_eq!(stdout(&o), "5\n");
    let o = node.cli(&["incr", "users", "visits", "-2"]);
    assert_eq!(stdout(&o), "3\n");

    let o = node.cli(&["cas", "users", "dave", "d1", "--expect-absent"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = node.cli(&["cas", "users", "dave", "d2", "--expect-absent"]);
    assert_eq!(o.status.code(), Some(2), "a failed condition is an error");
    assert!(stdout(&o).contains("FAILED current version="));

    let o = node.cli(&[
        "--json",
        "delete-range",
        "users",
        "--start",
        "a",
        "--end",
        "c",
    ]);
    assert_eq!(json(&o)["deleted"], 1, "alice (bob was deleted already)");

    let o = node.cli(&["--json", "status"]);
    let v = json(&o);
    assert_eq!(v["tables"], 1);
    assert_eq!(v["limits"]["max_key_bytes"], 4096);

    let o = node.cli(&["table", "describe", "users"]);
    assert!(stdout(&o).contains("tablet"), "{}", stdout(&o));

    let o = node.cli(&["table", "drop", "users"]);
    assert!(o.status.success());
    let o = node.cli(&["--json", "table", "list"]);
    assert_eq!(json(&o)["tables"], serde_json::json!([]));
}

#[test]
fn errors_exit_non_zero_with_a_clear_message() {
    let node = TestNode::start().expect("node starts");

    let o = node.cli(&["get", "nosuch", "k"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("table \"nosuch\" not found"),
        "{}",
        stderr(&o)
    );

    let o = node.cli(&["--json", "put", "nosuch", "k", "v"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(json(&o)["detail"]["kind"], "ERROR_KIND_NOT_FOUND");

    let o = node.cli(&["table", "create", "bad name"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("table name"), "{}", stderr(&o));

    let o = node.cli(&["table", "create", "events", "--policy", "crdt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not supported yet"), "{}", stderr(&o));

    node.cli(&["table", "create", "t"]);
    let o = node.cli(&["table", "create", "t"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"));
    let o = node.cli(&["table", "create", "t", "--if-not-exists"]);
    assert!(o.status.success());

    let long_key = "k".repeat(5000);
    let o = node.cli(&["put", "t", &long_key, "v"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("the limit is 4096"), "{}", stderr(&o));

    let o = node.cli(&["put", "t", "k", "v", "extra"]);
    assert_eq!(o.status.code(), Some(2), "bad arguments");
    assert!(stderr(&o).contains("unexpected argument"), "{}", stderr(&o));

    let o = node.cli(&["incr", "t", "k", "notanumber"]);
    assert_eq!(o.status.code(), Some(2));

    let o = node.cli(&["table", "drop", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    let o = node.cli(&["table", "drop", "nosuch", "--if-exists"]);
    assert!(o.status.success());

    // No node listens here.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    let o = Command::new(binary())
        .args(["--addr", &addr, "table", "list"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot reach a node"), "{}", stderr(&o));
}

#[test]
fn start_with_no_flags_uses_a_local_data_directory_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::spawn(&[], dir.path()).expect("node starts");
    assert_eq!(node.field("grpc"), "127.0.0.1:7700", "{}", node.ready);
    assert_eq!(node.field("http"), "127.0.0.1:7701", "{}", node.ready);
    assert_eq!(node.field("data"), "datalayer-data", "{}", node.ready);
    let o = Command::new(binary())
        .args(["table", "create", "demo"])
        .output()
        .expect("cli");
    assert!(
        o.status.success(),
        "default --addr reaches the default node: {}",
        stderr(&o)
    );
    assert!(
        dir.path().join("datalayer-data/db/CURRENT").exists(),
        "RocksDB in ./datalayer-data"
    );
    let status = node.terminate().expect("SIGTERM");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\nworker_threads = 3\n\
         [limits]\nmax_key_bytes = 8\n",
    )
    .expect("write config");
    let data = dir.path().join("d");
    let node = StartedNode::spawn(
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
        dir.path(),
    )
    .expect("node starts");
    let grpc = node.field("grpc");
    let cli = |args: &[&str]| {
        Command::new(binary())
            .arg("--addr")
            .arg(&grpc)
            .args(args)
            .output()
            .expect("cli")
    };
    cli(&["table", "create", "t"]);
    let o = cli(&["put", "t", "123456789", "v"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("the limit is 8"), "{}", stderr(&o));
    assert!(
        data.join("db/CURRENT").exists(),
        "--data-dir overrides the file"
    );
    assert_eq!(
        json(&cli(&["--json", "status"]))["worker_threads"],
        3,
        "worker_threads from the file"
    );
    drop(node);

    // The flag overrides the file's thread count.
    let node = StartedNode::spawn(
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--worker-threads".as_ref(),
            "1".as_ref(),
        ],
        dir.path(),
    )
    .expect("node starts");
    let o = Command::new(binary())
        .args(["--json", "--addr", &node.field("grpc"), "status"])
        .output()
        .expect("cli");
    assert_eq!(json(&o)["worker_threads"], 1, "{}", stdout(&o));
    drop(node);

    // Too many threads is refused before the node starts.
    let o = Command::new(binary())
        .args(["start", "--worker-threads", "5000", "--data-dir"])
        .arg(dir.path().join("never"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("worker_threads must be at most 1024"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("never").exists(), "nothing was created");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "grpc_adr = \"x\"\n").expect("write");
    let o = Command::new(binary())
        .args(["start", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown field"), "{}", stderr(&o));
}
