//! The social graph and the posts, on the instance's database: users with their
//! follower counts, follows, and posts with their fan-out mode, outbox state and
//! tombstone. The SQL text is shared by SQLite and PostgreSQL (`$N` placeholders).

use girder_sql::{Db, on_db};
use sqlx::Row;

/// Failures of the graph store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The database failed or is unreachable; the source says how.
    #[error("graph database")]
    Database(#[from] sqlx::Error),
}

/// How a post reaches its author's followers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fanout {
    /// Written into each follower's feed by the fan-out workers.
    Push,
    /// Left with its author and merged into followers' feeds when they read.
    Pull,
}

impl Fanout {
    /// The stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "pull" { Self::Pull } else { Self::Push }
    }
}

/// A stored post.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Post {
    /// Its id: increasing with creation, the feed's order.
    pub id: i64,
    /// Who wrote it.
    pub author: String,
    /// Its text.
    pub body: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// How it reaches followers.
    pub fanout: Fanout,
    /// When it was deleted, if it was (a tombstone).
    pub deleted_ms: Option<i64>,
}

/// A user's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id (the identity's caller id).
    pub id: String,
    /// How many follow them.
    pub followers: i64,
    /// How many they follow.
    pub following: i64,
}

/// What a follow or unfollow changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowChange {
    /// The edge was added (or removed).
    Changed,
    /// It already was so.
    Unchanged,
    /// The user to follow does not exist.
    UnknownUser,
}

const POST_COLUMNS: &str = "id, author, body, created_ms, fanout, deleted_ms";

/// Followees one pull query visits at most (more are visited in further queries).
const PULL_AUTHORS_PER_QUERY: usize = 64;

fn post_from_row<R: Row>(row: &R) -> Result<Post, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let fanout: String = row.try_get("fanout")?;
    Ok(Post {
        id: row.try_get("id")?,
        author: row.try_get("author")?,
        body: row.try_get("body")?,
        created_ms: row.try_get("created_ms")?,
        fanout: Fanout::parse(&fanout),
        deleted_ms: row.try_get("deleted_ms")?,
    })
}

/// The graph and posts, on one pool.
#[derive(Debug, Clone)]
pub struct Graph {
    db: Db,
}

impl Graph {
    /// The store on `db`, migrated by [`crate::migrations`].
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool.
    #[must_use]
    pub const fn db(&self) -> &Db {
        &self.db
    }

    /// Makes sure `user` exists (every authenticated caller becomes a user on first
    /// use).
    ///
    /// # Errors
    /// Database failures.
    pub async fn touch_user(&self, user: &str, now_ms: i64) -> Result<(), GraphError> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO nf_users (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(user)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// A user's counts, `None` if unknown.
    ///
    /// # Errors
    /// Database failures.
    pub async fn user(&self, user: &str) -> Result<Option<User>, GraphError> {
        let row = on_db!(&self.db, |pool| {
            sqlx::query("SELECT id, followers, following FROM nf_users WHERE id = $1")
                .bind(user)
                .fetch_optional(pool)
                .await?
                .map(|r| -> Result<User, sqlx::Error> {
                    Ok(User {
                        id: r.try_get("id")?,
                        followers: r.try_get("followers")?,
                        following: r.try_get("following")?,
                    })
                })
                .transpose()?
        });
        Ok(row)
    }

    /// Users in id order after `after`, at most `limit`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>, GraphError> {
        let rows = on_db!(&self.db, |pool| {
            sqlx::query(
                "SELECT id, followers, following FROM nf_users WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| -> Result<User, sqlx::Error> {
                Ok(User {
                    id: r.try_get("id")?,
                    followers: r.try_get("followers")?,
                    following: r.try_get("following")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }

    /// `follower` follows `followee`, both counts kept in the same transaction.
    ///
    /// # Errors
    /// Database failures.
    pub async fn follow(
        &self,
        follower: &str,
        followee: &str,
        now_ms: i64,
    ) -> Result<FollowChange, GraphError> {
        let change = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The write comes first, with the followee's existence as its condition: on
            // SQLite a transaction that reads and then writes fails at once (busy, no
            // wait) when another writer commits in between; one that writes first
            // waits its turn for the lock.
            let added = sqlx::query(
                "INSERT INTO nf_follows (follower, followee, since_ms) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM nf_users WHERE id = $2) \
                 ON CONFLICT (follower, followee) DO NOTHING",
            )
            .bind(follower)
            .bind(followee)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let change = if added == 1 {
                sqlx::query("UPDATE nf_users SET followers = followers + 1 WHERE id = $1")
                    .bind(followee)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE nf_users SET following = following + 1 WHERE id = $1")
                    .bind(follower)
                    .execute(&mut *tx)
                    .await?;
                FollowChange::Changed
            } else {
                let known = sqlx::query("SELECT 1 FROM nf_users WHERE id = $1")
                    .bind(followee)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if known { FollowChange::Unchanged } else { FollowChange::UnknownUser }
            };
            tx.commit().await?;
            change
        });
        Ok(change)
    }

    /// `follower` stops following `followee`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn unfollow(
        &self,
        follower: &str,
        followee: &str,
    ) -> Result<FollowChange, GraphError> {
        let change = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let removed =
                sqlx::query("DELETE FROM nf_follows WHERE follower = $1 AND followee = $2")
                    .bind(follower)
                    .bind(followee)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if removed == 1 {
                sqlx::query("UPDATE nf_users SET followers = followers - 1 WHERE id = $1")
                    .bind(followee)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE nf_users SET following = following - 1 WHERE id = $1")
                    .bind(follower)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            if removed == 1 { FollowChange::Changed } else { FollowChange::Unchanged }
        });
        Ok(change)
    }

    /// Whom `follower` follows, in id order after `after`, at most `limit`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn following(
        &self,
        follower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, GraphError> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT followee FROM nf_follows WHERE follower = $1 AND followee > $2 \
                 ORDER BY followee LIMIT $3",
            )
            .bind(follower)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Who follows `followee`, in id order after `after`, at most `limit`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn followers(
        &self,
        followee: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, GraphError> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT follower FROM nf_follows WHERE followee = $1 AND follower > $2 \
                 ORDER BY follower LIMIT $3",
            )
            .bind(followee)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Which of `authors` `reader` follows (a reader counts as following themself).
    ///
    /// # Errors
    /// Database failures.
    pub async fn followed_among(
        &self,
        reader: &str,
        authors: &[&str],
    ) -> Result<Vec<String>, GraphError> {
        let others: Vec<&str> = authors.iter().copied().filter(|a| *a != reader).collect();
        let mut followed = if others.is_empty() {
            Vec::new()
        } else {
            let placeholders: Vec<String> =
                (2..others.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT followee FROM nf_follows WHERE follower = $1 AND followee IN ({})",
                placeholders.join(", ")
            );
            on_db!(&self.db, |pool| {
                let mut query = sqlx::query_scalar::<_, String>(&sql).bind(reader);
                for author in &others {
                    query = query.bind(*author);
                }
                query.fetch_all(pool).await?
            })
        };
        if authors.contains(&reader) {
            followed.push(reader.to_owned());
        }
        Ok(followed)
    }

    /// Stores a post; a push post starts with its fan-out outstanding.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_post(
        &self,
        author: &str,
        body: &str,
        fanout: Fanout,
        now_ms: i64,
    ) -> Result<Post, GraphError> {
        let done: Option<i64> = (fanout == Fanout::Pull).then_some(now_ms);
        let id: i64 = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO nf_posts (author, body, created_ms, fanout, fanout_done_ms) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(author)
            .bind(body)
            .bind(now_ms)
            .bind(fanout.as_str())
            .bind(done)
            .fetch_one(&mut *tx)
            .await?;
            if fanout == Fanout::Pull {
                sqlx::query("UPDATE nf_users SET pull_posts = pull_posts + 1 WHERE id = $1")
                    .bind(author)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            id
        });
        Ok(Post {
            id,
            author: author.to_owned(),
            body: body.to_owned(),
            created_ms: now_ms,
            fanout,
            deleted_ms: None,
        })
    }

    /// A post by id, tombstoned or not.
    ///
    /// # Errors
    /// Database failures.
    pub async fn post(&self, id: i64) -> Result<Option<Post>, GraphError> {
        let sql = format!("SELECT {POST_COLUMNS} FROM nf_posts WHERE id = $1");
        Ok(on_db!(&self.db, |pool| {
            sqlx::query(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .map(|r| post_from_row(&r))
                .transpose()?
        }))
    }

    /// The live posts among `ids` that `reader` may see in their feed: not deleted, and
    /// by the reader or by someone they follow (an unfollowed author's entries are
    /// hidden before the cleanup job removes them). One query.
    ///
    /// # Errors
    /// Database failures.
    pub async fn visible_posts(&self, reader: &str, ids: &[i64]) -> Result<Vec<Post>, GraphError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {POST_COLUMNS} FROM nf_posts p WHERE p.deleted_ms IS NULL AND p.id IN ({}) \
             AND (p.author = $1 OR EXISTS (SELECT 1 FROM nf_follows f \
                  WHERE f.follower = $1 AND f.followee = p.author))",
            placeholders.join(", ")
        );
        Ok(on_db!(&self.db, |pool| {
            let mut query = sqlx::query(&sql).bind(reader);
            for id in ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?.iter().map(post_from_row).collect::<Result<Vec<_>, _>>()?
        }))
    }

    /// Live posts of `author`, newest first, below `before`, at most `limit`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn posts_by(
        &self,
        author: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Post>, GraphError> {
        let sql = format!(
            "SELECT {POST_COLUMNS} FROM nf_posts WHERE author = $1 AND id < $2 \
             AND deleted_ms IS NULL ORDER BY id DESC LIMIT $3"
        );
        Ok(on_db!(&self.db, |pool| {
            sqlx::query(&sql)
                .bind(author)
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .iter()
                .map(post_from_row)
                .collect::<Result<Vec<_>, _>>()?
        }))
    }

    /// Pull posts `reader` sees (their own and those of whom they follow), newest
    /// first, with `after < id < before`, at most `limit`.
    ///
    /// Only the followees that have made pull posts are visited (`nf_users.pull_posts`;
    /// under a hybrid threshold, a few celebrities at most), each through its own range
    /// of the `(author, id)` index, merged here: one query over every post ordered by
    /// id would walk the whole table for a reader who follows no one pulled.
    ///
    /// # Errors
    /// Database failures.
    pub async fn pull_posts_for(
        &self,
        reader: &str,
        after: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Post>, GraphError> {
        let authors: Vec<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM nf_users WHERE pull_posts > 0 AND (id = $1 OR id IN \
                 (SELECT followee FROM nf_follows WHERE follower = $1))",
            )
            .bind(reader)
            .fetch_all(pool)
            .await?
        });
        let mut runs = Vec::new();
        for chunk in authors.chunks(PULL_AUTHORS_PER_QUERY) {
            // One index range per author: `SELECT … LIMIT` per author, glued together.
            let parts: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "SELECT * FROM (SELECT {POST_COLUMNS} FROM nf_posts \
                         WHERE author = ${} AND fanout = 'pull' AND id > $1 AND id < $2 \
                         AND deleted_ms IS NULL ORDER BY id DESC LIMIT $3) AS a{i}",
                        i + 4
                    )
                })
                .collect();
            let sql = format!(
                "SELECT * FROM ({}) AS pulled ORDER BY id DESC LIMIT $3",
                parts.join(" UNION ALL ")
            );
            let rows = on_db!(&self.db, |pool| {
                let mut query = sqlx::query(&sql).bind(after).bind(before).bind(i64::from(limit));
                for author in chunk {
                    query = query.bind(author.as_str());
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(post_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            });
            runs.push(rows);
        }
        let mut posts: Vec<Post> = runs.into_iter().flatten().collect();
        posts.sort_unstable_by_key(|p| std::cmp::Reverse(p.id));
        posts.truncate(limit as usize);
        Ok(posts)
    }

    /// Tombstones a post. Returns the post as it was, `None` if unknown.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_post(&self, id: i64, now_ms: i64) -> Result<Option<Post>, GraphError> {
        let Some(post) = self.post(id).await? else { return Ok(None) };
        on_db!(&self.db, |pool| {
            sqlx::query("UPDATE nf_posts SET deleted_ms = $2 WHERE id = $1 AND deleted_ms IS NULL")
                .bind(id)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(Some(post))
    }

    /// Marks a push post's fan-out complete (the outbox entry is done).
    ///
    /// # Errors
    /// Database failures.
    pub async fn fanout_done(&self, id: i64, now_ms: i64) -> Result<(), GraphError> {
        on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE nf_posts SET fanout_done_ms = $2 WHERE id = $1 AND fanout_done_ms IS NULL",
            )
            .bind(id)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Claims up to `limit` push posts whose fan-out is outstanding, created before
    /// `created_before_ms` and unclaimed since `now_ms`, for `claim_ms`: the sweeper
    /// re-enqueues them. Concurrent sweepers on other instances claim disjoint sets.
    ///
    /// # Errors
    /// Database failures.
    pub async fn claim_outstanding(
        &self,
        created_before_ms: i64,
        now_ms: i64,
        claim_ms: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>, GraphError> {
        let candidates: Vec<(i64, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, author FROM nf_posts WHERE fanout_done_ms IS NULL \
                 AND created_ms < $1 AND claimed_until_ms < $2 ORDER BY id LIMIT $3",
            )
            .bind(created_before_ms)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        let mut claimed = Vec::with_capacity(candidates.len());
        for (id, author) in candidates {
            // A compare-and-set on the claim: only one sweeper wins each post.
            let won = on_db!(&self.db, |pool| {
                sqlx::query(
                    "UPDATE nf_posts SET claimed_until_ms = $3 \
                     WHERE id = $1 AND claimed_until_ms < $2 AND fanout_done_ms IS NULL",
                )
                .bind(id)
                .bind(now_ms)
                .bind(now_ms.saturating_add(claim_ms))
                .execute(pool)
                .await?
                .rows_affected()
            });
            if won == 1 {
                claimed.push((id, author));
            }
        }
        Ok(claimed)
    }

    /// Push posts whose fan-out is outstanding (the outbox's depth).
    ///
    /// # Errors
    /// Database failures.
    pub async fn outstanding(&self) -> Result<i64, GraphError> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM nf_posts WHERE fanout_done_ms IS NULL")
                .fetch_one(pool)
                .await?
        }))
    }
}
