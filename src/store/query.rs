//! Reading: which series a query matches, which stored pieces (rollups of several
//! resolutions, raw profiles) cover its range, and merging them into an `Aggregate` or a
//! timeline.
//!
//! In: a reader connection inside one read transaction (one snapshot) and a `Query`.
//! Out: merged samples with frame names, or per-bucket totals. Must not: write.
//!
//! The plan for `[from, until)`, per series: whole UTC days inside the range come from
//! daily rollups, whole 6-hour buckets that no used day covers from 6-hour rollups,
//! and so on down through hours and 10-minute buckets; the rest (the edges, under 10
//! minutes each, and any bucket without a usable rollup) from raw profiles. A rollup is
//! usable only if its bucket is not marked dirty (raw data arrived after it was built,
//! or it was never built), so the result is the same with or without rollups.

use super::codec::{self, IntMap};
use super::sqlite::{bucket_of, ReadCache, DAY_MS, LEVELS};
use super::{Query, ServiceInfo, StoreError, TimelinePoint};
use crate::model::{Aggregate, AggregateSample, Coverage, Profile, ProfileBuilder, StateCounts};
use rusqlite::{Connection, Row};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Most points a timeline may have.
const MAX_TIMELINE_POINTS: i64 = 100_000;

/// Ids per `IN (...)` list, well under every database's parameter limit.
const IN_CHUNK: usize = 500;

/// A series a query reads.
pub(super) struct SeriesRef {
    /// Series id.
    pub id: i64,
    /// Its `host` label, if any.
    pub host: Option<String>,
}

/// One stored piece the plan reads: a raw profile or one rollup row.
pub(super) struct Piece<'a> {
    /// Index of the series in the query's series list.
    pub series: usize,
    /// Raw: profile start; rollup: bucket start. Every profile it holds starts in
    /// `[t_ms, t_ms + bucket)`.
    pub t_ms: i64,
    /// Sampling period of its samples.
    pub period_ns: u64,
    /// Raw profiles it stands for.
    pub profiles: u64,
    /// Sum of their window lengths, ms.
    pub profile_ms: i64,
    /// Earliest start and latest end of those profiles.
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
    /// Samples per state.
    pub totals: StateCounts,
    /// A rollup's coverage intervals (`codec::encode_intervals`); `None` for a raw
    /// profile (its window is `[first_ms, last_ms)`) and for rollups built before they
    /// were kept.
    pub coverage: Option<&'a [u8]>,
    /// The sample blob, when asked for.
    pub blob: Option<&'a [u8]>,
}

impl Piece<'_> {
    /// Calls `visit(start, end)` for the wall time its profiles cover: a raw profile's
    /// window, a rollup's merged intervals. A rollup without them (built by an older
    /// hotframe) is taken as one stretch from its first start, as long as the shorter
    /// of its profiles' summed lengths and its extent: exact for one process observed
    /// without gaps, and never longer than what it spans.
    pub fn windows(&self, mut visit: impl FnMut(i64, i64)) -> Result<(), StoreError> {
        match self.coverage {
            Some(bytes) => codec::decode_intervals(bytes, visit),
            None => {
                let span = self.last_ms.saturating_sub(self.first_ms);
                visit(self.first_ms, self.first_ms.saturating_add(self.profile_ms.min(span)));
                Ok(())
            }
        }
    }
}

/// Columns every piece query selects, in this order, after `series_id, t`.
pub(super) const RAW_COLUMNS: &str =
    "period_ns, 1, end_ms - start_ms, start_ms, end_ms, s_runnable, s_waiting, s_timed, s_blocked, s_io, NULL";
/// Same for rollup rows.
pub(super) const ROLLUP_COLUMNS: &str =
    "period_ns, profiles, profile_ms, first_ms, last_ms, s_runnable, s_waiting, s_timed, s_blocked, s_io, coverage";

/// Reads a piece from a row `series_id, t, <COLUMNS>[, samples_blob]`.
pub(super) fn piece_from_row<'r>(row: &'r Row<'_>, series: usize, with_blob: bool) -> Result<Piece<'r>, StoreError> {
    let nonneg = |i: usize| -> Result<u64, StoreError> {
        let v: i64 = row.get(i)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v} in column {i}")))
    };
    Ok(Piece {
        series,
        t_ms: row.get(1)?,
        period_ns: nonneg(2)?,
        profiles: nonneg(3)?,
        profile_ms: row.get(4)?,
        first_ms: row.get(5)?,
        last_ms: row.get(6)?,
        totals: [nonneg(7)?, nonneg(8)?, nonneg(9)?, nonneg(10)?, nonneg(11)?],
        coverage: row
            .get_ref(12)?
            .as_blob_or_null()
            .map_err(|_| StoreError::Corrupt("rollup coverage is not a blob".into()))?,
        blob: if with_blob {
            Some(row.get_ref(13)?.as_blob().map_err(|_| StoreError::Corrupt("sample blob is not a blob".into()))?)
        } else {
            None
        },
    })
}

/// Parses a series' labels JSON.
pub(super) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("series labels {text:?}: {e}")))
}

/// The profile type a query means (`cpu` when empty).
pub(super) fn profile_type(q: &Query) -> &str {
    if q.profile_type.is_empty() {
        "cpu"
    } else {
        &q.profile_type
    }
}

/// `a, b, c` for an `IN (...)` list of our own integer ids (never user text).
fn id_list(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Smallest multiple of `len` at or after `t`.
pub(super) fn ceil_to(t: i64, len: i64) -> i64 {
    bucket_of(t, len) + if t.rem_euclid(len) == 0 { 0 } else { len }
}

/// What `Rows::series` calls per series: (id, labels JSON, host).
pub(super) type SeriesVisit<'v> = dyn FnMut(i64, &str, Option<String>) -> Result<(), StoreError> + 'v;

/// The rows the per-series plan reads, in one backend's SQL, all inside one snapshot.
/// The plan itself (which series, which rollups and raw rows, the timeline's points,
/// resolving stacks through the read cache) is in the provided methods, once for both
/// stores.
pub(super) trait Rows {
    /// The backend's error (convertible from the plan's).
    type Error: From<StoreError>;

    /// Series of `service` and `profile_type`, by id: `visit(id, labels JSON, host)`.
    fn series(&mut self, service: &str, profile_type: &str, visit: &mut SeriesVisit<'_>) -> Result<(), Self::Error>;
    /// Dirty marks of the series `ids` with a bucket in `[lo, hi)`: `visit(series id,
    /// resolution, bucket)`.
    fn dirty(&mut self, ids: &[i64], lo: i64, hi: i64, visit: &mut dyn FnMut(i64, i64, i64))
        -> Result<(), Self::Error>;
    /// Rollup rows of resolution `res` of the series `ids` with a bucket in `[lo, hi)`,
    /// by series, bucket and period: `visit(series id, piece)` (the piece's `series` is
    /// not set).
    fn rollups(
        &mut self,
        res: i64,
        ids: &[i64],
        range: (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(i64, Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Self::Error>;
    /// Raw profiles of series `id` starting in `[lo, hi)`, by start (`series` not set).
    fn raw(
        &mut self,
        id: i64,
        range: (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Self::Error>;
    /// The encoded frame ids of the stacks `ids` that exist.
    fn stacks(&mut self, ids: &[i64], visit: &mut dyn FnMut(i64, &[u8])) -> Result<(), Self::Error>;
    /// The names of the frames `ids` that exist.
    fn frames(&mut self, ids: &[i64], visit: &mut dyn FnMut(i64, Arc<str>)) -> Result<(), Self::Error>;

    /// Series of the query's service and type whose labels match every filter.
    fn matching_series(&mut self, q: &Query) -> Result<Vec<SeriesRef>, Self::Error> {
        let mut out = Vec::new();
        self.series(&q.service, profile_type(q), &mut |id, labels, host| {
            let labels = parse_labels(labels)?;
            if q.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                out.push(SeriesRef { id, host });
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Visits every piece covering `[from, until)` of `series` (see the module doc).
    /// `usable(resolution, bucket)` may refuse a rollup bucket (the timeline refuses
    /// those that straddle two of its points); the raw profiles are read instead.
    fn scan(
        &mut self,
        series: &[SeriesRef],
        (from, until): (i64, i64),
        with_blobs: bool,
        usable: &dyn Fn(i64, i64) -> bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Self::Error> {
        if series.is_empty() || from >= until {
            return Ok(());
        }
        let index: IntMap<i64, usize> = series.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let ids: Vec<i64> = series.iter().map(|s| s.id).collect();

        // Dirty marks: a dirty bucket also spoils the buckets above it.
        let mut dirty: HashSet<(usize, i64, i64)> = HashSet::new();
        self.dirty(&ids, bucket_of(from, DAY_MS), until, &mut |sid, res, bucket| {
            if let Some(&s) = index.get(&sid) {
                for level in LEVELS.into_iter().filter(|l| *l >= res) {
                    dirty.insert((s, level, bucket_of(bucket, level)));
                }
            }
        })?;

        // Rollup levels, coarsest first; a bucket inside one already used is skipped.
        // `covered` holds the (series, start, end) used.
        let mut covered: Vec<(usize, i64, i64)> = Vec::new();
        let mut used: HashSet<(usize, i64, i64)> = HashSet::new();
        for (i, &res) in LEVELS.iter().enumerate().rev() {
            let (lo, hi) = (ceil_to(from, res), bucket_of(until, res));
            if lo >= hi {
                continue;
            }
            self.rollups(res, &ids, (lo, hi), with_blobs, &mut |sid, mut piece| {
                let Some(&s) = index.get(&sid) else { return Ok(()) };
                let bucket = piece.t_ms;
                if dirty.contains(&(s, res, bucket))
                    || !usable(res, bucket)
                    || LEVELS[i + 1..].iter().any(|&up| used.contains(&(s, up, bucket_of(bucket, up))))
                {
                    return Ok(());
                }
                piece.series = s;
                visit(piece)?;
                if used.insert((s, res, bucket)) {
                    covered.push((s, bucket, bucket + res));
                }
                Ok(())
            })?;
        }

        // Raw profiles in the gaps, per series.
        covered.sort_unstable();
        for (s, sref) in series.iter().enumerate() {
            let mut gaps = Vec::new();
            let mut at = from;
            for &(_, lo, hi) in covered.iter().filter(|c| c.0 == s) {
                if lo > at {
                    gaps.push((at, lo));
                }
                at = at.max(hi);
            }
            if at < until {
                gaps.push((at, until));
            }
            for gap in gaps {
                self.raw(sref.id, gap, with_blobs, &mut |mut piece| {
                    piece.series = s;
                    visit(piece)
                })?;
            }
        }
        Ok(())
    }

    /// Merges every piece `scan` finds in `[from, until)` of `series` into `merged`.
    fn merge_scan(
        &mut self,
        series: &[SeriesRef],
        from: i64,
        until: i64,
        merged: &mut Merged,
    ) -> Result<(), Self::Error> {
        self.scan(series, (from, until), true, &|_, _| true, &mut |p| {
            merged.add_piece(&p, series[p.series].host.as_deref())
        })
    }

    /// Merges the profiles matching `q` (per series).
    fn aggregate(&mut self, cache: &Mutex<ReadCache>, q: &Query) -> Result<Aggregate, Self::Error> {
        let series = self.matching_series(q)?;
        let mut merged = Merged::new(&q.states);
        self.merge_scan(&series, q.from_ms, q.until_ms, &mut merged)?;
        merged.finish_with(|stack_ids| self.resolve_stacks(cache, stack_ids))
    }

    /// Per-state totals in buckets of `step_ms` from `q.from_ms`.
    fn timeline(&mut self, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, Self::Error> {
        let mut points = empty_points(q, step_ms)?;
        let series = self.matching_series(q)?;
        let from = q.from_ms;
        // A rollup bucket is usable only if it falls inside one point.
        let usable = |res: i64, bucket: i64| (bucket - from) / step_ms == (bucket + res - 1 - from) / step_ms;
        self.scan(&series, (from, q.until_ms), false, &usable, &mut |p| {
            let point = &mut points[((p.t_ms - from) / step_ms) as usize];
            for (state, &count) in p.totals.iter().enumerate() {
                if q.states.is_empty() || q.states.iter().any(|s| s.index() == state) {
                    point.samples[state] = point.samples[state].saturating_add(count);
                    point.nanos[state] = point.nanos[state].saturating_add(count.saturating_mul(p.period_ns));
                }
            }
            let host = series[p.series].host.as_deref();
            p.windows(|start, end| point.coverage.add(host, start, end))
        })?;
        Ok(points)
    }

    /// Frame ids of each stack id (root first) and the names of those frames, through
    /// the bounded read cache. Every frame id returned has a name (else `Corrupt`).
    fn resolve_stacks(
        &mut self,
        cache: &Mutex<ReadCache>,
        stack_ids: &[i64],
    ) -> Result<(Vec<Vec<i64>>, FrameNames), Self::Error> {
        // Stack id -> encoded frame ids.
        let mut encoded: Vec<Option<Arc<[u8]>>> = {
            let mut c = super::sqlite::lock(cache);
            stack_ids.iter().map(|id| c.stacks.get(id)).collect()
        };
        let missing: Vec<i64> =
            stack_ids.iter().zip(&encoded).filter(|(_, e)| e.is_none()).map(|(id, _)| *id).collect();
        if !missing.is_empty() {
            let mut found: IntMap<i64, Arc<[u8]>> = IntMap::default();
            for chunk in missing.chunks(IN_CHUNK) {
                self.stacks(chunk, &mut |id, bytes| {
                    found.insert(id, Arc::from(bytes));
                })?;
            }
            let mut c = super::sqlite::lock(cache);
            for (id, slot) in stack_ids.iter().zip(encoded.iter_mut()) {
                if slot.is_none() {
                    let bytes = found.get(id).ok_or_else(|| {
                        StoreError::Corrupt(format!("samples refer to stack {id}, which is not stored"))
                    })?;
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
        let names = self.resolve_frames(cache, frame_lists.iter().flatten().copied())?;
        if let Some(f) = frame_lists.iter().flatten().find(|f| !names.contains_key(f)) {
            return Err(StoreError::Corrupt(format!("stack refers to frame {f}, which is not stored")).into());
        }
        Ok((frame_lists, names))
    }

    /// Names of the given frame ids, through the bounded read cache.
    fn resolve_frames(
        &mut self,
        cache: &Mutex<ReadCache>,
        ids: impl Iterator<Item = i64>,
    ) -> Result<FrameNames, Self::Error> {
        let mut names: FrameNames = IntMap::default();
        let mut missing = Vec::new();
        {
            let mut c = super::sqlite::lock(cache);
            for id in ids {
                if names.contains_key(&id) {
                    continue;
                }
                match c.frames.get(&id) {
                    Some(n) => {
                        names.insert(id, n);
                    }
                    None => missing.push(id),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        let mut fetched = Vec::new();
        for chunk in missing.chunks(IN_CHUNK) {
            self.frames(chunk, &mut |id, name| fetched.push((id, name)))?;
        }
        let mut c = super::sqlite::lock(cache);
        for (id, name) in fetched {
            c.frames.insert(id, name.clone());
            names.insert(id, name);
        }
        Ok(names)
    }
}

/// The SQLite store's rows: a reader connection inside its read transaction.
pub(super) struct SqliteRows<'a>(pub &'a Connection);

impl Rows for SqliteRows<'_> {
    type Error = StoreError;

    fn series(&mut self, service: &str, profile_type: &str, visit: &mut SeriesVisit<'_>) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, labels, host FROM series WHERE service = ?1 AND profile_type = ?2 ORDER BY id",
        )?;
        let mut rows = stmt.query([service, profile_type])?;
        while let Some(row) = rows.next()? {
            let labels = row.get_ref(1)?.as_str().map_err(|e| StoreError::Corrupt(e.to_string()))?;
            visit(row.get(0)?, labels, row.get(2)?)?;
        }
        Ok(())
    }

    fn dirty(&mut self, ids: &[i64], lo: i64, hi: i64, visit: &mut dyn FnMut(i64, i64, i64)) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT series_id, resolution_ms, bucket_ms FROM dirty_buckets
             WHERE series_id IN ({}) AND bucket_ms >= ?1 AND bucket_ms < ?2",
            id_list(ids.iter().copied())
        ))?;
        let mut rows = stmt.query([lo, hi])?;
        while let Some(row) = rows.next()? {
            visit(row.get(0)?, row.get(1)?, row.get(2)?);
        }
        Ok(())
    }

    fn rollups(
        &mut self,
        res: i64,
        ids: &[i64],
        (lo, hi): (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(i64, Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT series_id, bucket_ms, {ROLLUP_COLUMNS}{blob} FROM rollups
             WHERE resolution_ms = ?1 AND series_id IN ({ids}) AND bucket_ms >= ?2 AND bucket_ms < ?3
             ORDER BY series_id, bucket_ms, period_ns",
            blob = if with_blobs { ", samples_blob" } else { "" },
            ids = id_list(ids.iter().copied())
        ))?;
        let mut rows = stmt.query([res, lo, hi])?;
        while let Some(row) = rows.next()? {
            visit(row.get(0)?, piece_from_row(row, 0, with_blobs)?)?;
        }
        Ok(())
    }

    fn raw(
        &mut self,
        id: i64,
        (lo, hi): (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT series_id, start_ms, {RAW_COLUMNS}{blob} FROM profiles
             WHERE series_id = ?1 AND start_ms >= ?2 AND start_ms < ?3 ORDER BY start_ms",
            blob = if with_blobs { ", samples_blob" } else { "" }
        ))?;
        let mut rows = stmt.query([id, lo, hi])?;
        while let Some(row) = rows.next()? {
            visit(piece_from_row(row, 0, with_blobs)?)?;
        }
        Ok(())
    }

    fn stacks(&mut self, ids: &[i64], visit: &mut dyn FnMut(i64, &[u8])) -> Result<(), StoreError> {
        let mut stmt = self
            .0
            .prepare(&format!("SELECT id, frame_ids FROM stacks WHERE id IN ({})", id_list(ids.iter().copied())))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let bytes =
                row.get_ref(1)?.as_blob().map_err(|_| StoreError::Corrupt("stack frame list is not a blob".into()))?;
            visit(row.get(0)?, bytes);
        }
        Ok(())
    }

    fn frames(&mut self, ids: &[i64], visit: &mut dyn FnMut(i64, Arc<str>)) -> Result<(), StoreError> {
        let mut stmt =
            self.0.prepare(&format!("SELECT id, name FROM frames WHERE id IN ({})", id_list(ids.iter().copied())))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(1)?;
            visit(row.get(0)?, Arc::from(name));
        }
        Ok(())
    }
}

/// Series of the query's service and type whose labels match every filter.
pub(super) fn matching_series(conn: &Connection, q: &Query) -> Result<Vec<SeriesRef>, StoreError> {
    SqliteRows(conn).matching_series(q)
}

/// Merges the profiles matching `q`.
pub(super) fn aggregate(conn: &Connection, cache: &Mutex<ReadCache>, q: &Query) -> Result<Aggregate, StoreError> {
    SqliteRows(conn).aggregate(cache, q)
}

/// Frame ids of each stack id and the frames' names (see `Rows::resolve_stacks`).
pub(super) fn resolve_stacks(
    conn: &Connection,
    cache: &Mutex<ReadCache>,
    stack_ids: &[i64],
) -> Result<(Vec<Vec<i64>>, FrameNames), StoreError> {
    SqliteRows(conn).resolve_stacks(cache, stack_ids)
}

/// Per-state totals in buckets of `step_ms` from `q.from_ms`.
pub(super) fn timeline(conn: &Connection, q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, StoreError> {
    SqliteRows(conn).timeline(q, step_ms)
}

/// Which of the five states a query keeps: all when `states` is empty.
pub(super) fn kept_states(states: &[crate::model::ThreadState]) -> [bool; 5] {
    let mut keep = [states.is_empty(); 5];
    for s in states {
        keep[s.index()] = true;
    }
    keep
}

/// What a query merges as it goes: (stack, state) -> (samples, nanos), the wall time per
/// host, the profiles and their extent. Memory grows with the distinct stacks only.
pub(super) struct Merged {
    keep: [bool; 5],
    entries: IntMap<u64, (u64, u64)>,
    coverage: Coverage,
    profiles: u64,
    first: i64,
    last: i64,
    scratch: Vec<u8>,
}

impl Merged {
    /// An empty merge keeping `states` (all when empty).
    pub(super) fn new(states: &[crate::model::ThreadState]) -> Merged {
        let keep = kept_states(states);
        Merged {
            keep,
            // Sized for a typical service, so that it rarely rehashes while merging.
            entries: IntMap::with_capacity_and_hasher(1 << 14, Default::default()),
            coverage: Coverage::default(),
            profiles: 0,
            first: i64::MAX,
            last: i64::MIN,
            scratch: Vec::new(),
        }
    }

    /// Adds one (key, samples, nanos) entry, if its state is kept.
    pub(super) fn add_entry(&mut self, key: u64, count: u64, nanos: u64) {
        if self.keep[(key & 7) as usize] {
            let e = self.entries.entry(key).or_insert((0, 0));
            e.0 = e.0.saturating_add(count);
            e.1 = e.1.saturating_add(nanos);
        }
    }

    /// Adds `profiles` profiles spanning `[first, last)`.
    pub(super) fn add_extent(&mut self, profiles: u64, first: i64, last: i64) {
        self.profiles = self.profiles.saturating_add(profiles);
        self.first = self.first.min(first);
        self.last = self.last.max(last);
    }

    /// Adds observed wall time on `host`.
    pub(super) fn add_window(&mut self, host: Option<&str>, start: i64, end: i64) {
        self.coverage.add(host, start, end);
    }

    /// Adds a stored piece (raw profile or per-series rollup) of a series on `host`.
    pub(super) fn add_piece(&mut self, p: &Piece<'_>, host: Option<&str>) -> Result<(), StoreError> {
        let coverage = &mut self.coverage;
        p.windows(|start, end| coverage.add(host, start, end))?;
        self.add_extent(p.profiles, p.first_ms, p.last_ms);
        let period = p.period_ns;
        let Merged { keep, entries, scratch, .. } = self;
        codec::decode_entries(p.blob.unwrap_or_default(), scratch, |key, count| {
            if keep[(key & 7) as usize] {
                let e = entries.entry(key).or_insert((0, 0));
                e.0 = e.0.saturating_add(count);
                e.1 = e.1.saturating_add(count.saturating_mul(period));
            }
        })
    }

    /// The merged stacks with their frame names, as an `Aggregate`.
    pub(super) fn finish(self, conn: &Connection, cache: &Mutex<ReadCache>) -> Result<Aggregate, StoreError> {
        self.finish_with(|stack_ids| resolve_stacks(conn, cache, stack_ids))
    }

    /// The same, with `resolve` giving the frame ids of the stacks and the frames' names
    /// (`resolve_stacks` of the backend).
    pub(super) fn finish_with<E: From<StoreError>>(
        self,
        resolve: impl FnOnce(&[i64]) -> Result<(Vec<Vec<i64>>, FrameNames), E>,
    ) -> Result<Aggregate, E> {
        let Merged { entries, coverage, profiles, first, last, .. } = self;
        let mut entries: Vec<(u64, (u64, u64))> = entries.into_iter().collect();
        entries.sort_unstable_by_key(|e| e.0);
        // Stacks (global ids, ascending) -> local indices; frames numbered on first use.
        let mut stack_ids: Vec<i64> = entries.iter().map(|e| (e.0 >> 3) as i64).collect();
        stack_ids.dedup();
        let (frame_lists, names) = resolve(&stack_ids)?;
        Ok(assemble(&entries, frame_lists, &names, coverage, profiles, (first, last))?)
    }
}

/// The `Aggregate` of merged entries `(key, (samples, nanos))` sorted by key, given the
/// frame ids of their stacks (in key order, one list per distinct stack) and the frames'
/// names; shared by both stores.
pub(super) fn assemble(
    entries: &[(u64, (u64, u64))],
    frame_lists: Vec<Vec<i64>>,
    names: &FrameNames,
    coverage: Coverage,
    profiles: u64,
    (first, last): (i64, i64),
) -> Result<Aggregate, StoreError> {
    // Interned frames have one id per name, so ids can be numbered directly.
    let mut frames: Vec<String> = Vec::new();
    let mut frame_index: IntMap<i64, u32> = IntMap::default();
    let mut stacks: Vec<Vec<u32>> = Vec::with_capacity(frame_lists.len());
    for ids in frame_lists {
        let local: Vec<u32> = ids
            .into_iter()
            .map(|id| {
                *frame_index.entry(id).or_insert_with(|| {
                    frames.push(names.get(&id).map(|n| n.to_string()).unwrap_or_default());
                    (frames.len() - 1) as u32
                })
            })
            .collect();
        stacks.push(local);
    }
    let mut samples = Vec::with_capacity(entries.len());
    let mut local = 0u32;
    for (i, (key, (count, nanos))) in entries.iter().enumerate() {
        if i > 0 && entries[i - 1].0 >> 3 != key >> 3 {
            local += 1;
        }
        let (_, state) = codec::split_key(*key)?;
        samples.push(AggregateSample { stack: local, state, samples: *count, nanos: *nanos });
    }
    let any = profiles > 0;
    Ok(Aggregate {
        frames,
        stacks,
        samples,
        profiles,
        coverage,
        first_ms: if any { first } else { 0 },
        last_ms: if any { last } else { 0 },
    })
}

/// A stored profile rebuilt from its decoded `(key, count)` entries, the frame ids of
/// each entry's stack (same order) and the frames' names; `b` holds its header and labels.
/// Shared by both stores' `profile`.
pub(super) fn rebuild_profile(
    mut b: ProfileBuilder,
    entries: &[(u64, u64)],
    frame_lists: &[Vec<i64>],
    names: &FrameNames,
) -> Result<Profile, StoreError> {
    let mut stack: Vec<&str> = Vec::new();
    for ((key, count), ids) in entries.iter().zip(frame_lists) {
        let (_, state) = codec::split_key(*key)?;
        stack.clear();
        stack.extend(ids.iter().map(|id| names.get(id).map(|n| &**n).unwrap_or("[unknown]")));
        b.add(&stack, state, *count);
    }
    Ok(b.finish())
}

/// The zero points of a timeline of `q` in steps of `step_ms` (refused when the step is
/// not positive or makes too many points).
pub(super) fn empty_points(q: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, StoreError> {
    if step_ms <= 0 {
        return Err(StoreError::Invalid(format!("timeline step {step_ms} ms must be positive")));
    }
    let span = q.until_ms.saturating_sub(q.from_ms).max(0);
    let n = span / step_ms + i64::from(span % step_ms != 0);
    if n > MAX_TIMELINE_POINTS {
        return Err(StoreError::Invalid(format!(
            "timeline of {n} points is over the limit of {MAX_TIMELINE_POINTS}; use a larger step"
        )));
    }
    Ok((0..n)
        .map(|i| TimelinePoint {
            t_ms: q.from_ms + i * step_ms,
            samples: StateCounts::default(),
            nanos: StateCounts::default(),
            coverage: Coverage::default(),
        })
        .collect())
}

/// Frame id -> name.
pub(super) type FrameNames = IntMap<i64, Arc<str>>;

/// Per series: its first raw profile's start, its latest-starting raw profile's end and
/// its raw profiles (NULLs when it has none), each through the (series, start) index:
/// a `GROUP BY` over the profiles reads every row of the table (31 s for 1.25 M
/// profiles of a 3,000-series fleet, cold). Both stores run it.
pub(super) const SERIES_EXTENTS: &str = "SELECT s.id,
        (SELECT MIN(p.start_ms) FROM profiles p WHERE p.series_id = s.id),
        (SELECT p.end_ms FROM profiles p WHERE p.series_id = s.id ORDER BY p.start_ms DESC LIMIT 1),
        (SELECT COUNT(*) FROM profiles p WHERE p.series_id = s.id)
    FROM series s";

/// Every service with its profile types, label values and time extent.
pub(super) fn services(conn: &Connection) -> Result<Vec<ServiceInfo>, StoreError> {
    // Per series: raw extent and count, then rollup extent (raw may have expired).
    let mut listing = ServiceListing { extent: IntMap::default(), by_name: BTreeMap::new() };
    for sql in [SERIES_EXTENTS, "SELECT series_id, MIN(first_ms), MAX(last_ms), 0 FROM rollups GROUP BY series_id"] {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            listing.extent(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        }
    }
    let mut stmt = conn.prepare("SELECT id, service, profile_type, labels FROM series ORDER BY service, id")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        listing.series(row.get(0)?, row.get(1)?, row.get(2)?, &row.get::<_, String>(3)?)?;
    }
    Ok(listing.finish())
}

/// Services built from series rows and per-series extents (shared by both stores).
pub(super) struct ServiceListing {
    /// Series id -> (first start, last end, raw profiles).
    pub extent: IntMap<i64, (i64, i64, u64)>,
    /// Services so far, by name.
    pub by_name: BTreeMap<String, ServiceInfo>,
}

impl ServiceListing {
    /// Widens series `sid`'s extent by a row of `SERIES_EXTENTS` or of the rollups'
    /// extents (`lo`/`hi` NULL: nothing stored there), adding its `n` raw profiles.
    pub fn extent(&mut self, sid: i64, lo: Option<i64>, hi: Option<i64>, n: i64) {
        let (Some(lo), Some(hi)) = (lo, hi) else { return };
        let e = self.extent.entry(sid).or_insert((i64::MAX, i64::MIN, 0));
        e.0 = e.0.min(lo);
        e.1 = e.1.max(hi);
        e.2 += n.max(0) as u64;
    }

    /// Adds one series row (skipped when it has no extent: nothing stored).
    pub fn series(&mut self, sid: i64, name: String, ptype: String, labels: &str) -> Result<(), StoreError> {
        let Some(&(lo, hi, n)) = self.extent.get(&sid) else { return Ok(()) };
        let info = self.by_name.entry(name.clone()).or_insert_with(|| ServiceInfo {
            name,
            profile_types: Vec::new(),
            labels: BTreeMap::new(),
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            profiles: 0,
        });
        if !info.profile_types.contains(&ptype) {
            info.profile_types.push(ptype);
        }
        for (k, v) in parse_labels(labels)? {
            let values = info.labels.entry(k).or_default();
            if !values.contains(&v) {
                values.push(v);
            }
        }
        info.first_ms = info.first_ms.min(lo);
        info.last_ms = info.last_ms.max(hi);
        info.profiles += n;
        Ok(())
    }

    /// The services, names and label values sorted.
    pub fn finish(self) -> Vec<ServiceInfo> {
        self.by_name
            .into_values()
            .map(|mut s| {
                s.profile_types.sort();
                s.labels.values_mut().for_each(|v| v.sort());
                s
            })
            .collect()
    }
}
