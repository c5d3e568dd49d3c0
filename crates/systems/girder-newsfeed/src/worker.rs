//! The background work: fan-out workers draining the queue, and the sweeper that
//! re-enqueues fan-out left outstanding (see [`crate::fanout`]).

use std::sync::Arc;
use std::time::Duration;

use girder_log::queue::Delivery;
use girder_system::Shutdown;

use crate::NewsFeed;
use crate::fanout::{Job, JobError};
use crate::graph::Fanout;

/// Followers read per page while fanning out.
const FOLLOWER_PAGE: u32 = 1_000;
/// How long an idle worker sleeps when nothing wakes it (a nack's delay, a job
/// another instance's sweeper put on this queue).
const IDLE: Duration = Duration::from_millis(100);
/// Posts one sweep re-enqueues at most.
const SWEEP_BATCH: u32 = 200;

/// Runs the workers and the sweeper until `shutdown`; a job in progress finishes.
pub(crate) async fn run(feed: Arc<NewsFeed>, shutdown: Shutdown) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..feed.config.workers {
        tasks.spawn(work(Arc::clone(&feed), shutdown.clone()));
    }
    tasks.spawn(sweep(Arc::clone(&feed), shutdown.clone()));
    while tasks.join_next().await.is_some() {}
}

async fn work(feed: Arc<NewsFeed>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let visibility = Duration::from_millis(feed.config.visibility_ms);
    loop {
        let taken = tokio::select! {
            () = &mut stop => return,
            taken = feed.jobs.take(feed.config.worker_batch, visibility) => taken,
        };
        match taken {
            Ok(deliveries) if deliveries.is_empty() => {
                tokio::select! {
                    () = &mut stop => return,
                    () = feed.jobs.idle(IDLE) => {}
                }
            }
            Ok(deliveries) => {
                for delivery in deliveries {
                    handle(&feed, delivery).await;
                }
            }
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "newsfeed: dequeue failed");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn handle(feed: &NewsFeed, delivery: Delivery) {
    let jobs = &feed.jobs;
    let receipt = delivery.receipt;
    let job = match Job::decode(&delivery.payload) {
        Ok(job) => job,
        Err(e) => {
            // Not a job: it dead-letters after its deliveries, for an operator to see.
            tracing::error!(error = &e as &dyn std::error::Error, id = %receipt.id, "newsfeed: undecodable job");
            let _ = jobs.nack(receipt, Duration::from_secs(1)).await;
            return;
        }
    };
    let outcome = match &job {
        Job::Fanout { post, author } => fan_out(feed, *post, author).await,
        Job::Retract { post, author } => retract(feed, *post, author).await,
        Job::Unfollow { follower, followee } => drop_author(feed, follower, followee).await,
        Job::Backfill { follower, followee } => backfill(feed, follower, followee).await,
    };
    let result = match outcome {
        Ok(()) => {
            metrics::counter!("girder_newsfeed_jobs_done_total", "job" => job.kind()).increment(1);
            jobs.ack(receipt).await
        }
        Err(e) => {
            metrics::counter!("girder_newsfeed_jobs_failed_total", "job" => job.kind())
                .increment(1);
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                job = job.kind(),
                attempt = receipt.attempt,
                "newsfeed: job failed; retrying"
            );
            let backoff = Duration::from_millis(100u64 << receipt.attempt.min(8));
            jobs.nack(receipt, backoff).await
        }
    };
    if let Err(e) = result {
        // A stale receipt: the job outlived its visibility and went to another
        // worker, which finishes it (every step repeats harmlessly).
        tracing::warn!(error = &e as &dyn std::error::Error, "newsfeed: settling a job failed");
    }
}

/// Everyone whose feed a post by `author` goes into: the author and their
/// followers, a page at a time.
async fn for_each_recipient_page<F, Fut>(
    feed: &NewsFeed,
    author: &str,
    mut f: F,
) -> Result<(), JobError>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), JobError>>,
{
    f(vec![author.to_owned()]).await?;
    let mut after: Option<String> = None;
    loop {
        let page = feed.graph.followers(author, after.as_deref(), FOLLOWER_PAGE).await?;
        let done = page.len() < FOLLOWER_PAGE as usize;
        after = page.last().cloned();
        if !page.is_empty() {
            f(page).await?;
        }
        if done {
            return Ok(());
        }
    }
}

async fn fan_out(feed: &NewsFeed, id: i64, author: &str) -> Result<(), JobError> {
    let Some(post) = feed.graph.post(id).await? else { return Ok(()) };
    let now = feed.now_ms();
    if post.deleted_ms.is_none() && post.fanout == Fanout::Push {
        let mut written = 0u64;
        for_each_recipient_page(feed, author, |owners| {
            written += owners.len() as u64;
            async move {
                feed.feeds.insert(&owners, id, author).await?;
                for owner in &owners {
                    feed.first_pages.invalidate(owner).await;
                }
                Ok(())
            }
        })
        .await?;
        metrics::counter!("girder_newsfeed_feed_entries_written_total").increment(written);
        let lag_ms = now.saturating_sub(post.created_ms).max(0);
        metrics::histogram!("girder_newsfeed_fanout_lag_seconds").record(lag_ms as f64 / 1e3);
    }
    feed.graph.fanout_done(id, now).await?;
    Ok(())
}

async fn retract(feed: &NewsFeed, id: i64, author: &str) -> Result<(), JobError> {
    for_each_recipient_page(feed, author, |owners| async move {
        feed.feeds.remove_post(&owners, id).await?;
        for owner in &owners {
            feed.first_pages.invalidate(owner).await;
        }
        Ok(())
    })
    .await
}

async fn drop_author(feed: &NewsFeed, follower: &str, followee: &str) -> Result<(), JobError> {
    // Followed again since: the entries are wanted.
    if !feed.graph.followed_among(follower, &[followee]).await?.is_empty() {
        return Ok(());
    }
    feed.feeds.remove_author(follower, followee).await?;
    feed.first_pages.invalidate(follower).await;
    Ok(())
}

async fn backfill(feed: &NewsFeed, follower: &str, followee: &str) -> Result<(), JobError> {
    // Unfollowed since: nothing to copy.
    if feed.graph.followed_among(follower, &[followee]).await?.is_empty() {
        return Ok(());
    }
    let posts = feed.graph.posts_by(followee, None, feed.config.backfill_posts).await?;
    let owner = [follower.to_owned()];
    for post in posts.iter().filter(|p| p.fanout == Fanout::Push) {
        feed.feeds.insert(&owner, post.id, followee).await?;
    }
    feed.first_pages.invalidate(follower).await;
    Ok(())
}

async fn sweep(feed: Arc<NewsFeed>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let interval = Duration::from_millis(feed.config.sweep_interval_ms);
    let grace = i64::try_from(feed.config.sweep_grace_ms).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = sweep_once(&feed, grace).await {
            tracing::warn!(error = &*e, "newsfeed: sweep failed");
        }
    }
}

/// Re-enqueues fan-out outstanding for longer than `grace_ms`; returns how many.
///
/// # Errors
/// The database or the queue failed.
pub async fn sweep_once(
    feed: &NewsFeed,
    grace_ms: i64,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let now = feed.now_ms();
    let claimed = feed
        .graph
        .claim_outstanding(now.saturating_sub(grace_ms), now, grace_ms, SWEEP_BATCH)
        .await?;
    for (post, author) in &claimed {
        feed.jobs.push(&Job::Fanout { post: *post, author: author.clone() }).await?;
    }
    if !claimed.is_empty() {
        metrics::counter!("girder_newsfeed_swept_total").increment(claimed.len() as u64);
    }
    Ok(claimed.len())
}
