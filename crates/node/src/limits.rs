//! The documented request limits, and the checks that enforce them before anything is
//! routed, so a refused request changes nothing.

use datalayer_api::v1 as pb;
use datalayer_cluster::Error;
use serde::{Deserialize, Serialize};

/// Limits on what one request may carry. Every breach is refused with
/// `INVALID_ARGUMENT` and a detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest key, in bytes. Default 4096. Keys must also be non-empty.
    pub max_key_bytes: usize,
    /// Longest value, in bytes. Default 1048576 (1 MiB).
    pub max_value_bytes: usize,
    /// Most mutations in one Write, and keys in one BatchGet. Default 1000.
    pub max_batch_mutations: usize,
    /// Most key and value bytes in one Write, summed. Default 4194304 (4 MiB).
    pub max_batch_bytes: usize,
    /// Largest gRPC message the node accepts or sends, in bytes. Default 8388608 (8 MiB).
    pub max_message_bytes: usize,
    /// Most rows in one Scan page. Default 10000 (a page also stops near
    /// `max_message_bytes / 2` of data).
    pub max_scan_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_batch_mutations: 1000,
            max_batch_bytes: 4 << 20,
            max_message_bytes: 8 << 20,
            max_scan_limit: 10_000,
        }
    }
}

/// Rows of a scan page when the request gives no limit.
pub const DEFAULT_SCAN_LIMIT: usize = 1000;

type Result<T> = std::result::Result<T, Error>;

/// Names the field a check failed on, formatting the name only then (requests check
/// every mutation of a batch).
fn at(field: impl FnOnce() -> String, checked: Result<()>) -> Result<()> {
    checked.map_err(|e| match e {
        Error::InvalidArgument { message, .. } => Error::invalid(field(), message),
        other => other,
    })
}

impl Limits {
    /// Checks the limits themselves.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            ("limits.max_key_bytes", self.max_key_bytes),
            ("limits.max_value_bytes", self.max_value_bytes),
            ("limits.max_batch_mutations", self.max_batch_mutations),
            ("limits.max_batch_bytes", self.max_batch_bytes),
            ("limits.max_scan_limit", self.max_scan_limit),
        ];
        for (field, v) in checks {
            if v == 0 {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        if self.max_message_bytes < self.max_batch_bytes + 4096 {
            return Err(Error::invalid(
                "limits.max_message_bytes",
                "must exceed max_batch_bytes by at least 4096",
            ));
        }
        Ok(())
    }

    /// The limits as the API reports them.
    pub fn to_proto(&self) -> pb::Limits {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        pb::Limits {
            max_key_bytes: n(self.max_key_bytes),
            max_value_bytes: n(self.max_value_bytes),
            max_batch_mutations: n(self.max_batch_mutations),
            max_batch_bytes: n(self.max_batch_bytes),
            max_message_bytes: n(self.max_message_bytes),
            max_scan_limit: n(self.max_scan_limit),
            max_table_name_chars: n(datalayer_cluster::catalog::MAX_TABLE_NAME_CHARS),
        }
    }

    /// A key: non-empty and at most `max_key_bytes`.
    pub fn key(&self, field: &str, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid(field, "key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "key is {} bytes; the limit is {}",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A range bound: empty (open) or a valid key.
    pub fn bound(&self, field: &str, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            Ok(())
        } else {
            self.key(field, key)
        }
    }

    /// A value: at most `max_value_bytes`.
    pub fn value(&self, field: &str, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::invalid(
                field,
                format!(
                    "value is {} bytes; the limit is {}",
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A table name is checked by the catalog; here only that one is given.
    pub fn table(&self, table: &str) -> Result<()> {
        if table.is_empty() {
            return Err(Error::invalid("table", "table name is required"));
        }
        Ok(())
    }

    /// A Write request, whole.
    pub fn write(&self, req: &pb::WriteRequest) -> Result<()> {
        self.table(&req.table)?;
        if req.mutations.is_empty() {
            return Err(Error::invalid(
                "mutations",
                "a write needs at least one mutation",
            ));
        }
        if req.mutations.len() > self.max_batch_mutations {
            return Err(Error::invalid(
                "mutations",
                format!(
                    "{} mutations; the limit is {}",
                    req.mutations.len(),
                    self.max_batch_mutations
                ),
            ));
        }
        let mut bytes = 0usize;
        for (i, m) in req.mutations.iter().enumerate() {
            at(|| format!("mutations[{i}].key"), self.key("", &m.key))?;
            match pb::MutationOp::try_from(m.op) {
                Ok(pb::MutationOp::Put) => {
                    at(|| format!("mutations[{i}].value"), self.value("", &m.value))?
                }
                Ok(pb::MutationOp::Delete) if m.value.is_empty() => {}
                Ok(pb::MutationOp::Delete) => {
                    return Err(Error::invalid(
                        format!("mutations[{i}].value"),
                        "a delete carries no value",
                    ));
                }
                _ => {
                    return Err(Error::invalid(
                        format!("mutations[{i}].op"),
                        "op must be MUTATION_OP_PUT or MUTATION_OP_DELETE",
                    ));
                }
            }
            bytes += m.key.len() + m.value.len();
        }
        if bytes > self.max_batch_bytes {
            return Err(Error::invalid(
                "mutations",
                format!(
                    "batch carries {bytes} bytes; the limit is {}",
                    self.max_batch_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A BatchGet request.
    pub fn batch_get(&self, req: &pb::BatchGetRequest) -> Result<()> {
        self.table(&req.table)?;
        if req.keys.is_empty() || req.keys.len() > self.max_batch_mutations {
            return Err(Error::invalid(
                "keys",
                format!(
                    "between 1 and {} keys per request",
                    self.max_batch_mutations
                ),
            ));
        }
        for (i, k) in req.keys.iter().enumerate() {
            at(|| format!("keys[{i}]"), self.key("", k))?;
        }
        Ok(())
    }

    /// A Scan request; returns the page size to use.
    pub fn scan(&self, req: &pb::ScanRequest) -> Result<usize> {
        self.table(&req.table)?;
        self.bound("start", &req.start)?;
        self.bound("end", &req.end)?;
        let limit = match req.limit as usize {
            0 => DEFAULT_SCAN_LIMIT.min(self.max_scan_limit),
            n if n > self.max_scan_limit => {
                return Err(Error::invalid(
                    "limit",
                    format!(
                        "limit {n} is above the maximum page of {}",
                        self.max_scan_limit
                    ),
                ));
            }
            n => n,
        };
        Ok(limit)
    }

    /// Bytes of row data one scan page may carry.
    pub fn scan_page_bytes(&self) -> usize {
        self.max_message_bytes / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(mutations: Vec<pb::Mutation>) -> pb::WriteRequest {
        pb::WriteRequest {
            table: "t".into(),
            mutations,
            ..Default::default()
        }
    }

    fn put(key: Vec<u8>, value: Vec<u8>) -> pb::Mutation {
        pb::Mutation {
            op: pb::MutationOp::Put as i32,
            key,
            value,
        }
    }

    #[test]
    fn defaults_are_consistent() {
        Limits::default().validate().expect("defaults validate");
    }

    #[test]
    fn boundaries_are_inclusive() {
        let l = Limits::default();
        assert!(
            l.write(&write(vec![put(vec![1; 4096], vec![2; 1 << 20])]))
                .is_ok()
        );
        assert!(l.write(&write(vec![put(vec![1; 4097], vec![])])).is_err());
        assert!(
            l.write(&write(vec![put(vec![1], vec![2; (1 << 20) + 1])]))
                .is_err()
        );
        assert!(
            l.write(&write(vec![put(vec![], vec![])])).is_err(),
            "empty key"
        );
        assert!(l.write(&write(vec![])).is_err(), "empty batch");
        let many = (0..1001u32)
            .map(|i| put(i.to_be_bytes().to_vec(), vec![]))
            .collect();
        assert!(l.write(&write(many)).is_err());
        let heavy = (0..5u8).map(|i| put(vec![i], vec![0; 1 << 20])).collect();
        let err = l.write(&write(heavy)).expect_err("5 MiB batch");
        assert_eq!(err.field(), Some("mutations"));
    }

    #[test]
    fn bad_ops_name_the_field() {
        let l = Limits::default();
        let bad = pb::Mutation {
            op: 0,
            key: b"k".to_vec(),
            value: vec![],
        };
        let err = l
            .write(&write(vec![put(b"a".to_vec(), vec![]), bad]))
            .expect_err("op 0");
        assert_eq!(err.field(), Some("mutations[1].op"));
        let del = pb::Mutation {
            op: pb::MutationOp::Delete as i32,
            key: b"k".to_vec(),
            value: b"x".to_vec(),
        };
        assert!(l.write(&write(vec![del])).is_err());
    }

    proptest! {
        /// A write is accepted exactly when every part is inside the limits.
        #[test]
        fn write_accepted_iff_within_limits(
            sizes in prop::collection::vec((0usize..40, 0usize..40, 0i32..4), 0..12),
        ) {
            let l = Limits { max_key_bytes: 16, max_value_bytes: 24, max_batch_mutations: 8, max_batch_bytes: 200, ..Limits::default() };
            let muts: Vec<pb::Mutation> = sizes.iter().map(|&(k, v, op)| pb::Mutation {
                op, key: vec![b'k'; k], value: if op == 2 { vec![] } else { vec![b'v'; v] },
            }).collect();
            let total: usize = muts.iter().map(|m| m.key.len() + m.value.len()).sum();
            let ok = !muts.is_empty()
                && muts.len() <= 8
                && total <= 200
                && muts.iter().all(|m| !m.key.is_empty() && m.key.len() <= 16 && m.value.len() <= 24 && (m.op == 1 || m.op == 2));
            prop_assert_eq!(l.write(&write(muts)).is_ok(), ok);
        }
    }
}
