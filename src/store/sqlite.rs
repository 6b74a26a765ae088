//! `SqliteStore`: the embedded store, one SQLite database `hotframe.db` in the data
//! directory, in WAL mode.
//!
//! In: validated `model::Profile`s, queries. Out: receipts, aggregates, timelines.
//! Must not: speak HTTP, know prices, or hold memory that grows with the stored volume
//! (every cache is a bounded `GenCache`).
//!
//! Data model: frame names and stacks (frame-id lists) are interned globally and looked
//! up by a 64-bit hash, then verified. A series is (service, profile type, labels),
//! limited per service. A raw profile is one row: its series, window, period, per-state
//! totals as plain columns and a deflated blob of sorted (stack id, state, count)
//! entries (see `codec`). `maintain` builds 10-minute, 1-hour, 6-hour and daily rollups of closed buckets
//! and applies retention (see `maintain`); `query` reads rollups for whole buckets and
//! raw rows for the rest.
//!
//! Concurrency: one writer connection behind a mutex (SQLite has one writer anyway),
//! a pool of reader connections so that queries never wait for ingest: in WAL mode a
//! reader sees the last committed snapshot while the writer appends.
//!
//! Durability: `write` returns after `COMMIT`. With the default `Durability::Os`
//! (`synchronous=NORMAL`), the commit is in the WAL file in the OS page cache: a
//! `kill -9` of the server loses nothing acknowledged; a power loss or kernel crash may
//! roll back the commits since the last WAL sync (at most the last checkpoint
//! interval), but never corrupts the database. `Durability::Disk` (`synchronous=FULL`)
//! fsyncs the WAL on each commit, so an acknowledged profile survives power loss too,
//! at the price of one fsync per write (about 2.5 ms on the reference VM).

use super::cache::GenCache;
use super::codec;
use super::{
    maintain, query, schema, Durability, MaintenanceReport, ProfileStore, Query, ServiceInfo, StoreConfig, StoreError,
    StoreStats, TimelinePoint, WorkTotal, WriteReceipt,
};
use crate::model::{Aggregate, Profile, ProfileBuilder, StateCounts};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "hotframe.db";

/// Deflate level of raw profile blobs: 6 is within a few percent of 9 on these blobs
/// and much cheaper, 1 loses about a fifth of the compression.
pub(super) const RAW_BLOB_LEVEL: Option<u32> = Some(6);
/// Rollup blobs stay plain: they are a few percent of the volume, and every long
/// query reads them, so skipping the inflate pays.
pub(super) const ROLLUP_BLOB_LEVEL: Option<u32> = None;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            // SQLITE_FULL: a write found no space (ENOSPC, or the quota of the file system).
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::DiskFull(e.to_string())
            }
            _ => StoreError::Sql(e.to_string()),
        }
    }
}

/// Locks a mutex; a panic in another thread left plain data (caches) behind, which is
/// still usable, so a poisoned lock is taken over rather than propagated.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An interning cache: stored hash -> (id, independent check hash).
type HashCache = GenCache<u64, (i64, u64), std::hash::BuildHasherDefault<codec::IntHasher>>;

/// The writer connection and its interning caches.
pub(super) struct Writer {
    /// The only connection that writes.
    pub(super) conn: Connection,
    frames: HashCache,
    stacks: HashCache,
    /// Stack by the hashes of its frame *names*: a hit skips interning its frames, which
    /// is what almost every stack of a running service's profile does.
    stacks_by_names: HashCache,
    series: GenCache<String, i64, std::collections::hash_map::RandomState>,
    /// (series, finest bucket) already marked dirty since the last `maintain`, to skip
    /// the insert.
    marked: std::collections::HashSet<(i64, i64)>,
    scratch: Vec<u8>,
}

impl Writer {
    /// Forgets every cached id: after a failed transaction some may point to rows that
    /// were rolled back.
    fn forget(&mut self) {
        self.frames.clear();
        self.stacks.clear();
        self.stacks_by_names.clear();
        self.series.clear();
        self.marked.clear();
    }

    /// Forgets the dirty marks (maintain removed some of them).
    pub(super) fn forget_marks(&mut self) {
        self.marked.clear();
    }
}

/// What the reader side caches: stack id -> encoded frame ids, frame id -> name.
/// Interned rows never change, so these need no invalidation.
pub(super) struct ReadCache {
    pub(super) stacks: GenCache<i64, Arc<[u8]>, std::hash::BuildHasherDefault<codec::IntHasher>>,
    pub(super) frames: GenCache<i64, Arc<str>, std::hash::BuildHasherDefault<codec::IntHasher>>,
}

/// The embedded store. `Send + Sync`: share it in an `Arc` and call it from
/// `spawn_blocking`.
pub struct SqliteStore {
    db_path: PathBuf,
    config: StoreConfig,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    read_cache: Mutex<ReadCache>,
    /// Serialises `compact` and the retention of service buckets.
    compact_lock: Mutex<()>,
    profiles: AtomicU64,
    samples: AtomicU64,
}

/// Opens a connection with the settings every connection shares.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`: `dir/hotframe.db`, WAL mode,
    /// schema migrated to the current version.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create data directory {}: {e}", dir.display()),
            ))
        })?;
        let db_path = dir.join(DB_FILE);
        let mut conn = connect(&db_path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Sql(format!(
                "cannot switch {} to WAL mode (got {mode}); is it on a network file system?",
                db_path.display()
            )));
        }
        let sync = match config.durability {
            Durability::Os => "NORMAL",
            Durability::Disk => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let version = schema::migrate(&mut conn)?;
        // TOTAL() is a float sum, which cannot overflow as SUM() does on absurd counts
        // (such a store must open); the counter is exact up to 2^53.
        let (profiles, samples): (i64, f64) = conn.query_row(
            "SELECT COUNT(*), TOTAL(s_runnable) + TOTAL(s_waiting) + TOTAL(s_timed) + TOTAL(s_blocked) + TOTAL(s_io)
             FROM profiles",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tracing::info!(path = %db_path.display(), version, profiles, "store opened");
        let entries = config.stack_cache_entries.max(16);
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                frames: GenCache::new(entries),
                stacks: GenCache::new(entries),
                stacks_by_names: GenCache::new(entries),
                series: GenCache::new(100_000),
                marked: Default::default(),
                scratch: Vec::new(),
            }),
            readers: Mutex::new(Vec::new()),
            read_cache: Mutex::new(ReadCache { stacks: GenCache::new(entries), frames: GenCache::new(entries) }),
            compact_lock: Mutex::new(()),
            profiles: AtomicU64::new(profiles as u64),
            // `as` saturates a float.
            samples: AtomicU64::new(samples.max(0.0) as u64),
            db_path,
            config,
        })
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The settings the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Runs `f` on a pooled reader connection inside one read transaction, so that
    /// everything it reads comes from the same snapshot.
    pub(super) fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = connect(&self.db_path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                c.pragma_update(None, "query_only", "ON")?;
                // Reading blobs through the page cache of the OS, not a private copy.
                c.pragma_update(None, "mmap_size", 256i64 << 20)?;
                c
            }
        };
        let result = (|| {
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        let mut pool = lock(&self.readers);
        if pool.len() < self.config.reader_connections.max(1) {
            pool.push(conn);
        }
        result
    }

    /// The lock `compact` and bucket retention hold.
    pub(super) fn compact_lock(&self) -> &Mutex<()> {
        &self.compact_lock
    }

    /// The writer, for `maintain`.
    pub(super) fn writer(&self) -> &Mutex<Writer> {
        &self.writer
    }

    /// Adjusts the in-memory counters after retention deleted raw profiles.
    pub(super) fn forget_counts(&self, profiles: u64, samples: u64) {
        self.profiles.fetch_sub(profiles.min(self.profiles.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.samples.fetch_sub(samples.min(self.samples.load(Ordering::Relaxed)), Ordering::Relaxed);
    }

    /// Reads one raw profile back as it was written (frames and stacks re-interned in
    /// a canonical order; samples merged per (stack, state)). `None` if there is no
    /// such profile (never written, or deleted by retention).
    pub fn profile(&self, id: i64) -> Result<Option<Profile>, StoreError> {
        self.with_reader(|conn| {
            let row = conn
                .query_row(
                    "SELECT s.service, s.profile_type, s.labels, p.start_ms, p.end_ms, p.period_ns, p.samples_blob
                     FROM profiles p JOIN series s ON s.id = p.series_id WHERE p.id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, Vec<u8>>(6)?,
                        ))
                    },
                )
                .optional()?;
            let Some((service, profile_type, labels, start_ms, end_ms, period_ns, blob)) = row else {
                return Ok(None);
            };
            let labels = query::parse_labels(&labels)?;
            let mut entries = Vec::new();
            codec::decode_entries(&blob, &mut Vec::new(), |k, c| entries.push((k, c)))?;
            let stack_ids: Vec<i64> = entries.iter().map(|(k, _)| (k >> 3) as i64).collect();
            let (frame_lists, names) = query::resolve_stacks(conn, &self.read_cache, &stack_ids)?;
            let mut b = ProfileBuilder::new(&service, start_ms, end_ms, period_ns as u64).profile_type(&profile_type);
            *b.labels_mut() = labels;
            Ok(Some(query::rebuild_profile(b, &entries, &frame_lists, &names)?))
        })
    }
}

/// Checks what the store relies on, even if the caller validated already.
pub(super) fn check_profile(p: &Profile) -> Result<(), StoreError> {
    if p.start_ms >= p.end_ms {
        return Err(StoreError::Invalid(format!(
            "profile window [{}, {}) ms is empty; until must be after from",
            p.start_ms, p.end_ms
        )));
    }
    if p.period_ns == 0 || p.period_ns > i64::MAX as u64 {
        return Err(StoreError::Invalid(format!("sampling period {} ns is out of range", p.period_ns)));
    }
    if p.service.is_empty() {
        return Err(StoreError::Invalid("service name is empty".into()));
    }
    if let Some(s) = p.samples.iter().find(|s| s.stack as usize >= p.stacks.len()) {
        return Err(StoreError::Invalid(format!("sample refers to stack {} of {}", s.stack, p.stacks.len())));
    }
    if let Some(f) = p.stacks.iter().flatten().find(|f| **f as usize >= p.frames.len()) {
        return Err(StoreError::Invalid(format!("stack refers to frame {f} of {}", p.frames.len())));
    }
    Ok(())
}

/// The series id of (service, type, labels), created within `max` per service.
fn series_id(
    tx: &Connection,
    cache: &mut GenCache<String, i64, std::collections::hash_map::RandomState>,
    p: &Profile,
    max: usize,
) -> Result<i64, StoreError> {
    let labels = serde_json::to_string(&p.labels).map_err(|e| StoreError::Invalid(format!("labels: {e}")))?;
    let key = format!("{}\u{0}{}\u{0}{}", p.service, p.profile_type, labels);
    if let Some(id) = cache.get(&key) {
        return Ok(id);
    }
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM series WHERE service = ?1 AND profile_type = ?2 AND labels = ?3")?
        .query_row(params![p.service, p.profile_type, labels], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            let count: i64 =
                tx.query_row("SELECT COUNT(*) FROM series WHERE service = ?1", [&p.service], |r| r.get(0))?;
            if count as usize >= max {
                return Err(StoreError::TooManySeries { service: p.service.clone(), max });
            }
            tx.execute(
                "INSERT INTO series (service, profile_type, labels, host, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.service, p.profile_type, labels, p.labels.get("host"), crate::model::time::now_ms()],
            )?;
            tx.last_insert_rowid()
        }
    };
    cache.insert(key, id);
    Ok(id)
}

/// Interns `bytes` (a frame name or an encoded stack) in `table`, returning its id.
/// The cache maps the stored hash to (id, check hash); the database lookup verifies
/// the bytes themselves, so a hash collision costs a second row, never a wrong id.
fn intern(tx: &Connection, cache: &mut HashCache, kind: Interned, bytes: &[u8]) -> Result<i64, StoreError> {
    let (hash, check) = codec::hash64_pair(bytes, codec::SEED_STORED, codec::SEED_CHECK);
    if let Some((id, c)) = cache.get(&hash) {
        if c == check {
            return Ok(id);
        }
    }
    let (select, insert) = match kind {
        Interned::Frame => {
            ("SELECT id, name FROM frames WHERE hash = ?1", "INSERT INTO frames (hash, name) VALUES (?1, ?2)")
        }
        Interned::Stack => {
            ("SELECT id, frame_ids FROM stacks WHERE hash = ?1", "INSERT INTO stacks (hash, frame_ids) VALUES (?1, ?2)")
        }
    };
    let mut found = None;
    {
        let mut stmt = tx.prepare_cached(select)?;
        let mut rows = stmt.query([hash as i64])?;
        while let Some(row) = rows.next()? {
            let stored = row.get_ref(1)?;
            let same = match kind {
                Interned::Frame => stored.as_str().map(|s| s.as_bytes() == bytes).unwrap_or(false),
                Interned::Stack => stored.as_blob().map(|b| b == bytes).unwrap_or(false),
            };
            if same {
                found = Some(row.get::<_, i64>(0)?);
                break;
            }
        }
    }
    let id = match found {
        Some(id) => id,
        None => {
            let mut stmt = tx.prepare_cached(insert)?;
            match kind {
                // Frame names come from a `String`, so they are valid UTF-8.
                Interned::Frame => stmt.execute(params![hash as i64, String::from_utf8_lossy(bytes)])?,
                Interned::Stack => stmt.execute(params![hash as i64, bytes])?,
            };
            tx.last_insert_rowid()
        }
    };
    cache.insert(hash, (id, check));
    Ok(id)
}

/// Two independent 64-bit keys of a stack from the hashes of its frame names (each
/// name hashed once per profile, memoised in `name_hashes`; (0, 0) = not yet).
pub(super) fn names_key(stack: &[u32], names: &[String], name_hashes: &mut [(u64, u64)]) -> (u64, u64) {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let (mut k1, mut k2) = (codec::SEED_STORED ^ stack.len() as u64, codec::SEED_CHECK ^ stack.len() as u64);
    for &f in stack {
        let h = &mut name_hashes[f as usize];
        if *h == (0, 0) {
            let name = names[f as usize].as_bytes();
            *h = codec::hash64_pair(name, codec::SEED_STORED, codec::SEED_CHECK);
        }
        k1 = (k1 ^ h.0).wrapping_mul(K).rotate_left(23);
        k2 = (k2 ^ h.1).wrapping_mul(K).rotate_left(29);
    }
    (k1, k2)
}

/// What `intern` interns.
#[derive(Clone, Copy)]
enum Interned {
    Frame,
    Stack,
}

/// Hour bucket length, ms.
pub(super) const HOUR_MS: i64 = 3_600_000;
/// Day bucket length, ms.
pub(super) const DAY_MS: i64 = 86_400_000;
/// Finest rollup bucket, ms: it bounds the raw data the edges of a query read.
pub(super) const TEN_MIN_MS: i64 = 600_000;
/// Rollup resolutions, finest first; each bucket is built from the level below it
/// (raw profiles for the finest) and each divides the next. The 6-hour level keeps
/// the partial days at the ends of a long range from costing up to 46 hourly reads.
pub(super) const LEVELS: [i64; 4] = [TEN_MIN_MS, HOUR_MS, 6 * HOUR_MS, DAY_MS];

/// Start of the bucket of length `len` holding `t`.
pub(super) fn bucket_of(t: i64, len: i64) -> i64 {
    t.div_euclid(len) * len
}

impl Writer {
    /// Writes one profile in one transaction; the caller forgets the caches on error.
    fn write(&mut self, p: &Profile, config: &StoreConfig) -> Result<WriteReceipt, StoreError> {
        let Writer { conn, frames, stacks, stacks_by_names, series, marked, scratch } = self;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let series_id = series_id(&tx, series, p, config.max_series_per_service)?;

        // Everything lazily: only frames and stacks that samples use (0 = not yet).
        let mut name_hashes = vec![(0u64, 0u64); p.frames.len()];
        let mut frame_ids = vec![0i64; p.frames.len()];
        let mut stack_ids = vec![0i64; p.stacks.len()];
        let mut global = Vec::new();
        let mut entries: Vec<(u64, u64)> = Vec::with_capacity(p.samples.len());
        let mut totals = StateCounts::default();
        for s in p.samples.iter().filter(|s| s.count > 0) {
            let si = s.stack as usize;
            if stack_ids[si] == 0 {
                let stack = &p.stacks[si];
                let (k1, k2) = names_key(stack, &p.frames, &mut name_hashes);
                stack_ids[si] = match stacks_by_names.get(&k1) {
                    Some((id, check)) if check == k2 => id,
                    _ => {
                        global.clear();
                        for &f in stack {
                            let fi = f as usize;
                            if frame_ids[fi] == 0 {
                                frame_ids[fi] = intern(&tx, frames, Interned::Frame, p.frames[fi].as_bytes())?;
                            }
                            global.push(frame_ids[fi]);
                        }
                        codec::encode_frame_ids(&global, scratch);
                        let id = intern(&tx, stacks, Interned::Stack, scratch)?;
                        stacks_by_names.insert(k1, (id, k2));
                        id
                    }
                };
            }
            entries.push((codec::entry_key(stack_ids[si], s.state), s.count));
            totals[s.state.index()] = totals[s.state.index()].saturating_add(s.count);
        }
        codec::sort_and_merge(&mut entries);
        let blob = codec::encode_entries(&entries, RAW_BLOB_LEVEL)?;
        let t = totals.map(|v| v.min(i64::MAX as u64) as i64);
        tx.prepare_cached(
            "INSERT INTO profiles (series_id, start_ms, end_ms, period_ns, s_runnable, s_waiting, s_timed, s_blocked, s_io, entries, samples_blob)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            series_id,
            p.start_ms,
            p.end_ms,
            p.period_ns as i64,
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            entries.len() as i64,
            blob
        ])?;
        let profile_id = tx.last_insert_rowid();
        super::buckets::enqueue(&tx, profile_id, series_id, p.start_ms)?;
        if let Some(units) = p.work {
            super::work::insert(&tx, series_id, p.start_ms, p.end_ms, units)?;
        }
        let bucket = bucket_of(p.start_ms, LEVELS[0]);
        if !marked.contains(&(series_id, bucket)) {
            tx.prepare_cached(
                "INSERT INTO dirty_buckets (series_id, resolution_ms, bucket_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (series_id, resolution_ms, bucket_ms) DO NOTHING",
            )?
            .execute(params![series_id, LEVELS[0], bucket])?;
        }
        tx.commit()?;
        if marked.len() > 100_000 {
            marked.clear();
        }
        marked.insert((series_id, bucket));
        Ok(WriteReceipt { profile_id, samples: totals.iter().fold(0u64, |a, b| a.saturating_add(*b)) })
    }
}

impl ProfileStore for SqliteStore {
    fn write(&self, profile: &Profile) -> Result<WriteReceipt, StoreError> {
        check_profile(profile)?;
        let mut w = lock(&self.writer);
        let result = w.write(profile, &self.config);
        match &result {
            Ok(r) => {
                self.profiles.fetch_add(1, Ordering::Relaxed);
                self.samples.fetch_add(r.samples, Ordering::Relaxed);
            }
            Err(e) => {
                w.forget();
                tracing::warn!(service = %profile.service, error = %e, "profile not stored");
            }
        }
        result
    }

    fn services(&self) -> Result<Vec<ServiceInfo>, StoreError> {
        self.with_reader(query::services)
    }

    fn aggregate(&self, q: &Query) -> Result<Aggregate, StoreError> {
        if self.config.service_buckets && q.labels.is_empty() {
            return self.with_reader(|conn| super::buckets::aggregate(conn, &self.read_cache, q));
        }
        self.with_reader(|conn| query::aggregate(conn, &self.read_cache, q))
    }

    fn timeline(&self, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, StoreError> {
        if self.config.service_buckets && q.labels.is_empty() {
            return self.with_reader(|conn| super::buckets::timeline(conn, q, step_ms));
        }
        self.with_reader(|conn| query::timeline(conn, q, step_ms))
    }

    fn settings(&self, service: &str) -> Result<Option<String>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row("SELECT json FROM settings WHERE service = ?1", [service], |r| r.get(0)).optional()?)
        })
    }

    fn put_settings(&self, service: &str, json: &str) -> Result<(), StoreError> {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(json) {
            return Err(StoreError::Invalid(format!("settings of {service:?} are not valid JSON: {e}")));
        }
        let w = lock(&self.writer);
        w.conn.execute(
            "INSERT INTO settings (service, json, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (service) DO UPDATE SET json = excluded.json, updated_ms = excluded.updated_ms",
            params![service, json, crate::model::time::now_ms()],
        )?;
        Ok(())
    }

    fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StoreError> {
        maintain::maintain(self, now_ms)
    }

    fn compact(&self) -> Result<u64, StoreError> {
        super::buckets::compact(self)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let (series, stacks, frames) = self.with_reader(|conn| {
            // Interned rows are never deleted, so the largest id is their count.
            Ok(conn.query_row(
                "SELECT (SELECT COUNT(*) FROM series), (SELECT COALESCE(MAX(id), 0) FROM stacks), (SELECT COALESCE(MAX(id), 0) FROM frames)",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )?)
        })?;
        let mut bytes_on_disk = 0;
        for suffix in ["", "-wal"] {
            let mut name = self.db_path.clone().into_os_string();
            name.push(suffix);
            if let Ok(m) = std::fs::metadata(&name) {
                bytes_on_disk += m.len();
            }
        }
        Ok(StoreStats {
            bytes_on_disk,
            profiles: self.profiles.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            series: series as u64,
            stacks: stacks as u64,
            frames: frames as u64,
        })
    }

    // The wins ledger lives in wins.rs.
    fn create_win(&self, json: &str) -> Result<i64, StoreError> {
        self.insert_win(json)
    }

    fn win(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.select_win(id)
    }

    fn wins(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.select_wins()
    }

    fn update_win(&self, id: i64, json: &str) -> Result<bool, StoreError> {
        self.replace_win(id, json)
    }

    // The work counter lives in work.rs.
    fn work(&self, query: &Query) -> Result<WorkTotal, StoreError> {
        self.select_work(query)
    }
}
