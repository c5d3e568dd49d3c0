//! Helpers for tests against the PostgreSQL streaming replica (`.ci/run` starts one on
//! port 5433). Pausing replay affects every user of the replica: tests that do it run
//! in the `postgres-replica` nextest group (`.config/nextest.toml`).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Replay paused on the replica until dropped: the guard resumes it even when an
/// assertion fails, so one failed test cannot leave the replica behind for the rest.
#[derive(Debug)]
pub struct Paused {
    url: String,
}

impl Paused {
    /// Pauses replay on `replica` (reached at `url`) and waits, bounded, until it has.
    ///
    /// # Panics
    /// The replica refuses, or replay does not pause within about ten seconds.
    pub async fn new(replica: &PgPool, url: &str) -> Self {
        let guard = Self { url: url.to_owned() };
        sqlx::query("SELECT pg_wal_replay_pause()").execute(replica).await.expect("pause");
        // The request takes effect at the next record boundary; wait for it, bounded.
        for _ in 0..1_000 {
            let state: String = sqlx::query_scalar("SELECT pg_get_wal_replay_pause_state()")
                .fetch_one(replica)
                .await
                .expect("pause state");
            if state == "paused" {
                return guard;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("replay did not pause");
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop cannot await, and may run while the test's runtime unwinds: resume on a
        // thread with its own runtime, and wait for it.
        let resumed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let pool = PgPoolOptions::new().max_connections(1).connect(&url).await?;
                sqlx::query("SELECT pg_wal_replay_resume()").execute(&pool).await?;
                pool.close().await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        match resumed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("resuming replay on {}: {e}", self.url),
            Err(_) => eprintln!("resuming replay on {}: the thread panicked", self.url),
        }
    }
}
