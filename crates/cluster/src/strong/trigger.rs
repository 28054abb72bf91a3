//! Automatic splits (DESIGN §8), by size and by load, decided by each tablet's master.
//!
//! Every request a master serves is recorded in [`Loads`]: a count, the bytes it
//! wrote, and a reservoir sample of its keys. Once per `split_check_ms` the node
//! looks at the tablets that had requests since (never at idle ones, so an idle
//! node's cost does not grow with its tablets):
//!
//! - **Load**: a tablet over `split_load_ops` requests per second for
//!   `split_load_secs` splits at the sampled key that best balances the sampled
//!   requests on its two sides, as CockroachDB's load-based splitter does; when
//!   even the best key leaves less than [`MIN_SIDE_SHARE`] on one side (one hot key,
//!   or a few), it does not split: splitting cannot spread that load.
//! - **Size**: a tablet is measured (a scan of its live keys and values) once after
//!   it is mastered here and again each time it took an eighth of
//!   `split_size_bytes` in writes; past `split_size_bytes` it splits at its middle
//!   key by bytes.
//! - **Merges**: every `merge_check_secs` a node looks at the neighbours whose left
//!   one it masters: a pair that stayed under a quarter of `split_load_ops` over
//!   the interval and holds under a quarter of `split_size_bytes` together merges
//!   (one pair per look; a pair found too big is not measured again until it takes
//!   requests).

use super::ReadLevel;
use super::policy::StrongPolicy;
use super::types::{Config, WriteOp};
use crate::catalog::TabletDesc;
use crate::error::Result;
use datalayer_store::{KeyRange, TabletId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Keys sampled per tablet per load window (CockroachDB's splitter keeps 20).
pub const SAMPLE: usize = 32;
/// The smaller side of a load-based split carries at least this share of the
/// sampled requests, or the tablet does not split.
pub const MIN_SIDE_SHARE: f64 = 0.25;
/// Rows between two remembered keys of a size measurement.
const MEASURE_STRIDE: usize = 64;

/// One tablet's recent requests.
#[derive(Debug, Default)]
struct Load {
    /// Requests since the last look.
    ops: u64,
    /// Looks in a row that found the tablet over the load threshold.
    hot_looks: u64,
    /// Up to [`SAMPLE`] keys of this window's requests, uniformly sampled.
    sample: Vec<Vec<u8>>,
    /// Requests seen this window (for the reservoir).
    seen: u64,
    /// Bytes written since the last size measurement.
    written: u64,
    /// The reservoir's random state.
    rng: u64,
    /// Requests since the last look for merges.
    since_merge_look: u64,
}

impl Load {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: cheap, and good enough to pick reservoir slots.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn restart_window(&mut self) {
        self.hot_looks = 0;
        self.sample.clear();
        self.seen = 0;
    }
}

/// What one look at the loads decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Tablets to split by load, at these keys.
    pub by_load: Vec<(TabletId, Vec<u8>)>,
    /// Tablets over the load threshold whose load no key divides (a hot key).
    pub hot_keys: Vec<TabletId>,
    /// Tablets to measure for a split by size.
    pub measure: Vec<TabletId>,
}

/// The recent requests of the tablets this node masters.
#[derive(Debug, Default)]
pub struct Loads {
    loads: parking_lot::Mutex<HashMap<TabletId, Load>>,
    /// Tablets measured since they were mastered here.
    measured: parking_lot::Mutex<HashSet<TabletId>>,
}

impl Loads {
    /// Records a request to `tablet` at `key` that wrote `written` bytes.
    pub fn record(&self, tablet: TabletId, key: &[u8], written: u64) {
        let mut loads = self.loads.lock();
        let load = loads.entry(tablet).or_insert_with(|| Load {
            rng: tablet.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            ..Load::default()
        });
        load.ops += 1;
        load.since_merge_look += 1;
        load.written += written;
        load.seen += 1;
        if load.sample.len() < SAMPLE {
            load.sample.push(key.to_vec());
        } else {
            let slot = load.next_random() % load.seen;
            if let Some(s) = load.sample.get_mut(slot as usize) {
                *s = key.to_vec();
            }
        }
    }

    /// The requests of each tablet since the last call (tablets without any are
    /// left out), for the look for merges.
    pub fn take_merge_window(&self) -> HashMap<TabletId, u64> {
        let mut loads = self.loads.lock();
        loads
            .iter_mut()
            .filter(|(_, l)| l.since_merge_look > 0)
            .map(|(t, l)| (*t, std::mem::take(&mut l.since_merge_look)))
            .collect()
    }

    /// Forgets `tablet`'s recent requests (it split, or is no longer mastered here).
    pub fn forget(&self, tablet: TabletId) {
        self.loads.lock().remove(&tablet);
        self.measured.lock().remove(&tablet);
    }

    /// One look, `interval` after the last, at the tablets with requests since.
    /// `start_of` gives a tablet's start key (a split key must lie past it).
    pub fn look(
        &self,
        interval: Duration,
        config: &Config,
        start_of: impl Fn(TabletId) -> Option<Vec<u8>>,
    ) -> Decisions {
        let mut decisions = Decisions::default();
        let interval_ms = interval.as_millis().max(1) as u64;
        let window_looks = (config.split_load_secs * 1000).div_ceil(interval_ms).max(1);
        let measure_every = (config.split_size_bytes / 8).max(1);
        let mut loads = self.loads.lock();
        let mut measured = self.measured.lock();
        loads.retain(|tablet, load| {
            let per_sec = load.ops * 1000 / interval_ms;
            let busy = load.ops > 0;
            load.ops = 0;
            if config.split_load_ops > 0 && per_sec >= config.split_load_ops {
                load.hot_looks += 1;
            } else {
                load.restart_window();
            }
            if load.hot_looks >= window_looks {
                let start = start_of(*tablet).unwrap_or_default();
                match balanced_key(&mut load.sample, &start) {
                    Some(key) => decisions.by_load.push((*tablet, key)),
                    None => decisions.hot_keys.push(*tablet),
                }
                load.restart_window();
            }
            // Noted as seen either way, so a first busy look measures it once.
            let first = config.split_size_bytes > 0 && measured.insert(*tablet);
            if config.split_size_bytes > 0 && (first || load.written >= measure_every) {
                load.written = 0;
                decisions.measure.push(*tablet);
            }
            // A tablet idle since the last look leaves the map (writes short of a
            // measurement are forgotten) once the look for merges counted it: looks
            // cost what is busy, not what is held.
            busy || load.since_merge_look > 0
        });
        decisions
    }
}

/// The sampled key past `start` that best balances the sampled requests between the
/// keys below it and the rest; `None` when the best leaves less than
/// [`MIN_SIDE_SHARE`] of them on one side (one hot key, or too few samples).
pub fn balanced_key(sample: &mut [Vec<u8>], start: &[u8]) -> Option<Vec<u8>> {
    sample.sort();
    let n = sample.len();
    if n < SAMPLE / 2 {
        return None;
    }
    let mut best: Option<(usize, usize)> = None;
    for (left, key) in sample.iter().enumerate() {
        if key.as_slice() <= start || (left > 0 && sample[left - 1] == *key) {
            continue;
        }
        let right = n - left;
        if (left.min(right) as f64) < MIN_SIDE_SHARE * n as f64 {
            continue;
        }
        let imbalance = left.abs_diff(right);
        if best.is_none_or(|(b, _)| imbalance < b) {
            best = Some((imbalance, left));
        }
    }
    best.map(|(_, at)| sample[at].clone())
}

/// The key at which the bytes of `marks` (running totals of a tablet's rows, each
/// with the key of the row it was taken at) reach half of `total`.
pub fn middle_key(marks: &[(u64, Vec<u8>)], total: u64, start: &[u8]) -> Option<Vec<u8>> {
    marks
        .iter()
        .find(|(before, key)| *before >= total / 2 && key.as_slice() > start)
        .map(|(_, key)| key.clone())
}

/// The key and the bytes a write records in the loads.
pub fn load_of(op: &WriteOp) -> (&[u8], u64) {
    match op {
        WriteOp::Batch(mutations) => {
            let key = mutations.first().map(|m| m.key()).unwrap_or_default();
            let bytes = mutations
                .iter()
                .map(|m| match m {
                    datalayer_store::Mutation::Put { key, value } => key.len() + value.len(),
                    datalayer_store::Mutation::Delete { key } => key.len(),
                })
                .sum::<usize>();
            (key, bytes as u64)
        }
        WriteOp::DeleteRange(range) => (&range.start, 0),
        WriteOp::CompareAndSet { key, new, .. } => {
            (key, (key.len() + new.as_ref().map_or(0, Vec::len)) as u64)
        }
        WriteOp::Increment { key, .. } => (key, key.len() as u64 + 8),
    }
}

impl StrongPolicy {
    /// Starts the node's looks at the loads and sizes of the tablets it masters;
    /// they end when the policy is dropped.
    pub fn start_split_triggers(self: &Arc<Self>) {
        let config = self.tablets.config().clone();
        if config.split_load_ops == 0 && config.split_size_bytes == 0 {
            return;
        }
        let policy: Weak<StrongPolicy> = Arc::downgrade(self);
        let interval = Duration::from_millis(config.split_check_ms);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(policy) = policy.upgrade() else {
                    return;
                };
                let catalog = policy.catalog.clone();
                let d = policy
                    .loads
                    .look(interval, &config, |t| catalog.tablet(t).map(|t| t.start));
                for tablet in d.hot_keys {
                    tracing::debug!(%tablet, "hot, but on too few keys to split");
                }
                for (tablet, key) in d.by_load {
                    policy.split_automatically(tablet, Some(key), "load");
                }
                for tablet in d.measure {
                    policy.split_automatically(tablet, None, "size");
                }
            }
        });
    }

    /// Splits `tablet` in the background, at `key` or (for `None`) at its middle key
    /// once a measurement finds it past the size limit; one at a time per tablet.
    fn split_automatically(self: &Arc<Self>, tablet: TabletId, key: Option<Vec<u8>>, why: &str) {
        if !self.auto_splitting.lock().insert(tablet) {
            return;
        }
        let (policy, why) = (self.clone(), why.to_string());
        tokio::spawn(async move {
            if let Err(e) = policy.split_if_due(tablet, key, &why).await {
                tracing::warn!(%tablet, error = %e, why, "automatic split failed");
            }
            policy.auto_splitting.lock().remove(&tablet);
        });
    }

    async fn split_if_due(&self, id: TabletId, key: Option<Vec<u8>>, why: &str) -> Result<()> {
        let Some(tablet) = self.catalog.tablet(id) else {
            return Ok(());
        };
        let Some(table) = self.catalog.table_of(id) else {
            return Ok(());
        };
        if tablet.master != self.me || tablet.split.is_some() {
            return Ok(());
        }
        let key = match key {
            Some(k) => Some(k),
            None => self.measure(&table, &tablet).await?,
        };
        let inside = |k: &Vec<u8>| {
            k.as_slice() > tablet.start.as_slice() && tablet.end.as_ref().is_none_or(|end| k < end)
        };
        let Some(key) = key.filter(inside) else {
            return Ok(());
        };
        tracing::info!(tablet = %id, why, "splitting automatically");
        self.loads.forget(id);
        self.split(&table.name, key).await?;
        Ok(())
    }

    /// The middle key (by bytes of live keys and values) of `tablet` when it is past
    /// the size limit.
    async fn measure(
        &self,
        table: &crate::catalog::TableDesc,
        tablet: &TabletDesc,
    ) -> Result<Option<Vec<u8>>> {
        let limit = self.tablets.config().split_size_bytes;
        let mut marks = Vec::new();
        let total = self
            .live_bytes(table, tablet, u64::MAX, Some(&mut marks))
            .await?;
        if total < limit {
            return Ok(None);
        }
        Ok(middle_key(&marks, total, &tablet.start))
    }

    /// The bytes of live keys and values of `tablet` (read at its master, or from the
    /// replica here), counted until they reach `stop_at`; with `marks`, the running
    /// total and key every [`MEASURE_STRIDE`] rows.
    async fn live_bytes(
        &self,
        table: &crate::catalog::TableDesc,
        tablet: &TabletDesc,
        stop_at: u64,
        mut marks: Option<&mut Vec<(u64, Vec<u8>)>>,
    ) -> Result<u64> {
        let level = if tablet.master == self.me {
            ReadLevel::Committed
        } else {
            ReadLevel::Follower(Duration::from_secs(3600))
        };
        let mut range = KeyRange {
            start: tablet.start.clone(),
            end: tablet.end.clone(),
        };
        let (mut at, mut total, mut rows) = (None, 0u64, 0usize);
        loop {
            let page = self
                .tablets
                .scan(table, tablet.id, range.clone(), 1000, false, at, level)
                .await?;
            at = Some(page.read_ts);
            for (key, v) in &page.rows {
                if let Some(marks) = marks.as_deref_mut()
                    && rows % MEASURE_STRIDE == 0
                {
                    marks.push((total, key.clone()));
                }
                rows += 1;
                total += (key.len() + v.value.len()) as u64;
            }
            if !page.more || total >= stop_at {
                return Ok(total);
            }
            range.start = page.resume_key;
        }
    }

    /// Starts the node's looks for neighbours to merge (every `merge_check_secs`);
    /// they end when the policy is dropped.
    pub fn start_merge_looks(self: &Arc<Self>) {
        let config = self.tablets.config().clone();
        if config.merge_check_secs == 0 {
            return;
        }
        let policy: Weak<StrongPolicy> = Arc::downgrade(self);
        let interval = Duration::from_secs(config.merge_check_secs);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(policy) = policy.upgrade() else {
                    return;
                };
                let busy = policy.loads.take_merge_window();
                if let Err(e) = policy.look_for_merges(&busy, &config).await {
                    tracing::warn!(error = %e, "looking for tablets to merge failed");
                }
            }
        });
    }

    /// Merges (in the background) the first pair of neighbours whose left one is
    /// mastered here that stayed cold over the last window (each under a quarter of
    /// the load threshold) and are small together (under a quarter of the size
    /// limit): well below the split thresholds, so a range does not flap.
    async fn look_for_merges(
        self: &Arc<Self>,
        busy: &HashMap<TabletId, u64>,
        config: &Config,
    ) -> Result<()> {
        let defaults = Config::default();
        let load = match config.split_load_ops {
            0 => defaults.split_load_ops,
            n => n,
        };
        let size = match config.split_size_bytes {
            0 => defaults.split_size_bytes,
            n => n,
        };
        let (max_ops, max_bytes) = (load / 4 * config.merge_check_secs, size / 4);
        let cold = |t: &TabletDesc| busy.get(&t.id).copied().unwrap_or(0) < max_ops;
        let quiet = |t: &TabletDesc| t.split.is_none() && t.merge.is_none() && t.moving.is_none();
        let mut too_big = self.too_big_to_merge.lock().clone();
        too_big.retain(|t| !busy.contains_key(t));
        'tables: for table in self.catalog.table_map().values() {
            if !table.policy.on_strong_tablets() {
                continue;
            }
            for (l, r) in table.tablets.iter().zip(table.tablets.iter().skip(1)) {
                let candidate = l.master == self.me
                    && quiet(l)
                    && quiet(r)
                    && cold(l)
                    && cold(r)
                    && !too_big.contains(&l.id)
                    && !too_big.contains(&r.id);
                if !candidate || self.auto_splitting.lock().contains(&l.id) {
                    continue;
                }
                let left = self.live_bytes(table, l, max_bytes, None).await?;
                let both = left
                    + self
                        .live_bytes(table, r, max_bytes - left.min(max_bytes), None)
                        .await?;
                if both >= max_bytes {
                    too_big.insert(l.id);
                    continue;
                }
                self.merge_automatically(table.name.clone(), l.id, r.start.clone());
                break 'tables;
            }
        }
        *self.too_big_to_merge.lock() = too_big;
        Ok(())
    }

    fn merge_automatically(self: &Arc<Self>, table: String, left: TabletId, key: Vec<u8>) {
        if !self.auto_splitting.lock().insert(left) {
            return;
        }
        let policy = self.clone();
        tokio::spawn(async move {
            tracing::info!(tablet = %left, "merging small, cold neighbours");
            if let Err(e) = policy.merge(&table, key).await {
                tracing::warn!(tablet = %left, error = %e, "automatic merge failed");
            }
            policy.auto_splitting.lock().remove(&left);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            split_load_ops: 100,
            split_load_secs: 2,
            split_size_bytes: 0,
            ..Config::default()
        }
    }

    fn look(loads: &Loads) -> Decisions {
        loads.look(Duration::from_secs(1), &config(), |_| Some(Vec::new()))
    }

    #[test]
    fn a_skewed_load_splits_where_it_balances() {
        let loads = Loads::default();
        let t = TabletId(1);
        let mut decided = Vec::new();
        for _ in 0..3 {
            // 80% of the requests on keys a..e, the rest spread wide.
            for i in 0..400u32 {
                let key = match i % 10 {
                    0 | 1 => format!("z{i:04}"),
                    n => format!("{}{i:04}", (b'a' + (n as u8 % 5)) as char),
                };
                loads.record(t, key.as_bytes(), 10);
            }
            decided.push(look(&loads));
        }
        assert!(
            decided[0].by_load.is_empty(),
            "one hot second is not a window"
        );
        let (tablet, key) = decided[1].by_load.first().expect("split after the window");
        assert_eq!(*tablet, t);
        assert!(
            key.as_slice() > b"a".as_slice() && key.as_slice() < b"z".as_slice(),
            "{key:?}"
        );
    }

    #[test]
    fn an_even_or_idle_load_under_the_threshold_does_not_split() {
        let loads = Loads::default();
        for _ in 0..5 {
            for i in 0..50u32 {
                loads.record(TabletId(1), format!("k{i}").as_bytes(), 10);
            }
            assert_eq!(look(&loads), Decisions::default());
        }
        assert_eq!(
            loads.take_merge_window().get(&TabletId(1)),
            Some(&250),
            "the look for merges counts the requests since it last looked"
        );
        for _ in 0..5 {
            assert_eq!(look(&loads), Decisions::default());
        }
        assert!(loads.loads.lock().is_empty(), "idle tablets leave the map");
        assert!(loads.take_merge_window().is_empty());
    }

    #[test]
    fn a_single_hot_key_does_not_split() {
        let loads = Loads::default();
        let mut hot = Vec::new();
        for _ in 0..4 {
            for _ in 0..500 {
                loads.record(TabletId(1), b"hot", 10);
            }
            let d = look(&loads);
            assert!(d.by_load.is_empty());
            hot.extend(d.hot_keys);
        }
        assert_eq!(hot, vec![TabletId(1), TabletId(1)]);
    }

    #[test]
    fn the_balanced_key_lies_past_the_start_and_divides_the_sample() {
        let mut s: Vec<Vec<u8>> = (0..32u8).map(|i| vec![b'a' + i % 4]).collect();
        // Four keys equally loaded: the split is at the third ("c").
        assert_eq!(balanced_key(&mut s, b""), Some(b"c".to_vec()));
        assert_eq!(balanced_key(&mut s, b"c"), Some(b"d".to_vec()));
        assert_eq!(
            balanced_key(&mut s, b"d"),
            None,
            "past the start nothing balances"
        );
        let mut few: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec()];
        assert_eq!(balanced_key(&mut few, b""), None, "too few samples");
    }

    #[test]
    fn the_middle_key_halves_the_bytes() {
        let marks: Vec<(u64, Vec<u8>)> = (0..10u64)
            .map(|i| (i * 100, vec![b'a' + i as u8]))
            .collect();
        assert_eq!(middle_key(&marks, 1000, b""), Some(b"f".to_vec()));
        assert_eq!(middle_key(&marks, 1000, b"f"), Some(b"g".to_vec()));
    }

    #[test]
    fn a_tablet_is_measured_once_mastered_then_each_eighth_of_the_limit() {
        let loads = Loads::default();
        let config = Config {
            split_load_ops: 0,
            split_size_bytes: 800,
            ..Config::default()
        };
        let look = |l: &Loads| l.look(Duration::from_secs(1), &config, |_| None).measure;
        loads.record(TabletId(1), b"k", 10);
        assert_eq!(look(&loads), vec![TabletId(1)], "first seen");
        loads.record(TabletId(1), b"k", 50);
        assert!(look(&loads).is_empty());
        loads.record(TabletId(1), b"k", 60);
        assert_eq!(look(&loads), vec![TabletId(1)], "110 bytes ≥ 800 / 8");
    }
}
