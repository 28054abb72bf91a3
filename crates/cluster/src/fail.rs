//! Fail points: places where a test makes the node crash, as `kill -9` would, to
//! prove a multi-step change resolves from what it left behind. Armed once at start
//! (`datalayer start --fail-point NAME=KEY[@NODE]`, a flag for tests only); each
//! point fires only for the key it was armed with (so one cluster can carry
//! several) and, with `@NODE`, only on the node of that id.

use std::sync::OnceLock;

/// The fail points there are.
pub const POINTS: [&str; 7] = [
    // A split by hand, once its intent is in the metadata.
    "split-after-intent",
    // A split by hand, once its master appended the split record.
    "split-after-record",
    // A split by hand, once the record committed, before both halves are recorded.
    "split-before-commit",
    // A merge by hand (armed for the start of its right tablet): once its intent is
    // in the metadata; once the right tablet stopped taking writes and its log is
    // held; once the absorb record is appended; once it committed, before the merge
    // is recorded.
    "merge-after-intent",
    "merge-after-stop",
    "merge-after-record",
    "merge-before-commit",
];

/// An armed point: its name, key, and the node it fires on (any when `None`).
type Armed = (String, Vec<u8>, Option<u64>);

static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
static NODE: OnceLock<u64> = OnceLock::new();

/// Tells the fail points which node this process is, once it knows.
pub fn set_node(node: datalayer_store::NodeId) {
    let _ = NODE.set(node.0);
}

/// Arms fail points given as `NAME=KEY[@NODE]`; once per process.
pub fn arm(specs: &[String]) -> Result<(), String> {
    let mut armed = Vec::new();
    for spec in specs {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("fail point {spec:?} is not NAME=KEY[@NODE]"))?;
        let (key, node) = match rest.rsplit_once('@') {
            Some((key, node)) => (
                key,
                Some(
                    node.parse::<u64>()
                        .map_err(|_| format!("fail point {spec:?}: {node:?} is not a node id"))?,
                ),
            ),
            None => (rest, None),
        };
        if !POINTS.contains(&name) {
            return Err(format!(
                "unknown fail point {name:?} (known: {})",
                POINTS.join(", ")
            ));
        }
        armed.push((name.to_string(), key.as_bytes().to_vec(), node));
    }
    ARMED
        .set(armed)
        .map_err(|_| "fail points are armed already".to_string())
}

/// Crashes the process at once (no destructors, nothing flushed: what `kill -9`
/// leaves) when `name` is armed for `key` (and this node).
pub(crate) fn point(name: &str, key: &[u8]) {
    let here = NODE.get().copied();
    let armed = ARMED.get().is_some_and(|a| {
        a.iter().any(|(n, k, node)| {
            n == name && k.as_slice() == key && node.is_none_or(|id| Some(id) == here)
        })
    });
    if armed {
        tracing::error!(point = name, "fail point reached: crashing");
        std::process::abort();
    }
}
