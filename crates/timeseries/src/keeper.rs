//! The time-series keeper: on each node, for the tablets of `timeseries` tables it
//! masters, it compacts and it applies retention, with ordinary strong writes (so
//! its work is replicated and survives failover like any write).
//!
//! - **Compaction.** A write stores one chunk per series per request (Prometheus's
//!   remote write sends a sample or a few per series each time). Once a two-hour
//!   window ([`WINDOW_MS`]) lies wholly before the node's clock less a minute, the
//!   chunks of a series that lie wholly in it are merged into one Gorilla block:
//!   one write puts the block and deletes the chunks it replaces. A sample that
//!   arrives late (within the out-of-order window) makes a new chunk, merged on a
//!   later pass. The block's nonce is the newest of its inputs', so the rule "the
//!   larger nonce's value stands" is kept. The current week and the two before it
//!   are compacted.
//! - **Rollups.** With `rollup_retention_weeks`, a week past raw retention is
//!   summed up per series into five-minute buckets ([`crate::rollup`]): rollup rows
//!   written first, then the chunks deleted; the series and index rows stay.
//! - **Retention.** The rows of weeks before a table's first kept week (the
//!   rollups' when it has them) are deleted, a batch of keys at a time.
//!
//! - **Hot weeks.** A tablet of the current week whose master appended more than
//!   the node's `hot_writes_per_sec` records a second since the last pass is split
//!   in two at the middle of the series ids it holds of the week's chunks (the
//!   first split cuts a whole week's chunks in halves, the next ones in quarters,
//!   ...), as an ordinary split recorded in the metadata. Series ids are xxh3
//!   hashes, so the halves take even shares of the series; a query fans out over
//!   the tablets the week's range covers and merges them. A series' samples stay in
//!   one sub-range, so a query of one series reads one tablet (hashing the
//!   timestamp instead, as the seed suggests, spreads even one hot series, but makes
//!   every query of any series read every sub-range; Prometheus's series are many and
//!   each is written once per scrape, so the series id spreads the load as well).
//!
//! A pass skips a tablet whose log has not moved since its last pass. Compaction
//! reads a tablet's recent weeks whole, so it runs when a window has closed since
//! the tablet's last compaction, and otherwise every 30 passes (for the chunks late
//! samples make), not on every pass.

use crate::keys;
use crate::labels::SeriesId;
use crate::options::TsOptions;
use crate::policy::{TimeseriesPolicy, now_ms};
use crate::week::Week;
use datalayer_cluster::catalog::{Catalog, TableDesc, TabletDesc};
use datalayer_cluster::error::Result;
use datalayer_cluster::policy::PolicyKind;
use datalayer_cluster::strong::Acks;
use datalayer_store::{KeyRange, Mutation, TabletId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Compaction windows: two hours, as Prometheus's head blocks.
pub const WINDOW_MS: i64 = 2 * 3_600_000;
/// A window is closed this long after its end.
const CLOSE_AFTER_MS: i64 = 60_000;
/// Keys deleted per write when a week is dropped.
const DELETE_BATCH: usize = 5000;
/// Rows one compaction write carries at most (blocks and deletes).
const COMPACT_BATCH: usize = 20_000;
/// Rows one pass reads per tablet piece at most.
const MAX_SCAN: usize = 8_000_000;

/// A tablet's log end at the keeper's last pass over it, when, and the table's
/// first raw week and first rollup week then.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    log_end: u64,
    at: Instant,
    first_kept: (Option<Week>, Option<Week>),
    /// When the tablet was last compacted, and the edge of the closed windows then.
    compacted: Option<(Instant, i64)>,
}

/// How many keeper intervals pass between two compactions of a tablet while no
/// window closes (to merge the chunks late samples made).
const LATE_PASSES: u32 = 30;

/// The series-id bound a key of a week's chunk range stands for (the chunk range's
/// end is 2^64).
fn id_bound(week: Week, key: &[u8]) -> u128 {
    let (start, end) = keys::chunk_range(week);
    if key <= start.as_slice() {
        return 0;
    }
    if key >= end.as_slice() {
        return 1 << 64;
    }
    let mut id = [0u8; 8];
    for (i, b) in key[start.len()..].iter().take(8).enumerate() {
        id[i] = *b;
    }
    u128::from(u64::from_be_bytes(id))
}

/// Where a hot tablet splits: at the middle of the series ids it holds of `week`'s
/// chunks; `None` when it holds none of them, or too few ids to halve.
pub fn hot_split_key(
    week: Week,
    tablet_start: &[u8],
    tablet_end: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let (start, end) = keys::chunk_range(week);
    let holds = tablet_start < end.as_slice() && tablet_end.is_none_or(|e| e > start.as_slice());
    if !holds {
        return None;
    }
    let lo = id_bound(week, tablet_start);
    let hi = tablet_end.map_or(1 << 64, |e| id_bound(week, e));
    let mid = (lo + hi) / 2;
    if mid <= lo || mid >= hi {
        return None;
    }
    let key = keys::chunk_prefix(week, SeriesId(mid as u64));
    (key.as_slice() > tablet_start).then_some(key)
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Chunks merged into blocks.
    pub chunks_merged: usize,
    /// Blocks written.
    pub blocks_written: usize,
    /// Rows deleted by retention.
    pub rows_dropped: usize,
    /// Series-weeks summed up into rollups.
    pub series_rolled: usize,
    /// Hot tablets split.
    pub hot_splits: usize,
}

/// The window (its start) holding `t`.
pub fn window_of(t: i64) -> i64 {
    t.div_euclid(WINDOW_MS) * WINDOW_MS
}

/// The part of `[start, end)` inside `tablet`.
fn clip(tablet: &TabletDesc, start: Vec<u8>, end: Vec<u8>) -> Option<KeyRange> {
    let start = start.max(tablet.start.clone());
    let end = match &tablet.end {
        Some(e) => end.min(e.clone()),
        None => end,
    };
    (start < end).then_some(KeyRange {
        start,
        end: Some(end),
    })
}

/// One chunk as compaction sees it.
struct Chunk {
    key: Vec<u8>,
    nonce: u64,
    samples: Vec<(i64, f64)>,
}

/// The writes that merge `chunks` (one series' chunks in one week): blocks of the
/// closed windows holding two chunks or more, and the deletes of those chunks.
fn merge_series(
    week: Week,
    id: SeriesId,
    chunks: Vec<Chunk>,
    closed_before: i64,
) -> (Vec<Mutation>, usize, usize) {
    // Window → chunks lying wholly in it.
    let mut windows: BTreeMap<i64, Vec<Chunk>> = BTreeMap::new();
    for c in chunks {
        let (Some(first), Some(last)) = (c.samples.first(), c.samples.last()) else {
            continue;
        };
        let w = window_of(first.0);
        if window_of(last.0) == w && w + WINDOW_MS <= closed_before {
            windows.entry(w).or_default().push(c);
        }
    }
    let mut rows = Vec::new();
    let (mut merged, mut blocks) = (0, 0);
    for (_, group) in windows {
        if group.len() < 2 {
            continue;
        }
        let nonce = group.iter().map(|c| c.nonce).max().unwrap_or(0);
        let mut samples: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
        for c in &group {
            for &(t, v) in &c.samples {
                match samples.get(&t) {
                    Some((n, _)) if *n > c.nonce => {}
                    _ => {
                        samples.insert(t, (c.nonce, v));
                    }
                }
            }
        }
        let mut encoder = crate::gorilla::Encoder::new();
        for (t, (_, v)) in &samples {
            if encoder.append(*t, *v).is_err() {
                return (Vec::new(), 0, 0); // cannot happen: times are sorted and distinct
            }
        }
        let first = *samples.keys().next().expect("a window has samples");
        let key = keys::chunk_key(week, id, first, nonce);
        for c in &group {
            if c.key != key {
                rows.push(Mutation::Delete { key: c.key.clone() });
            }
        }
        rows.push(Mutation::Put {
            key,
            value: encoder.bytes(),
        });
        merged += group.len();
        blocks += 1;
    }
    (rows, merged, blocks)
}

impl TimeseriesPolicy {
    /// Runs the keeper every `every` until `shutdown`.
    pub fn start_keeper(
        self: &Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let policy = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen: HashMap<TabletId, Seen> = HashMap::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(policy) = policy.upgrade() else {
                    return;
                };
                if let Err(e) = policy.keep(&mut seen, every * LATE_PASSES).await {
                    tracing::warn!(error = %e, "time-series keeper pass failed");
                }
            }
        });
    }

    /// One keeper pass over the tablets this node masters; `seen` holds each
    /// tablet's log end at its last pass, and when; a tablet is compacted when a
    /// window closed since its last compaction or `late_every` has passed.
    pub async fn keep(
        &self,
        seen: &mut HashMap<TabletId, Seen>,
        late_every: Duration,
    ) -> Result<Pass> {
        let strong = self.layered().strong().clone();
        let me = strong.node();
        let mut pass = Pass::default();
        let tables = strong.catalog().tables();
        // Every node forgets the series it knew of weeks past retention, and of
        // tables gone.
        let now = now_ms();
        let first_kept: HashMap<datalayer_store::TableId, Option<Week>> = tables
            .iter()
            .filter(|t| t.policy == PolicyKind::Timeseries)
            .map(|t| {
                let kept = TsOptions::of(&t.options)
                    .ok()
                    .and_then(|o| o.first_rollup_week(now));
                (t.id, kept)
            })
            .collect();
        self.forget_weeks(|table, week| match first_kept.get(&table) {
            None => false,
            Some(kept) => kept.is_none_or(|k| week >= k),
        });
        for table in tables.iter().filter(|t| t.policy == PolicyKind::Timeseries) {
            let options = TsOptions::of(&table.options)?;
            let first_kept = (
                options.first_kept_week(now_ms()),
                options.first_rollup_week(now_ms()),
            );
            for tablet in table.tablets.iter().filter(|t| t.master == me) {
                let log_end = strong
                    .tablets()
                    .progress(tablet.id)
                    .map_or(0, |p| p.log_end.0);
                let now = Instant::now();
                let last = seen.get(&tablet.id).copied();
                // A tablet whose log has not moved is skipped, unless a week has
                // passed out of a retention (raw or rollups') since.
                if last.is_some_and(|l| l.log_end == log_end && l.first_kept == first_kept) {
                    continue;
                }
                if let Some(last) = last {
                    let secs = now.duration_since(last.at).as_secs_f64().max(0.001);
                    let rate = (log_end.saturating_sub(last.log_end)) as f64 / secs;
                    let hot =
                        self.hot_writes_per_sec() > 0 && rate > self.hot_writes_per_sec() as f64;
                    if hot && let Some(key) = self.split_hot(table, tablet).await? {
                        pass.hot_splits += 1;
                        tracing::info!(table = %table.name, tablet = %tablet.id, rate, key = ?key, "hot week split by series id");
                        seen.remove(&tablet.id);
                        continue;
                    }
                }
                let edge = window_of(now_ms() - CLOSE_AFTER_MS);
                let compact = match last.and_then(|l| l.compacted) {
                    None => true,
                    Some((at, e)) => e != edge || now.duration_since(at) >= late_every,
                };
                // Weeks past raw retention take no writes: they are rolled up when
                // the retention moves (or on the first pass).
                let roll = last.is_none_or(|l| l.first_kept != first_kept);
                let done = self
                    .keep_tablet(table, tablet, &options, compact, roll)
                    .await?;
                pass.chunks_merged += done.chunks_merged;
                pass.blocks_written += done.blocks_written;
                pass.rows_dropped += done.rows_dropped;
                pass.series_rolled += done.series_rolled;
                let log_end = strong
                    .tablets()
                    .progress(tablet.id)
                    .map_or(0, |p| p.log_end.0);
                seen.insert(
                    tablet.id,
                    Seen {
                        log_end,
                        at: now,
                        first_kept,
                        compacted: if compact {
                            Some((now, edge))
                        } else {
                            last.and_then(|l| l.compacted)
                        },
                    },
                );
            }
        }
        Ok(pass)
    }

    /// Splits a hot tablet of the current week (see the module's doc); the key it
    /// split at.
    async fn split_hot(&self, table: &TableDesc, tablet: &TabletDesc) -> Result<Option<Vec<u8>>> {
        if tablet.split.is_some() || tablet.merge.is_some() || tablet.moving.is_some() {
            return Ok(None);
        }
        let Some(key) = hot_split_key(Week::of(now_ms()), &tablet.start, tablet.end.as_deref())
        else {
            return Ok(None);
        };
        self.layered()
            .strong()
            .split(&table.name, key.clone())
            .await?;
        Ok(Some(key))
    }

    async fn keep_tablet(
        &self,
        table: &TableDesc,
        tablet: &TabletDesc,
        options: &TsOptions,
        compact: bool,
        roll: bool,
    ) -> Result<Pass> {
        let now = now_ms();
        let mut pass = Pass::default();
        if let Some(first) = options.first_rollup_week(now) {
            pass.rows_dropped += self.drop_before(table, tablet, first).await?;
        }
        if let (Some(first), Some(kept)) =
            (options.first_rollup_week(now), options.first_kept_week(now))
            && options.rollup_retention_weeks > 0
            && roll
        {
            // The weeks past raw retention this tablet holds part of.
            let from = keys::week_of_key(&tablet.start).map_or(first, |w| w.max(first));
            let to = tablet
                .end
                .as_deref()
                .and_then(keys::week_of_key)
                .map_or(kept, |w| Week(w.0 + 1).min(kept));
            let mut week = from;
            while week < to {
                pass.series_rolled += self.roll_up(table, tablet, week).await?;
                week = week.next();
            }
        }
        if !compact {
            return Ok(pass);
        }
        let this = Week::of(now);
        for week in [Week(this.0 - 2), Week(this.0 - 1), this] {
            if options.first_kept_week(now).is_some_and(|k| week < k) {
                continue;
            }
            let (start, end) = keys::chunk_range(week);
            let Some(range) = clip(tablet, start, end) else {
                continue;
            };
            let (merged, blocks) = self
                .compact(table, week, range, now - CLOSE_AFTER_MS)
                .await?;
            pass.chunks_merged += merged;
            pass.blocks_written += blocks;
        }
        Ok(pass)
    }

    /// Merges the chunks of closed windows in `range` (chunks of `week`).
    async fn compact(
        &self,
        table: &TableDesc,
        week: Week,
        range: KeyRange,
        closed_before: i64,
    ) -> Result<(usize, usize)> {
        let rows = self.layered().scan(&table.name, range, MAX_SCAN).await?;
        let mut by_series: BTreeMap<SeriesId, Vec<Chunk>> = BTreeMap::new();
        for (key, value) in rows {
            let Some((_, id, _, nonce)) = keys::parse_chunk_key(&key) else {
                continue;
            };
            let Ok(samples) = crate::gorilla::decode(&value) else {
                tracing::warn!(table = %table.name, ?key, "a chunk does not decode; left as it is");
                continue;
            };
            by_series.entry(id).or_default().push(Chunk {
                key,
                nonce,
                samples,
            });
        }
        let (mut merged, mut blocks) = (0, 0);
        let mut batch: Vec<Mutation> = Vec::new();
        for (id, chunks) in by_series {
            if chunks.len() < 2 {
                continue;
            }
            let (rows, m, b) = merge_series(week, id, chunks, closed_before);
            merged += m;
            blocks += b;
            batch.extend(rows);
            if batch.len() >= COMPACT_BATCH {
                self.write_merged(&table.name, std::mem::take(&mut batch))
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.write_merged(&table.name, batch).await?;
        }
        Ok((merged, blocks))
    }

    /// Writes blocks, then deletes the chunks they replace: a series' chunks may
    /// straddle two tablets, and a crash between the two writes leaves samples
    /// twice (read once), never a delete without its block.
    async fn write_merged(&self, table: &str, rows: Vec<Mutation>) -> Result<()> {
        let (puts, deletes): (Vec<Mutation>, Vec<Mutation>) = rows
            .into_iter()
            .partition(|m| matches!(m, Mutation::Put { .. }));
        self.write_rows(table, puts, Acks::All).await?;
        self.write_rows(table, deletes, Acks::All).await
    }

    /// Sums the raw samples of `week` in `tablet` up into rollups and deletes them
    /// (rollups first). Chunks newer than a series' rollups (by nonce) are added to
    /// them; older ones were summed up already (a pass cut short) and are only
    /// deleted. The number of series summed up.
    async fn roll_up(&self, table: &TableDesc, tablet: &TabletDesc, week: Week) -> Result<usize> {
        let (start, end) = keys::chunk_range(week);
        let Some(range) = clip(tablet, start, end) else {
            return Ok(0);
        };
        let (lo, hi) = (
            id_bound(week, &range.start),
            range.end.as_deref().map_or(1 << 64, |e| id_bound(week, e)),
        );
        let chunks = self.layered().scan(&table.name, range, MAX_SCAN).await?;
        if chunks.is_empty() {
            return Ok(0);
        }
        let mut by_series: BTreeMap<SeriesId, Vec<Chunk>> = BTreeMap::new();
        for (key, value) in chunks {
            let Some((_, id, _, nonce)) = keys::parse_chunk_key(&key) else {
                continue;
            };
            let samples = match crate::gorilla::decode(&value) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(table = %table.name, ?key, error = %e, "a chunk does not decode; dropped with its week");
                    Vec::new()
                }
            };
            by_series.entry(id).or_default().push(Chunk {
                key,
                nonce,
                samples,
            });
        }
        // The series' rollups so far (in whichever tablet holds the week's rollups).
        let (rstart, rend) = keys::rollup_range(week);
        let rstart = if lo == 0 {
            rstart
        } else {
            keys::rollup_prefix(week, SeriesId(lo as u64))
        };
        let rend = if hi >= 1 << 64 {
            rend
        } else {
            keys::rollup_prefix(week, SeriesId(hi as u64))
        };
        let held = self
            .layered()
            .scan(
                &table.name,
                KeyRange {
                    start: rstart,
                    end: Some(rend),
                },
                MAX_SCAN,
            )
            .await?;
        let mut rolled: HashMap<SeriesId, (u64, BTreeMap<i64, Vec<crate::rollup::Bucket>>)> =
            HashMap::new();
        for (key, value) in held {
            let Some((_, id, window)) = keys::parse_rollup_key(&key) else {
                continue;
            };
            let Ok((nonce, buckets)) = crate::rollup::decode(&value) else {
                tracing::warn!(table = %table.name, ?key, "a rollup row does not decode; rewritten");
                continue;
            };
            let entry = rolled.entry(id).or_default();
            entry.0 = entry.0.max(nonce);
            entry.1.insert(window, buckets);
        }
        let mut batch: Vec<Mutation> = Vec::new();
        let series = by_series.len();
        for (id, chunks) in by_series {
            let (done, mut windows) = rolled.remove(&id).unwrap_or_default();
            // The samples not summed up yet: a timestamp written twice keeps the
            // larger nonce's value.
            let mut fresh: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
            let mut nonce = done;
            for c in &chunks {
                batch.push(Mutation::Delete { key: c.key.clone() });
                if c.nonce <= done {
                    continue;
                }
                nonce = nonce.max(c.nonce);
                for &(t, v) in &c.samples {
                    match fresh.get(&t) {
                        Some((n, _)) if *n > c.nonce => {}
                        _ => {
                            fresh.insert(t, (c.nonce, v));
                        }
                    }
                }
            }
            let fresh: Vec<(i64, f64)> = fresh.into_iter().map(|(t, (_, v))| (t, v)).collect();
            for (window, buckets) in crate::rollup::roll(&fresh) {
                crate::rollup::combine(windows.entry(window).or_default(), &buckets);
            }
            for (window, buckets) in windows {
                batch.push(Mutation::Put {
                    key: keys::rollup_key(week, id, window),
                    value: crate::rollup::encode(nonce, &buckets),
                });
            }
            if batch.len() >= COMPACT_BATCH {
                self.write_merged(&table.name, std::mem::take(&mut batch))
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.write_merged(&table.name, batch).await?;
        }
        tracing::info!(table = %table.name, tablet = %tablet.id, week = %week.iso(), series, "rolled up a week past raw retention");
        Ok(series)
    }

    /// Deletes the rows of the weeks before `first_kept` in `tablet`.
    async fn drop_before(
        &self,
        table: &TableDesc,
        tablet: &TabletDesc,
        first_kept: Week,
    ) -> Result<usize> {
        let Some(range) = clip(tablet, vec![b'w'], keys::week_start(first_kept)) else {
            return Ok(0);
        };
        let mut dropped = 0;
        loop {
            let rows = self
                .layered()
                .scan(&table.name, range.clone(), usize::MAX)
                .await?;
            if rows.is_empty() {
                return Ok(dropped);
            }
            for chunk in rows.chunks(DELETE_BATCH) {
                let deletes = chunk
                    .iter()
                    .map(|(key, _)| Mutation::Delete { key: key.clone() })
                    .collect();
                self.write_rows(&table.name, deletes, Acks::All).await?;
                dropped += chunk.len();
            }
            tracing::info!(table = %table.name, tablet = %tablet.id, rows = dropped, before = %first_kept.iso(), "dropped weeks past retention");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_weeks_split_in_halves_then_quarters_of_the_series_ids() {
        let week = Week(2900);
        let half = keys::chunk_prefix(week, SeriesId(1 << 63));
        assert_eq!(hot_split_key(week, b"", None), Some(half.clone()));
        assert_eq!(
            hot_split_key(week, b"", Some(&half)),
            Some(keys::chunk_prefix(week, SeriesId(1 << 62)))
        );
        assert_eq!(
            hot_split_key(week, &half, None),
            Some(keys::chunk_prefix(week, SeriesId(3 << 62)))
        );
        // A tablet of another week holds none of this week's chunks.
        assert_eq!(
            hot_split_key(week, &keys::week_start(Week(2901)), None),
            None
        );
        // One id wide: nothing to halve.
        let (five, six) = (
            keys::chunk_prefix(week, SeriesId(5)),
            keys::chunk_prefix(week, SeriesId(6)),
        );
        assert_eq!(hot_split_key(week, &five, Some(&six)), None);
    }

    fn chunk(week: Week, id: SeriesId, nonce: u64, samples: &[(i64, f64)]) -> Chunk {
        Chunk {
            key: keys::chunk_key(week, id, samples[0].0, nonce),
            nonce,
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn closed_windows_merge_into_one_block_and_the_newest_value_stands() {
        let week = Week(2900);
        let base = week.start_ms();
        let id = SeriesId(7);
        let chunks = vec![
            chunk(week, id, 1, &[(base, 1.0)]),
            chunk(week, id, 3, &[(base + 15_000, 2.0)]),
            // Written twice: the later (larger nonce) value stands.
            chunk(week, id, 2, &[(base + 15_000, 9.0), (base + 30_000, 3.0)]),
            // Alone in its window: nothing to merge.
            chunk(week, id, 4, &[(base + WINDOW_MS, 4.0)]),
            // Open window: left alone.
            chunk(week, id, 5, &[(base + 2 * WINDOW_MS, 5.0)]),
            chunk(week, id, 6, &[(base + 2 * WINDOW_MS + 15_000, 6.0)]),
        ];
        let closed_before = base + 2 * WINDOW_MS + 1;
        let (rows, merged, blocks) = merge_series(week, id, chunks, closed_before);
        assert_eq!((merged, blocks), (3, 1));
        let puts: Vec<_> = rows
            .iter()
            .filter_map(|m| match m {
                Mutation::Put { key, value } => Some((key.clone(), value.clone())),
                Mutation::Delete { .. } => None,
            })
            .collect();
        assert_eq!(puts.len(), 1);
        assert_eq!(keys::parse_chunk_key(&puts[0].0), Some((week, id, base, 3)));
        let samples = crate::gorilla::decode(&puts[0].1).unwrap();
        assert_eq!(
            samples,
            vec![(base, 1.0), (base + 15_000, 2.0), (base + 30_000, 3.0)]
        );
        // The three inputs are deleted (the block's key is none of theirs).
        let deletes = rows
            .iter()
            .filter(|m| matches!(m, Mutation::Delete { .. }))
            .count();
        assert_eq!(deletes, 3);
    }
}
