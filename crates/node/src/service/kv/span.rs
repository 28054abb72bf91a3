//! Requests spanning tablets: `Scan`, `BatchGet` and `DeleteRange` over any number of
//! tablets. The node that takes the request splits it at the tablets' bounds and
//! sends each part on its way (served here, or forwarded to its tablet's master) as
//! a request of its own; reads take every part at the first part's read timestamp,
//! so the answer is one consistent snapshot. A `Write` batch across tablets stays
//! refused (CROSS_TABLET).

use super::{KvService, range};
use datalayer_api::v1 as pb;
use datalayer_cluster::TabletDesc;
use datalayer_cluster::catalog::Tablets;
use datalayer_cluster::strong::resume_key;
use datalayer_store::KeyRange;
use tonic::{Request, Status};

/// The tablets of `tablets` (a table's, by start key) that `range` overlaps.
pub(super) fn overlapping(tablets: &Tablets, range: &KeyRange) -> Vec<TabletDesc> {
    // How many tablets start before `key` (or at it, when `at` counts).
    let before =
        |key: &[u8], at: bool| match tablets.binary_search_by(|t| t.start.as_slice().cmp(key)) {
            Ok(i) => i + usize::from(at),
            Err(i) => i,
        };
    let first = before(&range.start, true).saturating_sub(1);
    let last = match &range.end {
        None => tablets.len(),
        Some(end) => before(end, false),
    };
    let last = last.max(first + 1).min(tablets.len());
    tablets
        .iter()
        .skip(first)
        .take(last - first)
        .cloned()
        .collect()
}

/// `range` cut to the tablet's own range: `(start, end)` with an empty end for the
/// end of the table.
fn clip(range: &KeyRange, tablet: &TabletDesc) -> (Vec<u8>, Vec<u8>) {
    let start = range.start.clone().max(tablet.start.clone());
    let end = match (&range.end, &tablet.end) {
        (None, None) => Vec::new(),
        (Some(e), None) | (None, Some(e)) => e.clone(),
        (Some(a), Some(b)) => a.clone().min(b.clone()),
    };
    (start, end)
}

/// Keeps a page under `budget` bytes of keys and values (at least one row).
pub(super) fn cut_to_budget(page: &mut pb::ScanResponse, budget: usize, reverse: bool) {
    let mut bytes = 0;
    if let Some(cut) = page.rows.iter().position(|kv| {
        bytes += kv.key.len() + kv.value.len();
        bytes > budget
    }) {
        let cut = cut.max(1);
        if cut < page.rows.len() {
            page.rows.truncate(cut);
            page.more = true;
            page.resume_key = resume_key(&page.rows[cut - 1].key, reverse);
        }
    }
}

fn is_follower(consistency: i32) -> bool {
    consistency == pb::ReadConsistency::Follower as i32
}

impl KvService {
    /// The tablets a request on `table` over `range` spans, when more than one (a
    /// table this node cannot find is answered by the single-tablet path).
    pub(super) async fn spanned(&self, table: &str, range: &KeyRange) -> Option<Vec<TabletDesc>> {
        let table = self.router.table_synced(table).await.ok()?;
        let tablets = overlapping(&table.tablets, range);
        (tablets.len() > 1).then_some(tablets)
    }

    /// One part of a spanning read; a follower read whose replica is behind the
    /// snapshot's timestamp is read at the master instead.
    async fn scan_part(&self, sub: pb::ScanRequest) -> Result<pb::ScanResponse, Status> {
        match self.scan_one(Request::new(sub.clone())).await {
            Ok(page) => Ok(page.into_inner()),
            Err(_) if is_follower(sub.consistency) && sub.at_timestamp != 0 => {
                let sub = pb::ScanRequest {
                    consistency: pb::ReadConsistency::Committed as i32,
                    ..sub
                };
                Ok(self.scan_one(Request::new(sub)).await?.into_inner())
            }
            Err(e) => Err(e),
        }
    }

    /// A scan over several tablets: their rows in key order (or reverse), one page
    /// of at most the request's limit, every tablet read at one timestamp.
    pub(super) async fn scan_across(
        &self,
        req: pb::ScanRequest,
        mut tablets: Vec<TabletDesc>,
    ) -> Result<pb::ScanResponse, Status> {
        let limit = self.limits.scan(&req).map_err(|e| super::to_status(&e))?;
        let range = range(req.start.clone(), req.end.clone());
        if req.reverse {
            tablets.reverse();
        }
        let mut out = pb::ScanResponse {
            read_timestamp: req.at_timestamp,
            ..Default::default()
        };
        for (i, tablet) in tablets.iter().enumerate() {
            let (start, end) = clip(&range, tablet);
            let sub = pb::ScanRequest {
                start,
                end,
                limit: (limit - out.rows.len()) as u32,
                at_timestamp: out.read_timestamp,
                ..req.clone()
            };
            let page = self.scan_part(sub).await?;
            out.read_timestamp = page.read_timestamp;
            out.staleness_ms = out.staleness_ms.max(page.staleness_ms);
            out.rows.extend(page.rows);
            if page.more {
                out.more = true;
                out.resume_key = page.resume_key;
                break;
            }
            if out.rows.len() >= limit && i + 1 < tablets.len() {
                out.more = true;
                out.resume_key = out
                    .rows
                    .last()
                    .map(|kv| resume_key(&kv.key, req.reverse))
                    .unwrap_or_default();
                break;
            }
        }
        cut_to_budget(&mut out, self.limits.scan_page_bytes(), req.reverse);
        Ok(out)
    }

    /// A batch of point reads over several tablets, every tablet read at one
    /// timestamp; results in the order of the keys asked for.
    pub(super) async fn batch_get_across(
        &self,
        req: pb::BatchGetRequest,
        tablets: &[TabletDesc],
    ) -> Result<pb::BatchGetResponse, Status> {
        self.limits
            .batch_get(&req)
            .map_err(|e| super::to_status(&e))?;
        // Key positions per tablet, tablets in key order.
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); tablets.len()];
        for (i, key) in req.keys.iter().enumerate() {
            let t = tablets
                .partition_point(|t| t.start.as_slice() <= key.as_slice())
                .saturating_sub(1);
            parts[t].push(i);
        }
        let mut results = vec![pb::BatchGetResult::default(); req.keys.len()];
        let mut out = pb::BatchGetResponse {
            read_timestamp: req.at_timestamp,
            ..Default::default()
        };
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let sub = pb::BatchGetRequest {
                keys: part.iter().map(|i| req.keys[*i].clone()).collect(),
                at_timestamp: out.read_timestamp,
                ..req.clone()
            };
            let answer = match self.batch_get_one(Request::new(sub.clone())).await {
                Ok(a) => a.into_inner(),
                Err(_) if is_follower(sub.consistency) && sub.at_timestamp != 0 => {
                    let sub = pb::BatchGetRequest {
                        consistency: pb::ReadConsistency::Committed as i32,
                        ..sub
                    };
                    self.batch_get_one(Request::new(sub)).await?.into_inner()
                }
                Err(e) => return Err(e),
            };
            out.read_timestamp = answer.read_timestamp;
            out.staleness_ms = out.staleness_ms.max(answer.staleness_ms);
            for (i, result) in part.into_iter().zip(answer.results) {
                results[i] = result;
            }
        }
        out.results = results;
        Ok(out)
    }

    /// A range deletion over several tablets: one deletion per tablet, each atomic in
    /// its tablet, in key order; not atomic across tablets (a failure part-way leaves
    /// the earlier tablets' parts done, and a retry with the same request id finishes
    /// the rest without deleting anything twice).
    pub(super) async fn delete_range_across(
        &self,
        req: pb::DeleteRangeRequest,
        tablets: &[TabletDesc],
    ) -> Result<pb::DeleteRangeResponse, Status> {
        let range = range(req.start.clone(), req.end.clone());
        let mut out = pb::DeleteRangeResponse::default();
        for tablet in tablets {
            let (start, end) = clip(&range, tablet);
            let sub = pb::DeleteRangeRequest {
                start,
                end,
                ..req.clone()
            };
            let part = self.delete_range_one(Request::new(sub)).await?.into_inner();
            out.deleted += part.deleted;
            out.version = out.version.max(part.version);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_store::{Epoch, NodeId, TableId, TabletId};

    fn tablets(bounds: &[&str]) -> Tablets {
        let mut starts = vec![Vec::new()];
        starts.extend(bounds.iter().map(|b| b.as_bytes().to_vec()));
        (0..starts.len())
            .map(|i| TabletDesc {
                id: TabletId(i as u64 + 1),
                table: TableId(1),
                start: starts[i].clone(),
                end: starts.get(i + 1).cloned(),
                generation: 1,
                replicas: vec![],
                in_sync: vec![],
                master: NodeId(1),
                master_epoch: Epoch(1),
                master_liveness: Default::default(),
                conf_version: 1,
                moving: None,
                split: None,
                merge: None,
                absorbed: None,
            })
            .collect()
    }

    fn ids(ts: Vec<TabletDesc>) -> Vec<u64> {
        ts.iter().map(|t| t.id.0).collect()
    }

    #[test]
    fn a_range_overlaps_exactly_the_tablets_it_touches() {
        let ts = tablets(&["g", "p"]);
        let r = |s: &str, e: Option<&str>| range(s.into(), e.unwrap_or("").into());
        assert_eq!(ids(overlapping(&ts, &r("", None))), [1, 2, 3]);
        assert_eq!(
            ids(overlapping(&ts, &r("a", Some("g")))),
            [1],
            "the end is exclusive"
        );
        assert_eq!(ids(overlapping(&ts, &r("a", Some("g\0")))), [1, 2]);
        assert_eq!(ids(overlapping(&ts, &r("g", Some("h")))), [2]);
        assert_eq!(ids(overlapping(&ts, &r("h", None))), [2, 3]);
        assert_eq!(ids(overlapping(&ts, &r("z", None))), [3]);
        assert_eq!(
            ids(overlapping(&ts, &r("x", Some("a")))),
            [3],
            "an empty range"
        );
    }

    #[test]
    fn each_part_is_the_range_inside_its_tablet() {
        let ts = tablets(&["g", "p"]);
        let r = range(b"c".to_vec(), b"r".to_vec());
        assert_eq!(clip(&r, &ts[0]), (b"c".to_vec(), b"g".to_vec()));
        assert_eq!(clip(&r, &ts[1]), (b"g".to_vec(), b"p".to_vec()));
        assert_eq!(clip(&r, &ts[2]), (b"p".to_vec(), b"r".to_vec()));
        let open = range(b"h".to_vec(), Vec::new());
        assert_eq!(clip(&open, &ts[2]), (b"p".to_vec(), Vec::new()));
    }
}
