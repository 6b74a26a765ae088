//! The work counter of profiles (requests handled in a profile's window, sent by the
//! in-process agent or an SDK as the pprof sample type `requests`) in the SQLite store:
//! one small row per profile that carries one, written in the profile's own transaction,
//! summed over a query's series and range.
//!
//! In: a profile's series, window and count; a `Query`. Out: `WorkTotal`. Must not:
//! read or write samples, or count a profile twice. Rows follow rollup retention: they
//! are what a win over an old range is normalised with once the raw profiles are gone.

use super::query::matching_series;
use super::sqlite::SqliteStore;
use super::{Query, StoreError, WorkTotal};
use rusqlite::{params, Connection, Transaction};

/// The migration that adds the table (appended to `schema::MIGRATIONS`); idempotent, so
/// that a database re-marked as an older schema (a test of main's coverage column does)
/// migrates again.
pub(super) const MIGRATION: &str = r#"
    -- Units of work (requests) a profile's sender counted in its window.
    CREATE TABLE IF NOT EXISTS work (
        series_id BIGINT NOT NULL,
        start_ms  BIGINT NOT NULL,
        end_ms    BIGINT NOT NULL,
        units     BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS work_by_series ON work (series_id, start_ms);
"#;

/// Keeps a profile's work count (inside the profile's write transaction).
pub(super) fn insert(
    tx: &Transaction<'_>,
    series_id: i64,
    start_ms: i64,
    end_ms: i64,
    units: u64,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO work (series_id, start_ms, end_ms, units) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![series_id, start_ms, end_ms, units.min(i64::MAX as u64) as i64])?;
    Ok(())
}

/// Deletes the rows of windows that ended before `cutoff_ms`; returns how many.
pub(super) fn expire(conn: &Connection, cutoff_ms: i64) -> Result<u64, StoreError> {
    Ok(conn.execute("DELETE FROM work WHERE end_ms <= ?1", [cutoff_ms])? as u64)
}

fn total(conn: &Connection, q: &Query) -> Result<WorkTotal, StoreError> {
    let mut out = WorkTotal::default();
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(SUM(units), 0), COUNT(*) FROM work WHERE series_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
    )?;
    for series in matching_series(conn, q)? {
        let (units, profiles): (i64, i64) =
            stmt.query_row(params![series.id, q.from_ms, q.until_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        out.units = out.units.saturating_add(units.max(0) as u64);
        out.profiles = out.profiles.saturating_add(profiles.max(0) as u64);
    }
    Ok(out)
}

impl SqliteStore {
    /// The work counted by the profiles `q` selects (those starting in its range).
    pub(super) fn select_work(&self, q: &Query) -> Result<WorkTotal, StoreError> {
        self.with_reader(|conn| total(conn, q))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ProfileBuilder, ThreadState};
    use crate::store::{ProfileStore, Query, SqliteStore, WorkTotal};

    #[test]
    fn work_is_summed_per_query_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Default::default()).unwrap();
        for (i, (host, work)) in [("a", Some(10)), ("a", Some(20)), ("b", Some(5)), ("b", None)].into_iter().enumerate()
        {
            let start = 1_000_000 + i as i64 * 10_000;
            let mut b = ProfileBuilder::new("svc", start, start + 10_000, 10_000_000).label("host", host);
            b.add(&["main"], ThreadState::Runnable, 3);
            let mut p = b.finish();
            p.work = work;
            store.write(&p).unwrap();
        }
        let q = |labels: &[(&str, &str)], from_ms, until_ms| Query {
            service: "svc".into(),
            profile_type: "cpu".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            from_ms,
            until_ms,
            states: vec![],
        };
        assert_eq!(store.work(&q(&[], 0, i64::MAX)).unwrap(), WorkTotal { units: 35, profiles: 3 });
        assert_eq!(store.work(&q(&[("host", "a")], 0, i64::MAX)).unwrap(), WorkTotal { units: 30, profiles: 2 });
        assert_eq!(store.work(&q(&[], 1_010_000, 1_020_000)).unwrap(), WorkTotal { units: 20, profiles: 1 });
        drop(store);
        let store = SqliteStore::open(dir.path(), Default::default()).unwrap();
        assert_eq!(store.work(&q(&[("host", "b")], 0, i64::MAX)).unwrap(), WorkTotal { units: 5, profiles: 1 });
    }
}
