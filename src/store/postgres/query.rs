//! Reading from PostgreSQL: the rows of the plan `store::query::Rows` shares with the
//! SQLite store (rollups of the coarsest usable resolution for whole buckets, raw
//! profiles for the rest, dirty buckets never used), on a read-only repeatable-read
//! transaction, with rows streamed rather than collected.
//!
//! In: a transaction and a `Query`. Out: merged samples with frame names, timelines,
//! services, work totals. Must not: write.

use super::Failure;
use crate::model::{Profile, ProfileBuilder};
use crate::store::codec::{self, IntMap};
use crate::store::query::{parse_labels, rebuild_profile, Piece, Rows, SeriesVisit, ServiceListing, SERIES_EXTENTS};
use crate::store::sqlite::ReadCache;
use crate::store::{Query, ServiceInfo, StoreError, WorkTotal};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Row, Transaction};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// The PostgreSQL store's rows: a read transaction.
pub(super) struct PgRows<'a, 't>(pub &'a mut Transaction<'t>);

impl Rows for PgRows<'_, '_> {
    type Error = Failure;

    fn series(&mut self, service: &str, profile_type: &str, visit: &mut SeriesVisit<'_>) -> Result<(), Failure> {
        each_row(
            self.0,
            "SELECT id, labels, host FROM series WHERE service = $1 AND profile_type = $2 ORDER BY id",
            &[&service, &profile_type],
            |row| Ok(visit(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)?),
        )
    }

    fn dirty(&mut self, ids: &[i64], lo: i64, hi: i64, visit: &mut dyn FnMut(i64, i64, i64)) -> Result<(), Failure> {
        each_row(
            self.0,
            "SELECT series_id, resolution_ms, bucket_ms FROM dirty_buckets
             WHERE series_id = ANY($1) AND bucket_ms >= $2 AND bucket_ms < $3",
            &[&ids, &lo, &hi],
            |row| {
                visit(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                Ok(())
            },
        )
    }

    fn rollups(
        &mut self,
        res: i64,
        ids: &[i64],
        (lo, hi): (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(i64, Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Failure> {
        let sql = format!(
            "SELECT series_id, bucket_ms, {ROLLUP_COLUMNS}{blob} FROM rollups
             WHERE resolution_ms = $1 AND series_id = ANY($2) AND bucket_ms >= $3 AND bucket_ms < $4
             ORDER BY series_id, bucket_ms, period_ns",
            blob = if with_blobs { ", samples_blob" } else { "" }
        );
        each_row(self.0, &sql, &[&res, &ids, &lo, &hi], |row| Ok(visit(row.try_get(0)?, piece(row, 0, with_blobs)?)?))
    }

    fn raw(
        &mut self,
        id: i64,
        (lo, hi): (i64, i64),
        with_blobs: bool,
        visit: &mut dyn FnMut(Piece<'_>) -> Result<(), StoreError>,
    ) -> Result<(), Failure> {
        let sql = format!(
            "SELECT series_id, start_ms, {RAW_COLUMNS}{blob} FROM profiles
             WHERE series_id = $1 AND start_ms >= $2 AND start_ms < $3 ORDER BY start_ms",
            blob = if with_blobs { ", samples_blob" } else { "" }
        );
        each_row(self.0, &sql, &[&id, &lo, &hi], |row| Ok(visit(piece(row, 0, with_blobs)?)?))
    }

    fn stacks(&mut self, ids: &[i64], visit: &mut dyn FnMut(i64, &[u8])) -> Result<(), Failure> {
        each_row(self.0, "SELECT id, frame_ids FROM stacks WHERE id = ANY($1)", &[&ids], |row| {
            visit(row.try_get(0)?, row.try_get(1)?);
            Ok(())
        })
    }

    fn frames(&mut self, ids: &[i64], visit: &mut dyn FnMut(i64, Arc<str>)) -> Result<(), Failure> {
        each_row(self.0, "SELECT id, name FROM frames WHERE id = ANY($1)", &[&ids], |row| {
            let name = String::from_utf8_lossy(row.try_get::<_, &[u8]>(1)?);
            visit(row.try_get(0)?, Arc::from(name.as_ref()));
            Ok(())
        })
    }
}

/// Every service with its profile types, label values and time extent.
pub(super) fn services(tx: &mut Transaction<'_>) -> Result<Vec<ServiceInfo>, Failure> {
    let mut listing = ServiceListing { extent: IntMap::default(), by_name: BTreeMap::new() };
    for sql in
        [SERIES_EXTENTS, "SELECT series_id, MIN(first_ms), MAX(last_ms), 0::int8 FROM rollups GROUP BY series_id"]
    {
        each_row(tx, sql, &[], |row| {
            listing.extent(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            Ok(())
        })?;
    }
    for row in tx.query("SELECT id, service, profile_type, labels FROM series ORDER BY service, id", &[])? {
        listing.series(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)?;
    }
    Ok(listing.finish())
}

/// The work counted by the profiles `q` selects.
pub(super) fn work(tx: &mut Transaction<'_>, q: &Query) -> Result<WorkTotal, Failure> {
    let ids: Vec<i64> = PgRows(tx).matching_series(q)?.iter().map(|s| s.id).collect();
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
    let (frame_lists, names) = PgRows(tx).resolve_stacks(cache, &stack_ids)?;
    let mut b = ProfileBuilder::new(&service, start_ms, end_ms, period_ns.max(1) as u64).profile_type(&profile_type);
    *b.labels_mut() = parse_labels(&labels)?;
    Ok(Some(rebuild_profile(b, &entries, &frame_lists, &names)?))
}
