//! The ops-wins ledger in the SQLite store: one row per win, its JSON kept opaque
//! (`wins::ledger` owns its shape; the store depends on no wins type), written through
//! the store's one writer connection and read through the reader pool like every other
//! query.
//!
//! In: win JSON text and ids. Out: ids and JSON text. Must not: interpret the JSON
//! beyond checking that it parses, or touch profile tables.

use super::sqlite::{lock, SqliteStore};
use super::StoreError;
use rusqlite::{params, OptionalExtension};

/// The migration that adds the ledger (appended to `schema::MIGRATIONS`).
pub(super) const MIGRATION: &str = r#"
    -- Ops wins: a measured saving with its report and send state, JSON text.
    CREATE TABLE wins (
        id         INTEGER PRIMARY KEY,
        json       TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
"#;

fn check_json(json: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde_json::Value>(json)
        .map(|_| ())
        .map_err(|e| StoreError::Invalid(format!("a win must be JSON: {e}")))
}

impl SqliteStore {
    /// Stores a new win and returns its id (durable when this returns).
    pub(super) fn insert_win(&self, json: &str) -> Result<i64, StoreError> {
        check_json(json)?;
        let now = crate::model::time::now_ms();
        let w = lock(self.writer());
        w.conn.execute("INSERT INTO wins (json, created_ms, updated_ms) VALUES (?1, ?2, ?2)", params![json, now])?;
        Ok(w.conn.last_insert_rowid())
    }

    /// The JSON of win `id`, if any.
    pub(super) fn select_win(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row("SELECT json FROM wins WHERE id = ?1", [id], |r| r.get(0)).optional()?)
        })
    }

    /// Every win as (id, JSON), oldest first.
    pub(super) fn select_wins(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare("SELECT id, json FROM wins ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<(i64, String)>, _>>()?)
        })
    }

    /// Replaces the JSON of win `id`; false when there is no such win.
    pub(super) fn replace_win(&self, id: i64, json: &str) -> Result<bool, StoreError> {
        check_json(json)?;
        let w = lock(self.writer());
        let changed = w.conn.execute(
            "UPDATE wins SET json = ?1, updated_ms = ?2 WHERE id = ?3",
            params![json, crate::model::time::now_ms(), id],
        )?;
        Ok(changed == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{ProfileStore, SqliteStore, StoreError};

    #[test]
    fn wins_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Default::default()).unwrap();
        assert!(store.wins().unwrap().is_empty());
        let a = store.create_win(r#"{"title":"a"}"#).unwrap();
        let b = store.create_win(r#"{"title":"b"}"#).unwrap();
        assert_ne!(a, b);
        assert_eq!(store.win(a).unwrap().as_deref(), Some(r#"{"title":"a"}"#));
        assert_eq!(store.win(b + 100).unwrap(), None);
        assert!(store.update_win(a, r#"{"title":"a2"}"#).unwrap());
        assert!(!store.update_win(b + 100, "{}").unwrap());
        assert!(matches!(store.create_win("not json"), Err(StoreError::Invalid(_))));
        drop(store);
        let store = SqliteStore::open(dir.path(), Default::default()).unwrap();
        let all = store.wins().unwrap();
        assert_eq!(all, vec![(a, r#"{"title":"a2"}"#.to_string()), (b, r#"{"title":"b"}"#.to_string())]);
    }
}
