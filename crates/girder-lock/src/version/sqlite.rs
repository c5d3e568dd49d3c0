//! Versioned values in SQLite: the embedded system of record, shared by every process
//! that opens the same file.

use sqlx::SqlitePool;

use super::{VersionError, VersionStore, Versioned, corrupt, from_db, to_db};
use crate::BackendError;

/// A [`VersionStore`] on the `girder_versioned` table in SQLite.
///
/// Each write is one guarded statement (`… WHERE key = ? AND version = ?`), atomic
/// under SQLite's write lock. After a refused write the current version is read in a
/// second statement, only to fill in [`VersionError::Conflict`].
#[derive(Debug, Clone)]
pub struct SqliteVersionStore {
    pool: SqlitePool,
}

impl SqliteVersionStore {
    /// Opens the store, creating the table if absent.
    ///
    /// # Errors
    /// [`VersionError::Backend`] (with [`BackendError::Sqlite`]) if the database cannot be written.
    pub async fn new(pool: SqlitePool) -> Result<Self, VersionError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS girder_versioned \
             (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .map_err(BackendError::sqlite)?;
        Ok(Self { pool })
    }

    async fn current(&self, key: &str) -> Result<Option<u64>, VersionError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM girder_versioned WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(BackendError::sqlite)?;
        v.map(|v| from_db(key, v)).transpose()
    }
}

impl VersionStore for SqliteVersionStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, VersionError> {
        let row: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT value, version FROM girder_versioned WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(BackendError::sqlite)?;
        row.map(|(value, version)| Ok(Versioned { value, version: from_db(key, version)? }))
            .transpose()
    }

    async fn insert(&self, key: &str, value: &[u8]) -> Result<Versioned, VersionError> {
        let inserted = sqlx::query(
            "INSERT INTO girder_versioned (key, value, version) VALUES (?1, ?2, 1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(BackendError::sqlite)?
        .rows_affected();
        if inserted == 1 {
            Ok(Versioned { value: value.to_vec(), version: 1 })
        } else {
            Err(VersionError::Exists)
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: &[u8],
    ) -> Result<Versioned, VersionError> {
        // fetch_all steps the statement to completion, so the autocommit transaction
        // has committed before we report success.
        let versions: Vec<i64> = sqlx::query_scalar(
            "UPDATE girder_versioned SET value = ?1, version = version + 1 \
             WHERE key = ?2 AND version = ?3 RETURNING version",
        )
        .bind(value)
        .bind(key)
        .bind(to_db(expected_version)?)
        .fetch_all(&self.pool)
        .await
        .map_err(BackendError::sqlite)?;
        match versions.as_slice() {
            [version] => Ok(Versioned { value: value.to_vec(), version: from_db(key, *version)? }),
            [] => Err(VersionError::Conflict {
                expected: expected_version,
                current: self.current(key).await?,
            }),
            _ => Err(corrupt(key, "girder_versioned.key is not unique")),
        }
    }

    async fn delete(&self, key: &str, expected_version: u64) -> Result<(), VersionError> {
        let deleted = sqlx::query("DELETE FROM girder_versioned WHERE key = ?1 AND version = ?2")
            .bind(key)
            .bind(to_db(expected_version)?)
            .execute(&self.pool)
            .await
            .map_err(BackendError::sqlite)?
            .rows_affected();
        if deleted == 1 {
            Ok(())
        } else {
            Err(VersionError::Conflict {
                expected: expected_version,
                current: self.current(key).await?,
            })
        }
    }
}
