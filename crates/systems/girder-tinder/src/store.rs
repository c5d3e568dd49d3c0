//! Tinder's tables on the instance's database, each statement written once for both
//! engines through `girder_sql::on_db!`.
//!
//! - `tinder_profiles`: the truth about every profile; the geo index is rebuilt from
//!   it and refreshed from its `updated_ms` column.
//! - `tinder_swipes`: one row per `(swiper, target)`, inserted with `ON CONFLICT DO
//!   NOTHING`, so a repeated swipe finds the first one and changes nothing.
//! - `tinder_matches`: one row per pair, its ids ordered (`user_a < user_b` by bytes)
//!   under a unique key, so two likes racing each other insert it once.
//! - `tinder_seen`: each user's seen filters ([`crate::seen`]), written only over the
//!   version read.

use girder_sql::{Db, on_db};

use crate::profile::{Gender, Genders, Profile};
use crate::seen::SeenRow;

/// The settings table (the cursor key).
pub(crate) const SETTINGS_TABLE: &str = "tinder_settings";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A row holds a value no code writes (edited by hand).
    #[error("tinder_profiles row of {user:?} is damaged: {what}")]
    Damaged {
        /// Whose row.
        user: String,
        /// Which value.
        what: &'static str,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A swipe as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swipe {
    /// Who swiped.
    pub swiper: String,
    /// On whom.
    pub target: String,
    /// Right (`true`) or left.
    pub liked: bool,
    /// When, ms since the epoch.
    pub created_ms: i64,
}

/// A match as one of its two users sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRow {
    /// The match's id.
    pub id: i64,
    /// The other user's profile.
    pub other: Profile,
    /// When the second like made it, ms since the epoch.
    pub created_ms: i64,
}

/// A profile's place, for the geo index.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// Whose.
    pub user: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// Row counts for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Profiles.
    pub profiles: i64,
    /// Swipes.
    pub swipes: i64,
    /// Of which likes.
    pub likes: i64,
    /// Matches.
    pub matches: i64,
    /// Users with seen filters.
    pub seen_rows: i64,
}

const PROFILE_COLUMNS: &str = "user_id, name, age, gender, interested_in, age_min, age_max, \
     max_distance_km, lat, lon, bio, created_ms, updated_ms";

type ProfileRow = (String, String, i64, String, i64, i64, i64, i64, f64, f64, String, i64, i64);

fn profile_of(row: ProfileRow) -> Result<Profile> {
    let (user, name, age, gender, interested, age_min, age_max, max_km, lat, lon, bio, c, u) = row;
    let damaged = |what| StoreError::Damaged { user: user.clone(), what };
    let gender = Gender::parse(&gender).ok_or_else(|| damaged("gender"))?;
    let interested_in = Genders::from_bits(interested).ok_or_else(|| damaged("interested_in"))?;
    let location = girder_geo::Point::new(lat, lon).map_err(|_| damaged("location"))?;
    Ok(Profile {
        user,
        name,
        age,
        gender,
        interested_in,
        age_min,
        age_max,
        max_distance_km: max_km,
        location,
        bio,
        created_ms: c,
        updated_ms: u,
    })
}

/// `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// The tables on `db`, whose migrations have run.
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database.
    #[must_use]
    pub const fn db(&self) -> &Db {
        &self.db
    }

    // ---- profiles ----

    /// Creates or replaces `profile` (its `created_ms` is kept when it exists);
    /// returns the stored profile.
    ///
    /// # Errors
    /// The database failed.
    pub async fn put_profile(&self, p: &Profile) -> Result<Profile> {
        let sql = format!(
            "INSERT INTO tinder_profiles ({PROFILE_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (user_id) DO UPDATE SET
                 name = excluded.name, age = excluded.age, gender = excluded.gender,
                 interested_in = excluded.interested_in, age_min = excluded.age_min,
                 age_max = excluded.age_max, max_distance_km = excluded.max_distance_km,
                 lat = excluded.lat, lon = excluded.lon, bio = excluded.bio,
                 updated_ms = excluded.updated_ms
             RETURNING {PROFILE_COLUMNS}"
        );
        let row: ProfileRow = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(&p.user)
                .bind(&p.name)
                .bind(p.age)
                .bind(p.gender.as_str())
                .bind(p.interested_in.bits())
                .bind(p.age_min)
                .bind(p.age_max)
                .bind(p.max_distance_km)
                .bind(p.location.lat())
                .bind(p.location.lon())
                .bind(&p.bio)
                .bind(p.updated_ms)
                .fetch_one(pool)
                .await?
        });
        profile_of(row)
    }

    /// Moves `user`'s profile; `None` when they have none.
    ///
    /// # Errors
    /// The database failed.
    pub async fn move_profile(
        &self,
        user: &str,
        lat: f64,
        lon: f64,
        now_ms: i64,
    ) -> Result<Option<Profile>> {
        let sql = format!(
            "UPDATE tinder_profiles SET lat = $2, lon = $3, updated_ms = $4 WHERE user_id = $1
             RETURNING {PROFILE_COLUMNS}"
        );
        let row: Option<ProfileRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(user)
                .bind(lat)
                .bind(lon)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
        });
        row.map(profile_of).transpose()
    }

    /// `user`'s profile.
    ///
    /// # Errors
    /// The database failed.
    pub async fn profile(&self, user: &str) -> Result<Option<Profile>> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM tinder_profiles WHERE user_id = $1");
        let row: Option<ProfileRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql).bind(user).fetch_optional(pool).await?
        });
        row.map(profile_of).transpose()
    }

    /// Of `candidates`, the profiles that exist and `viewer` has not swiped, in no
    /// particular order. At most [`crate::feed::BATCH_MAX`] candidates per call.
    ///
    /// # Errors
    /// The database failed.
    pub async fn unswiped(&self, viewer: &str, candidates: &[&str]) -> Result<Vec<Profile>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {PROFILE_COLUMNS} FROM tinder_profiles p
             WHERE p.user_id IN ({})
               AND NOT EXISTS (SELECT 1 FROM tinder_swipes s
                               WHERE s.swiper = $1 AND s.target = p.user_id)",
            placeholders(2, candidates.len())
        );
        let rows: Vec<ProfileRow> = on_db!(&self.db, |pool| {
            let mut query = sqlx::query_as(&sql).bind(viewer);
            for c in candidates {
                query = query.bind(*c);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(profile_of).collect()
    }

    /// Profiles changed at or after `(since_ms, after_user)` in `(updated_ms,
    /// user_id)` order, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn placed_since(
        &self,
        since_ms: i64,
        after_user: &str,
        limit: u32,
    ) -> Result<Vec<Placed>> {
        let rows: Vec<(String, f64, f64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT user_id, lat, lon, updated_ms FROM tinder_profiles
                 WHERE updated_ms > $1 OR (updated_ms = $1 AND user_id > $2)
                 ORDER BY updated_ms, user_id LIMIT $3",
            )
            .bind(since_ms)
            .bind(after_user)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, lat, lon, updated_ms)| Placed { user, lat, lon, updated_ms })
            .collect())
    }

    // ---- swipes and matches ----

    /// Stores `swiper`'s swipe on `target` unless they swiped it before; returns the
    /// stored swipe and whether it is new.
    ///
    /// # Errors
    /// The database failed.
    pub async fn swipe(
        &self,
        swiper: &str,
        target: &str,
        liked: bool,
        now_ms: i64,
    ) -> Result<(Swipe, bool)> {
        let (inserted, row): (u64, (i64, i64)) = on_db!(&self.db, |pool| {
            let inserted = sqlx::query(
                "INSERT INTO tinder_swipes (swiper, target, liked, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (swiper, target) DO NOTHING",
            )
            .bind(swiper)
            .bind(target)
            .bind(i64::from(liked))
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected();
            let row = sqlx::query_as(
                "SELECT liked, created_ms FROM tinder_swipes WHERE swiper = $1 AND target = $2",
            )
            .bind(swiper)
            .bind(target)
            .fetch_one(pool)
            .await?;
            (inserted, row)
        });
        let swipe = Swipe {
            swiper: swiper.to_owned(),
            target: target.to_owned(),
            liked: row.0 != 0,
            created_ms: row.1,
        };
        Ok((swipe, inserted == 1))
    }

    /// Whether `swiper` liked `target`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn liked(&self, swiper: &str, target: &str) -> Result<bool> {
        let liked: Option<i64> = on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT liked FROM tinder_swipes WHERE swiper = $1 AND target = $2")
                .bind(swiper)
                .bind(target)
                .fetch_optional(pool)
                .await?
        });
        Ok(liked.is_some_and(|l| l != 0))
    }

    /// Creates the match of `a` and `b` unless it exists; returns its id, when it
    /// was made, and whether this call made it.
    ///
    /// # Errors
    /// The database failed.
    pub async fn make_match(&self, a: &str, b: &str, now_ms: i64) -> Result<(i64, i64, bool)> {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        let made: Option<(i64, i64)> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "INSERT INTO tinder_matches (user_a, user_b, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (user_a, user_b) DO NOTHING RETURNING id, created_ms",
            )
            .bind(a)
            .bind(b)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
        });
        if let Some((id, created_ms)) = made {
            return Ok((id, created_ms, true));
        }
        let (id, created_ms): (i64, i64) = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, created_ms FROM tinder_matches WHERE user_a = $1 AND user_b = $2",
            )
            .bind(a)
            .bind(b)
            .fetch_one(pool)
            .await?
        });
        Ok((id, created_ms, false))
    }

    /// The match of `a` and `b`: its id and when it was made.
    ///
    /// # Errors
    /// The database failed.
    pub async fn match_of(&self, a: &str, b: &str) -> Result<Option<(i64, i64)>> {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        Ok(on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, created_ms FROM tinder_matches WHERE user_a = $1 AND user_b = $2",
            )
            .bind(a)
            .bind(b)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// `user`'s matches with ids below `before`, newest first, at most `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn matches(&self, user: &str, before: i64, limit: u32) -> Result<Vec<MatchRow>> {
        // Two index scans (by user_a, by user_b) instead of an OR the planners may not
        // split; the other user's profile joined for the list.
        let columns = PROFILE_COLUMNS
            .split(", ")
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT m.id, m.created_ms, {columns} FROM (
                 SELECT id, user_b AS other, created_ms FROM tinder_matches
                 WHERE user_a = $1 AND id < $2
                 UNION ALL
                 SELECT id, user_a AS other, created_ms FROM tinder_matches
                 WHERE user_b = $1 AND id < $2
             ) m JOIN tinder_profiles p ON p.user_id = m.other
             ORDER BY m.id DESC LIMIT $3"
        );
        type Row =
            (i64, i64, String, String, i64, String, i64, i64, i64, i64, f64, f64, String, i64, i64);
        let rows: Vec<Row> = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(user)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(id, created_ms, u, n, age, g, i, amin, amax, km, lat, lon, bio, c, up)| {
                let other = profile_of((u, n, age, g, i, amin, amax, km, lat, lon, bio, c, up))?;
                Ok(MatchRow { id, other, created_ms })
            })
            .collect()
    }

    /// Deletes match `id` if `user` is in it; `false` if there was none of theirs.
    ///
    /// # Errors
    /// The database failed.
    pub async fn unmatch(&self, user: &str, id: i64) -> Result<bool> {
        Ok(on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM tinder_matches WHERE id = $1 AND (user_a = $2 OR user_b = $2)")
                .bind(id)
                .bind(user)
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        }))
    }

    // ---- seen filters ----

    /// `user`'s stored seen filters.
    ///
    /// # Errors
    /// The database failed.
    pub async fn seen(&self, user: &str) -> Result<Option<SeenRow>> {
        type Row = (i64, i64, i64, i64, Vec<u8>, Option<i64>, Option<Vec<u8>>);
        let row: Option<Row> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT version, generation, current_started_ms, current_count, current_bits,
                        previous_started_ms, previous_bits
                 FROM tinder_seen WHERE user_id = $1",
            )
            .bind(user)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(version, generation, current_started_ms, current_count, current, ps, pb)| {
            SeenRow {
                version,
                generation,
                current_started_ms,
                current_count,
                current,
                previous: ps.zip(pb),
            }
        }))
    }

    /// Stores `row` for `user` if the stored version is still `expected` (`None`: no
    /// row yet); `false` when another write came first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn put_seen(
        &self,
        user: &str,
        expected: Option<i64>,
        row: &SeenRow,
        now_ms: i64,
    ) -> Result<bool> {
        let (previous_started, previous_bits) = match &row.previous {
            Some((started, bits)) => (Some(*started), Some(bits.as_slice())),
            None => (None, None),
        };
        let written = on_db!(&self.db, |pool| {
            match expected {
                None => sqlx::query(
                    "INSERT INTO tinder_seen (user_id, version, generation, current_started_ms,
                         current_count, current_bits, previous_started_ms, previous_bits, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user)
                .bind(row.version)
                .bind(row.generation)
                .bind(row.current_started_ms)
                .bind(row.current_count)
                .bind(row.current.as_slice())
                .bind(previous_started)
                .bind(previous_bits)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected(),
                Some(expected) => sqlx::query(
                    "UPDATE tinder_seen SET version = $2, generation = $3, current_started_ms = $4,
                         current_count = $5, current_bits = $6, previous_started_ms = $7,
                         previous_bits = $8, updated_ms = $9
                     WHERE user_id = $1 AND version = $10",
                )
                .bind(user)
                .bind(row.version)
                .bind(row.generation)
                .bind(row.current_started_ms)
                .bind(row.current_count)
                .bind(row.current.as_slice())
                .bind(previous_started)
                .bind(previous_bits)
                .bind(now_ms)
                .bind(expected)
                .execute(pool)
                .await?
                .rows_affected(),
            }
        });
        Ok(written == 1)
    }

    /// Row counts.
    ///
    /// # Errors
    /// The database failed.
    pub async fn counts(&self) -> Result<Counts> {
        let (profiles, swipes, likes, matches, seen_rows): (i64, i64, i64, i64, i64) =
            on_db!(&self.db, |pool| {
                sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM tinder_profiles),
                            (SELECT COUNT(*) FROM tinder_swipes),
                            (SELECT COUNT(*) FROM tinder_swipes WHERE liked = 1),
                            (SELECT COUNT(*) FROM tinder_matches),
                            (SELECT COUNT(*) FROM tinder_seen)",
                )
                .fetch_one(pool)
                .await?
            });
        Ok(Counts { profiles, swipes, likes, matches, seen_rows })
    }
}
