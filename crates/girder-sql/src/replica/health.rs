//! One replica as the router sees it: its pool, what the last probe learned (health,
//! replay position, lag), and the gauges that export it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::lsn::Lsn;
use crate::Db;

/// How a replica stands, as of its last probe (or the last read that failed on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Not probed yet: no read goes to it.
    Unknown,
    /// Reachable, replaying, within the lag bound: reads go to it.
    Healthy,
    /// A connection or a probe failed: skipped until a probe succeeds.
    Down,
    /// Reachable but further behind the primary than `lag_bytes_max`: skipped until
    /// it catches up.
    TooFarBehind,
    /// Reachable but not in recovery (a primary, or a promoted replica whose history
    /// may have left the primary's): never read from.
    NotStandby,
}

/// What the router knows of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// `host:port/database` of the replica (never its credentials): the `replica`
    /// label of its metrics.
    pub label: String,
    /// Whether reads go to it, and if not, why.
    pub health: Health,
    /// The last WAL position it was seen to have replayed.
    pub replay_lsn: Option<Lsn>,
    /// Bytes of WAL the primary had written beyond `replay_lsn` at the last probe.
    pub lag_bytes: u64,
    /// Seconds since the replica replayed its last transaction, when it is behind at
    /// all (0 when it has replayed everything: an idle primary is not lag).
    pub lag_secs: f64,
    /// Whether replay is paused (`pg_wal_replay_pause()`): a paused replica still
    /// serves reads without a token, but no read waits for it.
    pub replay_paused: bool,
}

/// What one probe query returned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    in_recovery: bool,
    replay: Option<Lsn>,
    paused: bool,
    /// Seconds since the last replayed transaction's commit on the primary.
    last_xact_age_secs: Option<f64>,
}

/// One replica: its pool, its last known state, its gauges.
pub(super) struct Replica {
    pub(super) db: Db,
    pub(super) label: String,
    status: Mutex<ReplicaStatus>,
    /// Reads go to it (`Health::Healthy`); read on every routing decision.
    eligible: AtomicBool,
    /// Replay is paused: token reads do not wait for it.
    paused: AtomicBool,
    /// The highest replay position seen since the last probe (probes store, reads
    /// raise): a replica that shows a position has applied everything before it.
    replay: AtomicU64,
    lag_bytes_gauge: metrics::Gauge,
    lag_secs_gauge: metrics::Gauge,
    healthy_gauge: metrics::Gauge,
}

impl Replica {
    pub(super) fn new(db: Db, label: String) -> Self {
        let gauge = |name: &'static str| metrics::gauge!(name, "replica" => label.clone());
        let replica = Self {
            lag_bytes_gauge: gauge("girder_sql_replica_lag_bytes"),
            lag_secs_gauge: gauge("girder_sql_replica_lag_seconds"),
            healthy_gauge: gauge("girder_sql_replica_healthy"),
            status: Mutex::new(ReplicaStatus {
                label: label.clone(),
                health: Health::Unknown,
                replay_lsn: None,
                lag_bytes: 0,
                lag_secs: 0.0,
                replay_paused: false,
            }),
            db,
            label,
            eligible: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            replay: AtomicU64::new(0),
        };
        replica.healthy_gauge.set(0.0);
        replica
    }

    pub(super) fn eligible(&self) -> bool {
        self.eligible.load(Ordering::Acquire)
    }

    pub(super) fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The highest replay position known.
    pub(super) fn known_replay(&self) -> Lsn {
        Lsn(self.replay.load(Ordering::Acquire))
    }

    /// A read saw the replica at `lsn`; replay only moves forward while it runs.
    pub(super) fn observed(&self, lsn: Lsn) {
        self.replay.fetch_max(lsn.0, Ordering::AcqRel);
    }

    pub(super) fn status(&self) -> ReplicaStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplicaStatus> {
        // The status is plain data, rewritten whole: a panic mid-update cannot leave
        // it inconsistent in a way the next probe does not overwrite.
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection or a statement failed: skip the replica until a probe succeeds.
    pub(super) fn mark_down(&self) {
        self.set_health(Health::Down);
    }

    fn set_health(&self, health: Health) {
        let eligible = health == Health::Healthy;
        self.eligible.store(eligible, Ordering::Release);
        self.healthy_gauge.set(if eligible { 1.0 } else { 0.0 });
        self.lock().health = health;
    }

    /// Where the replica has replayed to, in one round trip; `None` on a server that
    /// is not in recovery.
    pub(super) async fn replay_lsn(&self) -> Result<Option<Lsn>, sqlx::Error> {
        let Db::Postgres(pool) = &self.db else { return Ok(None) };
        let text: Option<String> =
            sqlx::query_scalar("SELECT pg_last_wal_replay_lsn()::text").fetch_one(pool).await?;
        text.map(|t| t.parse::<Lsn>().map_err(|e| sqlx::Error::Decode(Box::new(e)))).transpose()
    }

    /// The monitor's question: in recovery? replayed to where? paused? how old is the
    /// last replayed transaction?
    pub(super) async fn probe(&self) -> Result<Probe, sqlx::Error> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(Probe {
                in_recovery: false,
                replay: None,
                paused: false,
                last_xact_age_secs: None,
            });
        };
        // pg_is_wal_replay_paused() raises on a server not in recovery; CASE keeps it
        // from running there.
        let (in_recovery, replay, paused, age): (bool, Option<String>, bool, Option<f64>) =
            sqlx::query_as(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
                        CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() \
                             ELSE false END, \
                        EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8",
            )
            .fetch_one(pool)
            .await?;
        let replay = replay
            .map(|t| t.parse::<Lsn>().map_err(|e| sqlx::Error::Decode(Box::new(e))))
            .transpose()?;
        Ok(Probe { in_recovery, replay, paused, last_xact_age_secs: age })
    }

    /// Records a probe's outcome against the primary's position `primary` (`None`:
    /// the primary could not be asked, so the lag figures keep their last values).
    pub(super) fn record(
        &self,
        probe: Result<Probe, sqlx::Error>,
        primary: Option<Lsn>,
        lag_bytes_max: u64,
    ) {
        let probe = match probe {
            Ok(probe) => probe,
            Err(error) => {
                tracing::debug!(replica = %self.label, %error, "replica probe failed");
                self.mark_down();
                return;
            }
        };
        let Some(replay) = probe.replay.filter(|_| probe.in_recovery) else {
            self.set_health(Health::NotStandby);
            return;
        };
        self.replay.store(replay.0, Ordering::Release);
        self.paused.store(probe.paused, Ordering::Relaxed);
        let mut status = self.lock();
        status.replay_lsn = Some(replay);
        status.replay_paused = probe.paused;
        if let Some(primary) = primary {
            status.lag_bytes = primary.bytes_after(replay);
            status.lag_secs = if status.lag_bytes == 0 {
                0.0
            } else {
                probe.last_xact_age_secs.unwrap_or(0.0).max(0.0)
            };
        }
        let health =
            if status.lag_bytes > lag_bytes_max { Health::TooFarBehind } else { Health::Healthy };
        #[allow(clippy::cast_precision_loss)] // a gauge: 2^53 bytes of lag is far beyond use
        self.lag_bytes_gauge.set(status.lag_bytes as f64);
        self.lag_secs_gauge.set(status.lag_secs);
        drop(status);
        self.set_health(health);
    }
}
