//! Reading from PostgreSQL: the same plan as the SQLite store's `store::query` (rollups
//! of the coarsest usable resolution for whole buckets, raw profiles for the rest,
//! dirty buckets never used), on a read-only repeatable-read transaction, with rows
//! streamed rather than collected.
//!
//! In: a transaction and a `Query`. Out: merged samples with frame names, timelines,
//! services, work totals. Must not: write.

use super::Failure;
use crate::model::{Aggregate, Coverage, Profile, ProfileBuilder, StateCounts};
use crate::store::codec::{self, IntMap};
use crate::store::query::{parse_labels, rebuild_profile, FrameNames, Merged, Piece, SeriesRef, ServiceListing};
use crate::store::sqlite::{bucket_of, lock, ReadCache, DAY_MS, LEVELS};
use crate::store::{Query, ServiceInfo, StoreError, TimelinePoint, WorkTotal};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Row, Transaction};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Most points a timeline may have (as in SQLite).
const MAX_TIMELINE_POINTS: i64 = 100_000;

/// Columns of a raw profile as a piece, after `series_id, t`.
const RAW_COLUMNS: &str = "period_ns, 1::int8, end_ms - start_ms, start_ms, end_ms, s_runnable, s_waiting, s_timed, s_blocked, s_io, NULL::bytea";
/// Same for rollup rows.
pub(super) const ROLLUP_COLUMNS: &str =
    "period_ns, profiles, profile_ms, first_ms, last_ms, s_runnable, s_waiting, s_timed, s_blocked, s_io, coverage";
/// The raw piece columns, for `maintain`.
pub(super) const RAW_PIECE_COLUMNS: &str = RAW_COLUMNS;

/// A piece from a row `series_id, t, <COLUMNS>[, samples_blob]`.
pub(super) fn piece(row: &Row, series: usize, with_blob: bool) -> Result<Piece<'_>, Failure> {
    let nonneg = |i: usize| -> Result<u64, Failure> {
        let v: i64 = row.try_get(i)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v} in column {i}")).into())
    };
    Ok(Piece {
        series,
        t_ms: row.try_get(1)?,
        period_ns: nonneg(2)?,
        profiles: nonneg(3)?,
        profile_ms: row.try_get(4)?,
        first_ms: row.try_get(5)?,
        last_ms: row.try_get(6)?,
        totals: [nonneg(7)?, nonneg(8)?, nonneg(9)?, nonneg(10)?, nonneg(11)?],
        coverage: row.try_get::<_, Option<&[u8]>>(12)?,
        blob: if with_blob { Some(row.try_get::<_, &[u8]>(13)?) } else { None },
    })
}

/// Runs `sql` and visits its rows as they arrive.
pub(super) fn each_row(
    tx: &mut Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    mut visit: impl FnMut(&Row) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut rows = tx.query_raw(sql, params.iter().copied())?;
    while let Some(row) = rows.next()? {
        visit(&row)?;
    }
    Ok(())
}

/// Series of the query's service and type whose labels match every filter.
pub(super) fn matching_series(tx: &mut Transaction<'_>, q: &Query) -> Result<Vec<SeriesRef>, Failure> {
    let ptype = if q.profile_type.is_empty() { "cpu" } else { q.profile_type.as_str() };
    let rows = tx.query(
        "SELECT id, labels, host FROM series WHERE service = $1 AND profile_type = $2 ORDER BY id",
        &[&q.service, &ptype],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let labels = parse_labels(row.try_get(1)?)?;
        if q.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            out.push(SeriesRef { id: row.try_get(0)?, host: row.try_get(2)? });
        }
    }
    Ok(out)
}

/// Smallest multiple of `len` at or after `t`.
fn ceil_to(t: i64, len: i64) -> i64 {
    bucket_of(t, len) + if t.rem_euclid(len) == 0 { 0 } else { len }
}

/// Visits every piece covering `[from, until)` of `series` (the plan of `store::query::scan`).
fn scan(
    tx: &mut Transaction<'_>,
    series: &[SeriesRef],
    (from, until): (i64, i64),
    with_blobs: bool,
    usable: &dyn Fn(i64, i64) -> bool,
    visit: &mut dyn FnMut(Piece<'_>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    if series.is_empty() || from >= until {
        return Ok(());
    }
    let index: IntMap<i64, usize> = series.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
    let blob_col = if with_blobs { ", samples_blob" } else { "" };

    let mut dirty: HashSet<(usize, i64, i64)> = HashSet::new();
    each_row(
        tx,
        "SELECT series_id, resolution_ms, bucket_ms FROM dirty_buckets
         WHERE series_id = ANY($1) AND bucket_ms >= $2 AND bucket_ms < $3",
        &[&ids, &bucket_of(from, DAY_MS), &until],
        |row| {
            let (sid, res, bucket): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if let Some(&s) = index.get(&sid) {
                for level in LEVELS.into_iter().filter(|l| *l >= res) {
                    dirty.insert((s, level, bucket_of(bucket, level)));
                }
            }
            Ok(())
        },
    )?;

    let mut covered: Vec<(usize, i64, i64)> = Vec::new();
    let mut used: HashSet<(usize, i64, i64)> = HashSet::new();
    let rollups = format!(
        "SELECT series_id, bucket_ms, {ROLLUP_COLUMNS}{blob_col} FROM rollups
         WHERE resolution_ms = $1 AND series_id = ANY($2) AND bucket_ms >= $3 AND bucket_ms < $4
         ORDER BY series_id, bucket_ms, period_ns"
    );
    for (i, &res) in LEVELS.iter().enumerate().rev() {
        let (lo, hi) = (ceil_to(from, res), bucket_of(until, res));
        if lo >= hi {
            continue;
        }
        each_row(tx, &rollups, &[&res, &ids, &lo, &hi], |row| {
            let (sid, bucket): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            let Some(&s) = index.get(&sid) else { return Ok(()) };
            if dirty.contains(&(s, res, bucket))
                || !usable(res, bucket)
                || LEVELS[i + 1..].iter().any(|&up| used.contains(&(s, up, bucket_of(bucket, up))))
            {
                return Ok(());
            }
            visit(piece(row, s, with_blobs)?)?;
            if used.insert((s, res, bucket)) {
                covered.push((s, bucket, bucket + res));
            }
            Ok(())
        })?;
    }

    covered.sort_unstable();
    let raw = format!(
        "SELECT series_id, start_ms, {RAW_COLUMNS}{blob_col} FROM profiles
         WHERE series_id = $1 AND start_ms >= $2 AND start_ms < $3 ORDER BY start_ms"
    );
    for (s, sref) in series.iter().enumerate() {
        let mut at = from;
        let mut gaps = Vec::new();
        for &(_, lo, hi) in covered.iter().filter(|c| c.0 == s) {
            if lo > at {
                gaps.push((at, lo));
            }
            at = at.max(hi);
        }
        if at < until {
            gaps.push((at, until));
        }
        for (lo, hi) in gaps {
            each_row(tx, &raw, &[&sref.id, &lo, &hi], |row| visit(piece(row, s, with_blobs)?))?;
        }
    }
    Ok(())
}

/// Merges the profiles matching `q`.
pub(super) fn aggregate(tx: &mut Transaction<'_>, cache: &Mutex<ReadCache>, q: &Query) -> Result<Aggregate, Failure> {
    let series = matching_series(tx, q)?;
    let mut merged = Merged::new(&q.states);
    merge_scan(tx, &series, q.from_ms, q.until_ms, &mut merged)?;
    merged.finish_with(|stack_ids| resolve_stacks(tx, cache, stack_ids))
}

/// Merges every piece `scan` finds in `[from, until)` of `series` into `merged`.
pub(super) fn merge_scan(
    tx: &mut Transaction<'_>,
    series: &[SeriesRef],
    from: i64,
    until: i64,
    merged: &mut Merged,
) -> Result<(), Failure> {
    scan(tx, series, (from, until), true, &|_, _| true, &mut |p| {
        Ok(merged.add_piece(&p, series[p.series].host.as_deref())?)
    })
}

/// Frame ids of each stack id (root first) and the names of those frames, through the
/// bounded read cache.
pub(super) fn resolve_stacks(
    tx: &mut Transaction<'_>,
    cache: &Mutex<ReadCache>,
    stack_ids: &[i64],
) -> Result<(Vec<Vec<i64>>, FrameNames), Failure> {
    let mut encoded: Vec<Option<Arc<[u8]>>> = {
        let mut c = lock(cache);
        stack_ids.iter().map(|id| c.stacks.get(id)).collect()
    };
    let missing: Vec<i64> = stack_ids.iter().zip(&encoded).filter(|(_, e)| e.is_none()).map(|(id, _)| *id).collect();
    if !missing.is_empty() {
        let mut found: IntMap<i64, Arc<[u8]>> = IntMap::default();
        each_row(tx, "SELECT id, frame_ids FROM stacks WHERE id = ANY($1)", &[&missing], |row| {
            found.insert(row.try_get(0)?, Arc::from(row.try_get::<_, &[u8]>(1)?));
            Ok(())
        })?;
        let mut c = lock(cache);
        for (id, slot) in stack_ids.iter().zip(encoded.iter_mut()) {
            if slot.is_none() {
                let bytes = found
                    .get(id)
                    .ok_or_else(|| StoreError::Corrupt(format!("samples refer to stack {id}, which is not stored")))?;
                c.stacks.insert(*id, bytes.clone());
                *slot = Some(bytes.clone());
            }
        }
    }
    let mut frame_lists: Vec<Vec<i64>> = Vec::with_capacity(stack_ids.len());
    for bytes in encoded.iter().flatten() {
        let mut ids = Vec::new();
        codec::decode_frame_ids(bytes, &mut ids)?;
        frame_lists.push(ids);
    }
    let mut names: IntMap<i64, Arc<str>> = IntMap::default();
    let mut wanted = Vec::new();
    {
        let mut c = lock(cache);
        for &id in frame_lists.iter().flatten() {
            if names.contains_key(&id) {
                continue;
            }
            match c.frames.get(&id) {
                Some(n) => {
                    names.insert(id, n);
                }
                None => wanted.push(id),
            }
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    if !wanted.is_empty() {
        let mut fetched = Vec::new();
        each_row(tx, "SELECT id, name FROM frames WHERE id = ANY($1)", &[&wanted], |row| {
            let name = String::from_utf8_lossy(row.try_get::<_, &[u8]>(1)?);
            fetched.push((row.try_get::<_, i64>(0)?, Arc::<str>::from(name.as_ref())));
            Ok(())
        })?;
        let mut c = lock(cache);
        for (id, name) in fetched {
            c.frames.insert(id, name.clone());
            names.insert(id, name);
        }
    }
    if let Some(f) = frame_lists.iter().flatten().find(|f| !names.contains_key(f)) {
        return Err(StoreError::Corrupt(format!("stack refers to frame {f}, which is not stored")).into());
    }
    Ok((frame_lists, names))
}

/// Per-state totals in buckets of `step_ms` from `q.from_ms`.
pub(super) fn timeline(tx: &mut Transaction<'_>, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, Failure> {
    if step_ms <= 0 {
        return Err(StoreError::Invalid(format!("timeline step {step_ms} ms must be positive")).into());
    }
    let span = q.until_ms.saturating_sub(q.from_ms).max(0);
    let n = span / step_ms + i64::from(span % step_ms != 0);
    if n > MAX_TIMELINE_POINTS {
        return Err(StoreError::Invalid(format!(
            "timeline of {n} points is over the limit of {MAX_TIMELINE_POINTS}; use a larger step"
        ))
        .into());
    }
    let series = matching_series(tx, q)?;
    let from = q.from_ms;
    let mut points: Vec<TimelinePoint> = (0..n)
        .map(|i| TimelinePoint {
            t_ms: from + i * step_ms,
            samples: StateCounts::default(),
            nanos: StateCounts::default(),
            coverage: Coverage::default(),
        })
        .collect();
    let usable = |res: i64, bucket: i64| (bucket - from) / step_ms == (bucket + res - 1 - from) / step_ms;
    scan(tx, &series, (from, q.until_ms), false, &usable, &mut |p| {
        let point = &mut points[((p.t_ms - from) / step_ms) as usize];
        for (state, &count) in p.totals.iter().enumerate() {
            if q.states.is_empty() || q.states.iter().any(|s| s.index() == state) {
                point.samples[state] = point.samples[state].saturating_add(count);
                point.nanos[state] = point.nanos[state].saturating_add(count.saturating_mul(p.period_ns));
            }
        }
        let host = series[p.series].host.as_deref();
        p.windows(|start, end| point.coverage.add(host, start, end))?;
        Ok(())
    })?;
    Ok(points)
}

/// Every service with its profile types, label values and time extent.
pub(super) fn services(tx: &mut Transaction<'_>) -> Result<Vec<ServiceInfo>, Failure> {
    let mut extent: IntMap<i64, (i64, i64, u64)> = IntMap::default();
    for sql in [
        "SELECT series_id, MIN(start_ms), MAX(end_ms), COUNT(*) FROM profiles GROUP BY series_id",
        "SELECT series_id, MIN(first_ms), MAX(last_ms), 0::int8 FROM rollups GROUP BY series_id",
    ] {
        each_row(tx, sql, &[], |row| {
            let (sid, lo, hi, n): (i64, i64, i64, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let e = extent.entry(sid).or_insert((i64::MAX, i64::MIN, 0));
            e.0 = e.0.min(lo);
            e.1 = e.1.max(hi);
            e.2 += n.max(0) as u64;
            Ok(())
        })?;
    }
    let mut listing = ServiceListing { extent, by_name: BTreeMap::new() };
    for row in tx.query("SELECT id, service, profile_type, labels FROM series ORDER BY service, id", &[])? {
        listing.series(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)?;
    }
    Ok(listing.finish())
}

/// The work counted by the profiles `q` selects.
pub(super) fn work(tx: &mut Transaction<'_>, q: &Query) -> Result<WorkTotal, Failure> {
    let ids: Vec<i64> = matching_series(tx, q)?.iter().map(|s| s.id).collect();
    let row = tx.query_one(
        "SELECT LEAST(COALESCE(SUM(units), 0), 9223372036854775807)::int8, COUNT(*) FROM work
         WHERE series_id = ANY($1) AND start_ms >= $2 AND start_ms < $3",
        &[&ids, &q.from_ms, &q.until_ms],
    )?;
    Ok(WorkTotal { units: row.try_get::<_, i64>(0)?.max(0) as u64, profiles: row.try_get::<_, i64>(1)?.max(0) as u64 })
}

/// One raw profile as written, or None.
pub(super) fn profile(tx: &mut Transaction<'_>, cache: &Mutex<ReadCache>, id: i64) -> Result<Option<Profile>, Failure> {
    let Some(row) = tx.query_opt(
        "SELECT s.service, s.profile_type, s.labels, p.start_ms, p.end_ms, p.period_ns, p.samples_blob
         FROM profiles p JOIN series s ON s.id = p.series_id WHERE p.id = $1",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let (service, profile_type, labels): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let (start_ms, end_ms, period_ns): (i64, i64, i64) = (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
    let mut entries = Vec::new();
    codec::decode_entries(row.try_get::<_, &[u8]>(6)?, &mut Vec::new(), |k, c| entries.push((k, c)))?;
    let stack_ids: Vec<i64> = entries.iter().map(|(k, _)| (k >> 3) as i64).collect();
    let (frame_lists, names) = resolve_stacks(tx, cache, &stack_ids)?;
    let mut b = ProfileBuilder::new(&service, start_ms, end_ms, period_ns.max(1) as u64).profile_type(&profile_type);
    *b.labels_mut() = parse_labels(&labels)?;
    Ok(Some(rebuild_profile(b, &entries, &frame_lists, &names)?))
}
