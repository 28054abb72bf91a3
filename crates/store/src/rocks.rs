//! [`RocksTabletEngine`]: every tablet of a node in one RocksDB instance.
//!
//! Column families:
//!
//! | CF       | key                          | value                              |
//! |----------|------------------------------|------------------------------------|
//! | `data`   | [`codec::version_key`]       | tag byte (1 put, 0 tombstone) + value |
//! | `oplog`  | [`codec::oplog_key`]         | postcard [`OplogRecord`]           |
//! | `tablet` | [`codec::tablet_state_key`]  | postcard [`TabletState`]           |
//! | `meta`   | caller's key                 | caller's value                     |

use crate::codec;
use crate::engine::{
    EngineStats, KeyRange, ScanRequest, TabletAppend, TabletEngine, TabletExport, Versioned,
};
use crate::error::{Error, Result};
use crate::hlc::Timestamp;
use crate::ids::{Seq, TableId, TabletId};
use crate::oplog::{Mutation, OplogRecord, RecordBody, TabletState};
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, MultiThreaded, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Db = DBWithThreadMode<MultiThreaded>;

const CF_DATA: &str = "data";
const CF_OPLOG: &str = "oplog";
const CF_TABLET: &str = "tablet";
const CF_META: &str = "meta";
const ALL_CFS: [&str; 4] = [CF_DATA, CF_OPLOG, CF_TABLET, CF_META];

const TAG_TOMBSTONE: u8 = 0;
const TAG_PUT: u8 = 1;
/// Deletes per batch while collecting garbage.
const GC_BATCH: usize = 4096;

/// Settings of the node's RocksDB instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Size of the shared block cache, in MiB. Default 256.
    pub block_cache_mib: usize,
    /// Size of one memtable, in MiB. Default 64.
    pub write_buffer_mib: usize,
    /// Background compaction and flush threads. Default 2.
    pub background_jobs: i32,
    /// Write-ahead log kept at most, in MiB: past it, the column families whose
    /// memtables hold the oldest log are flushed so it can go (RocksDB's own default
    /// is four times every memtable together, 2 GiB here). Default 256.
    pub max_wal_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            block_cache_mib: 256,
            write_buffer_mib: 64,
            background_jobs: 2,
            max_wal_mib: 256,
        }
    }
}

/// Why a store [`Config`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A size is zero.
    #[error("store.{0} must be at least 1")]
    Zero(&'static str),
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_cache_mib == 0 {
            return Err(ConfigError::Zero("block_cache_mib"));
        }
        if self.write_buffer_mib == 0 {
            return Err(ConfigError::Zero("write_buffer_mib"));
        }
        if self.background_jobs < 1 {
            return Err(ConfigError::Zero("background_jobs"));
        }
        if self.max_wal_mib == 0 {
            return Err(ConfigError::Zero("max_wal_mib"));
        }
        Ok(())
    }
}

/// The on-disk [`TabletEngine`].
pub struct RocksTabletEngine {
    db: Db,
    path: PathBuf,
    group_commits: AtomicU64,
    records_appended: AtomicU64,
}

impl std::fmt::Debug for RocksTabletEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksTabletEngine")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksTabletEngine {
    /// Opens (or creates) the instance under `path`.
    pub fn open(path: impl AsRef<Path>, config: &Config) -> Result<RocksTabletEngine> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(config.background_jobs);
        opts.set_write_buffer_size(config.write_buffer_mib << 20);
        opts.set_max_total_wal_size(config.max_wal_mib << 20);
        // Writers that arrive while one syncs join the next group (RocksDB's own group
        // commit), on top of the batching the policies do.
        opts.set_enable_pipelined_write(true);
        let cache = rocksdb::Cache::new_lru_cache(config.block_cache_mib << 20);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_write_buffer_size(config.write_buffer_mib << 20);
            cf.set_block_based_table_factory(&table);
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = Db::open_cf_descriptors(&opts, &path, cfs)?;
        Ok(RocksTabletEngine {
            db,
            path,
            group_commits: AtomicU64::new(0),
            records_appended: AtomicU64::new(0),
        })
    }

    /// Where the instance lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Arc<BoundColumnFamily<'_>> {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Every record of `tablet` from `from` to `to` inclusive; `Trimmed` when the oplog
    /// no longer holds one.
    fn oplog_span(&self, tablet: TabletId, from: Seq, to: Seq) -> Result<Vec<OplogRecord>> {
        let mut out = Vec::new();
        let mut next = from;
        while next <= to {
            let page = TabletEngine::read_oplog(self, tablet, next, 1024)?;
            if page.is_empty() {
                return Err(Error::Trimmed {
                    tablet,
                    seq: next.0,
                });
            }
            for r in page {
                if r.seq > to {
                    return Ok(out);
                }
                if r.seq != next {
                    return Err(Error::Trimmed {
                        tablet,
                        seq: next.0,
                    });
                }
                next = next.next();
                out.push(r);
            }
        }
        Ok(out)
    }

    fn write_meta(
        &self,
        puts: &[(Vec<u8>, Vec<u8>)],
        deletes: &[Vec<u8>],
        options: &WriteOptions,
    ) -> Result<()> {
        let meta = self.cf(CF_META);
        let mut batch = WriteBatch::default();
        for k in deletes {
            batch.delete_cf(&meta, k);
        }
        for (k, v) in puts {
            batch.put_cf(&meta, k, v);
        }
        self.db.write_opt(batch, options)?;
        Ok(())
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }
}

fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(TAG_PUT);
            out.extend_from_slice(v);
            out
        }
        None => vec![TAG_TOMBSTONE],
    }
}

/// Adds the versions `mutations` write at `ts` to `batch`.
fn put_versions(
    batch: &mut WriteBatch,
    data: &Arc<BoundColumnFamily<'_>>,
    table: TableId,
    mutations: &[Mutation],
    ts: Timestamp,
) {
    for m in mutations {
        let value = match m {
            Mutation::Put { value, .. } => Some(value.as_slice()),
            Mutation::Delete { .. } => None,
        };
        batch.put_cf(
            data,
            codec::version_key(table, m.key(), ts),
            encode_value(value),
        );
    }
}

/// `Some(value)` for a put, `None` for a tombstone.
fn decode_value(raw: &[u8]) -> Result<Option<&[u8]>> {
    match raw.split_first() {
        Some((&TAG_PUT, v)) => Ok(Some(v)),
        Some((&TAG_TOMBSTONE, [])) => Ok(None),
        _ => Err(Error::corruption("data value tag")),
    }
}

fn decode_key(raw: &[u8]) -> Result<(&[u8], Timestamp)> {
    codec::split_version_key(raw).map_err(|e| Error::corruption(e.to_string()))
}

fn prefix_key(prefix: &[u8]) -> Result<Vec<u8>> {
    codec::decode_prefix_key(prefix).map_err(|e| Error::corruption(e.to_string()))
}

impl TabletEngine for RocksTabletEngine {
    fn append(&self, appends: &[TabletAppend]) -> Result<()> {
        let (data, oplog, tablet) = (self.cf(CF_DATA), self.cf(CF_OPLOG), self.cf(CF_TABLET));
        let mut batch = WriteBatch::default();
        let mut records = 0u64;
        for append in appends {
            let mut expect = append
                .records
                .first()
                .map(|r| r.seq)
                .unwrap_or(append.state.log_end.next());
            for record in &append.records {
                if record.seq != expect {
                    return Err(Error::OutOfOrder {
                        tablet: append.tablet,
                        log_end: expect.0.saturating_sub(1),
                        got: record.seq.0,
                    });
                }
                expect = expect.next();
                let encoded =
                    postcard::to_allocvec(record).map_err(|e| Error::corruption(e.to_string()))?;
                batch.put_cf(&oplog, codec::oplog_key(append.tablet, record.seq), encoded);
                match &record.body {
                    RecordBody::Write(mutations) => {
                        put_versions(&mut batch, &data, append.table, mutations, record.ts);
                    }
                    RecordBody::Abort { from, .. } => {
                        // The voided records: on disk, or earlier in this append.
                        let first_here = append.records[0].seq;
                        let mut voided = if *from < first_here {
                            self.oplog_span(append.tablet, *from, Seq(first_here.0 - 1))?
                        } else {
                            Vec::new()
                        };
                        voided.extend(
                            append
                                .records
                                .iter()
                                .filter(|r| r.seq >= *from && r.seq < record.seq)
                                .cloned(),
                        );
                        for r in &voided {
                            if let RecordBody::Write(mutations) = &r.body {
                                for m in mutations {
                                    batch.delete_cf(
                                        &data,
                                        codec::version_key(append.table, m.key(), r.ts),
                                    );
                                }
                            }
                        }
                    }
                    RecordBody::Noop | RecordBody::Split { .. } | RecordBody::Absorb { .. } => {}
                }
                records += 1;
            }
            if expect != append.state.log_end.next() {
                return Err(Error::OutOfOrder {
                    tablet: append.tablet,
                    log_end: append.state.log_end.0,
                    got: expect.0.saturating_sub(1),
                });
            }
            let state = postcard::to_allocvec(&append.state)
                .map_err(|e| Error::corruption(e.to_string()))?;
            batch.put_cf(&tablet, codec::tablet_state_key(append.tablet), state);
        }
        self.db.write_opt(batch, &Self::synced())?;
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        self.records_appended.fetch_add(records, Ordering::Relaxed);
        Ok(())
    }

    fn get(&self, table: TableId, key: &[u8], at: Timestamp) -> Result<Option<Versioned>> {
        let prefix = codec::key_prefix(table, key);
        let mut it = self.db.raw_iterator_cf(&self.cf(CF_DATA));
        it.seek(codec::version_key(table, key, at));
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (p, ts) = decode_key(k)?;
            if p == prefix.as_slice() {
                return Ok(decode_value(v)?.map(|value| Versioned {
                    ts,
                    value: value.to_vec(),
                }));
            }
        }
        it.status()?;
        Ok(None)
    }

    fn scan(&self, req: &ScanRequest) -> Result<Vec<(Vec<u8>, Versioned)>> {
        let lower = codec::key_prefix(req.table, &req.range.start);
        let upper = match &req.range.end {
            Some(end) => codec::key_prefix(req.table, end),
            None => codec::table_end(req.table),
        };
        let mut out = Vec::new();
        if lower >= upper || req.limit == 0 {
            return Ok(out);
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        opts.set_iterate_upper_bound(upper);
        let mut it = self.db.raw_iterator_cf_opt(&self.cf(CF_DATA), opts);
        if req.reverse {
            // Backwards, a key's versions come oldest first: keep the last one <= at.
            it.seek_to_last();
            let mut current: Option<Vec<u8>> = None;
            let mut candidate: Option<Versioned> = None;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let (prefix, ts) = decode_key(k)?;
                if current.as_deref() != Some(prefix) {
                    if let (Some(p), Some(c)) = (current.take(), candidate.take()) {
                        out.push((prefix_key(&p)?, c));
                        if out.len() >= req.limit {
                            return Ok(out);
                        }
                    }
                    current = Some(prefix.to_vec());
                    candidate = None;
                }
                if ts <= req.at {
                    candidate = decode_value(v)?.map(|value| Versioned {
                        ts,
                        value: value.to_vec(),
                    });
                }
                it.prev();
            }
            it.status()?;
            if let (Some(p), Some(c)) = (current, candidate) {
                out.push((prefix_key(&p)?, c));
            }
            return Ok(out);
        }
        it.seek_to_first();
        let mut done: Option<Vec<u8>> = None;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (prefix, ts) = decode_key(k)?;
            if ts <= req.at && done.as_deref() != Some(prefix) {
                done = Some(prefix.to_vec());
                if let Some(value) = decode_value(v)? {
                    out.push((
                        prefix_key(prefix)?,
                        Versioned {
                            ts,
                            value: value.to_vec(),
                        },
                    ));
                    if out.len() >= req.limit {
                        return Ok(out);
                    }
                }
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn tablet_state(&self, tablet: TabletId) -> Result<Option<TabletState>> {
        match self
            .db
            .get_pinned_cf(&self.cf(CF_TABLET), codec::tablet_state_key(tablet))?
        {
            Some(raw) => postcard::from_bytes(&raw)
                .map(Some)
                .map_err(|e| Error::corruption(format!("{tablet} state: {e}"))),
            None => Ok(None),
        }
    }

    fn read_oplog(&self, tablet: TabletId, from: Seq, limit: usize) -> Result<Vec<OplogRecord>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(codec::oplog_key(TabletId(tablet.0 + 1), Seq(0)).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(&self.cf(CF_OPLOG), opts);
        it.seek(codec::oplog_key(tablet, from));
        let mut out = Vec::new();
        while let Some(v) = it.value() {
            if out.len() >= limit {
                break;
            }
            let record: OplogRecord = postcard::from_bytes(v)
                .map_err(|e| Error::corruption(format!("{tablet} oplog record: {e}")))?;
            out.push(record);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn truncate(
        &self,
        table: TableId,
        tablet: TabletId,
        after: Seq,
        state: &TabletState,
    ) -> Result<u64> {
        let (data, oplog, tablet_cf) = (self.cf(CF_DATA), self.cf(CF_OPLOG), self.cf(CF_TABLET));
        let mut batch = WriteBatch::default();
        let mut removed = 0u64;
        let mut restore = Vec::new();
        let mut next = after.next();
        loop {
            let records = self.read_oplog(tablet, next, 1024)?;
            let Some(last) = records.last() else {
                break;
            };
            next = last.seq.next();
            for record in &records {
                match &record.body {
                    RecordBody::Write(mutations) => {
                        for m in mutations {
                            batch.delete_cf(&data, codec::version_key(table, m.key(), record.ts));
                        }
                    }
                    RecordBody::Abort { from, .. } if *from <= after => {
                        // The abort goes: the records it voided that stay take effect
                        // again.
                        restore.push(*from);
                    }
                    _ => {}
                }
                batch.delete_cf(&oplog, codec::oplog_key(tablet, record.seq));
                removed += 1;
            }
        }
        for from in restore {
            for r in self.oplog_span(tablet, from, after)? {
                if let RecordBody::Write(mutations) = &r.body {
                    put_versions(&mut batch, &data, table, mutations, r.ts);
                }
            }
        }
        let encoded = postcard::to_allocvec(state).map_err(|e| Error::corruption(e.to_string()))?;
        batch.put_cf(&tablet_cf, codec::tablet_state_key(tablet), encoded);
        self.db.write_opt(batch, &Self::synced())?;
        Ok(removed)
    }

    fn trim_oplog(&self, tablet: TabletId, below: Seq) -> Result<()> {
        let (from, to) = (
            codec::oplog_key(tablet, Seq(0)),
            codec::oplog_key(tablet, below),
        );
        let cf = self.cf(CF_OPLOG);
        self.db.delete_range_cf(&cf, &from, &to)?;
        // Files holding only trimmed records go at once; the range deletion covers the
        // rest until compaction reaches it.
        self.db.delete_file_in_range_cf(&cf, &from, &to)?;
        Ok(())
    }

    fn collect_garbage(&self, table: TableId, horizon: Timestamp) -> Result<u64> {
        let data = self.cf(CF_DATA);
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(codec::table_start(table));
        opts.set_iterate_upper_bound(codec::table_end(table));
        let mut it = self.db.raw_iterator_cf_opt(&data, opts);
        it.seek_to_first();
        let mut removed = 0u64;
        let mut batch = WriteBatch::default();
        // The key whose newest version at or below the horizon was already seen.
        let mut settled: Option<Vec<u8>> = None;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (prefix, ts) = decode_key(k)?;
            if ts <= horizon {
                let shadowed = settled.as_deref() == Some(prefix);
                // The newest version at or below the horizon stays unless it is a
                // tombstone; everything older than it is invisible to allowed reads.
                if shadowed || decode_value(v)?.is_none() {
                    batch.delete_cf(&data, k);
                    removed += 1;
                }
                if !shadowed {
                    settled = Some(prefix.to_vec());
                }
            }
            if batch.len() >= GC_BATCH {
                self.db.write(std::mem::take(&mut batch))?;
            }
            it.next();
        }
        it.status()?;
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(removed)
    }

    fn drop_table(&self, table: TableId, tablets: &[TabletId]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            &self.cf(CF_DATA),
            codec::table_start(table),
            codec::table_end(table),
        );
        let (oplog, state) = (self.cf(CF_OPLOG), self.cf(CF_TABLET));
        for t in tablets {
            batch.delete_range_cf(
                &oplog,
                codec::oplog_key(*t, Seq(0)),
                codec::oplog_key(TabletId(t.0 + 1), Seq(0)),
            );
            batch.delete_cf(&state, codec::tablet_state_key(*t));
        }
        self.db.write_opt(batch, &Self::synced())?;
        Ok(())
    }

    fn drop_tablet(&self, table: TableId, tablet: TabletId, range: &KeyRange) -> Result<()> {
        let mut batch = WriteBatch::default();
        let end = match &range.end {
            Some(end) => codec::key_prefix(table, end),
            None => codec::table_end(table),
        };
        batch.delete_range_cf(
            &self.cf(CF_DATA),
            codec::key_prefix(table, &range.start),
            end,
        );
        batch.delete_range_cf(
            &self.cf(CF_OPLOG),
            codec::oplog_key(tablet, Seq(0)),
            codec::oplog_key(TabletId(tablet.0 + 1), Seq(0)),
        );
        batch.delete_cf(&self.cf(CF_TABLET), codec::tablet_state_key(tablet));
        self.db.write_opt(batch, &Self::synced())?;
        Ok(())
    }

    fn export_tablet(
        &self,
        table: TableId,
        tablet: TabletId,
        range: &KeyRange,
        dir: &Path,
    ) -> Result<Option<TabletExport>> {
        let snapshot = self.db.snapshot();
        let Some(raw) = snapshot.get_cf(&self.cf(CF_TABLET), codec::tablet_state_key(tablet))?
        else {
            return Ok(None);
        };
        let state: TabletState = postcard::from_bytes(&raw)
            .map_err(|e| Error::corruption(format!("{tablet} state: {e}")))?;
        std::fs::create_dir_all(dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("tablet-{}-{nanos}.sst", tablet.0));
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(codec::key_prefix(table, &range.start));
        opts.set_iterate_upper_bound(match &range.end {
            Some(end) => codec::key_prefix(table, end),
            None => codec::table_end(table),
        });
        let mut it = snapshot.raw_iterator_cf_opt(&self.cf(CF_DATA), opts);
        it.seek_to_first();
        let sst_opts = Options::default();
        let mut writer: Option<rocksdb::SstFileWriter> = None;
        let mut versions = 0u64;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    let w = rocksdb::SstFileWriter::create(&sst_opts);
                    w.open(&path)?;
                    writer.insert(w)
                }
            };
            w.put(k, v)?;
            versions += 1;
            it.next();
        }
        it.status()?;
        let file = match writer {
            Some(mut w) => {
                w.finish()?;
                Some(path)
            }
            None => None,
        };
        Ok(Some(TabletExport {
            state,
            file,
            versions,
        }))
    }

    fn import_tablet(
        &self,
        table: TableId,
        tablet: TabletId,
        range: &KeyRange,
        state: &TabletState,
        file: Option<&Path>,
    ) -> Result<()> {
        // Without its state the replica counts as empty until the import completes.
        self.drop_tablet(table, tablet, range)?;
        if let Some(file) = file {
            let mut opts = rocksdb::IngestExternalFileOptions::default();
            opts.set_move_files(true);
            self.db
                .ingest_external_file_cf_opts(&self.cf(CF_DATA), &opts, vec![file])?;
        }
        let encoded = postcard::to_allocvec(state)
            .map_err(|e| Error::corruption(format!("{tablet} state: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            &self.cf(CF_TABLET),
            codec::tablet_state_key(tablet),
            encoded,
        );
        self.db.write_opt(batch, &Self::synced())?;
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            group_commits: self.group_commits.load(Ordering::Relaxed),
            records_appended: self.records_appended.load(Ordering::Relaxed),
        }
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf(CF_META), key)?)
    }

    fn meta_write(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<()> {
        self.write_meta(puts, deletes, &Self::synced())
    }

    fn meta_write_lazy(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<()> {
        // The WAL is one sequential log: the next synced write makes this one durable.
        self.write_meta(puts, deletes, &WriteOptions::default())
    }

    fn meta_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start.to_vec());
        opts.set_iterate_upper_bound(end.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(&self.cf(CF_META), opts);
        if reverse {
            it.seek_to_last();
        } else {
            it.seek_to_first();
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            if reverse {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status()?;
        Ok(out)
    }

    fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(&self.cf(CF_META));
        it.seek(prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_conformance_suite() {
        crate::conformance::run_all(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine =
                RocksTabletEngine::open(dir.path().join("db"), &Config::default()).expect("open");
            (engine, dir)
        });
    }

    #[test]
    fn appended_data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let table = TableId(1);
        let tablet = TabletId(10);
        {
            let engine = RocksTabletEngine::open(&path, &Config::default()).expect("open");
            crate::conformance::append_puts(&engine, table, tablet, &[(b"k", b"v1")], 1);
        }
        let engine = RocksTabletEngine::open(&path, &Config::default()).expect("reopen");
        let got = engine.get(table, b"k", Timestamp::MAX).expect("get");
        assert_eq!(got.map(|v| v.value), Some(b"v1".to_vec()));
        let state = engine
            .tablet_state(tablet)
            .expect("state")
            .expect("present");
        assert_eq!(state.log_end, Seq(1));
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = Config {
            block_cache_mib: 0,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }
}
