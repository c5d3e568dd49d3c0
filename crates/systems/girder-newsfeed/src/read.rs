//! Reading a feed: the owner's materialized entries (push) merged with the pull
//! posts of whom they follow, newest first, with what fan-out on write leaves
//! behind filtered out — entries of deleted posts (tombstones) and of authors the
//! reader no longer follows. A post is either push or pull, so the merge never
//! shows one twice.

use girder_sql::replica::{ReadRouter, WriteToken};
use serde::{Deserialize, Serialize};

use crate::feeds::{FeedError, Feeds};
use crate::graph::{Fanout, Graph, GraphError, Post};

/// Where a feed read's graph queries run. The pull query goes through the read
/// router — to a PostgreSQL replica when the server has one, and one that has
/// replayed the reader's own last write when `token` names it (read-your-writes: a
/// reader who just followed sees the followee's posts) — while pushed entries are
/// checked against tombstones and follows on the primary, so a deleted post or an
/// unfollowed author never reappears from a lagging replica.
#[derive(Debug, Clone)]
pub struct GraphReads {
    /// The graph on the primary.
    pub graph: Graph,
    /// The instance's read router (primary only on SQLite or without replicas).
    pub router: ReadRouter,
    /// The reader's last write this instance knows of; `None`: any replica will do.
    pub token: Option<WriteToken>,
}

impl GraphReads {
    async fn routed<T, F, Fut>(&self, read: F) -> Result<T, GraphError>
    where
        F: Fn(Graph) -> Fut,
        Fut: std::future::Future<Output = Result<T, GraphError>>,
    {
        let run = |db| read(Graph::new(db));
        let answer = match self.token {
            Some(token) => self.router.read_after(token, run).await?,
            None => self.router.read(run).await?,
        };
        Ok(answer.value)
    }

    async fn pull_posts_for(
        &self,
        reader: &str,
        after: i64,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Post>, GraphError> {
        self.routed(|g| async move { g.pull_posts_for(reader, after, before, limit).await }).await
    }
}

/// A feed item: the post and how it got into the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The post.
    pub post: Post,
    /// `Push`: materialized by fan-out on write; `Pull`: merged in at read.
    pub source: Fanout,
}

/// One page of a feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Newest first.
    pub items: Vec<Item>,
    /// The id to read below for the next page; `None` when the feed is exhausted.
    pub next_before: Option<i64>,
}

/// Why a feed could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The graph database failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A feed shard failed.
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// How many rounds of over-fetching a page may take when many entries are filtered
/// out; after that the page is returned short, with a cursor to continue.
const ROUNDS_MAX: usize = 8;

/// Reads `reader`'s feed: items with `after < id < before`, newest first, at most
/// `limit`.
///
/// # Errors
/// A store failed.
pub async fn page(
    graph: &GraphReads,
    feeds: &Feeds,
    reader: &str,
    after: i64,
    before: i64,
    limit: u32,
) -> Result<Page, ReadError> {
    let want = limit as usize;
    let mut items: Vec<Item> = Vec::with_capacity(want);
    let mut cursor = before;
    for _ in 0..ROUNDS_MAX {
        let need = (want - items.len()) as u32;
        // Over-fetch a little: some entries may be filtered out.
        let fetch = need.saturating_add(need / 2).max(4);
        // The reader's shard and the graph answer at once.
        let (pushed, pulled) = tokio::join!(
            feeds.page(reader, after, cursor, fetch),
            graph.pull_posts_for(reader, after, cursor, fetch)
        );
        let (pushed, pulled) = (pushed?, pulled?);
        let pushed_full = pushed.len() == fetch as usize;
        let pulled_full = pulled.len() == fetch as usize;
        // Merge both runs newest first; keep the ids examined this round.
        let mut merged: Vec<Candidate> = Vec::with_capacity(pushed.len() + pulled.len());
        merged.extend(pushed.into_iter().map(|e| Candidate::Push(e.post_id)));
        merged.extend(pulled.into_iter().map(Candidate::Pull));
        merged.sort_by_key(|c| std::cmp::Reverse(c.id()));
        // Beyond the shorter full run's last id, the other run may be missing rows.
        let mut horizon = after;
        if pushed_full || pulled_full {
            let last_push = merged.iter().filter(|c| c.is_push()).map(Candidate::id).min();
            let last_pull = merged.iter().filter(|c| !c.is_push()).map(Candidate::id).min();
            horizon = match (pushed_full, pulled_full) {
                (true, true) => last_push.max(last_pull).unwrap_or(after),
                (true, false) => last_push.unwrap_or(after),
                (false, true) => last_pull.unwrap_or(after),
                (false, false) => after,
            };
        }
        merged.retain(|c| c.id() >= horizon.max(after + 1));
        let examined_to = merged.last().map(Candidate::id);
        // Deleted posts and unfollowed authors' pushed entries are skipped: one query
        // on the primary, which holds the latest tombstones and follows.
        let push_ids: Vec<i64> = merged
            .iter()
            .filter_map(|c| if let Candidate::Push(id) = c { Some(*id) } else { None })
            .collect();
        let live = graph.graph.visible_posts(reader, &push_ids).await?;
        for candidate in merged {
            if items.len() == want {
                break;
            }
            match candidate {
                Candidate::Push(id) => {
                    if let Some(post) = live.iter().find(|p| p.id == id) {
                        items.push(Item { post: post.clone(), source: Fanout::Push });
                    }
                }
                Candidate::Pull(post) => items.push(Item { post, source: Fanout::Pull }),
            }
        }
        let exhausted = !pushed_full && !pulled_full;
        if items.len() == want {
            let next_before = items.last().map(|i| i.post.id);
            return Ok(Page { items, next_before });
        }
        if exhausted {
            return Ok(Page { items, next_before: None });
        }
        match examined_to {
            Some(id) => cursor = id,
            None => cursor = horizon.max(after + 1),
        }
    }
    let next_before = Some(cursor);
    Ok(Page { items, next_before })
}

/// An entry before filtering.
enum Candidate {
    Push(i64),
    Pull(Post),
}

impl Candidate {
    fn id(&self) -> i64 {
        match self {
            Self::Push(id) => *id,
            Self::Pull(post) => post.id,
        }
    }

    const fn is_push(&self) -> bool {
        matches!(self, Self::Push(..))
    }
}
