//! Sending work to shards: single-key operations to their owner, queries over every
//! shard gathered back into one ordered, paged answer, and salting for a key too hot
//! for one shard.
//!
//! The router is generic over what a shard is (`S`: a connection pool, a file, a
//! client) and over the [`ShardMap`] that places keys, so it holds no driver.
//!
//! **Scatter-gather with keyset pages.** [`Router::gather_page`] asks every shard for
//! its first `limit` rows after a cursor, in ascending key order, and merges them. The
//! merged first `limit` rows are exactly the global first `limit` rows: each shard's
//! share of them is among its own first `limit`. The cursor is the last row's key, so
//! it means the same thing on every shard and survives rows being added elsewhere.
//! Keys must be unique across shards (make the row id part of the key); for a
//! descending order, use [`std::cmp::Reverse`] keys.
//!
//! **Hot keys.** A key that one shard cannot carry is written under one of
//! [`salted`] variants (`key#0` … `key#n-1`), which land on different shards, and read
//! back from all of them ([`salts`]).

use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;

use crate::hash::{ShardId, ShardMap};

/// Why a router could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// The map places keys on a shard with no backend.
    #[error("shard {0:?} has no backend")]
    Missing(ShardId),
    /// A backend was given for a shard the map does not have.
    #[error("backend for {0:?}, which the shard map does not contain")]
    Unknown(ShardId),
}

/// A shard's failure during a scatter.
#[derive(Debug, thiserror::Error)]
#[error("shard {shard:?} failed")]
pub struct ScatterError<E: std::error::Error + 'static> {
    /// The shard.
    pub shard: ShardId,
    /// Its error.
    #[source]
    pub source: E,
}

/// One page of a gathered query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    /// Up to `limit` rows, in key order.
    pub rows: Vec<T>,
    /// The cursor for the next page; `None` when no shard has more.
    pub next: Option<K>,
}

/// Routes keys and queries to the backends of a [`ShardMap`]'s shards.
#[derive(Debug, Clone)]
pub struct Router<M, S> {
    map: M,
    shards: BTreeMap<ShardId, S>,
}

impl<M: ShardMap, S> Router<M, S> {
    /// A router sending `map`'s shards to `backends`.
    ///
    /// # Errors
    /// A shard of the map has no backend, or a backend names a shard the map lacks.
    pub fn new(
        map: M,
        backends: impl IntoIterator<Item = (ShardId, S)>,
    ) -> Result<Self, RouterError> {
        let shards: BTreeMap<ShardId, S> = backends.into_iter().collect();
        if let Some(&extra) = shards.keys().find(|id| !map.contains(**id)) {
            return Err(RouterError::Unknown(extra));
        }
        if let Some(missing) = map.shards().into_iter().find(|id| !shards.contains_key(id)) {
            return Err(RouterError::Missing(missing));
        }
        Ok(Self { map, shards })
    }

    /// The shard that owns `key`, and its backend.
    ///
    /// # Errors
    /// [`RouterError::Missing`] only if the map names a shard it did not list when
    /// the router was built (a `ShardMap` implementation that breaks its contract).
    pub fn route(&self, key: &[u8]) -> Result<(ShardId, &S), RouterError> {
        let id = self.map.shard_of(key);
        self.shards.get(&id).map(|backend| (id, backend)).ok_or(RouterError::Missing(id))
    }

    /// Every shard and its backend, in id order.
    pub fn shards(&self) -> impl Iterator<Item = (ShardId, &S)> {
        self.shards.iter().map(|(id, s)| (*id, s))
    }

    /// The backend of `shard`, if the router has that shard.
    #[must_use]
    pub fn backend(&self, shard: ShardId) -> Option<&S> {
        self.shards.get(&shard)
    }

    /// The shard map.
    #[must_use]
    pub const fn map(&self) -> &M {
        &self.map
    }

    /// Runs `query` on every shard at once; the answers in shard order.
    ///
    /// # Errors
    /// The first shard (in shard order) whose query failed.
    pub async fn scatter<'a, T, E, F, Fut>(
        &'a self,
        query: F,
    ) -> Result<Vec<(ShardId, T)>, ScatterError<E>>
    where
        E: std::error::Error + 'static,
        F: Fn(ShardId, &'a S) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'a,
    {
        let answers =
            futures_util::future::join_all(self.shards.iter().map(|(id, s)| query(*id, s))).await;
        self.shards
            .keys()
            .zip(answers)
            .map(|(id, answer)| {
                answer.map(|t| (*id, t)).map_err(|source| ScatterError { shard: *id, source })
            })
            .collect()
    }

    /// One page of rows over every shard, in ascending `key` order, after `after`.
    /// `query(shard, backend, after, limit)` must return that shard's first `limit`
    /// rows whose key is greater than `after` (all rows when `None`), in ascending
    /// key order.
    ///
    /// # Errors
    /// A shard's query failed.
    pub async fn gather_page<'a, T, K, E, F, Fut>(
        &'a self,
        after: Option<&'a K>,
        limit: usize,
        key: impl Fn(&T) -> K,
        query: F,
    ) -> Result<Page<T, K>, ScatterError<E>>
    where
        K: Ord,
        E: std::error::Error + 'static,
        F: Fn(ShardId, &'a S, Option<&'a K>, usize) -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>> + 'a,
    {
        let runs = self.scatter(|id, s| query(id, s, after, limit)).await?;
        let full = runs.iter().any(|(_, rows)| rows.len() >= limit);
        let total: usize = runs.iter().map(|(_, rows)| rows.len()).sum();
        let rows = merge_sorted(runs.into_iter().map(|(_, rows)| rows).collect(), &key, limit);
        // More may exist when a shard filled its share or the merge left rows out.
        let next = if limit > 0 && (full || total > limit) { rows.last().map(&key) } else { None };
        Ok(Page { rows, next })
    }
}

/// Merges runs each sorted by `key` into the first `limit` items overall, in order.
/// Equal keys keep the order of their runs.
pub fn merge_sorted<T, K: Ord>(runs: Vec<Vec<T>>, key: impl Fn(&T) -> K, limit: usize) -> Vec<T> {
    struct Head<K> {
        key: K,
        run: usize,
    }
    impl<K: Ord> PartialEq for Head<K> {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other) == std::cmp::Ordering::Equal
        }
    }
    impl<K: Ord> Eq for Head<K> {}
    impl<K: Ord> PartialOrd for Head<K> {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl<K: Ord> Ord for Head<K> {
        // Reversed: the heap pops the smallest key, then the earliest run.
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            other.key.cmp(&self.key).then(other.run.cmp(&self.run))
        }
    }
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<T>>> =
        runs.into_iter().map(|r| r.into_iter().peekable()).collect();
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (run, it) in iters.iter_mut().enumerate() {
        if let Some(first) = it.peek() {
            heap.push(Head { key: key(first), run });
        }
    }
    let mut out = Vec::with_capacity(limit.min(1 << 16));
    while out.len() < limit {
        let Some(Head { run, .. }) = heap.pop() else { break };
        let Some(item) = iters[run].next() else { continue };
        out.push(item);
        if let Some(next) = iters[run].peek() {
            heap.push(Head { key: key(next), run });
        }
    }
    out
}

/// The `i`-th salted form of a hot `key` (`key#i`).
#[must_use]
pub fn salted(key: &[u8], i: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 11);
    out.extend_from_slice(key);
    out.push(b'#');
    out.extend_from_slice(i.to_string().as_bytes());
    out
}

/// Every salted form of `key` for a fan-out of `n`: where a reader must look.
pub fn salts(key: &[u8], n: u32) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..n).map(move |i| salted(key, i))
}
