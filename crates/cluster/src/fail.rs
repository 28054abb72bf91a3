//! Fail points: places where a test makes the node crash, as `kill -9` would, to
//! prove a multi-step change resolves from what it left behind. Armed once at start
//! (`datalayer start --fail-point NAME=KEY`, a flag for tests only); each point fires
//! only for the key it was armed with, so one cluster can carry several.

use std::sync::OnceLock;

/// The fail points there are.
pub const POINTS: [&str; 3] = [
    // A split by hand, once its intent is in the metadata.
    "split-after-intent",
    // A split by hand, once its master appended the split record.
    "split-after-record",
    // A split by hand, once the record committed, before both halves are recorded.
    "split-before-commit",
];

static ARMED: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();

/// Arms fail points given as `NAME=KEY`; once per process.
pub fn arm(specs: &[String]) -> Result<(), String> {
    let mut armed = Vec::new();
    for spec in specs {
        let (name, key) = spec
            .split_once('=')
            .ok_or_else(|| format!("fail point {spec:?} is not NAME=KEY"))?;
        if !POINTS.contains(&name) {
            return Err(format!(
                "unknown fail point {name:?} (known: {})",
                POINTS.join(", ")
            ));
        }
        armed.push((name.to_string(), key.as_bytes().to_vec()));
    }
    ARMED
        .set(armed)
        .map_err(|_| "fail points are armed already".to_string())
}

/// Crashes the process at once (no destructors, nothing flushed: what `kill -9`
/// leaves) when `name` is armed for `key`.
pub(crate) fn point(name: &str, key: &[u8]) {
    let armed = ARMED
        .get()
        .is_some_and(|a| a.iter().any(|(n, k)| n == name && k.as_slice() == key));
    if armed {
        tracing::error!(point = name, "fail point reached: crashing");
        std::process::abort();
    }
}
