//! The client commands: each talks to a node and prints text or JSON.

use super::{Command, Done, NodeCmd, TableCmd};
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
    })
}

fn print_write_state(state: pb::WriteState, json_out: bool) {
    let name = match state {
        pb::WriteState::Committed => "committed",
        pb::WriteState::Pending => "pending",
        pb::WriteState::Lost => "lost",
        pb::WriteState::Aborted => "aborted",
        pb::WriteState::Unspecified => "unknown",
    };
    if json_out {
        println!("{}", json!({"state": name}));
    } else {
        println!("{name}");
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
    let print = |v: serde_json::Value| println!("{v}");
    match command {
        Command::Start(_) | Command::Bench(_) | Command::Workload(_) => {
            unreachable!("handled before connecting")
        }
        Command::Table(TableCmd::Create {
            name,
            retention_secs,
            replication_factor,
            policy,
            if_not_exists,
            default_acks,
        }) => {
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
            };
            let (t, created) = c.create_table(&name, opts).await?;
            if json_out {
                print(json!({"created": created, "table": table_json(&t)}));
            } else if created {
                println!("created table {}", t.name);
            } else {
                println!("table {} exists already", t.name);
            }
        }
        Command::Table(TableCmd::List) => {
            let tables = c.list_tables().await?;
            if json_out {
                print(json!({"tables": tables.iter().map(table_json).collect::<Vec<_>>()}));
            } else {
                tables.iter().for_each(print_table);
            }
        }
        Command::Table(TableCmd::Describe { name }) => {
            let t = c.describe_table(&name).await?;
            if json_out {
                print(table_json(&t));
            } else {
                print_table(&t);
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
            }
        }
        Command::Table(TableCmd::Digest { name }) => {
            let r = c.table_digest(&name).await?;
            if json_out {
                print(json!({"tablets": r.tablets.iter().map(|t| json!({
                    "tablet": t.tablet_id, "log_end": t.log_end, "digest": t.digest, "rows": t.rows,
                })).collect::<Vec<_>>()}));
            } else {
                for t in &r.tablets {
                    println!(
                        "tablet {} log_end={} rows={} digest={:016x}",
                        t.tablet_id, t.log_end, t.rows, t.digest
                    );
                }
            }
        }
        Command::Table(TableCmd::TransferMaster { name, node, key }) => {
            let t = c.transfer_master(&name, key.as_bytes(), node).await?;
            if json_out {
                print(json!({"tablet": t.id, "master": t.master, "master_epoch": t.master_epoch}));
            } else {
                println!(
                    "tablet {}: master {} epoch {}",
                    t.id, t.master, t.master_epoch
                );
            }
        }
        Command::Table(TableCmd::Drop { name, if_exists }) => {
            let dropped = c.drop_table(&name, if_exists).await?;
            if json_out {
                print(json!({"dropped": dropped}));
            } else if dropped {
                println!("dropped table {name}");
            } else {
                println!("table {name} did not exist");
            }
        }
        Command::Put { table, key, value } => {
            let version = c.put(&table, key.as_bytes(), value.as_bytes()).await?;
            if json_out {
                print(json!({"version": version}));
            } else {
                println!("OK version={version}");
            }
        }
        Command::Get { table, key, at } => {
            let v = c.get_at(&table, key.as_bytes(), at.unwrap_or(0)).await?;
            match v {
                Some(v) if json_out => print(
                    json!({"found": true, "value": text(&v.value), "version": v.version,
                        "staleness_ms": v.staleness_ms}),
                ),
                Some(v) => println!("{}", text(&v.value)),
                None => {
                    if json_out {
                        print(json!({"found": false}));
                    } else {
                        eprintln!("key {key:?} not found in table {table}");
                    }
                    return Ok(Done::NotFound);
                }
            }
        }
        Command::Del { table, key } => {
            let version = c.delete(&table, key.as_bytes()).await?;
            if json_out {
                print(json!({"version": version}));
            } else {
                println!("OK version={version}");
            }
        }
        Command::Scan {
            table,
            start,
            end,
            limit,
            reverse,
        } => {
            let rows = c
                .scan(&table, start.as_bytes(), end.as_bytes(), limit, reverse)
                .await?;
            if json_out {
                print(json!({"rows": rows.iter().map(|r| json!({
                    "key": text(&r.key), "value": text(&r.value), "version": r.version,
                })).collect::<Vec<_>>()}));
            } else {
                for r in rows {
                    println!("{}\t{}", text(&r.key), text(&r.value));
                }
            }
        }
        Command::DeleteRange { table, start, end } => {
            let n = c
                .delete_range(&table, start.as_bytes(), end.as_bytes())
                .await?;
            if json_out {
                print(json!({"deleted": n}));
            } else {
                println!("deleted {n} keys");
            }
        }
        Command::Cas {
            table,
            key,
            value,
            expect_version,
            expect_absent: _,
        } => {
            let r = c
                .compare_and_set(
                    &table,
                    key.as_bytes(),
                    expect_version,
                    Some(value.as_bytes()),
                )
                .await?;
            if json_out {
                print(json!({
                    "succeeded": r.succeeded, "new_version": r.new_version,
                    "current_found": r.current_found, "current_value": text(&r.current_value),
                    "current_version": r.current_version,
                }));
            } else if r.succeeded {
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
            if !r.succeeded {
                anyhow::bail!("compare-and-set condition failed");
            }
        }
        Command::Incr { table, key, delta } => {
            let v = c.increment(&table, key.as_bytes(), delta).await?;
            if json_out {
                print(json!({"value": v}));
            } else {
                println!("{v}");
            }
        }
        Command::WriteStatus {
            table,
            tablet,
            epoch,
            seq,
        } => {
            let position = pb::WritePosition {
                tablet_id: tablet,
                epoch,
                seq,
            };
            let state = c.write_status(&table, position).await?;
            print_write_state(state, json_out);
            if matches!(state, pb::WriteState::Lost | pb::WriteState::Aborted) {
                return Ok(Done::NotFound);
            }
        }
        Command::AbortWrite {
            table,
            tablet,
            epoch,
            seq,
        } => {
            let position = pb::WritePosition {
                tablet_id: tablet,
                epoch,
                seq,
            };
            let state = c.abort_write(&table, position).await?;
            print_write_state(state, json_out);
            if state == pb::WriteState::Committed {
                return Ok(Done::NotFound);
            }
        }
        Command::Status => {
            let s = c.node_status().await?;
            let tables = c.list_tables().await?;
            // A node is live when it answers its own status within a second.
            let mut live = Vec::new();
            for n in &s.nodes {
                let probe = async {
                    let mut peer = Client::connect(&n.grpc_addr).await.ok()?;
                    peer.node_status().await.ok()
                };
                let up = tokio::time::timeout(std::time::Duration::from_secs(1), probe)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                live.push(up);
            }
            let limits = s.limits.unwrap_or_default();
            if json_out {
                print(json!({
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
                }));
            } else {
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
            }
        }
        Command::Node(NodeCmd::Decommission { id }) => {
            c.admin()
                .decommission_node(pb::DecommissionNodeRequest { node_id: id })
                .await
                .map_err(ClientError::from)?;
            if json_out {
                print(json!({"decommissioned": id}));
            } else {
                println!("node {id} decommissioned");
            }
        }
        Command::Gc { table } => {
            let r = c.collect_garbage(&table).await?;
            if json_out {
                print(json!({"versions_removed": r.versions_removed, "horizon": r.horizon}));
            } else {
                println!(
                    "removed {} old versions (horizon {})",
                    r.versions_removed, r.horizon
                );
            }
        }
    }
    Ok(Done::Ok)
}
