//! The service buckets of `PostgresStore` (see `store::buckets` for what they are and
//! why a query's answer is exact), in PostgreSQL's SQL, for several replicas at once.
//!
//! In: a connection of the pool. Out: merged bucket rows (`compact`), aggregates, the
//! floor raised by retention (`expire`). Must not: merge a profile twice, or leave a
//! bucket row half updated when two replicas add to it at once.
//!
//! Replicas share the work: each `compact` batch is one transaction that takes pending
//! rows with `FOR UPDATE OF q SKIP LOCKED` (another replica's batch skips them), merges
//! them, adds each delta to its bucket rows (read `FOR UPDATE`, so a concurrent
//! replica's add to the same row waits and then reads the sum; rows locked in key
//! order, so two batches never deadlock) and deletes the pending rows it took, all in
//! one commit. Every batch holds the advisory lock `LOCK_BUCKETS` shared and retention
//! (`expire`, in the one replica that maintains) holds it exclusive, so the floor never
//! moves under a batch.

use super::query::{each_row, piece, PgRows, RAW_PIECE_COLUMNS};
use super::{Failure, LOCK_BUCKETS, LOCK_NAMESPACE};
use crate::model::Aggregate;
use crate::store::buckets::{
    merge_planned, merged_row, parse_floor, timeline_planned, BucketKey, BucketReader, BucketRow, Delta, PendingBatch,
    PendingProfile, StoredBucket, BUCKET_COLUMNS, FLOOR_KEY, MAX_BATCHES, PENDING_BATCH,
};
use crate::store::query::{profile_type, Merged, Piece, Rows, SeriesRef};
use crate::store::sqlite::ReadCache;
use crate::store::{Query, StoreError, TimelinePoint};
use postgres::{Client, Row, Transaction};
use std::sync::Mutex;

/// Attempts of a batch that hit a deadlock or a serialization failure.
const BATCH_ATTEMPTS: usize = 4;

/// Queues a written profile (inside its write transaction).
pub(super) fn enqueue(tx: &mut Transaction<'_>, profile_id: i64, series_id: i64, start_ms: i64) -> Result<(), Failure> {
    tx.execute(
        "INSERT INTO bucket_pending (profile_id, series_id, start_ms) VALUES ($1, $2, $3)",
        &[&profile_id, &series_id, &start_ms],
    )?;
    Ok(())
}

/// The floor: profiles starting before it are not (all) in buckets.
fn floor(tx: &mut Transaction<'_>) -> Result<i64, Failure> {
    let text = tx.query_opt("SELECT value FROM meta WHERE key = $1", &[&FLOOR_KEY])?.map(|r| r.get(0));
    Ok(parse_floor(text)?)
}

/// Merges pending profiles into the service buckets, side by side with the other
/// replicas; returns how many this call merged.
pub(super) fn compact(client: &mut Client) -> Result<u64, Failure> {
    let mut merged = 0u64;
    // Profiles that stay pending (a corrupt blob) are passed over by this cursor.
    let mut after = i64::MIN;
    let mut failures = 0;
    for _ in 0..MAX_BATCHES {
        match batch(client, after) {
            Ok(None) => break,
            Ok(Some((last, n, full))) => {
                after = last;
                merged += n;
                if !full {
                    break;
                }
            }
            Err(f) if f.is_retryable() && failures + 1 < BATCH_ATTEMPTS => {
                failures += 1;
                tracing::debug!(error = ?f, "compaction batch conflicted; retrying");
            }
            Err(f) => return Err(f),
        }
    }
    Ok(merged)
}

/// One batch in one transaction: (last pending id read, profiles merged, batch full),
/// or None when nothing (after `after`) is pending and unlocked.
fn batch(client: &mut Client, after: i64) -> Result<Option<(i64, u64, bool)>, Failure> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", &[&LOCK_NAMESPACE, &LOCK_BUCKETS])?;
    let floor = floor(&mut tx)?;
    let mut pending = PendingBatch::default();
    each_row(
        &mut tx,
        "SELECT q.profile_id, q.start_ms, p.end_ms, p.period_ns, p.samples_blob, s.service, s.profile_type, s.host
         FROM bucket_pending q
         LEFT JOIN profiles p ON p.id = q.profile_id AND p.start_ms = q.start_ms
         LEFT JOIN series s ON s.id = p.series_id
         WHERE q.profile_id > $1 ORDER BY q.profile_id LIMIT $2
         FOR UPDATE OF q SKIP LOCKED",
        &[&after, &(PENDING_BATCH as i64)],
        |row| {
            let (id, start): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            let profile = PendingProfile::joined(
                row.try_get(4)?,
                row.try_get(5)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(6)?,
                row.try_get(7)?,
            );
            pending.add(id, start, floor, profile);
            Ok(())
        },
    )?;
    let Some(last) = pending.last_id else {
        tx.commit()?;
        return Ok(None);
    };
    for (key, delta) in pending.level_deltas() {
        upsert(&mut tx, &key, delta)?;
    }
    tx.execute("DELETE FROM bucket_pending WHERE profile_id = ANY($1)", &[&pending.done])?;
    tx.commit()?;
    Ok(Some((last, pending.merged, pending.full())))
}

fn stored_bucket(row: &Row) -> Result<StoredBucket<'_>, Failure> {
    Ok(StoredBucket {
        bucket_ms: row.try_get(0)?,
        profiles: row.try_get::<_, i64>(1)?.max(0) as u64,
        first_start: row.try_get(2)?,
        last_start: row.try_get(3)?,
        last_end: row.try_get(4)?,
        blob: row.try_get(5)?,
        coverage: row.try_get(6)?,
    })
}

/// Adds `delta` to the stored bucket `key` (creating it). The row is read `FOR UPDATE`:
/// a replica adding to it at the same time waits for this commit and then reads the sum.
/// A missing row is first inserted empty (`ON CONFLICT DO NOTHING` waits for a
/// concurrent insert of the same key), so that there is always a row to lock.
fn upsert(tx: &mut Transaction<'_>, key: &BucketKey, delta: Delta) -> Result<(), Failure> {
    let (service, ptype, res, bucket) = key;
    let select = format!(
        "SELECT {BUCKET_COLUMNS} WHERE service = $1 AND profile_type = $2 AND resolution_ms = $3 AND bucket_ms = $4
         FOR UPDATE"
    );
    let mut stored = tx.query_opt(&select, &[service, ptype, res, bucket])?;
    if stored.is_none() {
        write_row(tx, key, &merged_row(None, Delta::default())?, true)?;
        stored = tx.query_opt(&select, &[service, ptype, res, bucket])?;
    }
    let Some(stored) = stored else {
        return Err(StoreError::Corrupt(format!("service bucket {key:?} vanished while it was merged into")).into());
    };
    let row = merged_row(Some(&stored_bucket(&stored)?), delta)?;
    write_row(tx, key, &row, false)
}

/// Inserts the row of `key` (`insert`: unless it exists) or updates it.
fn write_row(tx: &mut Transaction<'_>, key: &BucketKey, row: &BucketRow, insert: bool) -> Result<(), Failure> {
    let (service, ptype, res, bucket) = key;
    let sql = if insert {
        "INSERT INTO service_buckets (service, profile_type, resolution_ms, bucket_ms, profiles, first_start_ms,
                                      last_start_ms, last_end_ms, entries, samples_blob, coverage)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (service, profile_type, resolution_ms, bucket_ms) DO NOTHING"
    } else {
        "UPDATE service_buckets SET profiles = $5, first_start_ms = $6, last_start_ms = $7, last_end_ms = $8,
             entries = $9, samples_blob = $10, coverage = $11
         WHERE service = $1 AND profile_type = $2 AND resolution_ms = $3 AND bucket_ms = $4"
    };
    tx.execute(
        sql,
        &[
            service,
            ptype,
            res,
            bucket,
            &row.profiles,
            &row.first_start,
            &row.last_start,
            &row.last_end,
            &row.entries,
            &row.samples_blob,
            &row.coverage,
        ],
    )?;
    Ok(())
}

/// Raises the floor to `cutoff_ms` (raw retention) and drops the buckets before it, as
/// SQLite's `expire` does; waits for the batches of `compact` in flight. Returns the
/// bucket rows deleted.
pub(super) fn expire(client: &mut Client, cutoff_ms: i64) -> Result<u64, Failure> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_NAMESPACE, &LOCK_BUCKETS])?;
    if floor(&mut tx)? >= cutoff_ms {
        return Ok(0);
    }
    let deleted = tx.execute("DELETE FROM service_buckets WHERE bucket_ms < $1", &[&cutoff_ms])?;
    tx.execute("DELETE FROM bucket_pending WHERE start_ms < $1", &[&cutoff_ms])?;
    tx.execute("UPDATE meta SET value = $1 WHERE key = $2", &[&cutoff_ms.to_string(), &FLOOR_KEY])?;
    tx.commit()?;
    Ok(deleted)
}

/// Merges the profiles of `q` (no label filters) from the service buckets, pending
/// profiles and, before the floor or at an edge no bucket fits, the per-series data.
pub(super) fn aggregate(tx: &mut Transaction<'_>, cache: &Mutex<ReadCache>, q: &Query) -> Result<Aggregate, Failure> {
    let series = PgRows(tx).matching_series(q)?;
    let mut merged = Merged::new(&q.states);
    let ptype = profile_type(q);
    let floor = floor(tx)?;
    let mut reader = Reader { tx: &mut *tx, service: &q.service, ptype };
    merge_planned(&mut reader, &series, floor, (q.from_ms, q.until_ms), &mut merged)?;
    merged.finish_with(|stack_ids| PgRows(tx).resolve_stacks(cache, stack_ids))
}

/// The timeline of `q` (no label filters) from the service buckets, like `aggregate`.
pub(super) fn timeline(tx: &mut Transaction<'_>, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, Failure> {
    let series = PgRows(tx).matching_series(q)?;
    let ptype = profile_type(q);
    let floor = floor(tx)?;
    let mut reader = Reader { tx: &mut *tx, service: &q.service, ptype };
    timeline_planned(&mut reader, &series, floor, q, step_ms)
}

/// One query's reads of the service buckets, in its read transaction.
struct Reader<'a, 't> {
    tx: &'a mut Transaction<'t>,
    service: &'a str,
    ptype: &'a str,
}

impl BucketReader for Reader<'_, '_> {
    type Error = Failure;

    fn buckets(
        &mut self,
        res: i64,
        first: i64,
        end: i64,
        visit: &mut dyn FnMut(&StoredBucket<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Failure> {
        each_row(
            self.tx,
            &format!(
                "SELECT {BUCKET_COLUMNS} WHERE service = $1 AND profile_type = $2 AND resolution_ms = $3
                   AND bucket_ms >= $4 AND bucket_ms < $5 ORDER BY bucket_ms"
            ),
            &[&self.service, &self.ptype, &res, &first, &end],
            |row| Ok(visit(&stored_bucket(row)?)?),
        )
    }

    fn pending(
        &mut self,
        lo: i64,
        hi: i64,
        visit: &mut dyn FnMut(i64, &Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Failure> {
        // The range on `start_ms` too: only the partitions of those days are read.
        each_row(
            self.tx,
            &format!(
                "SELECT series_id, start_ms, {RAW_PIECE_COLUMNS}, samples_blob FROM profiles
                 WHERE start_ms >= $3 AND start_ms < $4 AND id IN (
                     SELECT q.profile_id FROM bucket_pending q JOIN series s ON s.id = q.series_id
                     WHERE s.service = $1 AND s.profile_type = $2 AND q.start_ms >= $3 AND q.start_ms < $4)"
            ),
            &[&self.service, &self.ptype, &lo, &hi],
            |row| Ok(visit(row.try_get(0)?, &piece(row, 0, true)?)?),
        )
    }

    fn scan(
        &mut self,
        series: &[SeriesRef],
        range: (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Failure> {
        PgRows(self.tx).scan(series, range, with_blobs, &|_, _| true, visit)
    }
}
