//! The `timeseries` policy of one node: its control plane (the seam, delegated to
//! the strong tablets its data lives in) and its data plane (writes, selections,
//! the series and label listings, PromQL), which the node's gRPC service and the
//! Prometheus HTTP API call.
//!
//! Invariants:
//! - A write is checked whole before anything is written: one bad series or sample
//!   refuses the request and changes nothing.
//! - A week's rows go to the week's range ([`crate::keys`]); the rows of one tablet
//!   are written in one atomic strong write: a series' labels, its index entries
//!   and its samples are never half there within a tablet.
//! - Each node knows the series of the weeks it touched (loaded from the week's
//!   series rows on first use, and reloaded when the index names one it does not
//!   know); the store is the truth, this is a cache.

use crate::keys;
use crate::labels::{Labels, Limits, SeriesId};
use crate::options::{MAX_FUTURE_MS, TsOptions};
use crate::promql::{self, MemorySource, Series};
use crate::rollup::Aggregate;
use crate::week::Week;
use datalayer_cluster::StrongPolicy;
use datalayer_cluster::catalog::{TableDesc, TableSpec, TabletDesc};
use datalayer_cluster::error::{Error, Result};
use datalayer_cluster::policy::{Locality, PolicyKind, TabletPolicy};
use datalayer_cluster::pool::ChannelPool;
use datalayer_cluster::strong::{Acks, Layered};
use datalayer_store::{KeyRange, Mutation, TableId};
use promql_parser::label::{MatchOp, Matcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Records a second to a tablet of the current week past which it is hot, by
/// default.
pub const DEFAULT_HOT_WRITES_PER_SEC: u64 = 2000;
/// Samples one write may carry, at most.
pub const MAX_SAMPLES_PER_WRITE: usize = 1_000_000;
/// Rows one query may read, at most (index entries, series, chunks).
pub const MAX_ROWS_PER_QUERY: usize = 4_000_000;
/// A selection with more series than this reads the week's chunks in one sweep;
/// fewer are read series by series.
const SWEEP_OVER: usize = 64;

/// One series and its samples, as a write carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series.
    pub labels: Labels,
    /// `(timestamp ms, value)`, any order.
    pub samples: Vec<(i64, f64)>,
}

/// What a write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Series written to.
    pub series: usize,
    /// Samples stored.
    pub samples: usize,
    /// Series that were new to their week.
    pub new_series: usize,
}

/// A series' samples as a read gathers them: (timestamp, nonce of the chunk it came
/// from, value), in no order until sorted.
type Samples = Vec<(i64, u64, f64)>;

/// The series of one week of one table, as this node knows them.
#[derive(Default)]
struct WeekSeries {
    loaded: tokio::sync::Mutex<bool>,
    series: parking_lot::RwLock<HashMap<SeriesId, Arc<Labels>>>,
}

/// The `timeseries` policy of one node.
pub struct TimeseriesPolicy {
    layered: Layered,
    weeks: parking_lot::Mutex<HashMap<(TableId, Week), Arc<WeekSeries>>>,
    nonce: AtomicU64,
    limits: Limits,
    hot_writes_per_sec: AtomicU64,
}

impl std::fmt::Debug for TimeseriesPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeseriesPolicy").finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn label_error(e: crate::labels::LabelError) -> Error {
    Error::invalid("labels", e.to_string())
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms} ms"), |t| t.to_rfc3339())
}

/// Whether `m` matches the labels (a missing label is the empty value).
fn matches(m: &Matcher, labels: &Labels) -> bool {
    m.is_match(labels.get(&m.name).unwrap_or(""))
}

impl TimeseriesPolicy {
    /// The policy over this node's strong policy; `pool` reaches the other nodes.
    pub fn new(strong: Arc<StrongPolicy>, pool: Arc<ChannelPool>) -> TimeseriesPolicy {
        TimeseriesPolicy {
            layered: Layered::new(strong, pool, PolicyKind::Timeseries),
            weeks: Default::default(),
            nonce: AtomicU64::new(0),
            limits: Limits::default(),
            hot_writes_per_sec: AtomicU64::new(DEFAULT_HOT_WRITES_PER_SEC),
        }
    }

    /// Sets how many records a second make a tablet of the current week hot (the
    /// keeper then splits it; 0: never).
    pub fn set_hot_writes_per_sec(&self, n: u64) {
        self.hot_writes_per_sec.store(n, Ordering::Relaxed);
    }

    /// Records a second past which the keeper splits a tablet of the current week.
    pub fn hot_writes_per_sec(&self) -> u64 {
        self.hot_writes_per_sec.load(Ordering::Relaxed)
    }

    /// The strong write path this policy writes and reads through.
    pub(crate) fn layered(&self) -> &Layered {
        &self.layered
    }

    /// The label limits writes are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks a label set against the limits.
    pub fn labels(&self, pairs: impl IntoIterator<Item = (String, String)>) -> Result<Labels> {
        Labels::new(pairs, &self.limits).map_err(label_error)
    }

    /// The `timeseries` table of that name and its options.
    pub async fn table(&self, name: &str) -> Result<(Arc<TableDesc>, TsOptions)> {
        let table = self.layered.table(name).await?;
        let options = TsOptions::of(&table.options)?;
        Ok((table, options))
    }

    /// A nonce larger than every one this node gave before (the clock's ms in the
    /// high bits): a later write's chunks win a timestamp written twice.
    fn next_nonce(&self) -> u64 {
        let floor = (now_ms().max(0) as u64) << 16;
        let mut prev = self.nonce.load(Ordering::Relaxed);
        loop {
            let next = floor.max(prev + 1);
            match self
                .nonce
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// Forgets the series this node knows of the weeks `keep` turns down.
    pub(crate) fn forget_weeks(&self, keep: impl Fn(TableId, Week) -> bool) {
        self.weeks
            .lock()
            .retain(|(table, week), _| keep(*table, *week));
    }

    /// The series of `week` as this node knows them, loaded on first use.
    async fn week(&self, table: &TableDesc, week: Week) -> Result<Arc<WeekSeries>> {
        let entry = self
            .weeks
            .lock()
            .entry((table.id, week))
            .or_default()
            .clone();
        let mut loaded = entry.loaded.lock().await;
        if !*loaded {
            self.load_week(table, week, &entry).await?;
            *loaded = true;
        }
        drop(loaded);
        Ok(entry)
    }

    /// Every committed row of `[start, end)` of `table`; refused past `max` rows.
    async fn rows(
        &self,
        table: &str,
        (start, end): (Vec<u8>, Vec<u8>),
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let range = KeyRange {
            start,
            end: Some(end),
        };
        self.layered.scan(table, range, max).await
    }

    /// Reads every series row of `week` into `into`.
    async fn load_week(&self, table: &TableDesc, week: Week, into: &WeekSeries) -> Result<()> {
        let rows = self
            .rows(&table.name, keys::series_range(week), MAX_ROWS_PER_QUERY)
            .await?;
        let mut series = into.series.write();
        for (key, value) in rows {
            let (Some(id), Some(labels)) =
                (keys::parse_series_key(&key), Labels::from_canonical(&value))
            else {
                return Err(Error::Store(datalayer_store::Error::Corruption {
                    what: format!("series row {key:?} of table {:?}", table.name),
                }));
            };
            series.insert(id, Arc::new(labels));
        }
        Ok(())
    }

    /// Writes `batch` to `table`, waiting for `acks` (the table's default when
    /// `None`). Checked whole first: any refusal writes nothing.
    pub async fn write(
        &self,
        table: &str,
        batch: Vec<SeriesSamples>,
        acks: Option<Acks>,
    ) -> Result<Written> {
        let (desc, options) = self.table(table).await?;
        let acks = acks.unwrap_or(options.default_acks);
        let now = now_ms();
        let total: usize = batch.iter().map(|s| s.samples.len()).sum();
        if total > MAX_SAMPLES_PER_WRITE {
            return Err(Error::invalid(
                "samples",
                format!("{total} samples in one write: at most {MAX_SAMPLES_PER_WRITE}"),
            ));
        }
        let oldest = now - options.out_of_order_window_ms as i64;
        let first_kept = options.first_kept_week(now);
        // Week → series → samples (sorted, a timestamp given twice keeps the last).
        let mut weeks: BTreeMap<Week, BTreeMap<Labels, BTreeMap<i64, f64>>> = BTreeMap::new();
        for s in batch {
            for (t, v) in s.samples {
                if t < oldest {
                    return Err(Error::invalid(
                        "samples",
                        format!(
                            "sample of {} at {} is older than the table's out-of-order window ({} ms before now)",
                            describe(&s.labels),
                            rfc3339(t),
                            options.out_of_order_window_ms
                        ),
                    ));
                }
                if t > now + MAX_FUTURE_MS {
                    return Err(Error::invalid(
                        "samples",
                        format!(
                            "sample of {} at {} is more than {} minutes ahead of this node's clock",
                            describe(&s.labels),
                            rfc3339(t),
                            MAX_FUTURE_MS / 60_000
                        ),
                    ));
                }
                let week = Week::of(t);
                if first_kept.is_some_and(|k| week < k) {
                    return Err(Error::invalid(
                        "samples",
                        format!(
                            "sample of {} at {} falls in week {}, past the table's retention of {} weeks",
                            describe(&s.labels),
                            rfc3339(t),
                            week.iso(),
                            options.retention_weeks
                        ),
                    ));
                }
                weeks
                    .entry(week)
                    .or_default()
                    .entry(s.labels.clone())
                    .or_default()
                    .insert(t, v);
            }
        }
        let mut written = Written::default();
        for (week, series) in weeks {
            let known = self.week(&desc, week).await?;
            let mut rows: Vec<Mutation> = Vec::new();
            let mut new = Vec::new();
            for (labels, samples) in series {
                let id = self.series_id(&known, &labels)?;
                let is_new = !known.series.read().contains_key(&id);
                if is_new {
                    let count = known.series.read().len() + new.len();
                    if count as u64 >= options.max_series_per_week {
                        return Err(Error::invalid(
                            "labels",
                            format!(
                                "{} would be series {} of week {} of table {table:?}: at most {} per week (the table's max_series_per_week)",
                                describe(&labels),
                                count + 1,
                                week.iso(),
                                options.max_series_per_week
                            ),
                        ));
                    }
                    rows.push(Mutation::Put {
                        key: keys::series_key(week, id),
                        value: labels.canonical(),
                    });
                    for (name, value) in labels.iter() {
                        rows.push(Mutation::Put {
                            key: keys::index_key(week, name, value, id),
                            value: Vec::new(),
                        });
                    }
                    new.push((id, labels.clone()));
                }
                let mut encoder = crate::gorilla::Encoder::new();
                let first = *samples.keys().next().expect("a series has samples");
                for (t, v) in &samples {
                    encoder
                        .append(*t, *v)
                        .map_err(|e| Error::Internal(format!("encoding samples: {e}")))?;
                }
                written.series += 1;
                written.samples += samples.len();
                rows.push(Mutation::Put {
                    key: keys::chunk_key(week, id, first, self.next_nonce()),
                    value: encoder.bytes(),
                });
            }
            self.write_rows(table, rows, acks).await?;
            written.new_series += new.len();
            let mut series = known.series.write();
            for (id, labels) in new {
                series.insert(id, Arc::new(labels));
            }
        }
        Ok(written)
    }

    /// The id of `labels` in a week: its hash, or, when another label set holds that
    /// hash there, the first seed under which none does.
    fn series_id(&self, known: &WeekSeries, labels: &Labels) -> Result<SeriesId> {
        let series = known.series.read();
        for seed in 0..16 {
            let id = labels.series_id_with(seed);
            match series.get(&id) {
                Some(held) if **held != *labels => continue,
                _ => return Ok(id),
            }
        }
        Err(Error::Internal(format!(
            "16 series ids of {} are all taken",
            describe(labels)
        )))
    }

    /// Writes `rows`, one atomic write per tablet they fall in (re-grouped when the
    /// tablets change under the write).
    pub(crate) async fn write_rows(
        &self,
        table: &str,
        rows: Vec<Mutation>,
        acks: Acks,
    ) -> Result<()> {
        let mut left = rows;
        if left.is_empty() {
            return Ok(());
        }
        for _ in 0..8 {
            let (desc, _) = self.table(table).await?;
            let mut groups: BTreeMap<datalayer_store::TabletId, Vec<Mutation>> = BTreeMap::new();
            for m in left.drain(..) {
                groups
                    .entry(desc.tablet_for(m.key()).id)
                    .or_default()
                    .push(m);
            }
            for (_, group) in groups {
                match self.layered.write(table, group.clone(), acks).await {
                    Ok(_) => {}
                    // The tablets changed under the write: group again.
                    Err(e) if e.kind() == datalayer_cluster::ErrorKind::CrossTablet => {
                        left.extend(group)
                    }
                    Err(e) => return Err(e),
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            let _ = self.layered.strong().catalog().sync().await;
        }
        Err(Error::Metadata(datalayer_cluster::MetaUnavailable::Behind))
    }

    /// The ids of the series of `week` that every matcher selects, with their labels.
    async fn matching(
        &self,
        table: &TableDesc,
        week: Week,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesId, Arc<Labels>)>> {
        let known = self.week(table, week).await?;
        // The index narrows the series by the matcher that selects fewest: an
        // equality on the metric name, else any matcher that refuses the empty value.
        let pick = matchers
            .iter()
            .filter(|m| !m.is_match(""))
            .min_by_key(|m| match (&m.op, m.name.as_str()) {
                (MatchOp::Equal, crate::labels::METRIC_NAME) => 0,
                (MatchOp::Equal, _) => 1,
                _ => 2,
            })
            .ok_or_else(|| {
                Error::invalid(
                    "match",
                    "a selector needs at least one matcher that does not match the empty string",
                )
            })?;
        let value = matches!(pick.op, MatchOp::Equal).then_some(pick.value.as_str());
        let range = keys::index_range(week, &pick.name, value);
        let rows = self.rows(&table.name, range, MAX_ROWS_PER_QUERY).await?;
        let mut ids = BTreeSet::new();
        for (key, _) in rows {
            let Some((_, value, id)) = keys::parse_index_key(&key) else {
                continue;
            };
            if pick.is_match(&value) {
                ids.insert(id);
            }
        }
        let missing = {
            let series = known.series.read();
            ids.iter().any(|id| !series.contains_key(id))
        };
        if missing {
            // Written through another node since this one loaded the week.
            let _one = known.loaded.lock().await;
            self.load_week(table, week, &known).await?;
        }
        let series = known.series.read();
        Ok(ids
            .into_iter()
            .filter_map(|id| series.get(&id).map(|l| (id, l.clone())))
            .filter(|(_, labels)| matchers.iter().all(|m| matches(m, labels)))
            .collect())
    }

    /// The series that every matcher selects, with their samples from `from_ms` to
    /// `to_ms` (both held) in time order; series without samples there are left out.
    /// A [`promql::ROLLUP_LABEL`] matcher (a query rewritten by
    /// [`promql::for_rollups`]) reads weeks past raw retention from their rollups
    /// as that aggregate, and the series answered carry the label.
    pub async fn select(
        &self,
        table: &str,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Series>> {
        let (desc, options) = self.table(table).await?;
        let (agg, matchers) = promql::rollup_aggregate(matchers);
        let now = now_ms();
        let first = options.first_rollup_week(now);
        // Labels → (timestamp → (nonce, value)).
        let mut out: BTreeMap<Vec<u8>, (Arc<Labels>, Samples)> = BTreeMap::new();
        let mut rows_read = 0usize;
        for week in Week::covering(from_ms, to_ms) {
            if first.is_some_and(|k| week < k) {
                continue;
            }
            let series = self.matching(&desc, week, &matchers).await?;
            if series.is_empty() {
                continue;
            }
            let wanted: HashMap<SeriesId, Arc<Labels>> = series.into_iter().collect();
            let labels_of = wanted.clone();
            let span = (from_ms, to_ms);
            let rolled = options.rolled_up(week, now);
            let mut this_week = HashMap::new();
            let mut raw = wanted;
            if rolled {
                let agg = agg.unwrap_or(Aggregate::Last);
                this_week = self
                    .read_rollups(&desc.name, week, &raw, span, agg, &mut rows_read)
                    .await?;
                // A series the keeper has not summed up yet (the week left raw
                // retention since its last pass) is read raw.
                raw.retain(|id, _| !this_week.contains_key(id));
            }
            if !raw.is_empty() {
                let mut read = self
                    .read_chunks(&desc.name, week, &raw, span, &mut rows_read)
                    .await?;
                if let Some(agg) = agg.or(rolled.then_some(Aggregate::Last)) {
                    for samples in read.values_mut() {
                        for s in samples.iter_mut() {
                            (s.0, s.2) = agg.raw((s.0, s.2));
                        }
                    }
                }
                this_week.extend(read);
            }
            for (id, samples) in this_week {
                let labels = &labels_of[&id];
                out.entry(labels.canonical())
                    .or_insert_with(|| (labels.clone(), Vec::new()))
                    .1
                    .extend(samples);
            }
        }
        Ok(out
            .into_values()
            .filter(|(_, s)| !s.is_empty())
            .map(|(labels, mut samples)| {
                // In time order; of a timestamp written twice, the larger nonce's.
                samples.sort_unstable_by_key(|(t, n, _)| (*t, *n));
                let mut kept: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
                for (t, _, v) in samples {
                    match kept.last_mut() {
                        Some(last) if last.0 == t => last.1 = v,
                        _ => kept.push((t, v)),
                    }
                }
                let mut labels = labels.to_map();
                if let Some(agg) = agg {
                    labels.insert(promql::ROLLUP_LABEL.to_string(), agg.name().to_string());
                }
                (labels, kept)
            })
            .collect())
    }

    /// The rows of `wanted`'s series in `week`'s range `range_of` gives for one
    /// series (`all`: for every series), swept whole when they are many.
    async fn series_rows(
        &self,
        table: &str,
        wanted: &HashMap<SeriesId, Arc<Labels>>,
        all: (Vec<u8>, Vec<u8>),
        range_of: impl Fn(SeriesId) -> (Vec<u8>, Vec<u8>),
        rows_read: &mut usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = if wanted.len() > SWEEP_OVER {
            self.rows(table, all, MAX_ROWS_PER_QUERY - *rows_read)
                .await?
        } else {
            let mut rows = Vec::new();
            for id in wanted.keys() {
                let left = MAX_ROWS_PER_QUERY - *rows_read - rows.len();
                rows.extend(self.rows(table, range_of(*id), left).await?);
            }
            rows
        };
        *rows_read += rows.len();
        Ok(rows)
    }

    /// The raw samples of `wanted`'s series in `week` within `span` (both ends held).
    async fn read_chunks(
        &self,
        table: &str,
        week: Week,
        wanted: &HashMap<SeriesId, Arc<Labels>>,
        (from_ms, to_ms): (i64, i64),
        rows_read: &mut usize,
    ) -> Result<HashMap<SeriesId, Samples>> {
        let range_of = |id| {
            (
                keys::chunk_prefix(week, id),
                keys::chunk_key(week, id, to_ms.saturating_add(1), 0),
            )
        };
        let chunks = self
            .series_rows(table, wanted, keys::chunk_range(week), range_of, rows_read)
            .await?;
        let mut this_week: HashMap<SeriesId, Samples> = HashMap::new();
        for (key, value) in chunks {
            let Some((_, id, first, nonce)) = keys::parse_chunk_key(&key) else {
                continue;
            };
            if !wanted.contains_key(&id) || first > to_ms {
                continue;
            }
            let samples = crate::gorilla::decode(&value).map_err(|e| {
                Error::Store(datalayer_store::Error::Corruption {
                    what: format!("chunk {key:?} of table {table:?}: {e}"),
                })
            })?;
            let into = this_week.entry(id).or_default();
            into.extend(
                samples
                    .into_iter()
                    .filter(|(t, _)| *t >= from_ms && *t <= to_ms)
                    .map(|(t, v)| (t, nonce, v)),
            );
        }
        Ok(this_week)
    }

    /// The rollups of `wanted`'s series in `week` within `span`, one sample per
    /// bucket as `agg` reads it.
    async fn read_rollups(
        &self,
        table: &str,
        week: Week,
        wanted: &HashMap<SeriesId, Arc<Labels>>,
        (from_ms, to_ms): (i64, i64),
        agg: Aggregate,
        rows_read: &mut usize,
    ) -> Result<HashMap<SeriesId, Samples>> {
        let range_of = |id| {
            let prefix = keys::rollup_prefix(week, id);
            let end = keys::prefix_end(&prefix);
            (prefix, end)
        };
        let rows = self
            .series_rows(table, wanted, keys::rollup_range(week), range_of, rows_read)
            .await?;
        let mut this_week: HashMap<SeriesId, Samples> = HashMap::new();
        for (key, value) in rows {
            let Some((_, id, window)) = keys::parse_rollup_key(&key) else {
                continue;
            };
            if !wanted.contains_key(&id)
                || window > to_ms
                || window + crate::keeper::WINDOW_MS <= from_ms
            {
                continue;
            }
            let (_, buckets) = crate::rollup::decode(&value).map_err(|e| {
                Error::Store(datalayer_store::Error::Corruption {
                    what: format!("rollup {key:?} of table {table:?}: {e}"),
                })
            })?;
            this_week.entry(id).or_default().extend(
                buckets
                    .iter()
                    .map(|b| agg.sample(b))
                    .filter(|(t, _)| *t >= from_ms && *t <= to_ms)
                    .map(|(t, v)| (t, 0, v)),
            );
        }
        Ok(this_week)
    }

    /// The label sets of the series any of `selectors` selects in the weeks
    /// `[from_ms, to_ms]` touches (read from the index, not the samples).
    pub async fn series(
        &self,
        table: &str,
        selectors: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<BTreeMap<String, String>>> {
        let (desc, options) = self.table(table).await?;
        let first_kept = options.first_rollup_week(now_ms());
        let mut out = BTreeMap::new();
        for week in Week::covering(from_ms, to_ms) {
            if first_kept.is_some_and(|k| week < k) {
                continue;
            }
            for matchers in selectors {
                for (_, labels) in self.matching(&desc, week, matchers).await? {
                    out.entry(labels.canonical())
                        .or_insert_with(|| labels.to_map());
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every label name (with `name`: that label's values) of the series of the
    /// weeks `[from_ms, to_ms]` touches, sorted; with selectors, of the series they
    /// select only.
    pub async fn label_values(
        &self,
        table: &str,
        name: Option<&str>,
        selectors: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<String>> {
        let (desc, options) = self.table(table).await?;
        let first_kept = options.first_rollup_week(now_ms());
        let mut out = BTreeSet::new();
        for week in Week::covering(from_ms, to_ms) {
            if first_kept.is_some_and(|k| week < k) {
                continue;
            }
            let mut add = |labels: &Labels| match name {
                Some(name) => {
                    if let Some(v) = labels.get(name) {
                        out.insert(v.to_string());
                    }
                }
                None => out.extend(labels.iter().map(|(n, _)| n.to_string())),
            };
            if selectors.is_empty() {
                let known = self.week(&desc, week).await?;
                {
                    let _one = known.loaded.lock().await;
                    self.load_week(&desc, week, &known).await?;
                }
                for labels in known.series.read().values() {
                    add(labels);
                }
            } else {
                for matchers in selectors {
                    for (_, labels) in self.matching(&desc, week, matchers).await? {
                        add(&labels);
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Reads what `expr` needs over `[start_ms, end_ms]`, into memory.
    async fn fetch(
        &self,
        table: &str,
        expr: &promql::ParsedExpr,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<MemorySource> {
        let selections = promql::selections(expr, start_ms, end_ms).map_err(eval_error)?;
        let mut all: BTreeMap<crate::aggregate::LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
        for s in selections {
            for (labels, samples) in self.select(table, &s.matchers, s.from_ms, s.to_ms).await? {
                let held = all.entry(labels).or_default();
                if held.is_empty() {
                    *held = samples;
                } else {
                    // Another selector read the series over another span: merge.
                    let mut merged: BTreeMap<i64, f64> = held.drain(..).collect();
                    merged.extend(samples);
                    *held = merged.into_iter().collect();
                }
            }
        }
        Ok(MemorySource(all.into_iter().collect()))
    }

    /// `query` parsed, and rewritten by [`promql::for_rollups`] when its evaluation
    /// over `[start_ms, end_ms]` reads a week served from rollups (then `true`).
    async fn plan(
        &self,
        table: &str,
        query: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(promql::ParsedExpr, bool)> {
        let expr = promql::parse(query).map_err(eval_error)?;
        let (_, options) = self.table(table).await?;
        let now = now_ms();
        let Some(kept) = options.first_kept_week(now) else {
            return Ok((expr, false));
        };
        if options.rollup_retention_weeks == 0 {
            return Ok((expr, false));
        }
        let reads_rollups = promql::selections(&expr, start_ms, end_ms)
            .map_err(eval_error)?
            .iter()
            .any(|s| s.from_ms < kept.start_ms());
        Ok(if reads_rollups {
            (promql::for_rollups(&expr), true)
        } else {
            (expr, false)
        })
    }

    /// Evaluates the PromQL `query` at `t_ms`.
    pub async fn query(&self, table: &str, query: &str, t_ms: i64) -> Result<Instant> {
        let (expr, _) = self.plan(table, query, t_ms, t_ms).await?;
        let strip = promql::strip_rollup_label;
        let source = self.fetch(table, &expr, t_ms, t_ms).await?;
        if let promql::ParsedExpr::MatrixSelector(_) = &expr {
            // A range selector alone: each series' raw samples in its window (as
            // Prometheus answers it, staleness markers left out).
            let s = &promql::selections(&expr, t_ms, t_ms).map_err(eval_error)?[0];
            let series = promql::SeriesSource::select(&source, &s.matchers, s.from_ms, s.to_ms)
                .into_iter()
                .map(|(l, samples)| {
                    let kept = samples
                        .into_iter()
                        .filter(|(_, v)| !crate::functions::is_stale(*v))
                        .collect::<Vec<_>>();
                    (strip(l), kept)
                })
                .filter(|(_, s)| !s.is_empty())
                .collect();
            return Ok(Instant::Matrix(series));
        }
        match tokio::task::block_in_place(|| promql::instant(&source, &expr, t_ms)) {
            Ok(promql::Value::Scalar(v)) => Ok(Instant::Scalar(v)),
            Ok(promql::Value::Vector(v)) => Ok(Instant::Vector(
                v.into_iter().map(|(l, v)| (strip(l), v)).collect(),
            )),
            Err(e) => Err(eval_error(e)),
        }
    }

    /// Evaluates the PromQL `query` at every step from `start_ms` to `end_ms`.
    pub async fn query_range(
        &self,
        table: &str,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>> {
        if step_ms <= 0 {
            return Err(Error::invalid("step", "the step must be positive"));
        }
        if end_ms < start_ms {
            return Err(Error::invalid("end", "the end is before the start"));
        }
        let steps = (end_ms - start_ms) / step_ms + 1;
        if steps > 11_000 {
            return Err(Error::invalid(
                "step",
                format!(
                    "{steps} steps: at most 11000 points per series (Prometheus's limit); widen the step"
                ),
            ));
        }
        let (expr, rolled) = self.plan(table, query, start_ms, end_ms).await?;
        let source = self.fetch(table, &expr, start_ms, end_ms).await?;
        let series = tokio::task::block_in_place(|| {
            match crate::fast::range(&source, &expr, start_ms, end_ms, step_ms) {
                Some(series) => Ok(series),
                None => promql::range(&source, &expr, start_ms, end_ms, step_ms),
            }
        })
        .map_err(eval_error)?;
        Ok(if rolled {
            series
                .into_iter()
                .map(|(l, s)| (promql::strip_rollup_label(l), s))
                .collect()
        } else {
            series
        })
    }
}

/// The answer to an instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum Instant {
    /// A number.
    Scalar(f64),
    /// One value per label set.
    Vector(Vec<(crate::aggregate::LabelSet, f64)>),
    /// A range selector's raw samples, per series.
    Matrix(Vec<Series>),
}

/// A PromQL error as the policy answers it.
fn eval_error(e: promql::EvalError) -> Error {
    match e {
        promql::EvalError::Unsupported(what) => Error::NotSupported { what },
        other => Error::invalid("query", other.to_string()),
    }
}

/// `metric{a="b",...}`, for messages.
pub fn describe(labels: &Labels) -> String {
    let rest: Vec<String> = labels
        .iter()
        .filter(|(n, _)| *n != crate::labels::METRIC_NAME)
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect();
    format!("{}{{{}}}", labels.metric(), rest.join(","))
}

#[async_trait::async_trait]
impl TabletPolicy for TimeseriesPolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Timeseries
    }

    fn validate(&self, spec: &TableSpec) -> Result<()> {
        let factor = match spec.replication_factor {
            0 => datalayer_cluster::catalog::DEFAULT_REPLICATION_FACTOR,
            n => n,
        };
        TsOptions::of(&spec.options)?.validate(factor)
    }

    // The data lives in strong tablets: the strong policy serves them.
    async fn reconcile(&self, tablet: &TabletDesc) -> Result<()> {
        TabletPolicy::reconcile(self.layered.strong().as_ref(), tablet).await
    }

    async fn purge(&self, table: &TableDesc) -> Result<()> {
        self.weeks.lock().retain(|(id, _), _| *id != table.id);
        TabletPolicy::purge(self.layered.strong().as_ref(), table).await
    }

    fn locality(&self, tablet: &TabletDesc) -> Locality {
        TabletPolicy::locality(self.layered.strong().as_ref(), tablet)
    }

    // The strong policy hands over and stops every strong tablet, these included.
    async fn hand_over_all(&self) -> usize {
        0
    }

    fn still_serving(&self) -> bool {
        false
    }

    async fn stop(&self) {}
}
