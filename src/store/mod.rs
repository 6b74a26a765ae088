//! The profile store: durable writes, queries that merge profiles over a time range,
//! rollups and retention. One interface (`ProfileStore`) with two backends:
//! `sqlite::SqliteStore`, the embedded default, and `postgres::PostgresStore`, shared by
//! several server replicas.
//!
//! In: validated `model::Profile`s and queries. Out: merged stacks (`Aggregate`),
//! timelines, service lists. Must not: speak HTTP or know prices (cost settings are
//! kept as opaque JSON).

use crate::model::{Coverage, Profile, StateCounts, ThreadState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod buckets;
mod cache;
mod codec;
mod maintain;
pub mod postgres;
mod query;
mod schema;
pub mod sqlite;
mod wins;
mod work;

// What `aggregate` returns is a model type (pure, shared with `cost`, `report` and the
// flame-graph builder); the store re-exports it for its callers.
use crate::model::Aggregate;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Store failures. User-facing variants say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("service {service:?} already has {max} series (distinct label sets); drop a high-cardinality label or raise limits.max_series_per_service")]
    TooManySeries { service: String, max: usize },
    #[error("unknown service {0:?}")]
    UnknownService(String),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the disk holding the store is full ({0}); free space or move --data: reads go on, writes resume by themselves"
    )]
    DiskFull(String),
    #[error("database: {0}")]
    Sql(String),
    #[error("refused by the store: {0}")]
    Invalid(String),
    #[error("the database is unreachable ({0}); retry shortly: the server reconnects by itself")]
    Unavailable(String),
}

/// Which series a query reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// Service name.
    pub service: String,
    /// Profile type; `cpu` unless asked.
    pub profile_type: String,
    /// Label equality filters (`host=a`, `version=1.4`).
    pub labels: BTreeMap<String, String>,
    /// Range start, Unix ms (inclusive): profiles whose start falls in the range count.
    pub from_ms: i64,
    /// Range end, Unix ms (exclusive).
    pub until_ms: i64,
    /// States to keep; empty keeps all.
    pub states: Vec<ThreadState>,
}

impl Query {
    /// The same query over whole buckets of `bucket_ms`: `from_ms` rounded down and
    /// `until_ms` rounded up to multiples of it (UTC). With 10 minutes, an hour or a
    /// day, `aggregate` then reads only rollups for closed buckets, never raw edges: a
    /// long range (a week) costs the same whatever its exact ends.
    pub fn widened_to(&self, bucket_ms: i64) -> Query {
        if bucket_ms <= 0 {
            return self.clone();
        }
        let down = |t: i64| t.div_euclid(bucket_ms) * bucket_ms;
        let up = |t: i64| if t.rem_euclid(bucket_ms) == 0 { t } else { down(t).saturating_add(bucket_ms) };
        Query { from_ms: down(self.from_ms), until_ms: up(self.until_ms), ..self.clone() }
    }
}

/// One bucket of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Bucket start, Unix ms.
    pub t_ms: i64,
    /// Samples per state in the bucket (index = `ThreadState::index()`).
    pub samples: StateCounts,
    /// Thread nanoseconds per state in the bucket.
    pub nanos: StateCounts,
    /// Wall time the bucket's profiles cover, per host (the union of their windows).
    pub coverage: Coverage,
}

/// A service as listed by `services()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Profile types stored (`cpu`, ...).
    pub profile_types: Vec<String>,
    /// Label names with their distinct values.
    pub labels: BTreeMap<String, Vec<String>>,
    /// First profile start, Unix ms.
    pub first_ms: i64,
    /// Last profile end, Unix ms.
    pub last_ms: i64,
    /// Raw profiles stored.
    pub profiles: u64,
}

/// Receipt of a durable write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReceipt {
    /// Id of the stored profile.
    pub profile_id: i64,
    /// Samples stored.
    pub samples: u64,
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    /// Rollup rows written.
    pub rollups_written: u64,
    /// Raw profiles deleted by retention.
    pub raw_deleted: u64,
    /// Rollup rows deleted by retention.
    pub rollups_deleted: u64,
}

/// Size and content counters, for /metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Bytes of the database files (main + WAL).
    pub bytes_on_disk: u64,
    /// Raw profiles kept.
    pub profiles: u64,
    /// Samples in raw profiles kept.
    pub samples: u64,
    /// Series.
    pub series: u64,
    /// Interned stacks.
    pub stacks: u64,
    /// Interned frames.
    pub frames: u64,
}

/// Store settings. Defaults: 30 days raw, 400 days of rollups, 1000 series per service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Days raw profiles are kept. Default 30.
    pub retention_raw_days: u32,
    /// Days rollups (10 min, 1 h, 6 h, 1 day) are kept. Default 400.
    pub retention_rollup_days: u32,
    /// Distinct label sets per service. Default 1000.
    pub max_series_per_service: usize,
    /// Stack-interning cache entries kept in memory. Default 1,000,000. Each of the
    /// store's five caches (writer: frames, stacks, stacks by names; readers: stack
    /// frame lists, frame names) holds at most this many, so memory stays under
    /// roughly 300 bytes x this number whatever the stored volume.
    pub stack_cache_entries: usize,
    /// When `write` returns: `os` (default; survives a crash of the process, a power
    /// loss may drop the last commits) or `disk` (fsync on every commit; survives
    /// power loss, about 2-3 ms more per write).
    pub durability: Durability,
    /// Reader connections kept open for queries. Default 4.
    pub reader_connections: usize,
    /// `postgres://user@host/db`: keep profiles in that shared PostgreSQL database (several
    /// servers may use one) instead of SQLite in the data directory. Default none.
    pub url: Option<String>,
    /// Whether queries without label filters read the service buckets (every series
    /// of a service merged per minute, ..., day; see `compact`). Default true; false
    /// answers from per-series data only (the same result, slower with many series).
    pub service_buckets: bool,
}

/// How durable a committed write is. See `StoreConfig::durability`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Committed to the operating system (SQLite WAL, `synchronous=NORMAL`).
    #[default]
    Os,
    /// Committed to the disk (SQLite WAL, `synchronous=FULL`).
    Disk,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_raw_days: 30,
            retention_rollup_days: 400,
            max_series_per_service: 1000,
            stack_cache_entries: 1_000_000,
            durability: Durability::Os,
            reader_connections: 4,
            url: None,
            service_buckets: true,
        }
    }
}

/// The store interface the server uses. Every method is blocking; call it from
/// `spawn_blocking`. `write` returns only after the profile is durable (committed).
pub trait ProfileStore: Send + Sync + 'static {
    /// Stores one validated profile durably.
    fn write(&self, profile: &Profile) -> Result<WriteReceipt, StoreError>;
    /// Lists services with their labels and time extent.
    fn services(&self) -> Result<Vec<ServiceInfo>, StoreError>;
    /// Merges the profiles matching `query` (uses rollups for whole days, hours and
    /// 10-minute buckets; the edges, under 10 minutes each, are read raw). The result
    /// is the same with or without rollups.
    fn aggregate(&self, query: &Query) -> Result<Aggregate, StoreError>;
    /// Per-state totals in buckets of `step_ms` over the query range (point `i` holds
    /// the profiles starting in `[from + i*step, from + (i+1)*step)`). Fast when
    /// `from_ms` and `step_ms` are multiples of 10 minutes (or an hour, a day): a rollup
    /// is used only when it falls inside one point, else its raw rows are read.
    fn timeline(&self, query: &Query, step_ms: i64) -> Result<Vec<TimelinePoint>, StoreError>;
    /// A service's settings JSON, if set.
    fn settings(&self, service: &str) -> Result<Option<String>, StoreError>;
    /// Replaces a service's settings JSON.
    fn put_settings(&self, service: &str, json: &str) -> Result<(), StoreError>;
    /// Builds due rollups and applies retention as of `now_ms`.
    fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StoreError>;
    /// Size and content counters.
    fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Stores a new ops win (opaque JSON, owned by the server) durably; returns its id.
    fn create_win(&self, json: &str) -> Result<i64, StoreError>;
    /// The JSON of win `id`, if it exists.
    fn win(&self, id: i64) -> Result<Option<String>, StoreError>;
    /// Every win as (id, JSON), oldest first.
    fn wins(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// Replaces the JSON of win `id` durably; false when there is no such win.
    fn update_win(&self, id: i64, json: &str) -> Result<bool, StoreError>;
    /// The work counter (`Profile::work`) summed over the profiles `query` selects.
    fn work(&self, query: &Query) -> Result<WorkTotal, StoreError>;
    /// Takes the send of win `id` for `owner` until `now_ms + lease_ms`: true when the
    /// caller holds it now (free, expired, or its own already), false when another
    /// holder's lease runs. Stores shared by several servers decide atomically; one
    /// process (SQLite) always holds it (its outbox runs one task per win).
    fn claim_win_send(&self, id: i64, owner: &str, now_ms: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let _ = (id, owner, now_ms, lease_ms);
        Ok(true)
    }
    /// Gives back a send taken by `claim_win_send` (nothing if `owner` does not hold it).
    fn release_win_send(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        let _ = (id, owner);
        Ok(())
    }
    /// Merges the profiles written since the last call into the service buckets (one
    /// tree per service and minute, 10 minutes, hour, 6 hours, day), so that queries
    /// read no raw profile of a closed bucket; returns the profiles merged. Called every
    /// few seconds by the server. A backend without buckets merges nothing.
    fn compact(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Units of work counted by the profiles of a query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkTotal {
    /// Units of work (requests) summed.
    pub units: u64,
    /// Profiles that carried a counter (compare with `Aggregate::profiles`).
    pub profiles: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_rounds_outwards() {
        let q = Query { from_ms: 3_700_000, until_ms: 7_200_000, ..Query::default() };
        let w = q.widened_to(3_600_000);
        assert_eq!((w.from_ms, w.until_ms), (3_600_000, 7_200_000));
        let w = Query { until_ms: 7_200_001, ..q.clone() }.widened_to(3_600_000);
        assert_eq!(w.until_ms, 10_800_000);
        assert_eq!(Query { from_ms: -1, ..q.clone() }.widened_to(10).from_ms, -10);
        assert_eq!(q.widened_to(0), q);
    }
}
