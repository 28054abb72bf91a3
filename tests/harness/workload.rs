//! Histories of `datalayer workload` (registers read, written and compare-and-set
//! with unique values; unique ids added with `acks=all`): parsing them, explaining a
//! register that is not linearizable, and running the workload as a local process.

use crate::binary;
use crate::linearizability::{RegEvent, RegOp, check_register};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A parsed history.
#[derive(Default)]
pub struct History {
    pub registers: BTreeMap<String, Vec<RegEvent>>,
    pub acked_ids: BTreeSet<String>,
    pub sent_ids: BTreeSet<String>,
    /// Return times of the operations that completed.
    pub completed: Vec<u64>,
    /// Operations that did not answer (timed out, ambiguous) or failed.
    pub unanswered: usize,
    /// Their lines.
    pub unanswered_lines: Vec<String>,
}

pub fn parse(text: &str) -> History {
    let mut h = History::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let call = v["call"].as_u64().unwrap_or(0);
        let ret = v["ret"].as_u64();
        if let Some(r) = ret {
            h.completed.push(r);
        } else {
            h.unanswered += 1;
            h.unanswered_lines.push(line.to_string());
        }
        let s = |f: &str| v[f].as_str().map(String::from);
        let op = match v["f"].as_str() {
            Some("id") => {
                let id = s("id").expect("id");
                h.sent_ids.insert(id.clone());
                if ret.is_some() {
                    h.acked_ids.insert(id);
                }
                continue;
            }
            Some("read") => RegOp::Read(s("v")),
            Some("write") => RegOp::Write(s("v").expect("v")),
            Some("cas") => RegOp::Cas {
                from: s("from").expect("from"),
                to: s("to").expect("to"),
                ok: v["ok"].as_bool(),
            },
            _ => continue,
        };
        let key = s("k").expect("k");
        h.registers
            .entry(key)
            .or_default()
            .push(RegEvent { op, call, ret });
    }
    h.completed.sort_unstable();
    h
}

/// Where a non-linearizable register history goes wrong: the shortest prefix (by call
/// time) that is not linearizable, and its last operations (times in µs of the
/// workload).
pub fn explain(events: &[RegEvent]) -> String {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.call);
    let (mut lo, mut hi) = (1, sorted.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if check_register(&sorted[..mid]).is_err() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let last: Vec<String> = sorted[lo.saturating_sub(6)..lo]
        .iter()
        .map(|e| format!("{:?} {}..{:?}", e.op, e.call, e.ret))
        .collect();
    format!(
        "the first {lo} operations by call time are not; the last of them: {}",
        last.join(", ")
    )
}

/// `datalayer workload` running as a process of its own, its history going to a file.
#[derive(Debug)]
pub struct LocalWorkload {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl LocalWorkload {
    /// Starts the workload on `table` against the nodes at `addrs` for `secs` seconds,
    /// each operation waiting up to `timeout_ms` for its answer.
    pub fn start(
        addrs: &[String],
        table: &str,
        secs: u64,
        timeout_ms: u64,
    ) -> Result<LocalWorkload> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("history.jsonl");
        let file = std::fs::File::create(&out)?;
        let child = Command::new(binary())
            .args(["workload", "--nodes", &addrs.join(","), "--table", table])
            .args(["--secs", &secs.to_string()])
            .args(["--timeout-ms", &timeout_ms.to_string()])
            .stdout(file)
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the workload")?;
        Ok(LocalWorkload {
            child,
            out,
            _dir: dir,
        })
    }

    /// The history written so far.
    pub fn history(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the workload to end; its history.
    pub fn wait(mut self) -> Result<String> {
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the workload failed: {status}");
        Ok(self.history())
    }
}

impl Drop for LocalWorkload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
