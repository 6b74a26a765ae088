//! The PostgreSQL schema and its migrations: the tables of the SQLite schema (see
//! `store::schema`) in PostgreSQL types, with raw profiles partitioned by day so that
//! retention drops whole partitions. `meta.schema_version` says which migrations ran.
//!
//! In: a client. Out: a database at the current version. Must not: touch data rows.
//! Replicas starting together are safe: the whole migration runs in one transaction
//! under a transaction-level advisory lock, and the version is read under that lock,
//! so the second replica waits and then finds nothing left to do.

use super::{Failure, LOCK_MIGRATE, LOCK_NAMESPACE};
use crate::store::StoreError;
use postgres::Client;

/// Migration `i` brings the schema from version `i` to `i + 1`. Existing ones are never
/// edited; a later feature appends one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- Interned frame names, unique by two independent 64-bit hashes of the name
    -- (bytes: a name may hold what TEXT refuses); the name is checked on lookup.
    CREATE TABLE frames (
        id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hash BIGINT NOT NULL,
        chk  BIGINT NOT NULL,
        name BYTEA NOT NULL,
        UNIQUE (hash, chk)
    );
    -- Interned stacks: frame ids root first, as varints (`codec::encode_frame_ids`).
    CREATE TABLE stacks (
        id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hash      BIGINT NOT NULL,
        chk       BIGINT NOT NULL,
        frame_ids BYTEA NOT NULL,
        UNIQUE (hash, chk)
    );
    CREATE TABLE series (
        id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        service      TEXT NOT NULL,
        profile_type TEXT NOT NULL,
        labels       TEXT NOT NULL,
        host         TEXT,
        created_ms   BIGINT NOT NULL,
        UNIQUE (service, profile_type, labels)
    );
    -- Raw profiles, one partition per UTC day of start_ms (`profiles_d<day number>`),
    -- created ahead by maintain and on demand by a write; retention detaches and drops
    -- whole partitions. The id comes from a sequence: PostgreSQL 15 has no identity
    -- columns on partitioned tables.
    CREATE SEQUENCE profiles_id_seq AS BIGINT;
    CREATE TABLE profiles (
        id            BIGINT NOT NULL DEFAULT nextval('profiles_id_seq'),
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
        samples_blob  BYTEA NOT NULL
    ) PARTITION BY RANGE (start_ms);
    CREATE INDEX profiles_by_series_start ON profiles (series_id, start_ms);
    CREATE INDEX profiles_by_id ON profiles (id);
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
        samples_blob  BYTEA NOT NULL,
        coverage      BYTEA,
        PRIMARY KEY (series_id, resolution_ms, bucket_ms, period_ns)
    );
    CREATE INDEX rollups_by_bucket ON rollups (resolution_ms, bucket_ms);
    CREATE TABLE dirty_buckets (
        series_id     BIGINT NOT NULL,
        resolution_ms BIGINT NOT NULL,
        bucket_ms     BIGINT NOT NULL,
        PRIMARY KEY (series_id, resolution_ms, bucket_ms)
    );
    CREATE INDEX dirty_by_bucket ON dirty_buckets (resolution_ms, bucket_ms);
    CREATE TABLE settings (
        service    TEXT PRIMARY KEY,
        json       TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    -- Ops wins; a send is claimed by one replica at a time (claimed_by until claimed_until).
    CREATE TABLE wins (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        json          TEXT NOT NULL,
        created_ms    BIGINT NOT NULL,
        updated_ms    BIGINT NOT NULL,
        claimed_by    TEXT,
        claimed_until BIGINT
    );
    CREATE TABLE work (
        series_id BIGINT NOT NULL,
        start_ms  BIGINT NOT NULL,
        end_ms    BIGINT NOT NULL,
        units     BIGINT NOT NULL
    );
    CREATE INDEX work_by_series ON work (series_id, start_ms);
    -- Profile and sample counts, spread over shards so that concurrent writers rarely
    -- wait for one another's row; stats() sums them.
    CREATE TABLE counts (
        shard    INT PRIMARY KEY,
        profiles BIGINT NOT NULL,
        samples  BIGINT NOT NULL
    );
    "#,
    // 2: service buckets (store/buckets, postgres/buckets.rs). Profiles already stored
    // are queued, as in SQLite's migration 5.
    concat!(
        crate::store::buckets::bucket_tables!("BYTEA", "BIGINT"),
        "INSERT INTO bucket_pending (profile_id, series_id, start_ms) SELECT id, series_id, start_ms FROM profiles
            ON CONFLICT (profile_id) DO NOTHING;
        INSERT INTO meta (key, value) SELECT 'bucket_floor_ms', COALESCE(
            (SELECT MIN(start_ms) FROM profiles),
            (SELECT MAX(last_ms) FROM rollups),
            -9223372036854775807 - 1)::text
            ON CONFLICT (key) DO NOTHING;"
    ),
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database to `SCHEMA_VERSION` under the migration lock; refuses a database
/// from a newer hotframe.
pub(super) fn migrate(client: &mut Client) -> Result<usize, Failure> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_NAMESPACE, &LOCK_MIGRATE])?;
    let has_meta: bool = tx.query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?.get(0);
    let mut version = 0usize;
    if has_meta {
        if let Some(row) = tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])? {
            let text: String = row.get(0);
            version = text
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("meta.schema_version is {text:?}, not a number")))?;
        }
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Sql(format!(
            "the database has schema version {version} but this hotframe knows only up to {SCHEMA_VERSION}: upgrade hotframe or point --store elsewhere"
        ))
        .into());
    }
    let from = version;
    while version < SCHEMA_VERSION {
        tx.batch_execute(MIGRATIONS[version])?;
        version += 1;
    }
    if version != from {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&version.to_string()],
        )?;
        tracing::info!(from, version, "store schema migrated");
    }
    tx.commit()?;
    Ok(version)
}
