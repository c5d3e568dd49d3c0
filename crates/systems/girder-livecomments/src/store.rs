//! Live Comments' SQL.

use girder_sql::{Db, on_db};

/// A stored comment: a row of `lc_comments`, read by SQL or from a captured row
/// image (the same columns as JSON).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct Comment {
    /// Its id; ids grow with time.
    pub id: i64,
    /// The video.
    pub video: String,
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub body: String,
    /// When it was posted.
    pub created_ms: i64,
}

/// The comments table.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// On `db` (migrated).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stores a comment.
    ///
    /// # Errors
    /// The database failed.
    pub async fn insert(
        &self,
        video: &str,
        author: &str,
        body: &str,
        now: i64,
    ) -> Result<Comment, sqlx::Error> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "INSERT INTO lc_comments (video, author, body, created_ms) VALUES ($1, $2, $3, $4) \
                 RETURNING id, video, author, body, created_ms",
            )
            .bind(video)
            .bind(author)
            .bind(body)
            .bind(now)
            .fetch_one(pool)
            .await?
        }))
    }

    /// `video`'s comments with ids below `before`, newest first, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn page(
        &self,
        video: &str,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Comment>, sqlx::Error> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, video, author, body, created_ms FROM lc_comments \
                 WHERE video = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(video)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }
}
