//! Maintenance of the PostgreSQL store, in one replica at a time: the replica that
//! gets the session advisory lock `LOCK_MAINTAIN` builds the rollups of closed dirty
//! buckets (the same levels and rules as `store::maintain`), creates the raw partitions
//! of today and tomorrow ahead of the writes, and applies retention; the others return
//! an empty report at once.
//!
//! In: a connection, the store settings and "now". Out: a `MaintenanceReport`. Must
//! not: delete raw rows one by one (retention detaches whole day partitions
//! concurrently, so reads and writes of other days go on, then drops them), or keep
//! the lock after it returns.

use super::query::{piece, RAW_PIECE_COLUMNS, ROLLUP_COLUMNS};
use super::{create_partition, partition_day, Failure, LOCK_MAINTAIN, LOCK_NAMESPACE};
use crate::store::maintain::BucketMerge;
use crate::store::sqlite::{bucket_of, DAY_MS, HOUR_MS, LEVELS};
use crate::store::{MaintenanceReport, StoreConfig};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Transaction};

/// Dirty buckets taken per query.
const BATCH: i64 = 64;
/// Upper bound on batches per level and pass, so a pass always ends.
const MAX_BATCHES: usize = 100_000;

/// Runs one pass if no other replica runs one.
pub(super) fn maintain(client: &mut Client, config: &StoreConfig, now_ms: i64) -> Result<MaintenanceReport, Failure> {
    let held: bool =
        client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_NAMESPACE, &LOCK_MAINTAIN])?.get(0);
    if !held {
        tracing::debug!("maintenance runs in another replica");
        return Ok(MaintenanceReport::default());
    }
    let result = pass(client, config, now_ms);
    // A broken connection has lost the lock with its session anyway.
    if let Err(e) = client.execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_NAMESPACE, &LOCK_MAINTAIN]) {
        tracing::warn!(error = %e, "cannot release the maintenance lock");
    }
    result
}

fn pass(client: &mut Client, config: &StoreConfig, now_ms: i64) -> Result<MaintenanceReport, Failure> {
    let raw_cutoff = bucket_of(now_ms.saturating_sub(i64::from(config.retention_raw_days) * DAY_MS), HOUR_MS);
    let rollup_cutoff = now_ms.saturating_sub(i64::from(config.retention_rollup_days) * DAY_MS);
    let mut report = MaintenanceReport::default();
    let today = now_ms.div_euclid(DAY_MS);
    for day in [today, today + 1] {
        create_partition(client, day)?;
    }

    for (level, &res) in LEVELS.iter().enumerate() {
        for _ in 0..MAX_BATCHES {
            let due: Vec<(i64, i64)> = client
                .query(
                    "SELECT series_id, bucket_ms FROM dirty_buckets
                     WHERE resolution_ms = $1 AND bucket_ms <= $2 ORDER BY bucket_ms, series_id LIMIT $3",
                    &[&res, &(now_ms - res), &BATCH],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if due.is_empty() {
                break;
            }
            for (series, bucket) in due {
                let mut tx = client.transaction()?;
                let skip = bucket + res <= rollup_cutoff
                    || (level == 0 && bucket < raw_cutoff && has_rollup(&mut tx, series, res, bucket)?);
                if !skip {
                    report.rollups_written += rebuild(&mut tx, series, level, bucket)?;
                }
                tx.execute(
                    "DELETE FROM dirty_buckets WHERE series_id = $1 AND resolution_ms = $2 AND bucket_ms = $3",
                    &[&series, &res, &bucket],
                )?;
                if let Some(&up) = LEVELS.get(level + 1) {
                    tx.execute(
                        "INSERT INTO dirty_buckets (series_id, resolution_ms, bucket_ms) VALUES ($1, $2, $3)
                         ON CONFLICT (series_id, resolution_ms, bucket_ms) DO NOTHING",
                        &[&series, &up, &bucket_of(bucket, up)],
                    )?;
                }
                tx.commit()?;
            }
        }
    }

    // Service buckets end where raw data ends (as in SQLite; before it, per-series
    // rollups answer).
    let buckets_deleted = super::buckets::expire(client, raw_cutoff)?;
    if buckets_deleted > 0 {
        tracing::info!(buckets_deleted, "service buckets past raw retention dropped");
    }
    report.raw_deleted += drop_partitions(client, raw_cutoff)?;
    report.rollups_deleted +=
        client.execute("DELETE FROM rollups WHERE bucket_ms + resolution_ms <= $1", &[&rollup_cutoff])?;
    client.execute("DELETE FROM work WHERE end_ms <= $1", &[&rollup_cutoff])?;
    client.execute("DELETE FROM dirty_buckets WHERE bucket_ms + resolution_ms <= $1", &[&rollup_cutoff])?;
    if report != MaintenanceReport::default() {
        tracing::info!(?report, "store maintenance");
    }
    Ok(report)
}

/// Detaches and drops the raw partitions of days that end at or before `cutoff`;
/// returns the profiles they held. Resumes a detach or a drop an earlier pass left
/// half done.
fn drop_partitions(client: &mut Client, cutoff: i64) -> Result<u64, Failure> {
    let tables: Vec<(String, Option<bool>)> = client
        .query(
            "SELECT c.relname::text, i.inhdetachpending FROM pg_class c
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
             WHERE c.relkind = 'r' AND c.relname LIKE 'profiles\\_d%' AND c.relnamespace = current_schema()::regnamespace",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut dropped = 0u64;
    for (name, pending) in tables {
        let Some(day) = partition_day(&name) else { continue };
        if (day + 1) * DAY_MS > cutoff {
            continue;
        }
        // Detached first, so that no write can add a row after it is counted; a late
        // write for that day makes a new partition, dropped at the next pass.
        match pending {
            Some(false) => {
                client.batch_execute(&format!("ALTER TABLE profiles DETACH PARTITION {name} CONCURRENTLY"))?
            }
            Some(true) => client.batch_execute(&format!("ALTER TABLE profiles DETACH PARTITION {name} FINALIZE"))?,
            None => {}
        }
        let mut tx = client.transaction()?;
        let row = tx.query_one(
            &format!(
                "SELECT COUNT(*), LEAST(COALESCE(SUM(s_runnable::numeric + s_waiting + s_timed + s_blocked + s_io), 0),
                                        9223372036854775807)::int8 FROM {name}"
            ),
            &[],
        )?;
        let (profiles, samples): (i64, i64) = (row.get(0), row.get(1));
        tx.execute(
            "INSERT INTO counts (shard, profiles, samples) VALUES (0, -$1::int8, -$2::int8)
             ON CONFLICT (shard) DO UPDATE SET profiles = counts.profiles - $1::int8, samples = counts.samples - $2::int8",
            &[&profiles, &samples],
        )?;
        tx.batch_execute(&format!("DROP TABLE {name}"))?;
        tx.commit()?;
        tracing::info!(partition = %name, profiles, "raw partition dropped by retention");
        dropped += profiles.max(0) as u64;
    }
    Ok(dropped)
}

/// True if (series, res, bucket) has rollup rows.
fn has_rollup(tx: &mut Transaction<'_>, series: i64, res: i64, bucket: i64) -> Result<bool, Failure> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM rollups WHERE series_id = $1 AND resolution_ms = $2 AND bucket_ms = $3 LIMIT 1",
            &[&series, &res, &bucket],
        )?
        .is_some())
}

/// Replaces the rollup rows of (series, `LEVELS[level]`, bucket) with a merge of what
/// lies below; returns the rows written.
fn rebuild(tx: &mut Transaction<'_>, series: i64, level: usize, bucket: i64) -> Result<u64, Failure> {
    let res = LEVELS[level];
    let sql = if level == 0 {
        format!(
            "SELECT series_id, start_ms, {RAW_PIECE_COLUMNS}, samples_blob FROM profiles
             WHERE series_id = $1 AND start_ms >= $2 AND start_ms < $3"
        )
    } else {
        format!(
            "SELECT series_id, bucket_ms, {ROLLUP_COLUMNS}, samples_blob FROM rollups
             WHERE series_id = $1 AND resolution_ms = {below} AND bucket_ms >= $2 AND bucket_ms < $3",
            below = LEVELS[level - 1]
        )
    };
    let mut merge = BucketMerge::default();
    {
        let end = bucket + res;
        let params: [&(dyn postgres::types::ToSql + Sync); 3] = [&series, &bucket, &end];
        let mut rows = tx.query_raw(sql.as_str(), params)?;
        while let Some(row) = rows.next()? {
            merge.add(&piece(&row, 0, true)?)?;
        }
    }
    tx.execute(
        "DELETE FROM rollups WHERE series_id = $1 AND resolution_ms = $2 AND bucket_ms = $3",
        &[&series, &res, &bucket],
    )?;
    let mut written = 0;
    for r in merge.rows()? {
        let t = r.totals;
        tx.execute(
            "INSERT INTO rollups (series_id, resolution_ms, bucket_ms, period_ns, profiles, profile_ms, first_ms, last_ms,
                                  s_runnable, s_waiting, s_timed, s_blocked, s_io, entries, samples_blob, coverage)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            &[
                &series,
                &res,
                &bucket,
                &r.period_ns,
                &r.profiles,
                &r.profile_ms,
                &r.first_ms,
                &r.last_ms,
                &t[0],
                &t[1],
                &t[2],
                &t[3],
                &t[4],
                &r.entries,
                &r.blob,
                &r.coverage,
            ],
        )?;
        written += 1;
    }
    Ok(written)
}
