//! News Feed's HTTP surface: request and response shapes with their limits,
//! handlers, and the one place its errors become problems.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::graph::{Fanout, Post, User};
use crate::read::Item;
use crate::{FeedOpError, FollowOutcome, NewsFeed};
use girder_http::cursor::CursorError;
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;

/// The OpenAPI description of News Feed's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(create_post, get_post, delete_post, list_users, get_user, user_posts, follow,
          unfollow, list_follows, read_feed, new_since, queue_stats, dead_letters, redrive),
    components(schemas(NewPostRequest, PostView, PostPage, UserView, UserPage, FollowView,
                       FollowPage, FeedItemView, FeedPage, NewSinceView, FanoutQueueView, ShardView,
                       DeadLetterView, Source, Problem)),
    tags((name = "newsfeed", description = "News Feed: posts, follows and a hybrid fan-out home feed"))
)]
pub struct NewsFeedApi;

/// Longest post, in characters.
const BODY_CHARS_MAX: usize = 2_000;
/// Longest user id, in bytes.
const USER_ID_MAX: usize = 128;
/// The largest page a listing returns.
const PAGE_LIMIT_MAX: u32 = 100;
/// The most new items `GET /feed/new` counts.
const NEW_COUNT_CAP: u32 = 100;
const FEED_SCOPE: &str = "newsfeed.feed";
const USERS_SCOPE: &str = "newsfeed.users";
const FOLLOWS_SCOPE: &str = "newsfeed.follows";
const POSTS_SCOPE: &str = "newsfeed.posts";

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPostRequest {
    /// The text, 1–2,000 characters, not all spaces; no control characters but
    /// newlines.
    #[schema(example = "Shipped the feed today.")]
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0009\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub body: String,
}

/// How a post reaches followers' feeds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Fanned out on write into each follower's feed.
    Push,
    /// Merged into followers' feeds at read time.
    Pull,
}

impl From<Fanout> for Source {
    fn from(f: Fanout) -> Self {
        match f {
            Fanout::Push => Self::Push,
            Fanout::Pull => Self::Pull,
        }
    }
}

/// A post.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostView {
    /// Its id; ids increase with creation.
    pub id: i64,
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub body: String,
    /// When it was posted (RFC 3339).
    pub created_at: String,
    /// How it reaches followers: `push` below the follower threshold, `pull` above.
    pub fanout: Source,
}

impl From<Post> for PostView {
    fn from(p: Post) -> Self {
        Self {
            id: p.id,
            author: p.author,
            body: p.body,
            created_at: rfc3339(p.created_ms),
            fanout: p.fanout.into(),
        }
    }
}

/// A page of posts, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostPage {
    /// The posts on this page.
    pub items: Vec<PostView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// The user's id.
    pub id: String,
    /// How many follow them.
    pub followers: i64,
    /// How many they follow.
    pub following: i64,
    /// How their next post would reach followers.
    pub fanout: Source,
}

/// A page of users, in id order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// The users on this page.
    pub items: Vec<UserView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A follow.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FollowView {
    /// Who follows.
    pub follower: String,
    /// Whom.
    pub followee: String,
    /// `false` when the follow already existed.
    pub created: bool,
}

/// A page of whom the caller follows, in id order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FollowPage {
    /// User ids.
    pub items: Vec<String>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A feed item.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedItemView {
    /// The post.
    pub post: PostView,
    /// `push`: it was written into this feed by fan-out; `pull`: merged in at read.
    pub source: Source,
}

impl From<Item> for FeedItemView {
    fn from(i: Item) -> Self {
        Self { post: i.post.into(), source: i.source.into() }
    }
}

/// A page of the caller's home feed, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedPage {
    /// The items on this page.
    pub items: Vec<FeedItemView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// How many items arrived above a post the client has.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewSinceView {
    /// New items, counted up to 100.
    pub count: u32,
    /// Whether there are more than `count`.
    pub more: bool,
}

/// One feed shard's size.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShardView {
    /// The shard.
    pub shard: u32,
    /// Feed entries it holds.
    pub entries: i64,
}

/// The fan-out queue of this instance, the outbox and the shards.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FanoutQueueView {
    /// Jobs waiting.
    pub ready: usize,
    /// Jobs taken by a worker and not yet done.
    pub in_flight: usize,
    /// Jobs that failed every delivery.
    pub dead: usize,
    /// Push posts whose fan-out is not complete (every instance's).
    pub outstanding_posts: i64,
    /// The follower count at which authors switch from push to pull.
    pub push_threshold: i64,
    /// Entries per feed shard.
    pub shards: Vec<ShardView>,
}

/// A job that failed every delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// The message id (pass to redrive).
    pub id: u64,
    /// Deliveries it had.
    pub attempts: u32,
    /// The job, as JSON (or its bytes as text if it is not JSON).
    pub job: serde_json::Value,
}

/// Paging parameters of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Where the count of new items starts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SinceQuery {
    /// The newest post id the client shows (0: count from the start).
    #[param(minimum = 0)]
    pub since: i64,
}

/// Everything that can go wrong in News Feed, mapped to a problem in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A field broke its rule.
    #[error("{0}")]
    Invalid(String),
    /// A user id is malformed.
    #[error("user id must be 1 to {USER_ID_MAX} characters of A-Z a-z 0-9 . _ @ : -")]
    UserId,
    /// Following oneself.
    #[error("a user cannot follow themself")]
    FollowSelf,
    /// No such user.
    #[error("no user {0:?}")]
    UnknownUser(String),
    /// No such post (or it was deleted).
    #[error("no post with id {0}")]
    UnknownPost(i64),
    /// The post is someone else's.
    #[error("post {0} belongs to another user")]
    NotAuthor(i64),
    /// No such dead letter.
    #[error("no dead letter with id {0}")]
    UnknownDeadLetter(u64),
    /// A page cursor was malformed, forged or from another list.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// The page size is out of range.
    #[error("limit must be 1 to {PAGE_LIMIT_MAX}, got {0}")]
    Limit(u32),
    /// A store or the queue failed.
    #[error(transparent)]
    Store(#[from] FeedOpError),
}

impl From<crate::graph::GraphError> for ErrorKind {
    fn from(e: crate::graph::GraphError) -> Self {
        Self::Store(e.into())
    }
}

impl From<crate::feeds::FeedError> for ErrorKind {
    fn from(e: crate::feeds::FeedError) -> Self {
        Self::Store(FeedOpError::Read(e.into()))
    }
}

impl From<girder_log::queue::QueueError> for ErrorKind {
    fn from(e: girder_log::queue::QueueError) -> Self {
        Self::Store(e.into())
    }
}

impl IntoResponse for ErrorKind {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let problem = match &self {
            Self::Invalid(_) => Problem::new(unprocessable, "invalid-request", "Invalid request"),
            Self::UserId => Problem::new(unprocessable, "invalid-user-id", "Invalid user id"),
            Self::FollowSelf => {
                Problem::new(unprocessable, "cannot-follow-self", "Cannot follow yourself")
            }
            Self::UnknownUser(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-user", "Unknown user")
            }
            Self::UnknownPost(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-post", "Unknown post")
            }
            Self::NotAuthor(_) => {
                Problem::new(StatusCode::FORBIDDEN, "not-your-post", "Not your post")
            }
            Self::UnknownDeadLetter(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-dead-letter", "Unknown dead letter")
            }
            Self::Cursor(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor")
            }
            Self::Limit(_) => Problem::new(unprocessable, "invalid-limit", "Invalid limit"),
            Self::Store(_) => {
                tracing::error!(
                    error = &self as &dyn std::error::Error,
                    "newsfeed backend failure"
                );
                return Problem::unavailable("the feed store is unavailable; retry later")
                    .into_response();
            }
        };
        problem.detail(detail).into_response()
    }
}

type Result<T, E = ErrorKind> = std::result::Result<T, E>;

impl NewsFeed {
    /// The API routes, to be nested at `/api/newsfeed`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/posts", post(create_post))
            .route("/posts/{id}", get(get_post).delete(delete_post))
            .route("/users", get(list_users))
            .route("/users/{id}", get(get_user))
            .route("/users/{id}/posts", get(user_posts))
            .route("/follows", get(list_follows))
            .route("/follows/{id}", put(follow).delete(unfollow))
            .route("/feed", get(read_feed))
            .route("/feed/new", get(new_since))
            .route("/queue", get(queue_stats))
            .route("/queue/dead", get(dead_letters))
            .route("/queue/dead/{id}/redrive", post(redrive))
            .with_state(Arc::clone(self))
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn page_limit(limit: Option<u32>) -> Result<u32> {
    let limit = limit.unwrap_or(20);
    if (1..=PAGE_LIMIT_MAX).contains(&limit) { Ok(limit) } else { Err(ErrorKind::Limit(limit)) }
}

fn check_user_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= USER_ID_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@:-".contains(&b));
    if ok { Ok(()) } else { Err(ErrorKind::UserId) }
}

fn check_body(body: &str) -> Result<()> {
    let chars = body.chars().count();
    if chars == 0 || chars > BODY_CHARS_MAX || body.trim().is_empty() {
        return Err(ErrorKind::Invalid(format!(
            "body must be 1 to {BODY_CHARS_MAX} characters, not all spaces"
        )));
    }
    if body.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ErrorKind::Invalid(
            "body must not contain control characters other than newlines".to_owned(),
        ));
    }
    Ok(())
}

fn user_view(feed: &NewsFeed, u: User) -> UserView {
    let fanout =
        if u.followers >= feed.config.push_threshold { Source::Pull } else { Source::Push };
    UserView { id: u.id, followers: u.followers, following: u.following, fanout }
}

/// Post as the caller. Below the follower threshold the post is fanned out to
/// followers' feeds in the background (its job is durable before the answer); above
/// it, followers merge it in when they read.
#[utoipa::path(
    post,
    path = "/api/newsfeed/posts",
    tag = "newsfeed",
    request_body = NewPostRequest,
    responses(
        (status = 201, description = "Posted", body = PostView),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_post(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Json(request): Json<NewPostRequest>,
) -> Result<Response> {
    check_body(&request.body)?;
    check_user_id(&caller.id)?;
    let post = feed.post(&caller.id, &request.body).await?;
    Ok((StatusCode::CREATED, axum::Json(PostView::from(post))).into_response())
}

/// A post (deleted posts are gone).
#[utoipa::path(
    get,
    path = "/api/newsfeed/posts/{id}",
    tag = "newsfeed",
    params(("id" = i64, Path, description = "Post id")),
    responses(
        (status = 200, description = "The post", body = PostView),
        (status = 400, description = "Id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deleted post", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_post(
    State(feed): State<Arc<NewsFeed>>,
    Path(id): Path<i64>,
) -> Result<axum::Json<PostView>> {
    match feed.graph.post(id).await? {
        Some(post) if post.deleted_ms.is_none() => Ok(axum::Json(post.into())),
        _ => Err(ErrorKind::UnknownPost(id)),
    }
}

/// Delete one's post: it leaves every feed at once.
#[utoipa::path(
    delete,
    path = "/api/newsfeed/posts/{id}",
    tag = "newsfeed",
    params(("id" = i64, Path, description = "Post id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Someone else's post", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deleted post", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_post(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    match feed.graph.post(id).await? {
        Some(post) if post.deleted_ms.is_none() => {
            if post.author != caller.id && !caller.is_operator() {
                return Err(ErrorKind::NotAuthor(id));
            }
        }
        _ => return Err(ErrorKind::UnknownPost(id)),
    }
    feed.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Users, in id order (a caller becomes a user on their first call).
#[utoipa::path(
    get,
    path = "/api/newsfeed/users",
    tag = "newsfeed",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_users(
    State(feed): State<Arc<NewsFeed>>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<UserPage>> {
    let limit = page_limit(query.limit)?;
    let after: Option<String> =
        query.cursor.as_deref().map(|c| feed.cursors.decode(USERS_SCOPE, c)).transpose()?;
    let users = feed.graph.users(after.as_deref(), limit).await?;
    let next_cursor = match users.last() {
        Some(last) if users.len() == limit as usize => {
            Some(feed.cursors.encode(USERS_SCOPE, &last.id))
        }
        _ => None,
    };
    Ok(axum::Json(UserPage {
        items: users.into_iter().map(|u| user_view(&feed, u)).collect(),
        next_cursor,
    }))
}

/// A user's counts.
#[utoipa::path(
    get,
    path = "/api/newsfeed/users/{id}",
    tag = "newsfeed",
    params(("id" = String, Path, description = "User id: 1–128 characters of `A-Z a-z 0-9 . _ @ : -`", pattern = r"^[A-Za-z0-9._@:-]{1,128}$")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "Unknown user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed user id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_user(
    State(feed): State<Arc<NewsFeed>>,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>> {
    check_user_id(&id)?;
    let user = feed.graph.user(&id).await?.ok_or(ErrorKind::UnknownUser(id))?;
    Ok(axum::Json(user_view(&feed, user)))
}

/// A user's posts, newest first.
#[utoipa::path(
    get,
    path = "/api/newsfeed/users/{id}/posts",
    tag = "newsfeed",
    params(("id" = String, Path, description = "User id: 1–128 characters of `A-Z a-z 0-9 . _ @ : -`", pattern = r"^[A-Za-z0-9._@:-]{1,128}$"), PageQuery),
    responses(
        (status = 200, description = "A page of posts", body = PostPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed user id or limit out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn user_posts(
    State(feed): State<Arc<NewsFeed>>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<PostPage>> {
    check_user_id(&id)?;
    let limit = page_limit(query.limit)?;
    let scope = format!("{POSTS_SCOPE}.{id}");
    let before: Option<i64> =
        query.cursor.as_deref().map(|c| feed.cursors.decode(&scope, c)).transpose()?;
    if feed.graph.user(&id).await?.is_none() {
        return Err(ErrorKind::UnknownUser(id));
    }
    let posts = feed.graph.posts_by(&id, before, limit).await?;
    let next_cursor = match posts.last() {
        Some(last) if posts.len() == limit as usize => Some(feed.cursors.encode(&scope, &last.id)),
        _ => None,
    };
    Ok(axum::Json(PostPage { items: posts.into_iter().map(PostView::from).collect(), next_cursor }))
}

/// Follow a user: their new posts enter the caller's feed, and their recent ones are
/// copied in the background. Following again changes nothing.
#[utoipa::path(
    put,
    path = "/api/newsfeed/follows/{id}",
    tag = "newsfeed",
    params(("id" = String, Path, description = "The user to follow: 1–128 characters of `A-Z a-z 0-9 . _ @ : -`", pattern = r"^[A-Za-z0-9._@:-]{1,128}$")),
    responses(
        (status = 200, description = "Following", body = FollowView),
        (status = 404, description = "Unknown user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed user id, or oneself", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn follow(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<FollowView>> {
    check_user_id(&id)?;
    check_user_id(&caller.id)?;
    if id == caller.id {
        return Err(ErrorKind::FollowSelf);
    }
    let created = match feed.follow(&caller.id, &id).await? {
        FollowOutcome::Followed => true,
        FollowOutcome::AlreadyFollowing => false,
        FollowOutcome::UnknownUser => return Err(ErrorKind::UnknownUser(id)),
    };
    Ok(axum::Json(FollowView { follower: caller.id, followee: id, created }))
}

/// Stop following a user: their posts leave the caller's feed at once. Unfollowing
/// someone not followed changes nothing.
#[utoipa::path(
    delete,
    path = "/api/newsfeed/follows/{id}",
    tag = "newsfeed",
    params(("id" = String, Path, description = "The user to unfollow: 1–128 characters of `A-Z a-z 0-9 . _ @ : -`", pattern = r"^[A-Za-z0-9._@:-]{1,128}$")),
    responses(
        (status = 204, description = "Not following"),
        (status = 422, description = "Malformed user id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn unfollow(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    check_user_id(&id)?;
    feed.unfollow(&caller.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whom the caller follows, in id order.
#[utoipa::path(
    get,
    path = "/api/newsfeed/follows",
    tag = "newsfeed",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of followed users", body = FollowPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_follows(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<FollowPage>> {
    let limit = page_limit(query.limit)?;
    let scope = format!("{FOLLOWS_SCOPE}.{}", caller.id);
    let after: Option<String> =
        query.cursor.as_deref().map(|c| feed.cursors.decode(&scope, c)).transpose()?;
    let items = feed.graph.following(&caller.id, after.as_deref(), limit).await?;
    let next_cursor = match items.last() {
        Some(last) if items.len() == limit as usize => Some(feed.cursors.encode(&scope, last)),
        _ => None,
    };
    Ok(axum::Json(FollowPage { items, next_cursor }))
}

/// The caller's home feed, newest first: their own posts and those of whom they
/// follow, pushed and pulled merged. The first page may be up to the cache's TTL
/// behind a pulled post; it never shows a deleted one.
#[utoipa::path(
    get,
    path = "/api/newsfeed/feed",
    tag = "newsfeed",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the feed", body = FeedPage),
        (status = 400, description = "Invalid cursor (malformed, or another user's feed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn read_feed(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<FeedPage>> {
    let limit = page_limit(query.limit)?;
    let scope = format!("{FEED_SCOPE}.{}", caller.id);
    let before: Option<i64> =
        query.cursor.as_deref().map(|c| feed.cursors.decode(&scope, c)).transpose()?;
    if check_user_id(&caller.id).is_ok() {
        feed.touch(&caller.id).await?;
    }
    let page = feed.feed(&caller.id, before, limit).await?;
    let next_cursor = page.next_before.map(|b| feed.cursors.encode(&scope, &b));
    Ok(axum::Json(FeedPage {
        items: page.items.into_iter().map(FeedItemView::from).collect(),
        next_cursor,
    }))
}

/// How many feed items are newer than the post the client shows at the top.
#[utoipa::path(
    get,
    path = "/api/newsfeed/feed/new",
    tag = "newsfeed",
    params(SinceQuery),
    responses(
        (status = 200, description = "The count", body = NewSinceView),
        (status = 400, description = "Unparsable query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Negative id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn new_since(
    State(feed): State<Arc<NewsFeed>>,
    caller: Caller,
    Query(query): Query<SinceQuery>,
) -> Result<axum::Json<NewSinceView>> {
    if query.since < 0 {
        return Err(ErrorKind::Invalid(format!("since must be at least 0, got {}", query.since)));
    }
    let (count, more) = feed.new_since(&caller.id, query.since, NEW_COUNT_CAP).await?;
    Ok(axum::Json(NewSinceView { count, more }))
}

/// This instance's fan-out queue, the outbox and the shards.
#[utoipa::path(
    get,
    path = "/api/newsfeed/queue",
    tag = "newsfeed",
    responses(
        (status = 200, description = "Depths", body = FanoutQueueView),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn queue_stats(
    State(feed): State<Arc<NewsFeed>>,
    _operator: Operator,
) -> Result<axum::Json<FanoutQueueView>> {
    let stats = feed.jobs.stats().await?;
    let outstanding_posts = feed.graph.outstanding().await?;
    let shards = feed
        .feeds
        .counts()
        .await?
        .into_iter()
        .map(|(shard, entries)| ShardView { shard, entries })
        .collect();
    Ok(axum::Json(FanoutQueueView {
        ready: stats.ready,
        in_flight: stats.in_flight,
        dead: stats.dead,
        outstanding_posts,
        push_threshold: feed.config.push_threshold,
        shards,
    }))
}

/// Jobs that failed every delivery, oldest first.
#[utoipa::path(
    get,
    path = "/api/newsfeed/queue/dead",
    tag = "newsfeed",
    responses(
        (status = 200, description = "Dead letters", body = Vec<DeadLetterView>),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn dead_letters(
    State(feed): State<Arc<NewsFeed>>,
    _operator: Operator,
) -> Result<axum::Json<Vec<DeadLetterView>>> {
    let dead = feed.jobs.dead_letters().await?;
    Ok(axum::Json(
        dead.into_iter()
            .map(|d| DeadLetterView {
                id: d.id.0,
                attempts: d.attempts,
                job: serde_json::from_slice(&d.payload).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&d.payload).into_owned())
                }),
            })
            .collect(),
    ))
}

/// Put a dead letter back on the queue.
#[utoipa::path(
    post,
    path = "/api/newsfeed/queue/dead/{id}/redrive",
    tag = "newsfeed",
    params(("id" = u64, Path, description = "Dead letter id")),
    responses(
        (status = 204, description = "Queued again"),
        (status = 400, description = "Id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn redrive(
    State(feed): State<Arc<NewsFeed>>,
    _operator: Operator,
    Path(id): Path<u64>,
) -> Result<StatusCode> {
    let known = feed.jobs.dead_letters().await?.iter().any(|d| d.id.0 == id);
    if !known {
        return Err(ErrorKind::UnknownDeadLetter(id));
    }
    feed.jobs.redrive(girder_log::queue::MessageId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI document, with links from creating operations to those that take
/// what they created.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    use girder_http::openapi::link_created_ids;
    let mut doc = <NewsFeedApi as OpenApi>::openapi();
    link_created_ids(&mut doc, "/api/newsfeed/posts", &["get_post", "delete_post"]);
    doc
}
