//! Tinder: people nearby, shown to each other when each is what the other looks for;
//! a like returned is a match, and both hear of it at once.
//!
//! **Profiles** ([`profile`]) hold a name, age, gender, a bio, a place and what their
//! owner looks for: genders, an age range and a distance (1–500 km). The profiles
//! table is the truth; the geo index ([`locations`]: Redis's when the server has
//! Redis, else each instance's own, refreshed from the table) is how the feed finds
//! who is near.
//!
//! **The feed** ([`feed`]) is nearest first, from the viewer's place, and mutual: a
//! profile is shown only when the viewer is within *its* distance and what *it*
//! looks for too. Pages follow an opaque cursor (a keyset on distance and user id,
//! MAC'd per viewer) and read a bounded number of candidates each, the search circle
//! growing in steps up to the viewer's distance.
//!
//! **Shown once** ([`seen`]): each profile a page shows goes into the viewer's seen
//! filters, two rotating Bloom filters stored in the viewer's row, so no later page —
//! on any instance, in any session — shows it again while they remember it (one to
//! two generations, 24–48 h by default). A false positive hides a profile for less
//! than two generations, never for ever; profiles already swiped are excluded
//! exactly by the swipes table, never by the filter. A page is answered only once
//! its profiles are recorded; two pages at once for one viewer are made disjoint by
//! the row's version.
//!
//! **Swipes** are final and idempotent: one row per `(swiper, target)`; a repeat
//! answers the stored swipe and changes nothing. A like that finds the target's like
//! makes the pair's one match — a row under a unique key on the ordered pair, so two
//! likes at the same moment make it once (each like is committed before it looks for
//! the other, so at least one of them sees the other; the key keeps it to one). The
//! like that made the match pushes a `match` event to both users (Pattern:
//! Server-Sent Events (SSE) for Server Push): each user's events go to their topic on
//! the instance's hub, and with NATS (`Context::nats_url`) to every instance's hub
//! (Pattern: Pub/Sub for Event Broadcasting), so a user streaming from any instance
//! hears it. Pushes are a fast path: a user who was not streaming finds the match in
//! `GET /matches`.
//!
//! HTTP surface, nested at `/api/tinder`: `GET/PUT /profiles/me`,
//! `PUT /profiles/me/location`, `GET /feed`, `POST /swipes`, `GET /matches`,
//! `DELETE /matches/{id}`, `GET /events/stream` and the operator's `GET /stats`.

mod api;
pub mod feed;
pub mod locations;
pub mod profile;
pub mod seen;
mod settings;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use girder_core::Clock;
use girder_geo::index::{
    AnyGeoIndex, GeoError, GeoIndex, MemoryGeoIndex, MemoryIndexConfig, RedisGeoIndex,
    RedisIndexConfig,
};
use girder_http::cursor::{CursorCodec, CursorError};
use girder_realtime::nats::NatsBroker;
use girder_realtime::{
    Hub, HubConfig, HubError, Position, Resume, SlowConsumer, SubscribeConfig, Subscription, Topic,
};
use girder_system::{BoxError, Context, OpenError, Shutdown, System, SystemInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use feed::{FeedConfig, FeedCursor, FeedError, FeedPage, PageRequest};
use locations::{Locations, RefreshError};
use profile::{Profile, ProfileDraft, ProfileError};
use seen::{Seen, SeenConfig};
use store::{MatchRow, Store, StoreError, Swipe};

pub use api::{
    CandidateView, FeedPageView, FeedQuery, LocationRequest, MatchPageView, MatchView,
    MatchesQuery, ProfileRequest, ProfileView, SwipeAction, SwipeRequest, SwipeView, TinderApi,
    TinderStatsView,
};
pub use settings::TinderSettings;

/// Tinder's migrations.
#[must_use]
pub fn migrations() -> girder_sql::migrate::Migrations {
    girder_sql::migrate::Migrations {
        system: "tinder",
        sqlite: sqlx::migrate!("migrations/sqlite"),
        postgres: sqlx::migrate!("migrations/postgres"),
    }
}

/// Everything Tinder needs to start.
#[derive(Debug, Clone)]
pub struct TinderConfig {
    /// The seen filters' size and rotation.
    pub seen: SeenConfig,
    /// What a feed page may do.
    pub feed: FeedConfig,
    /// Between refreshes of the geo index from the table, ms.
    pub index_refresh_ms: u64,
    /// The Redis key of the shared geo index.
    pub geo_key: String,
    /// The NATS subject prefix joining instances' hubs.
    pub nats_prefix: String,
    /// Events kept per user for a resume on the same instance.
    pub events_history: usize,
    /// Events buffered per open stream before the oldest are dropped (and a `gap`
    /// event says so).
    pub stream_buffer: usize,
}

impl TinderConfig {
    /// The defaults: [`SeenConfig::new`], [`FeedConfig::new`], a refresh every 2 s, 32
    /// events of history per user.
    #[must_use]
    pub fn new() -> Self {
        Self {
            seen: SeenConfig::new(),
            feed: FeedConfig::new(),
            index_refresh_ms: 2_000,
            geo_key: "girder:tinder:geo".to_owned(),
            nats_prefix: "girder.tinder".to_owned(),
            events_history: 32,
            stream_buffer: 64,
        }
    }
}

impl Default for TinderConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TinderError {
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// A profile breaks a rule.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The caller has no profile (reading or moving it).
    #[error("you have no profile yet: PUT /profiles/me first")]
    NoProfile,
    /// The operation needs the caller's profile first (the feed, a swipe).
    #[error("you need a profile first: PUT /profiles/me")]
    ProfileRequired,
    /// The swiped user has no profile.
    #[error("no profile {0:?}")]
    UnknownProfile(String),
    /// No such match of the caller's.
    #[error("no such match")]
    NoMatch,
    /// A page cursor was malformed, forged, or from another list or user.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// Other pages for the same user kept winning the race to record what they
    /// showed; retry.
    #[error("the feed is busy for this user; retry")]
    Contention,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The geo index failed.
    #[error(transparent)]
    Index(#[from] GeoError),
    /// This instance cannot open another stream.
    #[error(transparent)]
    Stream(#[from] HubError),
    /// The seen filters could not be sized (a settings bug).
    #[error(transparent)]
    Sketch(#[from] girder_sketch::ParamError),
}

impl From<sqlx::Error> for TinderError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<FeedError> for TinderError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Index(e) => Self::Index(e),
            FeedError::Store(e) => Self::Store(e),
            FeedError::Origin => Self::Cursor(CursorError::Malformed),
        }
    }
}

/// The event a user's stream gets when one of their likes is returned: `event:
/// match`, this as its JSON data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MatchEvent {
    /// The match.
    pub match_id: i64,
    /// Whom with.
    pub user: String,
    /// Their name.
    pub name: String,
    /// Their age.
    pub age: i64,
    /// When the match was made, ms since the epoch.
    pub created_ms: i64,
}

/// What a swipe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwipeOutcome {
    /// The stored swipe (the first one, for a repeat).
    pub swipe: Swipe,
    /// Whether this call stored it.
    pub new: bool,
    /// The pair's match, if both liked: its id and when it was made.
    pub matched: Option<(i64, i64)>,
}

/// A feed page with its next cursor, encoded.
#[derive(Debug, Clone)]
pub struct Feed {
    /// The page.
    pub page: FeedPage,
    /// The opaque cursor of the next page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    pages: AtomicU64,
    shown: AtomicU64,
    examined: AtomicU64,
    hidden_by_seen: AtomicU64,
    dropped_as_concurrent: AtomicU64,
    seen_conflicts: AtomicU64,
    seen_damaged: AtomicU64,
    depth_capped: AtomicU64,
    swipes: AtomicU64,
    matches: AtomicU64,
    events: AtomicU64,
    index_failures: AtomicU64,
    streams: AtomicU64,
}

/// How many times a page tries to record what it showed before answering 503.
const SEEN_ATTEMPTS: usize = 8;

/// A running Tinder.
pub struct Tinder {
    store: Store,
    locations: Locations,
    hub: Hub,
    broker: Option<NatsBroker>,
    cursors: CursorCodec,
    clock: Arc<dyn Clock>,
    config: TinderConfig,
    counters: Counters,
}

impl std::fmt::Debug for Tinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tinder").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The settings row holding the cursor MAC key, shared by all instances.
const CURSOR_KEY_SETTING: &str = "cursor_key";

/// The hub topic of `user`'s events (hashed: user ids are any text).
fn user_topic(user: &str) -> Topic {
    Topic::hashed("tinder.u", user).unwrap_or_else(|_| unreachable!("a valid prefix"))
}

fn feed_scope(user: &str) -> String {
    format!("tinder.feed.{user}")
}

fn matches_scope(user: &str) -> String {
    format!("tinder.matches.{user}")
}

impl Tinder {
    /// Opens on `context` (whose database [`migrations`] has brought up to date): the
    /// geo index on Redis when `context` has it, else in memory, rebuilt from the
    /// profiles table; hubs joined through NATS when `context` has it.
    ///
    /// # Errors
    /// Redis or NATS cannot be reached, the database cannot be read, or the stored
    /// cursor key is corrupt.
    pub async fn open_with(
        context: &Context,
        config: TinderConfig,
    ) -> Result<Arc<Self>, OpenError> {
        // The seen filters' size is checked before anything is served.
        config.seen.empty(0).map_err(OpenError::storage)?;
        let hub = Hub::new(HubConfig {
            history_per_topic: config.events_history,
            ..HubConfig::default()
        })
        .map_err(OpenError::storage)?;
        let broker = match context.nats_url.as_deref() {
            Some(url) => Some(
                NatsBroker::connect(url, hub.clone(), &config.nats_prefix)
                    .await
                    .map_err(OpenError::storage)?,
            ),
            None => None,
        };
        let index = match context.redis_url.as_deref() {
            Some(url) => {
                let client = redis::Client::open(url).map_err(OpenError::storage)?;
                let conn =
                    redis::aio::ConnectionManager::new(client).await.map_err(OpenError::storage)?;
                AnyGeoIndex::Redis(RedisGeoIndex::new(
                    conn,
                    RedisIndexConfig { key: config.geo_key.clone(), ..RedisIndexConfig::default() },
                ))
            }
            None => AnyGeoIndex::Memory(MemoryGeoIndex::new(MemoryIndexConfig {
                clock: Arc::clone(&context.clock),
                ..MemoryIndexConfig::default()
            })),
        };
        let redis_index = context.redis_url.is_some();
        let store = Store::new(context.db.clone());
        let key =
            girder_sql::shared_key::<32>(store.db(), store::SETTINGS_TABLE, CURSOR_KEY_SETTING)
                .await
                .map_err(OpenError::storage)?;
        let locations = Locations::new(index);
        let rebuilt = locations.refresh(&store).await.map_err(OpenError::storage)?;
        tracing::info!(
            profiles = rebuilt,
            redis = redis_index,
            "tinder geo index rebuilt from the table"
        );
        Ok(Arc::new(Self {
            store,
            locations,
            hub,
            broker,
            cursors: CursorCodec::new(key),
            clock: Arc::clone(&context.clock),
            config,
            counters: Counters::default(),
        }))
    }

    /// The tables.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// The geo index.
    #[must_use]
    pub fn index(&self) -> &AnyGeoIndex {
        self.locations.index()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Reads the profiles changed since the last refresh into the geo index (the
    /// running system does this every `index_refresh_ms`); returns how many.
    ///
    /// # Errors
    /// The table or the index failed.
    pub async fn refresh_index(&self) -> Result<usize, RefreshError> {
        self.locations.refresh(&self.store).await
    }

    /// Creates or replaces `user`'s profile.
    ///
    /// # Errors
    /// A rule broken, or the store failed (nothing changed).
    pub async fn put_profile(
        &self,
        user: &str,
        draft: &ProfileDraft,
    ) -> Result<Profile, TinderError> {
        check_user(user)?;
        let (interested_in, location) = draft.check()?;
        let now = self.now_ms();
        let profile = Profile {
            user: user.to_owned(),
            name: draft.name.clone(),
            age: draft.age,
            gender: draft.gender,
            interested_in,
            age_min: draft.age_min,
            age_max: draft.age_max,
            max_distance_km: draft.max_distance_km,
            location,
            bio: draft.bio.clone(),
            created_ms: now,
            updated_ms: now,
        };
        let stored = self.store.put_profile(&profile).await?;
        self.place(&stored).await;
        Ok(stored)
    }

    /// Moves `user`'s profile to `(lat, lon)`.
    ///
    /// # Errors
    /// A place the index cannot hold, no profile, or the store failed.
    pub async fn move_to(&self, user: &str, lat: f64, lon: f64) -> Result<Profile, TinderError> {
        let point = profile::check_location(lat, lon)?;
        let stored = self
            .store
            .move_profile(user, point.lat(), point.lon(), self.now_ms())
            .await?
            .ok_or(TinderError::NoProfile)?;
        self.place(&stored).await;
        Ok(stored)
    }

    /// Puts a stored profile into the index; a failure is left to the refresh (the
    /// table already has it).
    async fn place(&self, profile: &Profile) {
        if let Err(e) = self.locations.place(&profile.user, profile.location).await {
            self.counters.index_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "a profile was not indexed; the next refresh puts it in"
            );
        }
    }

    /// `user`'s profile.
    ///
    /// # Errors
    /// The store failed.
    pub async fn profile(&self, user: &str) -> Result<Option<Profile>, TinderError> {
        Ok(self.store.profile(user).await?)
    }

    /// `user`'s seen filters as the next page would read them.
    ///
    /// # Errors
    /// The store failed.
    pub async fn seen_of(&self, user: &str) -> Result<Seen, TinderError> {
        let row = self.store.seen(user).await?;
        let seen = Seen::load(user, row, &self.config.seen, self.now_ms())?;
        if seen.damaged() {
            self.counters.seen_damaged.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(user, "damaged seen filters replaced by empty ones");
        }
        Ok(seen)
    }

    /// One page of `user`'s feed: at most `limit` profiles after `cursor` (the
    /// previous page's `next_cursor`), each recorded in their seen filters before
    /// this returns.
    ///
    /// # Errors
    /// No profile, a bad cursor, or the store or index failed (nothing recorded).
    pub async fn feed(
        &self,
        user: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Feed, TinderError> {
        let cursor: Option<FeedCursor> =
            cursor.map(|c| self.cursors.decode(&feed_scope(user), c)).transpose()?;
        let viewer = self.store.profile(user).await?.ok_or(TinderError::ProfileRequired)?;
        let mut seen = self.seen_of(user).await?;
        let limit = limit.max(1);
        let request = PageRequest { viewer: &viewer, seen: &seen, cursor: cursor.as_ref(), limit };
        let mut page =
            feed::page(self.locations.index(), &self.store, &request, &self.config.feed).await?;
        self.record_shown(user, &mut seen, &mut page).await?;
        let c = &self.counters;
        c.pages.fetch_add(1, Ordering::Relaxed);
        c.shown.fetch_add(page.items.len() as u64, Ordering::Relaxed);
        c.examined.fetch_add(page.examined as u64, Ordering::Relaxed);
        c.hidden_by_seen.fetch_add(page.hidden_by_seen as u64, Ordering::Relaxed);
        if page.depth_capped {
            c.depth_capped.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("girder_tinder_feed_pages_total").increment(1);
        let next_cursor = page.next.as_ref().map(|n| self.cursors.encode(&feed_scope(user), n));
        Ok(Feed { page, next_cursor })
    }

    /// Adds the page's profiles to `seen` and stores it over the version read. When
    /// another page wrote first, re-reads the filters, drops from this page what they
    /// now hold (the other page showed it), and tries again: so two pages at once
    /// never show a profile twice.
    async fn record_shown(
        &self,
        user: &str,
        seen: &mut Seen,
        page: &mut FeedPage,
    ) -> Result<(), TinderError> {
        if page.items.is_empty() {
            return Ok(());
        }
        for attempt in 0..SEEN_ATTEMPTS {
            if attempt > 0 {
                *seen = self.seen_of(user).await?;
                let before = page.items.len();
                page.items.retain(|(p, _)| !seen.contains(&p.user));
                let dropped = (before - page.items.len()) as u64;
                self.counters.dropped_as_concurrent.fetch_add(dropped, Ordering::Relaxed);
            }
            for (p, _) in &page.items {
                seen.insert(&p.user);
            }
            let stored =
                self.store.put_seen(user, seen.version(), &seen.to_row(), self.now_ms()).await?;
            if stored {
                return Ok(());
            }
            self.counters.seen_conflicts.fetch_add(1, Ordering::Relaxed);
        }
        Err(TinderError::Contention)
    }

    /// `user` swipes on `target`: stored once (a repeat returns the first swipe); a
    /// like returned makes the pair's match and pushes `match` to both.
    ///
    /// # Errors
    /// Swiping oneself, no profile on either side, or the store failed.
    pub async fn swipe(
        &self,
        user: &str,
        target: &str,
        liked: bool,
    ) -> Result<SwipeOutcome, TinderError> {
        // What the schema refuses (empty, control characters, over 128 characters) is
        // a 422; a longer id within 128 characters can name no profile (ids are at
        // most 128 bytes), so it is an unknown one.
        if target.is_empty() || target.chars().count() > 128 || target.chars().any(char::is_control)
        {
            return Err(TinderError::Invalid(
                "target: 1–128 characters without control characters".into(),
            ));
        }
        if target.len() > 128 {
            return Err(TinderError::UnknownProfile(target.to_owned()));
        }
        if user == target {
            return Err(TinderError::Invalid("target: you cannot swipe on yourself".into()));
        }
        let me = self.store.profile(user).await?.ok_or(TinderError::ProfileRequired)?;
        let them = self
            .store
            .profile(target)
            .await?
            .ok_or_else(|| TinderError::UnknownProfile(target.to_owned()))?;
        let now = self.now_ms();
        let (swipe, new) = self.store.swipe(user, target, liked, now).await?;
        if new {
            self.counters.swipes.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("girder_tinder_swipes_total", "liked" => if liked { "true" } else { "false" }).increment(1);
        }
        if !swipe.liked {
            return Ok(SwipeOutcome { swipe, new, matched: None });
        }
        if !new {
            let matched = self.store.match_of(user, target).await?;
            return Ok(SwipeOutcome { swipe, new, matched });
        }
        // Our like is committed; only now look for theirs (see the crate docs).
        if !self.store.liked(target, user).await? {
            return Ok(SwipeOutcome { swipe, new, matched: None });
        }
        let (id, created_ms, made) = self.store.make_match(user, target, now).await?;
        if made {
            self.counters.matches.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("girder_tinder_matches_total").increment(1);
            self.push_match(user, &them, id, created_ms).await;
            self.push_match(target, &me, id, created_ms).await;
        }
        Ok(SwipeOutcome { swipe, new, matched: Some((id, created_ms)) })
    }

    /// Publishes a `match` event to `user` about `other`, on every instance.
    async fn push_match(&self, user: &str, other: &Profile, match_id: i64, created_ms: i64) {
        let event = MatchEvent {
            match_id,
            user: other.user.clone(),
            name: other.name.clone(),
            age: other.age,
            created_ms,
        };
        // Serializing this plain shape cannot fail.
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        let topic = user_topic(user);
        let published = match &self.broker {
            Some(broker) => {
                broker.publish(&topic, payload).await.map(drop).map_err(|e| e.to_string())
            }
            None => self.hub.publish(&topic, payload).map(drop).map_err(|e| e.to_string()),
        };
        match published {
            Ok(()) => {
                self.counters.events.fetch_add(1, Ordering::Relaxed);
            }
            // The match is stored: the user finds it in GET /matches.
            Err(e) => tracing::warn!(error = %e, "a match event was not pushed to every instance"),
        }
    }

    /// `user`'s matches, newest first, `limit` after `cursor`.
    ///
    /// # Errors
    /// A bad cursor, or the store failed.
    pub async fn matches(
        &self,
        user: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<MatchRow>, Option<String>), TinderError> {
        let scope = matches_scope(user);
        let before: i64 = match cursor {
            Some(c) => self.cursors.decode(&scope, c)?,
            None => i64::MAX,
        };
        let rows = self.store.matches(user, before, limit).await?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|m| self.cursors.encode(&scope, &m.id)))
            .flatten();
        Ok((rows, next))
    }

    /// Ends `user`'s match `id`; the pair's swipes stay, so neither is shown the
    /// other again.
    ///
    /// # Errors
    /// No such match of the caller's, or the store failed.
    pub async fn unmatch(&self, user: &str, id: i64) -> Result<(), TinderError> {
        if self.store.unmatch(user, id).await? { Ok(()) } else { Err(TinderError::NoMatch) }
    }

    /// Subscribes to `user`'s events on this instance, resuming after `since` (a
    /// `Last-Event-ID`) when it is given.
    ///
    /// # Errors
    /// The hub holds as many users with open streams as it can.
    pub fn subscribe(
        &self,
        user: &str,
        since: Option<Position>,
    ) -> Result<(Subscription, Resume), TinderError> {
        let config = SubscribeConfig {
            capacity: self.config.stream_buffer,
            policy: SlowConsumer::DropOldest,
        };
        let subscribed = self.hub.resume(&user_topic(user), since, config)?;
        self.counters.streams.fetch_add(1, Ordering::Relaxed);
        Ok(subscribed)
    }
}

/// A user id the index and the tables take: 1–128 bytes, no control characters.
fn check_user(user: &str) -> Result<(), TinderError> {
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(TinderError::Invalid(
            "user ids are 1–128 bytes without control characters".into(),
        ));
    }
    Ok(())
}

impl System for Tinder {
    type Settings = TinderSettings;

    const INFO: SystemInfo = SystemInfo {
        slug: "tinder",
        name: "Tinder",
        summary: "a mutual, nearest-first feed from a geo index with a rotating Bloom filter so no profile shows twice; swipes, and matches pushed to both over SSE",
        patterns: &[
            "Geohashing for Proximity Search",
            "Redis Geospatial Indexes",
            "Bloom Filter for Membership Testing",
            "Pagination & Cursor-based Fetching",
            "Server-Sent Events (SSE) for Server Push",
        ],
    };

    const DASHBOARD: &'static str = include_str!("../assets/tinder.html");

    async fn open(context: &Context, settings: TinderSettings) -> Result<Arc<Self>, OpenError> {
        let config = settings.resolve()?;
        girder_sql::migrate::run(&context.db, migrations()).await?;
        Self::open_with(context, config).await
    }

    fn router(self: &Arc<Self>) -> girder_system::Router {
        self.api_router()
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        api::document()
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let interval = Duration::from_millis(self.config.index_refresh_ms);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(interval) => {
                    if let Err(e) = self.refresh_index().await {
                        tracing::warn!(error = &e as &dyn std::error::Error, "tinder index refresh failed");
                    }
                }
            }
        }
        // Open streams end with a `closed` event instead of hanging the shutdown.
        self.hub.close();
        if let Some(broker) = &self.broker
            && let Err(e) = broker.flush().await
        {
            tracing::warn!(error = &e as &dyn std::error::Error, "tinder events not flushed");
        }
    }

    async fn ready(&self) -> Result<(), BoxError> {
        self.store.db().ping().await?;
        self.locations.index().len().await?;
        Ok(())
    }
}
