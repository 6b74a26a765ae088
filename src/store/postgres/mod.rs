//! `PostgresStore`: the store on a PostgreSQL database (15 or later) that several
//! `hotframe serve` replicas share: any replica ingests and answers queries.
//!
//! In: validated `model::Profile`s, queries, a `postgres://` URL. Out: the same
//! receipts, aggregates and timelines as `SqliteStore` (one conformance suite runs
//! against both). Must not: speak HTTP, hold memory that grows with the stored volume
//! (every cache is a bounded `GenCache`), or wait for ever on a database that is gone.
//!
//! Data model: the SQLite one (see `sqlite`), with raw profiles partitioned by UTC day
//! (`schema`). Frames and stacks are interned in their own short statements, before the
//! profile's transaction and in hash order, so that replicas interning the same new
//! stacks neither deadlock nor hold each other's locks for a whole write; an interned
//! row is never rolled back, so a cached id is always valid.
//!
//! Coordination between replicas: migrations under an advisory lock (`schema`);
//! `maintain` (rollups, partitions, retention) only in the replica that gets
//! `pg_try_advisory_lock` (others return at once); `compact` (service buckets) in every
//! replica at once, each taking other pending rows (`buckets`); a new series under a per-service
//! transaction lock so that the series limit holds across replicas; an ops-win send
//! claimed with one atomic `UPDATE ... RETURNING` (`claim_win_send`).
//!
//! Failures: a connection that cannot be had within `CONNECT_TIMEOUT`, or that breaks,
//! is `StoreError::Unavailable` (the server answers 503 with `Retry-After`); the pool
//! checks connections on checkout and opens new ones as the database comes back, so
//! the server recovers by itself. Deadlocks and serialization failures are retried.
//!
//! Durability: `write` returns after `COMMIT`, with PostgreSQL's own `synchronous_commit`
//! (on by default: the commit is flushed to the WAL on disk).

mod buckets;
mod maintain;
mod query;
mod schema;

use super::cache::GenCache;
use super::codec;
use super::query::Rows;
use super::sqlite::{bucket_of, check_profile, lock, names_key, ReadCache, DAY_MS, LEVELS, RAW_BLOB_LEVEL};
use super::{
    MaintenanceReport, ProfileStore, Query, ServiceInfo, StoreConfig, StoreError, StoreStats, TimelinePoint, WorkTotal,
    WriteReceipt,
};
use crate::model::{Aggregate, Profile, StateCounts};
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use query::PgRows;
use r2d2_postgres::PostgresConnectionManager;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

type Manager = PostgresConnectionManager<NoTls>;
type Conn = r2d2::PooledConnection<Manager>;

/// How long a caller waits for a connection before the store says `Unavailable`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First key of every advisory lock hotframe takes (the second says which).
pub(super) const LOCK_NAMESPACE: i32 = 0x6874_6672; // "htfr"
/// Advisory lock (second key) of migrations.
pub(super) const LOCK_MIGRATE: i32 = 1;
/// Advisory lock of `maintain`: one replica at a time.
pub(super) const LOCK_MAINTAIN: i32 = 2;
/// Advisory lock of partition creation.
pub(super) const LOCK_PARTITION: i32 = 3;
/// Advisory lock of the service buckets: `compact` takes it shared (replicas compact
/// side by side), bucket retention exclusive.
pub(super) const LOCK_BUCKETS: i32 = 4;
/// Namespace of the per-service series locks (second key: a hash of the service).
const LOCK_SERIES_NAMESPACE: i32 = 0x6874_6673;
/// Shards of the `counts` table.
const COUNT_SHARDS: i32 = 64;
/// Attempts of a write that hit a deadlock or a serialization failure.
const WRITE_ATTEMPTS: usize = 4;

/// What a backend step failed with: a database error (still classifiable: retry,
/// unavailable) or a store error.
#[derive(Debug)]
pub(super) enum Failure {
    Db(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    /// A conflict between concurrent transactions: running it again succeeds.
    fn is_retryable(&self) -> bool {
        let Failure::Db(e) = self else { return false };
        matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
    }

    /// A row whose day has no partition (dropped by retention in another replica).
    fn is_missing_partition(&self) -> bool {
        let Failure::Db(e) = self else { return false };
        e.code() == Some(&SqlState::CHECK_VIOLATION) && e.to_string().contains("no partition")
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Store(e) => e,
            Failure::Db(e) => {
                let gone = e.is_closed()
                    || e.code().is_some_and(|c| {
                        c.code().starts_with("08")
                            || *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CRASH_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                    })
                    || (e.code().is_none() && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()));
                if gone {
                    StoreError::Unavailable(e.to_string())
                } else if e.code() == Some(&SqlState::DISK_FULL) {
                    StoreError::DiskFull(e.to_string())
                } else {
                    StoreError::Sql(e.to_string())
                }
            }
        }
    }
}

/// An interning cache: stored hash -> (id, independent check hash).
type HashCache = GenCache<u64, (i64, u64), std::hash::BuildHasherDefault<codec::IntHasher>>;

/// What writes cache; every id in it is committed (interning commits on its own).
struct WriteCache {
    frames: HashCache,
    stacks: HashCache,
    /// Stack by the hashes of its frame names (see `sqlite::Writer`).
    stacks_by_names: HashCache,
    series: GenCache<String, i64, std::collections::hash_map::RandomState>,
    /// (series, finest bucket) this replica marked dirty since its last `maintain`.
    marked: HashSet<(i64, i64)>,
    /// Days whose raw partition exists.
    partitions: HashSet<i64>,
}

/// The shared store. `Send + Sync`: share it in an `Arc` and call it from
/// `spawn_blocking`.
pub struct PostgresStore {
    /// Always Some until dropped (see `Drop`).
    pool: Option<r2d2::Pool<Manager>>,
    config: StoreConfig,
    /// The URL without its password, for messages.
    target: String,
    writes: Mutex<WriteCache>,
    read_cache: Mutex<ReadCache>,
}

/// `postgres://user:secret@host/db` without the secret, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// The partition of raw profiles starting on day `day` (days since 1970-01-01, UTC).
fn partition_name(day: i64) -> String {
    if day < 0 {
        format!("profiles_dm{}", day.unsigned_abs())
    } else {
        format!("profiles_d{day}")
    }
}

/// The day of a partition name, if it is one of ours.
fn partition_day(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("profiles_d")?;
    match rest.strip_prefix('m') {
        Some(neg) => neg.parse::<i64>().ok().map(|d| -d),
        None => rest.parse().ok(),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`, or key=value
    /// pairs), migrates the schema and keeps a pool of `reader_connections + 4`
    /// connections. Fails with `Unavailable` when the database cannot be reached within
    /// a few seconds.
    pub fn open(url: &str, config: StoreConfig) -> Result<PostgresStore, StoreError> {
        let target = redacted(url);
        let pg: postgres::Config =
            url.parse().map_err(|e| StoreError::Invalid(format!("store URL {target} is not a PostgreSQL URL: {e}")))?;
        let manager = PostgresConnectionManager::new(pg, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size((config.reader_connections.max(1) + 4) as u32)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .error_handler(Box::new(LogErrors::default()))
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to {target}: {e}")))?;
        let store = PostgresStore {
            pool: Some(pool),
            target,
            writes: Mutex::new(WriteCache {
                frames: GenCache::new(config.stack_cache_entries.max(16)),
                stacks: GenCache::new(config.stack_cache_entries.max(16)),
                stacks_by_names: GenCache::new(config.stack_cache_entries.max(16)),
                series: GenCache::new(100_000),
                marked: HashSet::new(),
                partitions: HashSet::new(),
            }),
            read_cache: Mutex::new(ReadCache {
                stacks: GenCache::new(config.stack_cache_entries.max(16)),
                frames: GenCache::new(config.stack_cache_entries.max(16)),
            }),
            config,
        };
        let version = schema::migrate(&mut *store.conn()?)?;
        tracing::info!(store = %store.target, version, "store opened");
        Ok(store)
    }

    /// The settings the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// A pooled connection, or `Unavailable` after `CONNECT_TIMEOUT`.
    fn conn(&self) -> Result<Conn, StoreError> {
        let pool = self.pool.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?;
        pool.get().map_err(|e| {
            StoreError::Unavailable(format!("no connection to {} within {CONNECT_TIMEOUT:?}: {e}", self.target))
        })
    }

    /// Runs `f` in one read-only repeatable-read transaction, so that everything it
    /// reads comes from one snapshot.
    fn read<T>(&self, f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, Failure>) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let result = (|| -> Result<T, Failure> {
            let mut tx = conn
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })();
        result.map_err(StoreError::from)
    }

    /// Reads one raw profile back as it was written (see `SqliteStore::profile`).
    pub fn profile(&self, id: i64) -> Result<Option<Profile>, StoreError> {
        self.read(|tx| query::profile(tx, &self.read_cache, id))
    }

    /// Makes sure the partition of raw profiles starting on `day` exists.
    fn ensure_partition(&self, client: &mut Client, day: i64) -> Result<(), Failure> {
        if lock(&self.writes).partitions.contains(&day) {
            return Ok(());
        }
        create_partition(client, day)?;
        lock(&self.writes).partitions.insert(day);
        Ok(())
    }

    /// Interns `items` (hash, check hash, bytes) in `table`, in hash order, returning
    /// their ids in the same order. Each statement commits on its own.
    fn intern(&self, client: &mut Client, kind: Interned, items: &[(u64, u64, Vec<u8>)]) -> Result<Vec<i64>, Failure> {
        let mut ids = vec![0i64; items.len()];
        let mut missing: Vec<usize> = Vec::new();
        {
            let mut w = lock(&self.writes);
            let cache = match kind {
                Interned::Frame => &mut w.frames,
                Interned::Stack => &mut w.stacks,
            };
            for (i, (hash, check, _)) in items.iter().enumerate() {
                match cache.get(hash) {
                    Some((id, c)) if c == *check => ids[i] = id,
                    _ => missing.push(i),
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        missing.sort_by_key(|&i| (items[i].0 as i64, items[i].1 as i64));
        missing.dedup_by_key(|i| (items[*i].0, items[*i].1));
        let hashes: Vec<i64> = missing.iter().map(|&i| items[i].0 as i64).collect();
        let checks: Vec<i64> = missing.iter().map(|&i| items[i].1 as i64).collect();
        let bytes: Vec<&[u8]> = missing.iter().map(|&i| items[i].2.as_slice()).collect();
        let (table, column) = match kind {
            Interned::Frame => ("frames", "name"),
            Interned::Stack => ("stacks", "frame_ids"),
        };
        client.execute(
            &format!(
                "INSERT INTO {table} (hash, chk, {column})
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::bytea[]) ORDER BY 1, 2
                 ON CONFLICT (hash, chk) DO NOTHING"
            ),
            &[&hashes, &checks, &bytes],
        )?;
        let rows =
            client.query(&format!("SELECT id, hash, chk, {column} FROM {table} WHERE hash = ANY($1)"), &[&hashes])?;
        let mut found: std::collections::HashMap<(u64, u64), (i64, Vec<u8>)> = Default::default();
        for row in rows {
            let (id, hash, chk, stored): (i64, i64, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2), row.get(3));
            found.insert((hash as u64, chk as u64), (id, stored));
        }
        let mut w = lock(&self.writes);
        let cache = match kind {
            Interned::Frame => &mut w.frames,
            Interned::Stack => &mut w.stacks,
        };
        for (i, (hash, check, item)) in items.iter().enumerate() {
            if ids[i] != 0 {
                continue;
            }
            match found.get(&(*hash, *check)) {
                Some((id, stored)) if stored == item => {
                    ids[i] = *id;
                    cache.insert(*hash, (*id, *check));
                }
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "{table} row of hashes ({hash:x}, {check:x}) holds other bytes than those interned"
                    ))
                    .into())
                }
            }
        }
        Ok(ids)
    }

    /// Global stack ids of the stacks `p`'s samples use (index = local stack; 0 = unused).
    fn stack_ids(&self, client: &mut Client, p: &Profile) -> Result<Vec<i64>, Failure> {
        let mut name_hashes = vec![(0u64, 0u64); p.frames.len()];
        let mut stack_ids = vec![0i64; p.stacks.len()];
        let mut keys = vec![(0u64, 0u64); p.stacks.len()];
        let mut todo: Vec<usize> = Vec::new();
        {
            let mut w = lock(&self.writes);
            for s in p.samples.iter().filter(|s| s.count > 0) {
                let si = s.stack as usize;
                if stack_ids[si] != 0 || keys[si] != (0, 0) {
                    continue;
                }
                let (k1, k2) = names_key(&p.stacks[si], &p.frames, &mut name_hashes);
                keys[si] = (k1, k2);
                match w.stacks_by_names.get(&k1) {
                    Some((id, check)) if check == k2 => stack_ids[si] = id,
                    _ => todo.push(si),
                }
            }
        }
        if todo.is_empty() {
            return Ok(stack_ids);
        }
        // Frames of the stacks not known by name, then those stacks.
        let mut frame_slot = vec![usize::MAX; p.frames.len()];
        let mut frames: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for &si in &todo {
            for &f in &p.stacks[si] {
                let fi = f as usize;
                if frame_slot[fi] == usize::MAX {
                    frame_slot[fi] = frames.len();
                    let name = p.frames[fi].as_bytes();
                    let (h, c) = codec::hash64_pair(name, codec::SEED_STORED, codec::SEED_CHECK);
                    frames.push((h, c, name.to_vec()));
                }
            }
        }
        let frame_ids = self.intern(client, Interned::Frame, &frames)?;
        let mut stacks: Vec<(u64, u64, Vec<u8>)> = Vec::with_capacity(todo.len());
        let mut global = Vec::new();
        for &si in &todo {
            global.clear();
            global.extend(p.stacks[si].iter().map(|&f| frame_ids[frame_slot[f as usize]]));
            let mut bytes = Vec::new();
            codec::encode_frame_ids(&global, &mut bytes);
            let (h, c) = codec::hash64_pair(&bytes, codec::SEED_STORED, codec::SEED_CHECK);
            stacks.push((h, c, bytes));
        }
        let ids = self.intern(client, Interned::Stack, &stacks)?;
        let mut w = lock(&self.writes);
        for (&si, id) in todo.iter().zip(ids) {
            stack_ids[si] = id;
            w.stacks_by_names.insert(keys[si].0, (id, keys[si].1));
        }
        Ok(stack_ids)
    }

    /// The series id of (service, type, labels), created within the limit per service.
    fn series_id(&self, tx: &mut postgres::Transaction<'_>, p: &Profile) -> Result<i64, Failure> {
        let labels = serde_json::to_string(&p.labels).map_err(|e| StoreError::Invalid(format!("labels: {e}")))?;
        let key = format!("{}\u{0}{}\u{0}{}", p.service, p.profile_type, labels);
        if let Some(id) = lock(&self.writes).series.get(&key) {
            return Ok(id);
        }
        let select = "SELECT id FROM series WHERE service = $1 AND profile_type = $2 AND labels = $3";
        let mut found = tx.query_opt(select, &[&p.service, &p.profile_type, &labels])?;
        if found.is_none() {
            // One creator per service at a time across replicas, so the limit holds.
            let service_key = codec::hash64(p.service.as_bytes(), codec::SEED_STORED) as i32;
            tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_SERIES_NAMESPACE, &service_key])?;
            found = tx.query_opt(select, &[&p.service, &p.profile_type, &labels])?;
        }
        let id = match found {
            Some(row) => row.get(0),
            None => {
                let count: i64 = tx.query_one("SELECT COUNT(*) FROM series WHERE service = $1", &[&p.service])?.get(0);
                let max = self.config.max_series_per_service;
                if count as usize >= max {
                    return Err(StoreError::TooManySeries { service: p.service.clone(), max }.into());
                }
                tx.query_one(
                    "INSERT INTO series (service, profile_type, labels, host, created_ms) VALUES ($1, $2, $3, $4, $5)
                     RETURNING id",
                    &[&p.service, &p.profile_type, &labels, &p.labels.get("host"), &crate::model::time::now_ms()],
                )?
                .get(0)
            }
        };
        // Cached only once committed (the caller forgets the cache on failure).
        Ok(id)
    }

    /// One attempt of `write`.
    fn write_once(&self, client: &mut Client, p: &Profile) -> Result<WriteReceipt, Failure> {
        let stack_ids = self.stack_ids(client, p)?;
        let mut entries: Vec<(u64, u64)> = Vec::with_capacity(p.samples.len());
        let mut totals = StateCounts::default();
        for s in p.samples.iter().filter(|s| s.count > 0) {
            entries.push((codec::entry_key(stack_ids[s.stack as usize], s.state), s.count));
            totals[s.state.index()] = totals[s.state.index()].saturating_add(s.count);
        }
        codec::sort_and_merge(&mut entries);
        let blob = codec::encode_entries(&entries, RAW_BLOB_LEVEL)?;
        let t = totals.map(|v| v.min(i64::MAX as u64) as i64);
        let samples = totals.iter().fold(0u64, |a, b| a.saturating_add(*b));
        self.ensure_partition(client, p.start_ms.div_euclid(DAY_MS))?;

        let mut tx = client.transaction()?;
        let series_id = self.series_id(&mut tx, p)?;
        let profile_id: i64 = tx
            .query_one(
                "INSERT INTO profiles (series_id, start_ms, end_ms, period_ns, s_runnable, s_waiting, s_timed, s_blocked, s_io, entries, samples_blob)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                &[&series_id, &p.start_ms, &p.end_ms, &(p.period_ns as i64), &t[0], &t[1], &t[2], &t[3], &t[4], &(entries.len() as i64), &blob],
            )?
            .get(0);
        buckets::enqueue(&mut tx, profile_id, series_id, p.start_ms)?;
        if let Some(units) = p.work {
            tx.execute(
                "INSERT INTO work (series_id, start_ms, end_ms, units) VALUES ($1, $2, $3, $4)",
                &[&series_id, &p.start_ms, &p.end_ms, &(units.min(i64::MAX as u64) as i64)],
            )?;
        }
        let bucket = bucket_of(p.start_ms, LEVELS[0]);
        let marked = lock(&self.writes).marked.contains(&(series_id, bucket));
        if !marked {
            tx.execute(
                "INSERT INTO dirty_buckets (series_id, resolution_ms, bucket_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (series_id, resolution_ms, bucket_ms) DO NOTHING",
                &[&series_id, &LEVELS[0], &bucket],
            )?;
        }
        let shard = fastrand::i32(0..COUNT_SHARDS);
        let samples_i64 = samples.min(i64::MAX as u64) as i64;
        tx.execute(
            "INSERT INTO counts (shard, profiles, samples) VALUES ($1, 1, $2)
             ON CONFLICT (shard) DO UPDATE SET profiles = counts.profiles + 1,
                 samples = LEAST(counts.samples, 9223372036854775807 - excluded.samples) + excluded.samples",
            &[&shard, &samples_i64],
        )?;
        tx.commit()?;
        let mut w = lock(&self.writes);
        let labels = serde_json::to_string(&p.labels).unwrap_or_default();
        w.series.insert(format!("{}\u{0}{}\u{0}{}", p.service, p.profile_type, labels), series_id);
        if w.marked.len() > 100_000 {
            w.marked.clear();
        }
        w.marked.insert((series_id, bucket));
        Ok(WriteReceipt { profile_id, samples })
    }
}

/// Creates the partition of `day` unless it exists: a plain table attached to
/// `profiles` (attaching takes a lock that lets reads and writes of other days go on).
pub(super) fn create_partition(client: &mut Client, day: i64) -> Result<(), Failure> {
    let name = partition_name(day);
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_NAMESPACE, &LOCK_PARTITION])?;
    let exists: bool = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])?.get(0);
    if !exists {
        let (from, until) = (day * DAY_MS, (day + 1) * DAY_MS);
        // The CHECK lets ATTACH skip its scan; it is implied by the bounds and dropped after.
        tx.batch_execute(&format!(
            "CREATE TABLE {name} (LIKE profiles INCLUDING DEFAULTS);
             ALTER TABLE {name} ADD CONSTRAINT {name}_range CHECK (start_ms >= {from} AND start_ms < {until});
             ALTER TABLE profiles ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({until});
             ALTER TABLE {name} DROP CONSTRAINT {name}_range;"
        ))?;
        tracing::debug!(partition = %name, "raw partition created");
    }
    tx.commit()?;
    Ok(())
}

impl Drop for PostgresStore {
    /// Closes the connections on a plain thread: a sync client blocks on its own runtime
    /// as it closes, which panics on a tokio worker (where the server drops its state).
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// What `intern` interns.
#[derive(Clone, Copy)]
enum Interned {
    Frame,
    Stack,
}

/// Passes the pool's connection errors to `tracing` (its default handler uses `log`),
/// at most one warning per `LOG_EVERY_MS` (an outage fails many attempts a second).
#[derive(Debug, Default)]
struct LogErrors {
    last_ms: std::sync::atomic::AtomicI64,
}

/// Least time between two warnings of a failing connection.
const LOG_EVERY_MS: i64 = 10_000;

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, error: postgres::Error) {
        let now = crate::model::time::now_ms();
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= LOG_EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %error, "cannot open a database connection; retrying");
        } else {
            tracing::debug!(error = %error, "cannot open a database connection; retrying");
        }
    }
}

impl ProfileStore for PostgresStore {
    fn write(&self, profile: &Profile) -> Result<WriteReceipt, StoreError> {
        check_profile(profile)?;
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write_once(&mut conn, profile) {
                Ok(r) => return Ok(r),
                Err(f) if attempt < WRITE_ATTEMPTS && (f.is_retryable() || f.is_missing_partition()) => {
                    if f.is_missing_partition() {
                        lock(&self.writes).partitions.clear();
                    }
                    tracing::debug!(attempt, error = ?f, "write conflicted; retrying");
                }
                Err(f) => {
                    let e = StoreError::from(f);
                    let mut w = lock(&self.writes);
                    w.series.clear();
                    w.marked.clear();
                    tracing::warn!(service = %profile.service, error = %e, "profile not stored");
                    return Err(e);
                }
            }
        }
    }

    fn services(&self) -> Result<Vec<ServiceInfo>, StoreError> {
        self.read(query::services)
    }

    fn aggregate(&self, q: &Query) -> Result<Aggregate, StoreError> {
        if self.config.service_buckets && q.labels.is_empty() {
            return self.read(|tx| buckets::aggregate(tx, &self.read_cache, q));
        }
        self.read(|tx| PgRows(tx).aggregate(&self.read_cache, q))
    }

    fn timeline(&self, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, StoreError> {
        if self.config.service_buckets && q.labels.is_empty() {
            return self.read(|tx| buckets::timeline(tx, q, step_ms));
        }
        self.read(|tx| PgRows(tx).timeline(q, step_ms))
    }

    fn settings(&self, service: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| Ok(tx.query_opt("SELECT json FROM settings WHERE service = $1", &[&service])?.map(|r| r.get(0))))
    }

    fn put_settings(&self, service: &str, json: &str) -> Result<(), StoreError> {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(json) {
            return Err(StoreError::Invalid(format!("settings of {service:?} are not valid JSON: {e}")));
        }
        self.conn()?
            .execute(
                "INSERT INTO settings (service, json, updated_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (service) DO UPDATE SET json = excluded.json, updated_ms = excluded.updated_ms",
                &[&service, &json, &crate::model::time::now_ms()],
            )
            .map_err(|e| StoreError::from(Failure::from(e)))?;
        Ok(())
    }

    fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StoreError> {
        let mut conn = self.conn()?;
        let report = maintain::maintain(&mut conn, &self.config, now_ms).map_err(StoreError::from)?;
        // Writes skip marking buckets they think are marked; maintain unmarked some.
        lock(&self.writes).marked.clear();
        Ok(report)
    }

    fn compact(&self) -> Result<u64, StoreError> {
        Ok(buckets::compact(&mut *self.conn()?)?)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|tx| {
            let row = tx.query_one(
                "SELECT (SELECT COALESCE(SUM(profiles), 0)::int8 FROM counts),
                        (SELECT COALESCE(SUM(samples), 0)::int8 FROM counts),
                        (SELECT COUNT(*) FROM series),
                        pg_database_size(current_database())",
                &[],
            )?;
            let mut out = StoreStats {
                profiles: row.get::<_, i64>(0).max(0) as u64,
                samples: row.get::<_, i64>(1).max(0) as u64,
                series: row.get::<_, i64>(2).max(0) as u64,
                bytes_on_disk: row.get::<_, i64>(3).max(0) as u64,
                ..StoreStats::default()
            };
            // Exact counts while small, the planner's estimate beyond (a count of
            // millions of rows on every /metrics scrape would cost seconds).
            for (table, slot) in [("stacks", &mut out.stacks), ("frames", &mut out.frames)] {
                let estimate: f32 =
                    tx.query_one("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)", &[&table])?.get(0);
                *slot = if estimate > 100_000.0 {
                    estimate as u64
                } else {
                    tx.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?.get::<_, i64>(0).max(0) as u64
                };
            }
            Ok(out)
        })
    }

    fn create_win(&self, json: &str) -> Result<i64, StoreError> {
        check_win_json(json)?;
        let now = crate::model::time::now_ms();
        let row = self
            .conn()?
            .query_one(
                "INSERT INTO wins (json, created_ms, updated_ms) VALUES ($1, $2, $2) RETURNING id",
                &[&json, &now],
            )
            .map_err(|e| StoreError::from(Failure::from(e)))?;
        Ok(row.get(0))
    }

    fn win(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.read(|tx| Ok(tx.query_opt("SELECT json FROM wins WHERE id = $1", &[&id])?.map(|r| r.get(0))))
    }

    fn wins(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(|tx| {
            Ok(tx.query("SELECT id, json FROM wins ORDER BY id", &[])?.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn update_win(&self, id: i64, json: &str) -> Result<bool, StoreError> {
        check_win_json(json)?;
        let changed = self
            .conn()?
            .execute(
                "UPDATE wins SET json = $1, updated_ms = $2 WHERE id = $3",
                &[&json, &crate::model::time::now_ms(), &id],
            )
            .map_err(|e| StoreError::from(Failure::from(e)))?;
        Ok(changed == 1)
    }

    fn work(&self, q: &Query) -> Result<WorkTotal, StoreError> {
        self.read(|tx| query::work(tx, q))
    }

    fn claim_win_send(&self, id: i64, owner: &str, now_ms: i64, lease_ms: i64) -> Result<bool, StoreError> {
        // One statement: the row lock makes a concurrent claim wait, then see this one.
        let claimed = self
            .conn()?
            .query_opt(
                "UPDATE wins SET claimed_by = $2, claimed_until = $3 + $4
                 WHERE id = $1 AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_until <= $3)
                 RETURNING id",
                &[&id, &owner, &now_ms, &lease_ms],
            )
            .map_err(|e| StoreError::from(Failure::from(e)))?;
        Ok(claimed.is_some())
    }

    fn release_win_send(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "UPDATE wins SET claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND claimed_by = $2",
                &[&id, &owner],
            )
            .map_err(|e| StoreError::from(Failure::from(e)))?;
        Ok(())
    }
}

/// A win must be JSON (its shape belongs to `wins::ledger`).
fn check_win_json(json: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde_json::Value>(json)
        .map(|_| ())
        .map_err(|e| StoreError::Invalid(format!("a win must be JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_and_partitions_name_their_day() {
        assert_eq!(redacted("postgres://hf:s3cret@db:5432/hotframe"), "postgres://hf@db:5432/hotframe");
        assert_eq!(redacted("postgres://hf@db/hotframe"), "postgres://hf@db/hotframe");
        assert_eq!(redacted("host=/tmp dbname=x"), "host=/tmp dbname=x");
        for day in [-3, 0, 20_412] {
            assert_eq!(partition_day(&partition_name(day)), Some(day));
        }
        assert_eq!(partition_day("profiles_by_id"), None);
    }
}
