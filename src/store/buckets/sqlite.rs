//! The service buckets of `SqliteStore` (see `store::buckets` for what they are and
//! why a query's answer is exact): the DDL, the queued row of each write, `compact`
//! and retention, and the rows the query plan reads, in SQLite's SQL.
//!
//! In: the store's writer and reader connections. Out: merged bucket rows, aggregates.
//! Must not: hold the writer while decoding raw blobs (only the short
//! read-modify-write of the bucket rows).

use super::{
    merge_planned, merged_row, parse_floor, timeline_planned, BucketKey, BucketReader, Delta, PendingBatch,
    PendingProfile, StoredBucket, BUCKET_COLUMNS, FLOOR_KEY, MAX_BATCHES, PENDING_BATCH,
};
use crate::model::Aggregate;
use crate::store::query::{
    matching_series, piece_from_row, profile_type, Merged, Piece, Rows, SeriesRef, SqliteRows, RAW_COLUMNS,
};
use crate::store::sqlite::{lock, ReadCache, SqliteStore};
use crate::store::{Query, StoreError, TimelinePoint};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::sync::Mutex;

/// The migration that adds the tables (appended to `schema::MIGRATIONS`); idempotent,
/// like `work::MIGRATION`. Profiles already stored are queued, so the buckets cover them after the first passes; data
/// only in per-series rollups lies before the floor.
pub(in crate::store) const MIGRATION: &str = concat!(
    super::bucket_tables!("BLOB", "INTEGER"),
    // (`WHERE true`: SQLite needs it before an upsert's ON CONFLICT after a SELECT.)
    "INSERT INTO bucket_pending (profile_id, series_id, start_ms) SELECT id, series_id, start_ms FROM profiles WHERE true
        ON CONFLICT (profile_id) DO NOTHING;
    INSERT INTO meta (key, value) SELECT 'bucket_floor_ms', CAST(COALESCE(
        (SELECT MIN(start_ms) FROM profiles),
        (SELECT MAX(last_ms) FROM rollups),
        -9223372036854775807 - 1) AS TEXT) WHERE true
        ON CONFLICT (key) DO NOTHING;"
);

/// Queues a written profile (inside its write transaction).
pub(in crate::store) fn enqueue(
    tx: &Connection,
    profile_id: i64,
    series_id: i64,
    start_ms: i64,
) -> Result<(), StoreError> {
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
    parse_floor(conn.query_row("SELECT value FROM meta WHERE key = ?1", [FLOOR_KEY], |r| r.get(0)).optional()?)
}

/// Merges pending profiles into the service buckets; returns how many were merged.
/// Serialised with itself and with retention by the store's compaction lock.
pub(in crate::store) fn compact(store: &SqliteStore) -> Result<u64, StoreError> {
    let _one_at_a_time = lock(store.compact_lock());
    let mut merged = 0u64;
    // Profiles that stay pending (a corrupt blob: queries still read it raw and say so)
    // are passed over by this cursor.
    let mut after = i64::MIN;
    for _ in 0..MAX_BATCHES {
        let batch = store.with_reader(|conn| read_pending(conn, after))?;
        let Some(last) = batch.last_id else { break };
        after = last;
        {
            let mut w = lock(store.writer());
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (key, delta) in batch.level_deltas() {
                upsert(&tx, &key, delta)?;
            }
            for chunk in batch.done.chunks(500) {
                let ids = chunk.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                tx.execute(&format!("DELETE FROM bucket_pending WHERE profile_id IN ({ids})"), [])?;
            }
            tx.commit()?;
        }
        merged += batch.merged;
        if !batch.full() {
            break;
        }
    }
    Ok(merged)
}

fn read_pending(conn: &Connection, after: i64) -> Result<PendingBatch, StoreError> {
    let floor = floor(conn)?;
    let mut out = PendingBatch::default();
    let mut stmt = conn.prepare_cached(
        "SELECT q.profile_id, q.start_ms, p.end_ms, p.period_ns, p.samples_blob, s.service, s.profile_type, s.host
         FROM bucket_pending q LEFT JOIN profiles p ON p.id = q.profile_id LEFT JOIN series s ON s.id = p.series_id
         WHERE q.profile_id > ?1 ORDER BY q.profile_id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, PENDING_BATCH as i64])?;
    while let Some(row) = rows.next()? {
        let (id, start): (i64, i64) = (row.get(0)?, row.get(1)?);
        let blob =
            row.get_ref(4)?.as_blob_or_null().map_err(|_| StoreError::Corrupt("sample blob is not a blob".into()))?;
        let profile = PendingProfile::joined(blob, row.get(5)?, row.get(2)?, row.get(3)?, row.get(6)?, row.get(7)?);
        out.add(id, start, floor, profile);
    }
    Ok(out)
}

/// Adds `delta` to the stored bucket `key` (creating it).
fn upsert(tx: &Connection, key: &BucketKey, delta: Delta) -> Result<(), StoreError> {
    let (service, ptype, res, bucket) = key;
    let row = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {BUCKET_COLUMNS} WHERE service = ?1 AND profile_type = ?2 AND resolution_ms = ?3 AND bucket_ms = ?4"
        ))?;
        let mut rows = stmt.query(params![service, ptype, res, bucket])?;
        match rows.next()? {
            Some(row) => merged_row(Some(&stored_bucket(row)?), delta)?,
            None => merged_row(None, delta)?,
        }
    };
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
        row.profiles,
        row.first_start,
        row.last_start,
        row.last_end,
        row.entries,
        row.samples_blob,
        row.coverage
    ])?;
    Ok(())
}

/// Raises the floor to `cutoff_ms` (raw retention) and drops the buckets before it:
/// their minutes can no longer be checked against raw data, and older ranges are
/// answered per series from the rollups, as before. Returns the rows deleted.
pub(in crate::store) fn expire(store: &SqliteStore, cutoff_ms: i64) -> Result<u64, StoreError> {
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

/// Merges the profiles of `q` (no label filters) from the service buckets, pending
/// profiles and, before the floor or at an edge no bucket fits, the per-series data.
pub(in crate::store) fn aggregate(
    conn: &Connection,
    cache: &Mutex<ReadCache>,
    q: &Query,
) -> Result<Aggregate, StoreError> {
    let series = matching_series(conn, q)?;
    let mut merged = Merged::new(&q.states);
    let ptype = profile_type(q);
    let mut reader = Reader { conn, service: &q.service, ptype };
    merge_planned(&mut reader, &series, floor(conn)?, (q.from_ms, q.until_ms), &mut merged)?;
    merged.finish(conn, cache)
}

/// The timeline of `q` (no label filters) from the service buckets, like `aggregate`.
pub(in crate::store) fn timeline(conn: &Connection, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, StoreError> {
    let series = matching_series(conn, q)?;
    let ptype = profile_type(q);
    let mut reader = Reader { conn, service: &q.service, ptype };
    timeline_planned(&mut reader, &series, floor(conn)?, q, step_ms)
}

/// One query's reads of the service buckets.
struct Reader<'a> {
    conn: &'a Connection,
    service: &'a str,
    ptype: &'a str,
}

impl BucketReader for Reader<'_> {
    type Error = StoreError;

    fn buckets(
        &mut self,
        res: i64,
        first: i64,
        end: i64,
        visit: &mut dyn FnMut(&StoredBucket<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {BUCKET_COLUMNS} WHERE service = ?1 AND profile_type = ?2 AND resolution_ms = ?3
               AND bucket_ms >= ?4 AND bucket_ms < ?5 ORDER BY bucket_ms"
        ))?;
        let mut rows = stmt.query(params![self.service, self.ptype, res, first, end])?;
        while let Some(row) = rows.next()? {
            visit(&stored_bucket(row)?)?;
        }
        Ok(())
    }

    fn pending(
        &mut self,
        lo: i64,
        hi: i64,
        visit: &mut dyn FnMut(i64, &Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT series_id, start_ms, {RAW_COLUMNS}, samples_blob FROM profiles WHERE id IN (
                 SELECT q.profile_id FROM bucket_pending q JOIN series s ON s.id = q.series_id
                 WHERE s.service = ?1 AND s.profile_type = ?2 AND q.start_ms >= ?3 AND q.start_ms < ?4)"
        ))?;
        let mut rows = stmt.query(params![self.service, self.ptype, lo, hi])?;
        while let Some(row) = rows.next()? {
            visit(row.get(0)?, &piece_from_row(row, 0, true)?)?;
        }
        Ok(())
    }

    fn scan(
        &mut self,
        series: &[SeriesRef],
        range: (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        SqliteRows(self.conn).scan(series, range, with_blobs, &|_, _| true, visit)
    }
}
