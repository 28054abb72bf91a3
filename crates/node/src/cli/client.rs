//! The client commands: each talks to a node and prints text or JSON.

use super::{Command, Done, NodeCmd, TableCmd};
use crate::prom::parse_duration;
use datalayer_api::v1 as pb;
use datalayer_client::{Client, ClientError, TableOptions};
use serde_json::json;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn policy_name(p: i32) -> &'static str {
    match pb::Policy::try_from(p) {
        Ok(pb::Policy::Strong) => "strong",
        Ok(pb::Policy::Crdt) => "crdt",
        Ok(pb::Policy::Timeseries) => "timeseries",
        Ok(pb::Policy::Search) => "search",
        _ => "unknown",
    }
}

fn table_json(t: &pb::TableInfo) -> serde_json::Value {
    json!({
        "name": t.name,
        "id": t.id,
        "policy": policy_name(t.policy),
        "replication_factor": t.replication_factor,
        "version_retention_secs": t.version_retention_secs,
        "tablets": t.tablets.iter().map(|tb| json!({
            "id": tb.id,
            "start": text(&tb.start),
            "end": text(&tb.end),
            "generation": tb.generation,
            "replicas": tb.replicas,
            "master": tb.master,
            "master_epoch": tb.master_epoch,
            "log_end": tb.log_end,
            "high_watermark": tb.high_watermark,
            "in_sync": tb.in_sync,
            "moving": (tb.moving_to != 0).then(|| json!({"from": tb.moving_from, "to": tb.moving_to})),
        })).collect::<Vec<_>>(),
        "default_acks": t.default_acks,
        "options": serde_json::from_str::<serde_json::Value>(&t.options_json).unwrap_or(serde_json::Value::Null),
    })
}

fn print_write_state(out: Out, state: pb::WriteState) {
    let name = match state {
        pb::WriteState::Committed => "committed",
        pb::WriteState::Pending => "pending",
        pb::WriteState::Lost => "lost",
        pb::WriteState::Aborted => "aborted",
        pb::WriteState::Unspecified => "unknown",
    };
    out.answer(|| json!({"state": name}), || println!("{name}"));
}

/// How a command prints its answer: one JSON object (`--json`) or lines of text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Out {
    json: bool,
}

impl Out {
    /// Prints `json()` as one line, or runs `text` to print the text form.
    pub(super) fn answer(self, json: impl FnOnce() -> serde_json::Value, text: impl FnOnce()) {
        if self.json {
            println!("{}", json());
        } else {
            text();
        }
    }
}

fn print_table(t: &pb::TableInfo) {
    println!(
        "{}  id={} policy={} replication_factor={} retention={}s tablets={}",
        t.name,
        t.id,
        policy_name(t.policy),
        t.replication_factor,
        t.version_retention_secs,
        t.tablets.len()
    );
}

/// Settings every client command shares.
pub(super) struct ClientOpts {
    pub(super) acks: Option<pb::Acks>,
    pub(super) consistency: pb::ReadConsistency,
    pub(super) max_staleness_ms: u32,
}

/// `1`, `N` or `all`.
pub(super) fn parse_acks(s: &str) -> anyhow::Result<pb::Acks> {
    match s {
        "all" => Ok(datalayer_client::acks_all()),
        n => match n.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(datalayer_client::acks_count(n)),
            _ => anyhow::bail!("acks must be 1, a number of replicas, or all (got {s:?})"),
        },
    }
}

/// Connects to the node at `addr` and runs `command` there.
pub(super) async fn client_command(
    addr: &str,
    json_out: bool,
    opts: ClientOpts,
    command: Command,
) -> anyhow::Result<Done> {
    let mut c = Client::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach a node at {addr}: {e}"))?;
    c.set_acks(opts.acks);
    c.set_consistency(opts.consistency);
    c.set_max_staleness_ms(opts.max_staleness_ms);
    let out = Out { json: json_out };
    match command {
        Command::Start(_)
        | Command::Bench(_)
        | Command::BenchMeta(_)
        | Command::BenchSplit(_)
        | Command::BenchTs(_)
        | Command::Workload(_) => {
            unreachable!("handled before connecting")
        }
        Command::Table(cmd) => table_command(&mut c, out, cmd).await,
        Command::Put { table, key, value } => put(&mut c, out, &table, &key, &value).await,
        Command::Get { table, key, at } => get(&mut c, out, &table, &key, at).await,
        Command::Del { table, key } => del(&mut c, out, &table, &key).await,
        Command::Scan {
            table,
            start,
            end,
            limit,
            reverse,
        } => scan(&mut c, out, &table, (&start, &end), limit, reverse).await,
        Command::DeleteRange { table, start, end } => {
            delete_range(&mut c, out, &table, &start, &end).await
        }
        Command::Cas {
            table,
            key,
            value,
            expect_version,
            expect_absent: _,
        } => cas(&mut c, out, &table, &key, &value, expect_version).await,
        Command::Incr { table, key, delta } => incr(&mut c, out, &table, &key, delta).await,
        Command::WriteStatus {
            table,
            tablet,
            epoch,
            seq,
        } => write_status(&mut c, out, &table, position(tablet, epoch, seq)).await,
        Command::AbortWrite {
            table,
            tablet,
            epoch,
            seq,
        } => abort_write(&mut c, out, &table, position(tablet, epoch, seq)).await,
        Command::Status => status(&mut c, out).await,
        Command::Node(NodeCmd::Decommission { id }) => decommission(&mut c, out, id).await,
        Command::Gc { table } => gc(&mut c, out, &table).await,
        Command::Ts(cmd) => super::ts::ts_command(&mut c, out, cmd, opts.acks).await,
    }
}

fn position(tablet_id: u64, epoch: u64, seq: u64) -> pb::WritePosition {
    pb::WritePosition {
        tablet_id,
        epoch,
        seq,
    }
}

/// `datalayer table ...`.
async fn table_command(c: &mut Client, out: Out, cmd: TableCmd) -> anyhow::Result<Done> {
    match cmd {
        TableCmd::Create {
            name,
            retention_secs,
            replication_factor,
            policy,
            if_not_exists,
            default_acks,
            split_keys,
            retention_weeks,
            out_of_order_window,
            max_series_per_week,
            rollup_retention_weeks,
        } => {
            let policy = match policy.as_str() {
                "strong" => pb::Policy::Strong,
                "crdt" => pb::Policy::Crdt,
                "timeseries" => pb::Policy::Timeseries,
                "search" => pb::Policy::Search,
                other => anyhow::bail!(
                    "unknown policy {other:?}: use strong, crdt, timeseries or search"
                ),
            };
            let opts = TableOptions {
                policy,
                replication_factor,
                version_retention_secs: retention_secs,
                if_not_exists,
                default_acks: default_acks.as_deref().map(parse_acks).transpose()?,
                split_keys: split_keys.into_iter().map(String::into_bytes).collect(),
                timeseries: None,
            };
            let ts_given = retention_weeks.is_some()
                || out_of_order_window.is_some()
                || max_series_per_week.is_some()
                || rollup_retention_weeks.is_some();
            let mut opts = opts;
            if ts_given {
                if policy != pb::Policy::Timeseries {
                    anyhow::bail!(
                        "--retention-weeks, --out-of-order-window, --max-series-per-week and --rollup-retention-weeks are for --policy timeseries"
                    );
                }
                opts.timeseries = Some(pb::TimeseriesOptions {
                    retention_weeks: retention_weeks.unwrap_or(0),
                    out_of_order_window_ms: match out_of_order_window {
                        Some(w) => parse_duration(&w).map_err(anyhow::Error::msg)? as u64,
                        None => 0,
                    },
                    max_series_per_week: max_series_per_week.unwrap_or(0),
                    rollup_retention_weeks: rollup_retention_weeks.unwrap_or(0),
                });
            }
            table_create(c, out, &name, opts).await
        }
        TableCmd::Set {
            name,
            default_acks,
            retention_weeks,
            out_of_order_window,
            max_series_per_week,
            rollup_retention_weeks,
        } => {
            let req = pb::SetTableOptionsRequest {
                name,
                default_acks: default_acks.as_deref().map(parse_acks).transpose()?,
                retention_weeks,
                out_of_order_window_ms: out_of_order_window
                    .map(|w| parse_duration(&w).map(|ms| ms as u64))
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                max_series_per_week,
                rollup_retention_weeks,
            };
            let t = c
                .admin()
                .set_table_options(req)
                .await
                .map_err(ClientError::from)?
                .into_inner()
                .table
                .unwrap_or_default();
            out.answer(
                || json!({"table": table_json(&t)}),
                || println!("table {} options: {}", t.name, t.options_json),
            );
            Ok(Done::Ok)
        }
        TableCmd::List => table_list(c, out).await,
        TableCmd::Describe { name } => table_describe(c, out, &name).await,
        TableCmd::Digest { name } => table_digest(c, out, &name).await,
        TableCmd::TransferMaster { name, node, key } => {
            transfer_master(c, out, &name, node, &key).await
        }
        TableCmd::Split { name, key } => table_split(c, out, &name, &key).await,
        TableCmd::Merge { name, key } => table_merge(c, out, &name, &key).await,
        TableCmd::Drop { name, if_exists } => table_drop(c, out, &name, if_exists).await,
    }
}

async fn table_create(
    c: &mut Client,
    out: Out,
    name: &str,
    opts: TableOptions,
) -> anyhow::Result<Done> {
    let (t, created) = c.create_table(name, opts).await?;
    out.answer(
        || json!({"created": created, "table": table_json(&t)}),
        || {
            if created {
                println!("created table {}", t.name);
            } else {
                println!("table {} exists already", t.name);
            }
        },
    );
    Ok(Done::Ok)
}

async fn table_list(c: &mut Client, out: Out) -> anyhow::Result<Done> {
    let tables = c.list_tables().await?;
    out.answer(
        || json!({"tables": tables.iter().map(table_json).collect::<Vec<_>>()}),
        || tables.iter().for_each(print_table),
    );
    Ok(Done::Ok)
}

async fn table_describe(c: &mut Client, out: Out, name: &str) -> anyhow::Result<Done> {
    let t = c.describe_table(name).await?;
    out.answer(
        || table_json(&t),
        || {
            print_table(&t);
            if !t.options_json.is_empty() {
                println!("  options {}", t.options_json);
            }
            for tb in &t.tablets {
                let moving = if tb.moving_to != 0 {
                    format!(" moving={}->{}", tb.moving_from, tb.moving_to)
                } else {
                    String::new()
                };
                println!(
                    "  tablet {} [{:?}, {:?}) generation={} master={} epoch={} replicas={:?} in_sync={:?} log_end={} hw={}{moving}",
                    tb.id,
                    text(&tb.start),
                    text(&tb.end),
                    tb.generation,
                    tb.master,
                    tb.master_epoch,
                    tb.replicas,
                    tb.in_sync,
                    tb.log_end,
                    tb.high_watermark
                );
            }
        },
    );
    Ok(Done::Ok)
}

async fn table_split(c: &mut Client, out: Out, name: &str, key: &str) -> anyhow::Result<Done> {
    let t = c.split_tablet(name, key.as_bytes()).await?;
    out.answer(
        || table_json(&t),
        || {
            println!(
                "split table {} at {key:?}: {} tablets",
                t.name,
                t.tablets.len()
            );
        },
    );
    Ok(Done::Ok)
}

async fn table_merge(c: &mut Client, out: Out, name: &str, key: &str) -> anyhow::Result<Done> {
    let t = c.merge_tablets(name, key.as_bytes()).await?;
    out.answer(
        || table_json(&t),
        || {
            println!(
                "merged the tablet at {key:?} of table {} into its left neighbour: {} tablets",
                t.name,
                t.tablets.len()
            );
        },
    );
    Ok(Done::Ok)
}

async fn table_digest(c: &mut Client, out: Out, name: &str) -> anyhow::Result<Done> {
    let r = c.table_digest(name).await?;
    out.answer(
        || {
            json!({"tablets": r.tablets.iter().map(|t| json!({
                "tablet": t.tablet_id, "log_end": t.log_end, "digest": t.digest, "rows": t.rows,
            })).collect::<Vec<_>>()})
        },
        || {
            for t in &r.tablets {
                println!(
                    "tablet {} log_end={} rows={} digest={:016x}",
                    t.tablet_id, t.log_end, t.rows, t.digest
                );
            }
        },
    );
    Ok(Done::Ok)
}

async fn transfer_master(
    c: &mut Client,
    out: Out,
    name: &str,
    node: u64,
    key: &str,
) -> anyhow::Result<Done> {
    let t = c.transfer_master(name, key.as_bytes(), node).await?;
    out.answer(
        || json!({"tablet": t.id, "master": t.master, "master_epoch": t.master_epoch}),
        || {
            println!(
                "tablet {}: master {} epoch {}",
                t.id, t.master, t.master_epoch
            )
        },
    );
    Ok(Done::Ok)
}

async fn table_drop(c: &mut Client, out: Out, name: &str, if_exists: bool) -> anyhow::Result<Done> {
    let dropped = c.drop_table(name, if_exists).await?;
    out.answer(
        || json!({"dropped": dropped}),
        || {
            if dropped {
                println!("dropped table {name}");
            } else {
                println!("table {name} did not exist");
            }
        },
    );
    Ok(Done::Ok)
}

async fn put(
    c: &mut Client,
    out: Out,
    table: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<Done> {
    let version = c.put(table, key.as_bytes(), value.as_bytes()).await?;
    out.answer(
        || json!({"version": version}),
        || println!("OK version={version}"),
    );
    Ok(Done::Ok)
}

async fn get(
    c: &mut Client,
    out: Out,
    table: &str,
    key: &str,
    at: Option<u64>,
) -> anyhow::Result<Done> {
    match c.get_at(table, key.as_bytes(), at.unwrap_or(0)).await? {
        Some(v) => {
            out.answer(
                || {
                    json!({"found": true, "value": text(&v.value), "version": v.version,
                        "staleness_ms": v.staleness_ms})
                },
                || println!("{}", text(&v.value)),
            );
            Ok(Done::Ok)
        }
        None => {
            out.answer(
                || json!({"found": false}),
                || eprintln!("key {key:?} not found in table {table}"),
            );
            Ok(Done::NotFound)
        }
    }
}

async fn del(c: &mut Client, out: Out, table: &str, key: &str) -> anyhow::Result<Done> {
    let version = c.delete(table, key.as_bytes()).await?;
    out.answer(
        || json!({"version": version}),
        || println!("OK version={version}"),
    );
    Ok(Done::Ok)
}

async fn scan(
    c: &mut Client,
    out: Out,
    table: &str,
    (start, end): (&str, &str),
    limit: usize,
    reverse: bool,
) -> anyhow::Result<Done> {
    let rows = c
        .scan(table, start.as_bytes(), end.as_bytes(), limit, reverse)
        .await?;
    out.answer(
        || {
            json!({"rows": rows.iter().map(|r| json!({
                "key": text(&r.key), "value": text(&r.value), "version": r.version,
            })).collect::<Vec<_>>()})
        },
        || {
            for r in &rows {
                println!("{}\t{}", text(&r.key), text(&r.value));
            }
        },
    );
    Ok(Done::Ok)
}

async fn delete_range(
    c: &mut Client,
    out: Out,
    table: &str,
    start: &str,
    end: &str,
) -> anyhow::Result<Done> {
    let n = c
        .delete_range(table, start.as_bytes(), end.as_bytes())
        .await?;
    out.answer(|| json!({"deleted": n}), || println!("deleted {n} keys"));
    Ok(Done::Ok)
}

async fn cas(
    c: &mut Client,
    out: Out,
    table: &str,
    key: &str,
    value: &str,
    expect_version: Option<u64>,
) -> anyhow::Result<Done> {
    let r = c
        .compare_and_set(
            table,
            key.as_bytes(),
            expect_version,
            Some(value.as_bytes()),
        )
        .await?;
    out.answer(
        || {
            json!({
                "succeeded": r.succeeded, "new_version": r.new_version,
                "current_found": r.current_found, "current_value": text(&r.current_value),
                "current_version": r.current_version,
            })
        },
        || {
            if r.succeeded {
                println!("OK version={}", r.new_version);
            } else if r.current_found {
                println!(
                    "FAILED current version={} value={}",
                    r.current_version,
                    text(&r.current_value)
                );
            } else {
                println!("FAILED key is absent");
            }
        },
    );
    if !r.succeeded {
        anyhow::bail!("compare-and-set condition failed");
    }
    Ok(Done::Ok)
}

async fn incr(
    c: &mut Client,
    out: Out,
    table: &str,
    key: &str,
    delta: i64,
) -> anyhow::Result<Done> {
    let v = c.increment(table, key.as_bytes(), delta).await?;
    out.answer(|| json!({"value": v}), || println!("{v}"));
    Ok(Done::Ok)
}

/// Exits 1 when the write is lost or aborted.
async fn write_status(
    c: &mut Client,
    out: Out,
    table: &str,
    position: pb::WritePosition,
) -> anyhow::Result<Done> {
    let state = c.write_status(table, position).await?;
    print_write_state(out, state);
    Ok(match state {
        pb::WriteState::Lost | pb::WriteState::Aborted => Done::NotFound,
        _ => Done::Ok,
    })
}

/// Exits 1 when the write had committed (it cannot be aborted).
async fn abort_write(
    c: &mut Client,
    out: Out,
    table: &str,
    position: pb::WritePosition,
) -> anyhow::Result<Done> {
    let state = c.abort_write(table, position).await?;
    print_write_state(out, state);
    Ok(match state {
        pb::WriteState::Committed => Done::NotFound,
        _ => Done::Ok,
    })
}

/// Whether the node at `addr` answers its own status within a second.
async fn answers(addr: &str) -> bool {
    let probe = async {
        let mut peer = Client::connect(addr).await.ok()?;
        peer.node_status().await.ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn status(c: &mut Client, out: Out) -> anyhow::Result<Done> {
    let s = c.node_status().await?;
    let tables = c.list_tables().await?;
    let mut live = Vec::new();
    for n in &s.nodes {
        live.push(answers(&n.grpc_addr).await);
    }
    let limits = s.limits.unwrap_or_default();
    out.answer(
        || {
            json!({
                "node_id": s.node_id, "version": s.version, "grpc_addr": s.grpc_addr,
                "http_addr": s.http_addr, "data_dir": s.data_dir, "uptime_secs": s.uptime_secs,
                "tables": s.tables, "tablets": s.tablets, "group_commits": s.group_commits,
                "records_appended": s.records_appended, "clock": s.clock,
                "worker_threads": s.worker_threads,
                "meta_leader": s.meta_leader,
                "nodes": s.nodes.iter().zip(&live).map(|(n, up)| json!({
                    "id": n.id, "grpc_addr": n.grpc_addr, "http_addr": n.http_addr,
                    "live": up, "meta_role": n.meta_role, "tablets": n.tablets, "masters": n.masters,
                    "liveness_epoch": n.liveness_epoch, "lease_left_ms": n.lease_left_ms,
                })).collect::<Vec<_>>(),
                "table_map": tables.iter().map(table_json).collect::<Vec<_>>(),
                "limits": {
                    "max_key_bytes": limits.max_key_bytes, "max_value_bytes": limits.max_value_bytes,
                    "max_batch_mutations": limits.max_batch_mutations, "max_batch_bytes": limits.max_batch_bytes,
                    "max_message_bytes": limits.max_message_bytes, "max_scan_limit": limits.max_scan_limit,
                    "max_table_name_chars": limits.max_table_name_chars,
                },
            })
        },
        || {
            println!(
                "node {} (datalayer {}) up {}s, {} worker threads",
                s.node_id, s.version, s.uptime_secs, s.worker_threads
            );
            println!(
                "  grpc {}  http {}  data {}",
                s.grpc_addr, s.http_addr, s.data_dir
            );
            println!(
                "  {} group commits carrying {} records",
                s.group_commits, s.records_appended
            );
            println!(
                "  limits: key {} B, value {} B, batch {} mutations / {} B, message {} B, scan page {} rows",
                limits.max_key_bytes,
                limits.max_value_bytes,
                limits.max_batch_mutations,
                limits.max_batch_bytes,
                limits.max_message_bytes,
                limits.max_scan_limit
            );
            println!("nodes (metadata leader: node {}):", s.meta_leader);
            for (n, up) in s.nodes.iter().zip(&live) {
                println!(
                    "  node {:<3} {:<22} {:<5} {:<8} tablets={} masters={} liveness epoch={} lease left={}",
                    n.id,
                    n.grpc_addr,
                    if *up { "live" } else { "dead" },
                    n.meta_role,
                    n.tablets,
                    n.masters,
                    n.liveness_epoch,
                    match n.lease_left_ms {
                        0 => "- (no heartbeat yet)".to_string(),
                        ms => format!("{ms}ms"),
                    }
                );
            }
            println!("tables:");
            for t in &tables {
                print_table(t);
                for tb in &t.tablets {
                    println!(
                        "    tablet {} [{:?}, {:?}) master={} replicas={:?}",
                        tb.id,
                        text(&tb.start),
                        text(&tb.end),
                        tb.master,
                        tb.replicas
                    );
                }
            }
        },
    );
    Ok(Done::Ok)
}

async fn decommission(c: &mut Client, out: Out, id: u64) -> anyhow::Result<Done> {
    c.admin()
        .decommission_node(pb::DecommissionNodeRequest { node_id: id })
        .await
        .map_err(ClientError::from)?;
    out.answer(
        || json!({"decommissioned": id}),
        || println!("node {id} decommissioned"),
    );
    Ok(Done::Ok)
}

async fn gc(c: &mut Client, out: Out, table: &str) -> anyhow::Result<Done> {
    let r = c.collect_garbage(table).await?;
    out.answer(
        || json!({"versions_removed": r.versions_removed, "horizon": r.horizon}),
        || {
            println!(
                "removed {} old versions (horizon {})",
                r.versions_removed, r.horizon
            )
        },
    );
    Ok(Done::Ok)
}
