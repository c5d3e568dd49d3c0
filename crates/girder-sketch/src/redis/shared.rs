//! Per-instance sketches merged on read: each instance publishes its own sketch's
//! serialized form under its own key, and a reader fetches every instance's and merges
//! them locally.
//!
//! Keys, for sketch `name` and instance `i`:
//! - `{key_prefix}{{name}}:i:{i}` — instance `i`'s serialized sketch (`SET`, with
//!   `PX` when a TTL is configured);
//! - `{key_prefix}{{name}}:instances` — the set of instances that published (`SADD`).
//!
//! The braces make `name` the Redis Cluster hash tag, so a sketch's keys share a slot
//! and the reader's `MGET` works on a cluster too. A publish is one `MULTI`/`EXEC`
//! (sketch, set membership, and the set's expiry when a TTL is configured), so a reader
//! never sees an instance in the set whose first sketch is not written yet.
//!
//! An instance that stops publishing lingers until its key expires (configure a TTL
//! longer than the publish interval) or it calls [`SharedSketch::withdraw`]; a set
//! member whose key expired is skipped by readers. The set is bounded by the number of
//! instances that ever published within a TTL, and a read refuses to fetch more than
//! `instances_max` of them.

use std::marker::PhantomData;

use ::redis::aio::ConnectionManager;

use super::RedisSketchError;
use crate::error::ParamError;
use crate::mergeable::Mergeable;

/// The largest `instances_max`.
pub const INSTANCES_MAX: usize = 65_536;

/// Where a [`SharedSketch`] keeps its keys, and who this instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSketchConfig {
    /// Prefix of every Redis key (see the module docs). Default `girder:sketch:`.
    pub key_prefix: String,
    /// This instance's name, unique among the instances sharing a sketch; not empty.
    pub instance: String,
    /// When set, a published sketch (and the set of instances) expires this many
    /// milliseconds after the last publish. Default none.
    pub ttl_ms: Option<u64>,
    /// The most instances a read fetches and merges; a read finding more fails with
    /// [`RedisSketchError::TooManyInstances`]. In `1..=INSTANCES_MAX`, default 1,024.
    pub instances_max: usize,
}

impl SharedSketchConfig {
    /// The defaults, for the instance named `instance`.
    pub fn new(instance: impl Into<String>) -> Self {
        Self {
            key_prefix: "girder:sketch:".to_owned(),
            instance: instance.into(),
            ttl_ms: None,
            instances_max: 1_024,
        }
    }
}

/// Sketches of type `S` shared through Redis as per-instance sketches merged on read.
pub struct SharedSketch<S> {
    conn: ConnectionManager,
    config: SharedSketchConfig,
    sketch: PhantomData<fn() -> S>,
}

impl<S> Clone for SharedSketch<S> {
    fn clone(&self) -> Self {
        Self { conn: self.conn.clone(), config: self.config.clone(), sketch: PhantomData }
    }
}

impl<S> std::fmt::Debug for SharedSketch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSketch").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S: Mergeable> SharedSketch<S> {
    /// A store over `conn` for this instance. The instance name must not be empty and
    /// `instances_max` must be in `1..=INSTANCES_MAX`.
    pub fn new(conn: ConnectionManager, config: SharedSketchConfig) -> Result<Self, ParamError> {
        if config.instance.is_empty() {
            return Err(ParamError::OutOfRange {
                name: "instance (length)",
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        if !(1..=INSTANCES_MAX).contains(&config.instances_max) {
            return Err(ParamError::OutOfRange {
                name: "instances_max",
                value: config.instances_max as u64,
                min: 1,
                max: INSTANCES_MAX as u64,
            });
        }
        Ok(Self { conn, config, sketch: PhantomData })
    }

    /// The Redis key holding `instance`'s sketch `name`.
    pub fn instance_key(&self, name: &str, instance: &str) -> String {
        format!("{}{{{name}}}:i:{instance}", self.config.key_prefix)
    }

    /// The Redis key of the set of instances that published sketch `name`.
    pub fn instances_key(&self, name: &str) -> String {
        format!("{}{{{name}}}:instances", self.config.key_prefix)
    }

    /// Replaces this instance's published sketch `name` with `sketch` (the instance's
    /// whole sketch, not a delta: readers merge the latest of every instance).
    pub async fn publish(&self, name: &str, sketch: &S) -> Result<(), RedisSketchError> {
        let key = self.instance_key(name, &self.config.instance);
        let set = self.instances_key(name);
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let set_cmd = pipe.cmd("SET").arg(&key).arg(sketch.to_bytes());
        if let Some(ttl_ms) = self.config.ttl_ms {
            set_cmd.arg("PX").arg(ttl_ms);
        }
        set_cmd.ignore();
        pipe.cmd("SADD").arg(&set).arg(&self.config.instance).ignore();
        if let Some(ttl_ms) = self.config.ttl_ms {
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The merge of every instance's latest sketch `name`, or `None` when no instance
    /// has a sketch there. Instances are merged in name order. A sketch that does not
    /// decode or merge fails the read with the instance named; nothing is repaired.
    pub async fn read(&self, name: &str) -> Result<Option<S>, RedisSketchError> {
        let mut conn = self.conn.clone();
        let mut instances: Vec<String> =
            ::redis::cmd("SMEMBERS").arg(self.instances_key(name)).query_async(&mut conn).await?;
        if instances.len() > self.config.instances_max {
            return Err(RedisSketchError::TooManyInstances {
                found: instances.len(),
                max: self.config.instances_max,
            });
        }
        if instances.is_empty() {
            return Ok(None);
        }
        instances.sort_unstable();
        let mut mget = ::redis::cmd("MGET");
        for instance in &instances {
            mget.arg(self.instance_key(name, instance));
        }
        let frames: Vec<Option<Vec<u8>>> = mget.query_async(&mut conn).await?;
        let mut merged: Option<S> = None;
        for (instance, frame) in instances.iter().zip(frames) {
            // Expired or withdrawn between SMEMBERS and MGET, or never written.
            let Some(bytes) = frame else { continue };
            let sketch = S::from_bytes(&bytes).map_err(|source| RedisSketchError::Decode {
                instance: instance.clone(),
                source,
            })?;
            match &mut merged {
                None => merged = Some(sketch),
                Some(acc) => acc.merge(&sketch).map_err(|source| RedisSketchError::Merge {
                    instance: instance.clone(),
                    source,
                })?,
            }
        }
        Ok(merged)
    }

    /// Removes this instance's sketch `name` and its set membership, so readers stop
    /// counting it.
    pub async fn withdraw(&self, name: &str) -> Result<(), RedisSketchError> {
        let mut conn = self.conn.clone();
        ::redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.instance_key(name, &self.config.instance))
            .ignore()
            .cmd("SREM")
            .arg(self.instances_key(name))
            .arg(&self.config.instance)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
