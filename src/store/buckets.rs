//! Service buckets: every profile of a (service, profile type) merged into one tree per
//! minute, 10 minutes, hour, 6 hours and day, so that a flame graph of a fleet (thousands
//! of series) reads a few dozen merged rows instead of every raw profile or one rollup
//! per series.
//!
//! In: raw profiles that `write` queued in `bucket_pending` (in the profile's own
//! transaction), and queries without label filters. Out: merged buckets (`compact`),
//! `Aggregate`s identical to the per-series path's (`aggregate`). Must not: hold the
//! writer while decoding raw blobs (only the short read-modify-write of the bucket
//! rows), or let a query count a profile twice or miss one.
//!
//! Exactness: every raw profile that starts at or after the floor (`meta.bucket_floor_ms`)
//! is either merged into one bucket of each level (its start's minute, 10 minutes, ...)
//! or still listed in `bucket_pending`; `compact` moves profiles from the second state to
//! the first in one transaction, so a query's snapshot sees each profile exactly once. A
//! query covers `[from, until)` at or after the floor with whole buckets, coarsest first;
//! a minute bucket at a ragged edge is used only if all its profiles start inside the
//! range (agents' clocks: the open minute before `now` qualifies), else that edge is read
//! raw; pending profiles are read raw; before the floor (data from before the buckets,
//! or past raw retention) the per-series path (`query::scan`) answers. Late data is just
//! merged into old buckets: there is nothing to invalidate.
//!
//! A bucket row keeps (stack, state) -> (samples, thread nanoseconds) in plain varints,
//! and the wall time per host as merged intervals, so the cost window stays a union.

use super::codec::{self, get_varint, put_varint, IntMap};
use super::query::{ceil_to, matching_series, merge_scan, piece_from_row, Merged, SeriesRef, RAW_COLUMNS};
use super::sqlite::{bucket_of, lock, ReadCache, SqliteStore, LEVELS};
use super::{Query, StoreError};
use crate::model::{Aggregate, Coverage};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The finest bucket, ms: it bounds the raw data a query reads at each ragged edge.
pub(super) const MINUTE_MS: i64 = 60_000;
/// Bucket lengths, finest first; each divides the next.
pub(super) const BUCKET_LEVELS: [i64; 5] = [MINUTE_MS, LEVELS[0], LEVELS[1], LEVELS[2], LEVELS[3]];
/// Pending profiles merged per transaction: bounds the memory of a pass and the time it
/// holds the writer.
const PENDING_BATCH: usize = 500;
/// Batches per `compact` call, so that a call always ends (the rest waits for the next).
const MAX_BATCHES: usize = 2_000;
/// Key of the floor in `meta`.
const FLOOR_KEY: &str = "bucket_floor_ms";
/// Format byte of a bucket's entries.
const FORMAT_BUCKET: u8 = 3;

/// The migration that adds the tables (appended to `schema::MIGRATIONS`); idempotent,
/// like `work::MIGRATION`. Profiles already stored are queued, so the buckets cover them after the first passes; data
/// only in per-series rollups lies before the floor.
pub(super) const MIGRATION: &str = r#"
    -- One merged tree per (service, profile type, bucket); see store/buckets.rs.
    CREATE TABLE IF NOT EXISTS service_buckets (
        service        TEXT NOT NULL,
        profile_type   TEXT NOT NULL,
        resolution_ms  BIGINT NOT NULL,
        bucket_ms      BIGINT NOT NULL,
        profiles       BIGINT NOT NULL,
        first_start_ms BIGINT NOT NULL,
        last_start_ms  BIGINT NOT NULL,
        last_end_ms    BIGINT NOT NULL,
        entries        BIGINT NOT NULL,
        samples_blob   BLOB NOT NULL,
        coverage       BLOB NOT NULL,
        PRIMARY KEY (service, profile_type, resolution_ms, bucket_ms)
    );
    -- (`WHERE true`: SQLite needs it before an upsert's ON CONFLICT after a SELECT.)
    -- Raw profiles not yet merged into service buckets (a few seconds' worth).
    CREATE TABLE IF NOT EXISTS bucket_pending (
        profile_id INTEGER PRIMARY KEY,
        series_id  BIGINT NOT NULL,
        start_ms   BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS bucket_pending_by_start ON bucket_pending (start_ms);
    INSERT INTO bucket_pending (profile_id, series_id, start_ms) SELECT id, series_id, start_ms FROM profiles WHERE true
        ON CONFLICT (profile_id) DO NOTHING;
    INSERT INTO meta (key, value) SELECT 'bucket_floor_ms', CAST(COALESCE(
        (SELECT MIN(start_ms) FROM profiles),
        (SELECT MAX(last_ms) FROM rollups),
        -9223372036854775807 - 1) AS TEXT) WHERE true
        ON CONFLICT (key) DO NOTHING;
"#;

/// Queues a written profile (inside its write transaction).
pub(super) fn enqueue(tx: &Connection, profile_id: i64, series_id: i64, start_ms: i64) -> Result<(), StoreError> {
    // A queued id of a profile deleted since (retention emptied the table, and SQLite
    // reuses the id) now means the new profile.
    tx.prepare_cached(
        "INSERT INTO bucket_pending (profile_id, series_id, start_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (profile_id) DO UPDATE SET series_id = excluded.series_id, start_ms = excluded.start_ms",
    )?
    .execute(params![profile_id, series_id, start_ms])?;
    Ok(())
}

/// The floor: profiles starting before it are not (all) in buckets.
fn floor(conn: &Connection) -> Result<i64, StoreError> {
    let text: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [FLOOR_KEY], |r| r.get(0)).optional()?;
    match text {
        // No buckets at all: everything is read per series.
        None => Ok(i64::MAX),
        Some(t) => t.parse().map_err(|_| StoreError::Corrupt(format!("meta.{FLOOR_KEY} is {t:?}, not a number"))),
    }
}

/// Profiles merged into one bucket (or about to be); empty by default.
struct Delta {
    profiles: u64,
    first_start: i64,
    last_start: i64,
    last_end: i64,
    entries: IntMap<u64, (u64, u64)>,
    coverage: Coverage,
}

impl Default for Delta {
    fn default() -> Delta {
        Delta {
            profiles: 0,
            first_start: i64::MAX,
            last_start: i64::MIN,
            last_end: i64::MIN,
            entries: IntMap::default(),
            coverage: Coverage::default(),
        }
    }
}

impl Delta {
    fn absorb(&mut self, other: &Delta) {
        self.profiles = self.profiles.saturating_add(other.profiles);
        self.first_start = self.first_start.min(other.first_start);
        self.last_start = self.last_start.max(other.last_start);
        self.last_end = self.last_end.max(other.last_end);
        for (k, (c, n)) in &other.entries {
            let e = self.entries.entry(*k).or_insert((0, 0));
            e.0 = e.0.saturating_add(*c);
            e.1 = e.1.saturating_add(*n);
        }
        self.coverage.extend(&other.coverage);
    }
}

/// Encodes sorted (key, samples, nanos) entries.
fn encode_entries(entries: &[(u64, (u64, u64))]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 8 + 8);
    out.push(FORMAT_BUCKET);
    put_varint(&mut out, entries.len() as u64);
    let mut prev = 0u64;
    for &(key, (count, nanos)) in entries {
        put_varint(&mut out, key.wrapping_sub(prev));
        put_varint(&mut out, count);
        put_varint(&mut out, nanos);
        prev = key;
    }
    out
}

/// Calls `visit(key, samples, nanos)` for each entry of `encode_entries`' bytes.
fn decode_entries(blob: &[u8], mut visit: impl FnMut(u64, u64, u64)) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("service bucket entries are {what}"));
    if blob.first() != Some(&FORMAT_BUCKET) {
        return Err(corrupt("of an unknown format"));
    }
    let buf = &blob[1..];
    let mut pos = 0;
    let n = get_varint(buf, &mut pos).ok_or_else(|| corrupt("truncated"))?;
    let mut key = 0u64;
    for i in 0..n {
        let (Some(delta), Some(count), Some(nanos)) =
            (get_varint(buf, &mut pos), get_varint(buf, &mut pos), get_varint(buf, &mut pos))
        else {
            return Err(corrupt("truncated"));
        };
        if i > 0 && delta == 0 {
            return Err(corrupt("repeating an entry"));
        }
        key = key.checked_add(delta).ok_or_else(|| corrupt("out of range"))?;
        if key & 7 >= crate::model::ThreadState::ALL.len() as u64 {
            return Err(corrupt("of an unknown thread state"));
        }
        visit(key, count, nanos);
    }
    if pos != buf.len() {
        return Err(corrupt("followed by trailing bytes"));
    }
    Ok(())
}

/// Encodes a coverage: `varint(hosts)`, then per host `varint(0)` (no host label) or
/// `varint(len + 1)` and the name, then `varint(len)` and `codec::encode_intervals`.
fn encode_coverage(coverage: &Coverage) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, coverage.per_host().len() as u64);
    for h in coverage.per_host() {
        match &h.host {
            None => put_varint(&mut out, 0),
            Some(name) => {
                put_varint(&mut out, name.len() as u64 + 1);
                out.extend_from_slice(name.as_bytes());
            }
        }
        let intervals = codec::encode_intervals(&h.intervals);
        put_varint(&mut out, intervals.len() as u64);
        out.extend_from_slice(&intervals);
    }
    out
}

/// Calls `visit(host, start, end)` for every interval of `encode_coverage`' bytes.
fn decode_coverage(bytes: &[u8], mut visit: impl FnMut(Option<&str>, i64, i64)) -> Result<(), StoreError> {
    let corrupt = || StoreError::Corrupt("service bucket coverage is truncated or not UTF-8".into());
    let mut pos = 0;
    let hosts = get_varint(bytes, &mut pos).ok_or_else(corrupt)?;
    let take = |pos: &mut usize, len: u64| -> Result<std::ops::Range<usize>, StoreError> {
        let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).filter(|e| *e <= bytes.len());
        let end = end.ok_or_else(corrupt)?;
        let range = *pos..end;
        *pos = end;
        Ok(range)
    };
    for _ in 0..hosts {
        let tag = get_varint(bytes, &mut pos).ok_or_else(corrupt)?;
        let host = if tag == 0 {
            None
        } else {
            let range = take(&mut pos, tag - 1)?;
            Some(std::str::from_utf8(&bytes[range]).map_err(|_| corrupt())?)
        };
        let len = get_varint(bytes, &mut pos).ok_or_else(corrupt)?;
        let range = take(&mut pos, len)?;
        codec::decode_intervals(&bytes[range], |s, e| visit(host, s, e))?;
    }
    if pos != bytes.len() {
        return Err(corrupt());
    }
    Ok(())
}

/// (service, profile type, resolution, bucket start).
type BucketKey = (String, String, i64, i64);

/// Merges pending profiles into the service buckets; returns how many were merged.
/// Serialised with itself and with retention by the store's compaction lock.
pub(super) fn compact(store: &SqliteStore) -> Result<u64, StoreError> {
    let _one_at_a_time = lock(store.compact_lock());
    let mut merged = 0u64;
    // Profiles that stay pending (a corrupt blob: queries still read it raw and say so)
    // are passed over by this cursor.
    let mut after = i64::MIN;
    for _ in 0..MAX_BATCHES {
        let batch = store.with_reader(|conn| read_pending(conn, after))?;
        let Some(last) = batch.last_id else { break };
        after = last;
        let mut deltas: BTreeMap<BucketKey, Delta> = BTreeMap::new();
        for ((service, ptype, minute), delta) in &batch.minutes {
            for &res in &BUCKET_LEVELS {
                let key = (service.clone(), ptype.clone(), res, bucket_of(*minute, res));
                deltas.entry(key).or_default().absorb(delta);
            }
        }
        {
            let mut w = lock(store.writer());
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (key, delta) in deltas {
                upsert(&tx, &key, delta)?;
            }
            for chunk in batch.done.chunks(500) {
                let ids = chunk.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                tx.execute(&format!("DELETE FROM bucket_pending WHERE profile_id IN ({ids})"), [])?;
            }
            tx.commit()?;
        }
        merged += batch.merged;
        if !batch.full {
            break;
        }
    }
    Ok(merged)
}

/// A batch of pending profiles, merged per (service, type, minute).
struct PendingBatch {
    minutes: BTreeMap<(String, String, i64), Delta>,
    /// Pending ids to delete: merged, gone, or before the floor.
    done: Vec<i64>,
    merged: u64,
    last_id: Option<i64>,
    full: bool,
}

fn read_pending(conn: &Connection, after: i64) -> Result<PendingBatch, StoreError> {
    let floor = floor(conn)?;
    let mut out = PendingBatch { minutes: BTreeMap::new(), done: Vec::new(), merged: 0, last_id: None, full: false };
    let mut stmt = conn.prepare_cached(
        "SELECT q.profile_id, q.start_ms, p.end_ms, p.period_ns, p.samples_blob, s.service, s.profile_type, s.host
         FROM bucket_pending q LEFT JOIN profiles p ON p.id = q.profile_id LEFT JOIN series s ON s.id = p.series_id
         WHERE q.profile_id > ?1 ORDER BY q.profile_id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, PENDING_BATCH as i64])?;
    let (mut scratch, mut decoded) = (Vec::new(), Vec::new());
    let mut n = 0;
    while let Some(row) = rows.next()? {
        n += 1;
        let (id, start): (i64, i64) = (row.get(0)?, row.get(1)?);
        out.last_id = Some(id);
        let blob =
            row.get_ref(4)?.as_blob_or_null().map_err(|_| StoreError::Corrupt("sample blob is not a blob".into()))?;
        let service: Option<String> = row.get(5)?;
        let (Some(blob), Some(service)) = (blob, service) else {
            // Deleted since (retention), or its series is gone: nothing to merge.
            out.done.push(id);
            continue;
        };
        if start < floor {
            out.done.push(id);
            continue;
        }
        let (end, period): (i64, i64) = (row.get(2)?, row.get(3)?);
        let (ptype, host): (String, Option<String>) = (row.get(6)?, row.get(7)?);
        // Decoded whole before anything is merged: a corrupt blob merges nothing.
        decoded.clear();
        if let Err(e) = codec::decode_entries(blob, &mut scratch, |key, count| decoded.push((key, count))) {
            tracing::warn!(profile = id, error = %e, "a stored profile does not decode; it stays out of the service buckets");
            continue;
        }
        let period = period.max(0) as u64;
        let minute = out.minutes.entry((service, ptype, bucket_of(start, MINUTE_MS))).or_default();
        for &(key, count) in &decoded {
            let e = minute.entries.entry(key).or_insert((0, 0));
            e.0 = e.0.saturating_add(count);
            e.1 = e.1.saturating_add(count.saturating_mul(period));
        }
        minute.profiles = minute.profiles.saturating_add(1);
        minute.first_start = minute.first_start.min(start);
        minute.last_start = minute.last_start.max(start);
        minute.last_end = minute.last_end.max(end);
        minute.coverage.add(host.as_deref(), start, end);
        out.done.push(id);
        out.merged += 1;
    }
    out.full = n == PENDING_BATCH;
    Ok(out)
}

/// Adds `delta` to the stored bucket `key` (creating it).
fn upsert(tx: &Connection, key: &BucketKey, mut delta: Delta) -> Result<(), StoreError> {
    let (service, ptype, res, bucket) = key;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT profiles, first_start_ms, last_start_ms, last_end_ms, samples_blob, coverage FROM service_buckets
             WHERE service = ?1 AND profile_type = ?2 AND resolution_ms = ?3 AND bucket_ms = ?4",
        )?;
        let mut rows = stmt.query(params![service, ptype, res, bucket])?;
        if let Some(row) = rows.next()? {
            let mut stored = Delta {
                profiles: row.get::<_, i64>(0)?.max(0) as u64,
                first_start: row.get(1)?,
                last_start: row.get(2)?,
                last_end: row.get(3)?,
                ..Delta::default()
            };
            let blob =
                row.get_ref(4)?.as_blob().map_err(|_| StoreError::Corrupt("bucket blob is not a blob".into()))?;
            decode_entries(blob, |k, c, n| {
                stored.entries.insert(k, (c, n));
            })?;
            let cov =
                row.get_ref(5)?.as_blob().map_err(|_| StoreError::Corrupt("bucket coverage is not a blob".into()))?;
            decode_coverage(cov, |h, s, e| stored.coverage.add(h, s, e))?;
            stored.absorb(&delta);
            delta = stored;
        }
    }
    let mut entries: Vec<(u64, (u64, u64))> = delta.entries.into_iter().collect();
    entries.sort_unstable_by_key(|e| e.0);
    tx.prepare_cached(
        "INSERT INTO service_buckets (service, profile_type, resolution_ms, bucket_ms, profiles, first_start_ms,
                                      last_start_ms, last_end_ms, entries, samples_blob, coverage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (service, profile_type, resolution_ms, bucket_ms) DO UPDATE SET
             profiles = excluded.profiles, first_start_ms = excluded.first_start_ms,
             last_start_ms = excluded.last_start_ms, last_end_ms = excluded.last_end_ms,
             entries = excluded.entries, samples_blob = excluded.samples_blob, coverage = excluded.coverage",
    )?
    .execute(params![
        service,
        ptype,
        res,
        bucket,
        delta.profiles.min(i64::MAX as u64) as i64,
        delta.first_start,
        delta.last_start,
        delta.last_end,
        entries.len() as i64,
        encode_entries(&entries),
        encode_coverage(&delta.coverage)
    ])?;
    Ok(())
}

/// Raises the floor to `cutoff_ms` (raw retention) and drops the buckets before it:
/// their minutes can no longer be checked against raw data, and older ranges are
/// answered per series from the rollups, as before. Returns the rows deleted.
pub(super) fn expire(store: &SqliteStore, cutoff_ms: i64) -> Result<u64, StoreError> {
    let _one_at_a_time = lock(store.compact_lock());
    let mut w = lock(store.writer());
    let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let old = floor(&tx)?;
    if old >= cutoff_ms {
        return Ok(0);
    }
    let deleted = tx.execute("DELETE FROM service_buckets WHERE bucket_ms < ?1", [cutoff_ms])? as u64;
    tx.execute("DELETE FROM bucket_pending WHERE start_ms < ?1", [cutoff_ms])?;
    tx.execute("UPDATE meta SET value = ?1 WHERE key = ?2", params![cutoff_ms.to_string(), FLOOR_KEY])?;
    tx.commit()?;
    Ok(deleted)
}

/// A stored bucket as a query reads it.
struct StoredBucket<'r> {
    bucket_ms: i64,
    profiles: u64,
    first_start: i64,
    last_start: i64,
    last_end: i64,
    blob: &'r [u8],
    coverage: &'r [u8],
}

const BUCKET_COLUMNS: &str =
    "bucket_ms, profiles, first_start_ms, last_start_ms, last_end_ms, samples_blob, coverage FROM service_buckets";

fn stored_bucket<'r>(row: &'r rusqlite::Row<'_>) -> Result<StoredBucket<'r>, StoreError> {
    let blob = |i: usize| -> Result<&'r [u8], StoreError> {
        row.get_ref(i)?.as_blob().map_err(|_| StoreError::Corrupt("service bucket column is not a blob".into()))
    };
    Ok(StoredBucket {
        bucket_ms: row.get(0)?,
        profiles: row.get::<_, i64>(1)?.max(0) as u64,
        first_start: row.get(2)?,
        last_start: row.get(3)?,
        last_end: row.get(4)?,
        blob: blob(5)?,
        coverage: blob(6)?,
    })
}

fn merge_bucket(b: &StoredBucket<'_>, merged: &mut Merged) -> Result<(), StoreError> {
    decode_entries(b.blob, |k, c, n| merged.add_entry(k, c, n))?;
    decode_coverage(b.coverage, |h, s, e| merged.add_window(h, s, e))?;
    merged.add_extent(b.profiles, b.first_start, b.last_end);
    Ok(())
}

/// Merges the profiles of `q` (no label filters) from the service buckets, pending
/// profiles and, before the floor or at an edge no bucket fits, the per-series data.
pub(super) fn aggregate(conn: &Connection, cache: &Mutex<ReadCache>, q: &Query) -> Result<Aggregate, StoreError> {
    let series = matching_series(conn, q)?;
    let mut merged = Merged::new(&q.states);
    let (from, until) = (q.from_ms, q.until_ms);
    if series.is_empty() || from >= until {
        return merged.finish(conn, cache);
    }
    let ptype = if q.profile_type.is_empty() { "cpu" } else { q.profile_type.as_str() };
    let plan = Plan { conn, service: &q.service, ptype };
    let mut raw: Vec<(i64, i64)> = Vec::new();
    let lo = from.max(floor(conn)?).min(until);
    if from < lo {
        raw.push((from, lo));
    }
    if lo < until {
        let (a, b) = (ceil_to(lo, MINUTE_MS), bucket_of(until, MINUTE_MS));
        if a > b {
            plan.edge(bucket_of(lo, MINUTE_MS), lo, until, &mut merged, &mut raw)?;
        } else {
            if lo < a {
                plan.edge(a - MINUTE_MS, lo, a, &mut merged, &mut raw)?;
            }
            plan.cover(a, b, &mut merged)?;
            if b < until {
                plan.edge(b, b, until, &mut merged, &mut raw)?;
            }
        }
        plan.pending(&series, lo, until, &raw, &mut merged)?;
    }
    for (f, u) in raw {
        merge_scan(conn, &series, f, u, &mut merged)?;
    }
    merged.finish(conn, cache)
}

/// One query's reads of the service buckets.
struct Plan<'a> {
    conn: &'a Connection,
    service: &'a str,
    ptype: &'a str,
}

impl Plan<'_> {
    /// `[lo, hi)` inside the minute `minute`: its bucket if all its profiles start in
    /// the range, else the range is read raw.
    fn edge(
        &self,
        minute: i64,
        lo: i64,
        hi: i64,
        merged: &mut Merged,
        raw: &mut Vec<(i64, i64)>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {BUCKET_COLUMNS} WHERE service = ?1 AND profile_type = ?2 AND resolution_ms = ?3 AND bucket_ms = ?4"
        ))?;
        let mut rows = stmt.query(params![self.service, self.ptype, MINUTE_MS, minute])?;
        if let Some(row) = rows.next()? {
            let b = stored_bucket(row)?;
            if b.first_start >= lo && b.last_start < hi {
                merge_bucket(&b, merged)?;
            } else {
                raw.push((lo, hi));
            }
        }
        Ok(())
    }

    /// Whole minutes `[a, b)`: the coarsest buckets that fit, finer ones in the gaps. A
    /// minute with no bucket has nothing merged (pending profiles are read apart).
    fn cover(&self, a: i64, b: i64, merged: &mut Merged) -> Result<(), StoreError> {
        let mut gaps = vec![(a, b)];
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {BUCKET_COLUMNS} WHERE service = ?1 AND profile_type = ?2 AND resolution_ms = ?3
               AND bucket_ms >= ?4 AND bucket_ms < ?5 ORDER BY bucket_ms"
        ))?;
        for &res in BUCKET_LEVELS.iter().rev() {
            let mut next = Vec::new();
            for (glo, ghi) in gaps {
                let (first, end) = (ceil_to(glo, res), bucket_of(ghi, res));
                if first >= end {
                    next.push((glo, ghi));
                    continue;
                }
                let mut at = glo;
                let mut rows = stmt.query(params![self.service, self.ptype, res, first, end])?;
                while let Some(row) = rows.next()? {
                    let b = stored_bucket(row)?;
                    merge_bucket(&b, merged)?;
                    if b.bucket_ms > at {
                        next.push((at, b.bucket_ms));
                    }
                    at = b.bucket_ms + res;
                }
                if at < ghi {
                    next.push((at, ghi));
                }
            }
            gaps = next;
        }
        Ok(())
    }

    /// Pending profiles starting in `[lo, hi)` outside the `raw` ranges (read there).
    fn pending(
        &self,
        series: &[SeriesRef],
        lo: i64,
        hi: i64,
        raw: &[(i64, i64)],
        merged: &mut Merged,
    ) -> Result<(), StoreError> {
        let index: IntMap<i64, usize> = series.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT series_id, start_ms, {RAW_COLUMNS}, samples_blob FROM profiles WHERE id IN (
                 SELECT q.profile_id FROM bucket_pending q JOIN series s ON s.id = q.series_id
                 WHERE s.service = ?1 AND s.profile_type = ?2 AND q.start_ms >= ?3 AND q.start_ms < ?4)"
        ))?;
        let mut rows = stmt.query(params![self.service, self.ptype, lo, hi])?;
        while let Some(row) = rows.next()? {
            let (sid, start): (i64, i64) = (row.get(0)?, row.get(1)?);
            let Some(&s) = index.get(&sid) else { continue };
            if raw.iter().any(|&(f, u)| start >= f && start < u) {
                continue;
            }
            let piece = piece_from_row(row, s, true)?;
            merged.add_piece(&piece, series[s].host.as_deref())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_coverage_round_trip_and_refuse_garbage() {
        let entries = vec![(8u64, (3u64, 30u64)), (17, (1, u64::MAX)), (1 << 40, (0, 0))];
        let blob = encode_entries(&entries);
        let mut back = Vec::new();
        decode_entries(&blob, |k, c, n| back.push((k, (c, n)))).unwrap();
        assert_eq!(back, entries);
        for bad in [&blob[..blob.len() - 1], &[2u8, 0][..], &[][..], &[3u8, 2, 8, 1, 1, 0, 1, 1][..]] {
            assert!(matches!(decode_entries(bad, |_, _, _| ()), Err(StoreError::Corrupt(_))), "{bad:?}");
        }
        let mut cov = Coverage::default();
        cov.add(None, 0, 10);
        cov.add(Some("ip-10-0-0-1"), 5, 60_000);
        cov.add(Some("ip-10-0-0-1"), 70_000, 80_000);
        let bytes = encode_coverage(&cov);
        let mut again = Coverage::default();
        decode_coverage(&bytes, |h, s, e| again.add(h, s, e)).unwrap();
        assert_eq!(again, cov);
        for cut in 0..bytes.len() {
            assert!(decode_coverage(&bytes[..cut], |_, _, _| ()).is_err(), "cut at {cut}");
        }
    }
}
