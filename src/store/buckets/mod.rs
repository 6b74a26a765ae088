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
//! or past raw retention) the per-series path (`query::Rows::scan`) answers. Late data is just
//! merged into old buckets: there is nothing to invalidate.
//!
//! A bucket row keeps (stack, state) -> (samples, thread nanoseconds) in plain varints,
//! and the wall time per host as merged intervals, so the cost window stays a union.
//!
//! This module holds what both stores share: the bucket blob format, the merge of
//! pending profiles into deltas, the read-modify-write of a bucket row, and the query
//! plan over the levels (ragged edges, the floor). Each backend has only its SQL:
//! `buckets::sqlite` for `SqliteStore`, `postgres::buckets` for `PostgresStore`.

/// The DDL of the two tables, in a dialect's type for blobs and for the queued id (both
/// stores' migrations use it, so the tables stay alike).
macro_rules! bucket_tables {
    ($blob:literal, $id:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS service_buckets (
                service        TEXT NOT NULL,
                profile_type   TEXT NOT NULL,
                resolution_ms  BIGINT NOT NULL,
                bucket_ms      BIGINT NOT NULL,
                profiles       BIGINT NOT NULL,
                first_start_ms BIGINT NOT NULL,
                last_start_ms  BIGINT NOT NULL,
                last_end_ms    BIGINT NOT NULL,
                entries        BIGINT NOT NULL,
                samples_blob   ",
            $blob,
            " NOT NULL,
                coverage       ",
            $blob,
            " NOT NULL,
                PRIMARY KEY (service, profile_type, resolution_ms, bucket_ms)
            );
            -- Raw profiles not yet merged into service buckets (a few seconds' worth).
            CREATE TABLE IF NOT EXISTS bucket_pending (
                profile_id ",
            $id,
            " PRIMARY KEY,
                series_id  BIGINT NOT NULL,
                start_ms   BIGINT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS bucket_pending_by_start ON bucket_pending (start_ms);
            "
        )
    };
}
pub(super) use bucket_tables;

pub(super) mod sqlite;

pub(super) use sqlite::{aggregate, compact, enqueue, expire, timeline, MIGRATION};

use super::codec::{self, get_varint, put_varint, IntMap};
use super::query::{ceil_to, empty_points, kept_states, Merged, Piece, SeriesRef};
use super::sqlite::{bucket_of, LEVELS};
use super::{Query, StoreError, TimelinePoint};
use crate::model::Coverage;
use std::collections::BTreeMap;

/// The finest bucket, ms: it bounds the raw data a query reads at each ragged edge.
pub(super) const MINUTE_MS: i64 = 60_000;
/// Bucket lengths, finest first; each divides the next.
pub(super) const BUCKET_LEVELS: [i64; 5] = [MINUTE_MS, LEVELS[0], LEVELS[1], LEVELS[2], LEVELS[3]];
/// Pending profiles merged per transaction: bounds the memory of a pass and the time it
/// holds the writer (or, in PostgreSQL, the bucket rows).
pub(super) const PENDING_BATCH: usize = 500;
/// Batches per `compact` call, so that a call always ends (the rest waits for the next).
pub(super) const MAX_BATCHES: usize = 2_000;
/// Key of the floor in `meta`.
pub(super) const FLOOR_KEY: &str = "bucket_floor_ms";
/// Format byte of a bucket's entries.
const FORMAT_BUCKET: u8 = 3;
/// The columns a stored bucket is read with (`StoredBucket`), in both dialects.
pub(super) const BUCKET_COLUMNS: &str =
    "bucket_ms, profiles, first_start_ms, last_start_ms, last_end_ms, samples_blob, coverage FROM service_buckets";

/// The floor stored in `meta` (None: no buckets at all, everything is read per series).
pub(super) fn parse_floor(text: Option<String>) -> Result<i64, StoreError> {
    match text {
        None => Ok(i64::MAX),
        Some(t) => t.parse().map_err(|_| StoreError::Corrupt(format!("meta.{FLOOR_KEY} is {t:?}, not a number"))),
    }
}

/// Profiles merged into one bucket (or about to be); empty by default.
pub(super) struct Delta {
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
pub(super) type BucketKey = (String, String, i64, i64);

/// A pending profile as `compact` reads it, joined with its raw row and series.
pub(super) struct PendingProfile<'a> {
    /// End of its window, ms.
    pub end_ms: i64,
    /// Its sampling period.
    pub period_ns: i64,
    /// Its raw sample blob (`codec::encode_entries`).
    pub blob: &'a [u8],
    /// Its series' service, profile type and host label.
    pub service: String,
    /// See `service`.
    pub profile_type: String,
    /// See `service`.
    pub host: Option<String>,
}

impl<'a> PendingProfile<'a> {
    /// The columns of a pending row's outer joins: None when the raw profile is gone
    /// (retention) or its series is, so that there is nothing to merge.
    pub fn joined(
        blob: Option<&'a [u8]>,
        service: Option<String>,
        end_ms: Option<i64>,
        period_ns: Option<i64>,
        profile_type: Option<String>,
        host: Option<String>,
    ) -> Option<PendingProfile<'a>> {
        Some(PendingProfile {
            end_ms: end_ms?,
            period_ns: period_ns?,
            blob: blob?,
            service: service?,
            profile_type: profile_type?,
            host,
        })
    }
}

/// A batch of pending profiles, merged per (service, type, minute).
#[derive(Default)]
pub(super) struct PendingBatch {
    minutes: BTreeMap<(String, String, i64), Delta>,
    /// Pending ids to delete: merged, gone, or before the floor.
    pub done: Vec<i64>,
    /// Profiles merged.
    pub merged: u64,
    /// The last pending id read (the cursor of the next batch).
    pub last_id: Option<i64>,
    seen: usize,
    scratch: Vec<u8>,
    decoded: Vec<(u64, u64)>,
}

impl PendingBatch {
    /// Adds pending profile `id` starting at `start`: `profile` is None when it is gone
    /// (retention) or its series is; a profile before `floor` is dropped from the
    /// queue; one whose blob does not decode stays pending (queries read it raw and say
    /// so) and merges nothing.
    pub fn add(&mut self, id: i64, start: i64, floor: i64, profile: Option<PendingProfile<'_>>) {
        self.seen += 1;
        self.last_id = Some(id);
        let Some(p) = profile.filter(|_| start >= floor) else {
            self.done.push(id);
            return;
        };
        // Decoded whole before anything is merged: a corrupt blob merges nothing.
        let (scratch, decoded) = (&mut self.scratch, &mut self.decoded);
        decoded.clear();
        if let Err(e) = codec::decode_entries(p.blob, scratch, |key, count| decoded.push((key, count))) {
            tracing::warn!(profile = id, error = %e, "a stored profile does not decode; it stays out of the service buckets");
            return;
        }
        let period = p.period_ns.max(0) as u64;
        let minute = self.minutes.entry((p.service, p.profile_type, bucket_of(start, MINUTE_MS))).or_default();
        for &(key, count) in decoded.iter() {
            let e = minute.entries.entry(key).or_insert((0, 0));
            e.0 = e.0.saturating_add(count);
            e.1 = e.1.saturating_add(count.saturating_mul(period));
        }
        minute.profiles = minute.profiles.saturating_add(1);
        minute.first_start = minute.first_start.min(start);
        minute.last_start = minute.last_start.max(start);
        minute.last_end = minute.last_end.max(p.end_ms);
        minute.coverage.add(p.host.as_deref(), start, p.end_ms);
        self.done.push(id);
        self.merged += 1;
    }

    /// True when the batch took `PENDING_BATCH` rows (more may be waiting).
    pub fn full(&self) -> bool {
        self.seen == PENDING_BATCH
    }

    /// What to add to each bucket of every level, in key order (the order in which
    /// concurrent compactions lock bucket rows, so that they never deadlock).
    pub fn level_deltas(&self) -> BTreeMap<BucketKey, Delta> {
        let mut deltas: BTreeMap<BucketKey, Delta> = BTreeMap::new();
        for ((service, ptype, minute), delta) in &self.minutes {
            for &res in &BUCKET_LEVELS {
                let key = (service.clone(), ptype.clone(), res, bucket_of(*minute, res));
                deltas.entry(key).or_default().absorb(delta);
            }
        }
        deltas
    }
}

/// A stored bucket as read from its row (`BUCKET_COLUMNS`).
pub(super) struct StoredBucket<'r> {
    /// Bucket start.
    pub bucket_ms: i64,
    /// Profiles merged into it.
    pub profiles: u64,
    /// Earliest and latest start of those profiles, and their latest end.
    pub first_start: i64,
    /// See `first_start`.
    pub last_start: i64,
    /// See `first_start`.
    pub last_end: i64,
    /// `encode_entries` bytes.
    pub blob: &'r [u8],
    /// `encode_coverage` bytes.
    pub coverage: &'r [u8],
}

/// A bucket row to store: the stored one (if any) with a delta added.
pub(super) struct BucketRow {
    /// Column values, as `service_buckets` holds them.
    pub profiles: i64,
    /// See `profiles`.
    pub first_start: i64,
    /// See `profiles`.
    pub last_start: i64,
    /// See `profiles`.
    pub last_end: i64,
    /// See `profiles`.
    pub entries: i64,
    /// See `profiles`.
    pub samples_blob: Vec<u8>,
    /// See `profiles`.
    pub coverage: Vec<u8>,
}

/// The read-modify-write of one bucket: `stored` (the row read in the writing
/// transaction, locked in PostgreSQL) plus `delta`.
pub(super) fn merged_row(stored: Option<&StoredBucket<'_>>, mut delta: Delta) -> Result<BucketRow, StoreError> {
    if let Some(b) = stored {
        let mut old = Delta {
            profiles: b.profiles,
            first_start: b.first_start,
            last_start: b.last_start,
            last_end: b.last_end,
            ..Delta::default()
        };
        decode_entries(b.blob, |k, c, n| {
            old.entries.insert(k, (c, n));
        })?;
        decode_coverage(b.coverage, |h, s, e| old.coverage.add(h, s, e))?;
        old.absorb(&delta);
        delta = old;
    }
    let mut entries: Vec<(u64, (u64, u64))> = delta.entries.into_iter().collect();
    entries.sort_unstable_by_key(|e| e.0);
    Ok(BucketRow {
        profiles: delta.profiles.min(i64::MAX as u64) as i64,
        first_start: delta.first_start,
        last_start: delta.last_start,
        last_end: delta.last_end,
        entries: entries.len() as i64,
        samples_blob: encode_entries(&entries),
        coverage: encode_coverage(&delta.coverage),
    })
}

fn merge_bucket(b: &StoredBucket<'_>, merged: &mut Merged) -> Result<(), StoreError> {
    decode_entries(b.blob, |k, c, n| merged.add_entry(k, c, n))?;
    decode_coverage(b.coverage, |h, s, e| merged.add_window(h, s, e))?;
    merged.add_extent(b.profiles, b.first_start, b.last_end);
    Ok(())
}

/// What the query plan reads from a backend, for one (service, profile type), all in
/// one snapshot.
pub(super) trait BucketReader {
    /// The backend's error (convertible from the plan's).
    type Error: From<StoreError>;
    /// Buckets of resolution `res` starting in `[first, end)`, in order of start.
    fn buckets(
        &mut self,
        res: i64,
        first: i64,
        end: i64,
        visit: &mut dyn FnMut(&StoredBucket<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Self::Error>;
    /// Pending profiles starting in `[lo, hi)`, as `visit(series id, raw piece)` (the
    /// piece's `series` is not set).
    fn pending(
        &mut self,
        lo: i64,
        hi: i64,
        visit: &mut dyn FnMut(i64, &Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Self::Error>;
    /// The per-series path (`query::Rows::scan`, every rollup usable) over `range` of
    /// `series`: `visit(piece)` with the piece's `series` set.
    fn scan(
        &mut self,
        series: &[SeriesRef],
        range: (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Self::Error>;
}

/// What the bucket plan adds what it reads into: a flame graph's `Merged`, or the
/// per-state totals of one timeline point (`Totals`).
pub(super) trait Sink {
    /// Adds one stored bucket.
    fn add_bucket(&mut self, b: &StoredBucket<'_>) -> Result<(), StoreError>;
    /// Adds one raw profile or per-series rollup of a series on `host`.
    fn add_piece(&mut self, p: &Piece<'_>, host: Option<&str>) -> Result<(), StoreError>;
    /// Whether raw pieces must carry their sample blobs (else their totals are enough).
    fn wants_blobs(&self) -> bool;
}

impl Sink for Merged {
    fn add_bucket(&mut self, b: &StoredBucket<'_>) -> Result<(), StoreError> {
        merge_bucket(b, self)
    }

    fn add_piece(&mut self, p: &Piece<'_>, host: Option<&str>) -> Result<(), StoreError> {
        Merged::add_piece(self, p, host)
    }

    fn wants_blobs(&self) -> bool {
        true
    }
}

/// One timeline point being summed: samples and thread time per kept state, and the
/// wall time per host, exactly as the per-series timeline sums them.
struct Totals {
    keep: [bool; 5],
    point: TimelinePoint,
}

impl Totals {
    fn add(&mut self, state: u64, samples: u64, nanos: u64) {
        let s = state as usize;
        if self.keep.get(s).copied().unwrap_or(false) {
            self.point.samples[s] = self.point.samples[s].saturating_add(samples);
            self.point.nanos[s] = self.point.nanos[s].saturating_add(nanos);
        }
    }
}

impl Sink for Totals {
    fn add_bucket(&mut self, b: &StoredBucket<'_>) -> Result<(), StoreError> {
        decode_entries(b.blob, |key, samples, nanos| self.add(key & 7, samples, nanos))?;
        let coverage = &mut self.point.coverage;
        decode_coverage(b.coverage, |host, start, end| coverage.add(host, start, end))
    }

    fn add_piece(&mut self, p: &Piece<'_>, host: Option<&str>) -> Result<(), StoreError> {
        let coverage = &mut self.point.coverage;
        p.windows(|start, end| coverage.add(host, start, end))?;
        for (state, &count) in p.totals.iter().enumerate() {
            self.add(state as u64, count, count.saturating_mul(p.period_ns));
        }
        Ok(())
    }

    fn wants_blobs(&self) -> bool {
        false
    }
}

/// The timeline of `q` (no label filters) in points of `step_ms` from `q.from_ms`: each
/// point planned like a flame graph of its own range (whole buckets, pending profiles,
/// per-series data before the floor or at an edge no bucket fits). Points on whole
/// minutes read no raw profile but the pending ones.
pub(super) fn timeline_planned<R: BucketReader>(
    r: &mut R,
    series: &[SeriesRef],
    floor: i64,
    q: &Query,
    step_ms: i64,
) -> Result<Vec<TimelinePoint>, R::Error> {
    let keep = kept_states(&q.states);
    let mut out = Vec::new();
    for point in empty_points(q, step_ms)? {
        let range = (point.t_ms, point.t_ms.saturating_add(step_ms).min(q.until_ms));
        let mut totals = Totals { keep, point };
        merge_planned(r, series, floor, range, &mut totals)?;
        out.push(totals.point);
    }
    Ok(out)
}

/// Merges `[from, until)` of `series` (every series of the service: no label filter)
/// into `merged` from the service buckets, pending profiles and, before `floor` or at
/// an edge no bucket fits, the per-series path.
pub(super) fn merge_planned<R: BucketReader, S: Sink>(
    r: &mut R,
    series: &[SeriesRef],
    floor: i64,
    (from, until): (i64, i64),
    merged: &mut S,
) -> Result<(), R::Error> {
    if series.is_empty() || from >= until {
        return Ok(());
    }
    let mut raw: Vec<(i64, i64)> = Vec::new();
    let lo = from.max(floor).min(until);
    if from < lo {
        raw.push((from, lo));
    }
    if lo < until {
        let (a, b) = (ceil_to(lo, MINUTE_MS), bucket_of(until, MINUTE_MS));
        if a > b {
            edge(r, bucket_of(lo, MINUTE_MS), (lo, until), merged, &mut raw)?;
        } else {
            if lo < a {
                edge(r, a - MINUTE_MS, (lo, a), merged, &mut raw)?;
            }
            cover(r, a, b, merged)?;
            if b < until {
                edge(r, b, (b, until), merged, &mut raw)?;
            }
        }
        let index: IntMap<i64, usize> = series.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let raw = &raw;
        r.pending(lo, until, &mut |sid, piece| {
            let Some(&s) = index.get(&sid) else { return Ok(()) };
            if raw.iter().any(|&(f, u)| piece.t_ms >= f && piece.t_ms < u) {
                return Ok(());
            }
            merged.add_piece(piece, series[s].host.as_deref())
        })?;
    }
    let blobs = merged.wants_blobs();
    for range in raw {
        r.scan(series, range, blobs, &mut |p| merged.add_piece(&p, series[p.series].host.as_deref()))?;
    }
    Ok(())
}

/// `[lo, hi)` inside the minute `minute`: its bucket if all its profiles start in the
/// range, else the range is read raw.
fn edge<R: BucketReader, S: Sink>(
    r: &mut R,
    minute: i64,
    (lo, hi): (i64, i64),
    merged: &mut S,
    raw: &mut Vec<(i64, i64)>,
) -> Result<(), R::Error> {
    r.buckets(MINUTE_MS, minute, minute + MINUTE_MS, &mut |b| {
        if b.first_start >= lo && b.last_start < hi {
            merged.add_bucket(b)
        } else {
            raw.push((lo, hi));
            Ok(())
        }
    })
}

/// Whole minutes `[a, b)`: the coarsest buckets that fit, finer ones in the gaps. A
/// minute with no bucket has nothing merged (pending profiles are read apart).
fn cover<R: BucketReader, S: Sink>(r: &mut R, a: i64, b: i64, merged: &mut S) -> Result<(), R::Error> {
    let mut gaps = vec![(a, b)];
    for &res in BUCKET_LEVELS.iter().rev() {
        let mut next = Vec::new();
        for (glo, ghi) in gaps {
            let (first, end) = (ceil_to(glo, res), bucket_of(ghi, res));
            if first >= end {
                next.push((glo, ghi));
                continue;
            }
            let mut at = glo;
            r.buckets(res, first, end, &mut |bucket| {
                merged.add_bucket(bucket)?;
                if bucket.bucket_ms > at {
                    next.push((at, bucket.bucket_ms));
                }
                at = bucket.bucket_ms + res;
                Ok(())
            })?;
            if at < ghi {
                next.push((at, ghi));
            }
        }
        gaps = next;
    }
    Ok(())
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
