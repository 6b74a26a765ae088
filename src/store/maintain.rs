//! Maintenance: rollups of closed buckets (10 minutes, 1 hour, 6 hours, 1 day), and
//! retention.
//!
//! In: the store and "now". Out: a `MaintenanceReport`. Must not: hold the writer
//! for long (each bucket is its own short transaction, so ingest interleaves) or touch
//! a bucket that is still open.
//!
//! A write marks its (series, 10-minute bucket) dirty. `maintain` rebuilds every dirty
//! 10-minute bucket that has closed (from raw profiles, per sampling period), unmarks it
//! and marks its hour; then the same for hours (from 10-minute rollups), 6-hour
//! buckets (from hours) and days (from 6-hour buckets). Each rollup row keeps the
//! wall time its profiles covered as merged `[start, end)` intervals, not only their
//! summed lengths, so that a query can still take the union per host. A rebuild
//! replaces the bucket's rows, so running it twice changes nothing. Late data simply
//! marks the bucket again. Retention deletes raw data by whole hours; a 10-minute
//! bucket past it that already has a rollup is not rebuilt (the rollup knows more than the late rows
//! left there, which are about to go); buckets past rollup retention are not built.

use super::codec::{self, IntMap};
use super::query::{piece_from_row, Piece, RAW_COLUMNS, ROLLUP_COLUMNS};
use super::sqlite::{bucket_of, lock, SqliteStore, DAY_MS, HOUR_MS, LEVELS, ROLLUP_BLOB_LEVEL};
use super::{MaintenanceReport, StoreError};
use crate::model::coverage::add_interval;
use crate::model::StateCounts;
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::BTreeMap;

/// Dirty buckets taken per writer lock.
const BATCH: usize = 64;
/// Raw profiles deleted per transaction.
const DELETE_BATCH: usize = 2_000;
/// Upper bound on batches per pass, so a pass always ends even under a storm of late
/// data (the rest waits for the next pass).
const MAX_BATCHES: usize = 100_000;

/// One period's share of a bucket being rolled up.
#[derive(Default)]
struct Acc {
    profiles: i64,
    profile_ms: i64,
    first_ms: i64,
    last_ms: i64,
    /// Merged `[start, end)` wall time of its profiles.
    coverage: Vec<[i64; 2]>,
    totals: StateCounts,
    entries: IntMap<u64, u64>,
}

/// The merge of the pieces below one rollup bucket, per sampling period (shared by the
/// SQLite and PostgreSQL stores, which read the pieces and write the rows).
#[derive(Default)]
pub(super) struct BucketMerge {
    by_period: BTreeMap<u64, Acc>,
    scratch: Vec<u8>,
}

/// One rollup row to write: a bucket's merge for one sampling period.
pub(super) struct RollupRow {
    pub period_ns: i64,
    pub profiles: i64,
    pub profile_ms: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Samples per state, saturated to i64.
    pub totals: [i64; 5],
    /// Distinct (stack, state) entries in `blob`.
    pub entries: i64,
    /// The plain sample blob (`ROLLUP_BLOB_LEVEL`).
    pub blob: Vec<u8>,
    /// The merged coverage intervals (`codec::encode_intervals`).
    pub coverage: Vec<u8>,
}

impl BucketMerge {
    /// Adds a raw profile or a finer rollup row (its blob must be there).
    pub(super) fn add(&mut self, p: &Piece<'_>) -> Result<(), StoreError> {
        let acc = self.by_period.entry(p.period_ns).or_insert_with(|| Acc {
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            ..Acc::default()
        });
        acc.profiles = acc.profiles.saturating_add(p.profiles.min(i64::MAX as u64) as i64);
        acc.profile_ms = acc.profile_ms.saturating_add(p.profile_ms);
        acc.first_ms = acc.first_ms.min(p.first_ms);
        acc.last_ms = acc.last_ms.max(p.last_ms);
        let coverage = &mut acc.coverage;
        p.windows(|start, end| add_interval(coverage, start, end))?;
        for (t, v) in acc.totals.iter_mut().zip(p.totals) {
            *t = t.saturating_add(v);
        }
        let entries = &mut acc.entries;
        codec::decode_entries(p.blob.unwrap_or_default(), &mut self.scratch, |key, count| {
            let e = entries.entry(key).or_insert(0);
            *e = e.saturating_add(count);
        })
    }

    /// The rows to write, one per sampling period.
    pub(super) fn rows(self) -> Result<Vec<RollupRow>, StoreError> {
        let mut out = Vec::with_capacity(self.by_period.len());
        for (period, acc) in self.by_period {
            let mut entries: Vec<(u64, u64)> = acc.entries.into_iter().collect();
            entries.sort_unstable_by_key(|e| e.0);
            out.push(RollupRow {
                period_ns: period as i64,
                profiles: acc.profiles,
                profile_ms: acc.profile_ms,
                first_ms: acc.first_ms,
                last_ms: acc.last_ms,
                totals: acc.totals.map(|v| v.min(i64::MAX as u64) as i64),
                entries: entries.len() as i64,
                blob: codec::encode_entries(&entries, ROLLUP_BLOB_LEVEL)?,
                coverage: codec::encode_intervals(&acc.coverage),
            });
        }
        Ok(out)
    }
}

/// Runs one maintenance pass as of `now_ms`.
pub(super) fn maintain(store: &SqliteStore, now_ms: i64) -> Result<MaintenanceReport, StoreError> {
    let config = store.config();
    // Whole hours only, so that an hour's raw rows are either all there or all gone.
    let raw_cutoff = bucket_of(now_ms.saturating_sub(i64::from(config.retention_raw_days) * DAY_MS), HOUR_MS);
    let rollup_cutoff = now_ms.saturating_sub(i64::from(config.retention_rollup_days) * DAY_MS);
    let mut report = MaintenanceReport::default();

    for (level, &res) in LEVELS.iter().enumerate() {
        for _ in 0..MAX_BATCHES {
            let mut w = lock(store.writer());
            let due: Vec<(i64, i64)> = {
                let mut stmt = w.conn.prepare_cached(
                    "SELECT series_id, bucket_ms FROM dirty_buckets
                     WHERE resolution_ms = ?1 AND bucket_ms <= ?2 ORDER BY bucket_ms, series_id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![res, now_ms - res, BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            if due.is_empty() {
                break;
            }
            for (series, bucket) in due {
                let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Past raw retention, an existing finest rollup knows more than the raw
                // rows left (late data only): keep it. A missing one is built from them.
                let skip = bucket + res <= rollup_cutoff
                    || (level == 0 && bucket < raw_cutoff && has_rollup(&tx, series, res, bucket)?);
                if !skip {
                    report.rollups_written += rebuild(&tx, series, level, bucket)?;
                }
                tx.execute(
                    "DELETE FROM dirty_buckets WHERE series_id = ?1 AND resolution_ms = ?2 AND bucket_ms = ?3",
                    params![series, res, bucket],
                )?;
                if let Some(&up) = LEVELS.get(level + 1) {
                    tx.execute(
                        "INSERT INTO dirty_buckets (series_id, resolution_ms, bucket_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (series_id, resolution_ms, bucket_ms) DO NOTHING",
                        params![series, up, bucket_of(bucket, up)],
                    )?;
                }
                tx.commit()?;
            }
            // Writes skip marking hours they think are marked; some no longer are.
            w.forget_marks();
        }
    }

    // Service buckets end where raw data ends (before it, per-series rollups answer).
    let buckets_deleted = super::buckets::expire(store, raw_cutoff)?;
    if buckets_deleted > 0 {
        tracing::info!(buckets_deleted, "service buckets past raw retention dropped");
    }

    // Raw retention, in short transactions.
    for _ in 0..MAX_BATCHES {
        let w = lock(store.writer());
        let tx = w.conn.unchecked_transaction()?;
        // The per-state totals are added here, saturating: in SQL a sum over i64 turns
        // into a REAL (or an "integer overflow" error) for rows with absurd counts.
        let doomed: Vec<(i64, u64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, s_runnable, s_waiting, s_timed, s_blocked, s_io FROM profiles
                 WHERE start_ms < ?1 ORDER BY start_ms LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![raw_cutoff, DELETE_BATCH as i64], |r| {
                let mut samples = 0u64;
                for i in 1..=5 {
                    samples = samples.saturating_add(r.get::<_, i64>(i)?.max(0) as u64);
                }
                Ok((r.get(0)?, samples))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if doomed.is_empty() {
            break;
        }
        let ids = doomed.iter().map(|d| d.0.to_string()).collect::<Vec<_>>().join(",");
        tx.execute(&format!("DELETE FROM profiles WHERE id IN ({ids})"), [])?;
        tx.commit()?;
        let samples = doomed.iter().fold(0u64, |a, d| a.saturating_add(d.1));
        store.forget_counts(doomed.len() as u64, samples);
        report.raw_deleted += doomed.len() as u64;
        if doomed.len() < DELETE_BATCH {
            break;
        }
    }

    {
        let w = lock(store.writer());
        report.rollups_deleted +=
            w.conn.execute("DELETE FROM rollups WHERE bucket_ms + resolution_ms <= ?1", [rollup_cutoff])? as u64;
        super::work::expire(&w.conn, rollup_cutoff)?;
        // Marks of buckets that can no longer be rebuilt.
        w.conn.execute("DELETE FROM dirty_buckets WHERE bucket_ms + resolution_ms <= ?1", [rollup_cutoff])?;
    }
    if report != MaintenanceReport::default() {
        tracing::info!(?report, "store maintenance");
    }
    Ok(report)
}

/// True if (series, res, bucket) has rollup rows.
fn has_rollup(tx: &Connection, series: i64, res: i64, bucket: i64) -> Result<bool, StoreError> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM rollups WHERE series_id = ?1 AND resolution_ms = ?2 AND bucket_ms = ?3",
        params![series, res, bucket],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Replaces the rollup rows of (series, `LEVELS[level]`, bucket) with a merge of what
/// lies below: raw profiles for the finest level, the level below for the others.
/// Returns the rows written.
fn rebuild(tx: &Connection, series: i64, level: usize, bucket: i64) -> Result<u64, StoreError> {
    let res = LEVELS[level];
    let sql = if level == 0 {
        format!(
            "SELECT series_id, start_ms, {RAW_COLUMNS}, samples_blob FROM profiles
             WHERE series_id = ?1 AND start_ms >= ?2 AND start_ms < ?3"
        )
    } else {
        format!(
            "SELECT series_id, bucket_ms, {ROLLUP_COLUMNS}, samples_blob FROM rollups
             WHERE series_id = ?1 AND resolution_ms = {below} AND bucket_ms >= ?2 AND bucket_ms < ?3",
            below = LEVELS[level - 1]
        )
    };
    let mut merge = BucketMerge::default();
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![series, bucket, bucket + res])?;
        while let Some(row) = rows.next()? {
            merge.add(&piece_from_row(row, 0, true)?)?;
        }
    }
    tx.execute(
        "DELETE FROM rollups WHERE series_id = ?1 AND resolution_ms = ?2 AND bucket_ms = ?3",
        params![series, res, bucket],
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO rollups (series_id, resolution_ms, bucket_ms, period_ns, profiles, profile_ms, first_ms, last_ms,
                              s_runnable, s_waiting, s_timed, s_blocked, s_io, entries, samples_blob, coverage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let mut written = 0;
    for r in merge.rows()? {
        let t = r.totals;
        insert.execute(params![
            series,
            res,
            bucket,
            r.period_ns,
            r.profiles,
            r.profile_ms,
            r.first_ms,
            r.last_ms,
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            r.entries,
            r.blob,
            r.coverage
        ])?;
        written += 1;
    }
    Ok(written)
}
