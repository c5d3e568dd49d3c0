//! What adding a shard needs to know about the application's rows: [`MovableTable`]
//! lists the shard keys a database holds, copies the rows of some keys from one
//! database to another, and deletes them. [`KvTable`] implements it for a key-value
//! table (and serves as the worked example for other tables).

use std::future::Future;

use girder_sql::{Db, on_db};

use super::Schema;

/// The rows of one or more tables that share a shard key, as the online shard addition
/// ([`super::ShardedDb::add_shard`]) moves them.
///
/// A *shard key* is the bytes the router places ([`crate::hash::ShardMap::shard_of`]):
/// a user id's bytes, a text key's UTF-8. A key may own many rows (every feed entry of
/// a user); the three operations work on all of a key's rows. Tables sharded by the
/// same key are moved together by one implementation that covers all of them.
///
/// Each operation is called with a bounded batch (at most the addition's
/// `batch_keys`), so a statement with one placeholder per key stays small.
pub trait MovableTable: Send + Sync {
    /// Up to `limit` distinct shard keys `db` holds, strictly after `after` (from the
    /// start when `None`), in an order of the table's choosing that does not change
    /// (the primary key's, usually). `after` is always a key this method returned.
    ///
    /// # Errors
    /// The database failed.
    fn list_keys(
        &self,
        db: &Db,
        after: Option<&[u8]>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, sqlx::Error>> + Send;

    /// Makes `to` hold, for each of `keys`, exactly the rows `from` holds: `to`'s rows
    /// of those keys are replaced (removed where `from` has none), in one transaction
    /// on `to`. Returns the number of rows written to `to`.
    ///
    /// Replacing, not inserting where absent, is what the protocol needs: the copier
    /// calls this while it holds the keys' locks, so `from`'s rows are the latest, and
    /// a row `to` holds may be one an earlier dual write made from a different start.
    ///
    /// # Errors
    /// Either database failed; `to` is then unchanged.
    fn copy_rows(
        &self,
        from: &Db,
        to: &Db,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Deletes every row of `keys` from `db`; returns how many rows went.
    ///
    /// # Errors
    /// The database failed.
    fn delete_rows(
        &self,
        db: &Db,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// A table name [`KvTable`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table name {0:?} must be 1-63 characters of a-z, 0-9 and _, starting with a letter")]
pub struct TableNameError(pub String);

/// A key-value table, `(k TEXT PRIMARY KEY, v TEXT NOT NULL)`, sharded by `k`'s UTF-8
/// bytes. Keys and values compare byte by byte on both engines (`COLLATE "C"` on
/// PostgreSQL), so SQL's `ORDER BY` agrees with Rust's `String` order and pages from
/// several shards merge correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvTable {
    name: String,
}

/// `$1, $2, …, $n`: one placeholder per bound value (both engines accept `$n`).
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `select` continued into a keyset page by `k`: `WHERE k > $1` only when there is a
/// cursor (an `OR $1 IS NULL` would keep PostgreSQL's generic plans off the index),
/// and the limit as SQL's `BIGINT`.
fn after_clause(select: &str, after: Option<&str>, limit: usize) -> (String, i64) {
    let sql = match after {
        Some(_) => format!("{select} WHERE k > $1 ORDER BY k LIMIT $2"),
        None => format!("{select} ORDER BY k LIMIT $1"),
    };
    (sql, i64::try_from(limit).unwrap_or(i64::MAX))
}

/// A key from [`KvTable::list_keys`] back into text.
fn key_text(key: &[u8]) -> Result<&str, sqlx::Error> {
    std::str::from_utf8(key).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl KvTable {
    /// The table `name`.
    ///
    /// # Errors
    /// The name is not a plain lower-case SQL identifier (it is spliced into statements).
    pub fn new(name: &str) -> Result<Self, TableNameError> {
        let plain = (1..=63).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if plain {
            Ok(Self { name: name.to_owned() })
        } else {
            Err(TableNameError(name.to_owned()))
        }
    }

    /// The table's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The statements that create the table, for each engine.
    #[must_use]
    pub fn schema(&self) -> Schema {
        let t = &self.name;
        Schema {
            sqlite: vec![format!(
                "CREATE TABLE IF NOT EXISTS {t} (k TEXT PRIMARY KEY, v TEXT NOT NULL)"
            )],
            postgres: vec![format!(
                "CREATE TABLE IF NOT EXISTS {t} \
                 (k TEXT COLLATE \"C\" PRIMARY KEY, v TEXT COLLATE \"C\" NOT NULL)"
            )],
        }
    }

    /// The value of `key` in `db`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn get(&self, db: &Db, key: &str) -> Result<Option<String>, sqlx::Error> {
        let sql = format!("SELECT v FROM {} WHERE k = $1", self.name);
        Ok(on_db!(db, |pool| {
            sqlx::query_scalar::<_, String>(&sql).bind(key).fetch_optional(pool).await?
        }))
    }

    /// Sets `key` to `value` in `db`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn put(&self, db: &Db, key: &str, value: &str) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            self.name
        );
        on_db!(db, |pool| sqlx::query(&sql).bind(key).bind(value).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Deletes `key` from `db`; whether it was there.
    ///
    /// # Errors
    /// The database failed.
    pub async fn delete(&self, db: &Db, key: &str) -> Result<bool, sqlx::Error> {
        let sql = format!("DELETE FROM {} WHERE k = $1", self.name);
        let done =
            on_db!(db, |pool| sqlx::query(&sql).bind(key).execute(pool).await?.rows_affected());
        Ok(done > 0)
    }

    /// `db`'s first `limit` entries with a key after `after`, in key order: one shard's
    /// side of a keyset page.
    ///
    /// # Errors
    /// The database failed.
    pub async fn page(
        &self,
        db: &Db,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let (sql, limit) = after_clause(&format!("SELECT k, v FROM {}", self.name), after, limit);
        Ok(on_db!(db, |pool| {
            let query = sqlx::query_as::<_, (String, String)>(&sql);
            let query = match after {
                Some(after) => query.bind(after),
                None => query,
            };
            query.bind(limit).fetch_all(pool).await?
        }))
    }
}

impl MovableTable for KvTable {
    async fn list_keys(
        &self,
        db: &Db,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        let after = after.map(key_text).transpose()?;
        let (sql, limit) = after_clause(&format!("SELECT k FROM {}", self.name), after, limit);
        let keys: Vec<String> = on_db!(db, |pool| {
            let query = sqlx::query_scalar(&sql);
            let query = match after {
                Some(after) => query.bind(after),
                None => query,
            };
            query.bind(limit).fetch_all(pool).await?
        });
        Ok(keys.into_iter().map(String::into_bytes).collect())
    }

    async fn copy_rows(&self, from: &Db, to: &Db, keys: &[Vec<u8>]) -> Result<u64, sqlx::Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let keys: Vec<&str> = keys.iter().map(|k| key_text(k)).collect::<Result<_, _>>()?;
        let t = &self.name;
        let select = format!("SELECT k, v FROM {t} WHERE k IN ({})", placeholders(1, keys.len()));
        let rows: Vec<(String, String)> = on_db!(from, |pool| {
            let mut query = sqlx::query_as(&select);
            for key in &keys {
                query = query.bind(*key);
            }
            query.fetch_all(pool).await?
        });
        let delete = format!("DELETE FROM {t} WHERE k IN ({})", placeholders(1, keys.len()));
        let insert = format!(
            "INSERT INTO {t} (k, v) VALUES {}",
            (0..rows.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect::<Vec<_>>()
                .join(", ")
        );
        on_db!(to, |pool| {
            let mut tx = pool.begin().await?;
            let mut query = sqlx::query(&delete);
            for key in &keys {
                query = query.bind(*key);
            }
            query.execute(&mut *tx).await?;
            if !rows.is_empty() {
                let mut query = sqlx::query(&insert);
                for (k, v) in &rows {
                    query = query.bind(k).bind(v);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(rows.len() as u64)
    }

    async fn delete_rows(&self, db: &Db, keys: &[Vec<u8>]) -> Result<u64, sqlx::Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let keys: Vec<&str> = keys.iter().map(|k| key_text(k)).collect::<Result<_, _>>()?;
        let sql = format!("DELETE FROM {} WHERE k IN ({})", self.name, placeholders(1, keys.len()));
        Ok(on_db!(db, |pool| {
            let mut query = sqlx::query(&sql);
            for key in &keys {
                query = query.bind(*key);
            }
            query.execute(pool).await?.rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        for good in ["kv", "feed_entries", "t2"] {
            assert_eq!(KvTable::new(good).map(|t| t.name().to_owned()), Ok(good.to_owned()));
        }
        for bad in ["", "2t", "Kv", "kv; DROP TABLE x", "k-v", &"a".repeat(64)] {
            assert_eq!(KvTable::new(bad), Err(TableNameError(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn placeholders_count_from_the_given_number() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(4, 1), "$4");
        assert_eq!(placeholders(1, 0), "");
    }
}
