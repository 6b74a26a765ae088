//! The database schema and its migrations. `meta.schema_version` says which
//! migrations ran; `migrate` applies the missing ones in order, each in its own
//! transaction. A later feature (the wins ledger, ...) adds a table by appending a
//! migration; existing ones are never edited.
//!
//! In: a connection. Out: a database at the current version. Must not: touch data
//! rows. SQL stays portable (PostgreSQL later): plain types, `BIGINT` for 64-bit
//! numbers, `BLOB` (`BYTEA` there), no SQLite-only syntax.

use super::StoreError;
use rusqlite::{Connection, OptionalExtension};

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- Interned frame names; looked up by a 64-bit hash, then verified by name.
    CREATE TABLE frames (
        id   INTEGER PRIMARY KEY,
        hash BIGINT NOT NULL,
        name TEXT NOT NULL
    );
    CREATE INDEX frames_by_hash ON frames (hash);
    -- Interned stacks: frame ids root first, as varints; looked up like frames.
    CREATE TABLE stacks (
        id        INTEGER PRIMARY KEY,
        hash      BIGINT NOT NULL,
        frame_ids BLOB NOT NULL
    );
    CREATE INDEX stacks_by_hash ON stacks (hash);
    -- One row per (service, profile type, label set); labels as canonical JSON.
    CREATE TABLE series (
        id           INTEGER PRIMARY KEY,
        service      TEXT NOT NULL,
        profile_type TEXT NOT NULL,
        labels       TEXT NOT NULL,
        host         TEXT,
        created_ms   BIGINT NOT NULL,
        UNIQUE (service, profile_type, labels)
    );
    -- One row per raw profile. Per-state totals are columns so that timelines and
    -- totals never read the blob.
    CREATE TABLE profiles (
        id            INTEGER PRIMARY KEY,
        series_id     BIGINT NOT NULL,
        start_ms      BIGINT NOT NULL,
        end_ms        BIGINT NOT NULL,
        period_ns     BIGINT NOT NULL,
        s_runnable    BIGINT NOT NULL,
        s_waiting     BIGINT NOT NULL,
        s_timed       BIGINT NOT NULL,
        s_blocked     BIGINT NOT NULL,
        s_io          BIGINT NOT NULL,
        entries       BIGINT NOT NULL,
        samples_blob  BLOB NOT NULL
    );
    CREATE INDEX profiles_by_series_start ON profiles (series_id, start_ms);
    CREATE INDEX profiles_by_start ON profiles (start_ms);
    -- Hourly and daily merges of raw profiles, per series and sampling period.
    CREATE TABLE rollups (
        series_id     BIGINT NOT NULL,
        resolution_ms BIGINT NOT NULL,
        bucket_ms     BIGINT NOT NULL,
        period_ns     BIGINT NOT NULL,
        profiles      BIGINT NOT NULL,
        profile_ms    BIGINT NOT NULL,
        first_ms      BIGINT NOT NULL,
        last_ms       BIGINT NOT NULL,
        s_runnable    BIGINT NOT NULL,
        s_waiting     BIGINT NOT NULL,
        s_timed       BIGINT NOT NULL,
        s_blocked     BIGINT NOT NULL,
        s_io          BIGINT NOT NULL,
        entries       BIGINT NOT NULL,
        samples_blob  BLOB NOT NULL,
        PRIMARY KEY (series_id, resolution_ms, bucket_ms, period_ns)
    );
    CREATE INDEX rollups_by_bucket ON rollups (resolution_ms, bucket_ms);
    -- Buckets whose rollup is missing or stale because raw data arrived; queries do
    -- not use a rollup while its bucket is marked, maintain() rebuilds and unmarks.
    CREATE TABLE dirty_buckets (
        series_id     BIGINT NOT NULL,
        resolution_ms BIGINT NOT NULL,
        bucket_ms     BIGINT NOT NULL,
        PRIMARY KEY (series_id, resolution_ms, bucket_ms)
    );
    CREATE INDEX dirty_by_bucket ON dirty_buckets (resolution_ms, bucket_ms);
    -- Opaque per-service settings (cost inputs), JSON text.
    CREATE TABLE settings (
        service    TEXT PRIMARY KEY,
        json       TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    "#,
    // 2: the ops-wins ledger.
    super::wins::MIGRATION,
    // 3: rollups keep the wall time their profiles covered, as merged [start, end)
    // intervals (`codec::encode_intervals`), so that the cost window is a union per host
    // and not a sum of profile lengths. NULL in rollups built before: see `query::Piece`.
    "ALTER TABLE rollups ADD COLUMN coverage BLOB;",
    // 4: the work counter of profiles (requests per window).
    super::work::MIGRATION,
    // 5: service buckets (store/buckets.rs).
    super::buckets::MIGRATION,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The schema version recorded in the database (0 when empty).
fn current_version(conn: &Connection) -> Result<usize, StoreError> {
    let has_meta: Option<String> = conn
        .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))
        .optional()?;
    if has_meta.is_none() {
        return Ok(0);
    }
    let v: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
    match v {
        None => Ok(0),
        Some(text) => {
            text.parse().map_err(|_| StoreError::Corrupt(format!("meta.schema_version is {text:?}, not a number")))
        }
    }
}

/// Brings the database to `SCHEMA_VERSION`; refuses a database from a newer hotframe.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let mut version = current_version(conn)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Sql(format!(
            "the database has schema version {version} but this hotframe knows only up to {SCHEMA_VERSION}: upgrade hotframe or point --data elsewhere"
        )));
    }
    while version < SCHEMA_VERSION {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version])?;
        version += 1;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [version.to_string()],
        )?;
        tx.commit()?;
        tracing::info!(version, "store schema migrated");
    }
    Ok(version)
}
