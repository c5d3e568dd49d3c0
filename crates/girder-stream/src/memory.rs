//! A committer in memory: checkpoints and an upserting sink behind one lock, so a
//! commit is atomic. For tests, the lab, and pipelines whose results need not
//! outlive the process.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use parking_lot::Mutex;

use crate::operator::{Emission, EmissionKind};
use crate::runner::{Checkpoint, Committer};
use crate::window::Window;

/// A commit under an epoch that is not the partition's current one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition {partition} is held under epoch {current}, not {offered}")]
pub struct StaleEpoch {
    /// The partition.
    pub partition: u32,
    /// The epoch offered.
    pub offered: u64,
    /// The partition's epoch.
    pub current: u64,
}

#[derive(Debug)]
struct Inner<K, A> {
    checkpoints: HashMap<u32, Checkpoint>,
    epochs: HashMap<u32, u64>,
    sink: BTreeMap<(Window, K), A>,
    commits: u64,
}

/// Checkpoints and an upserting sink in memory. See the [module docs](self).
#[derive(Debug)]
pub struct MemoryCommitter<K, A> {
    inner: Mutex<Inner<K, A>>,
}

impl<K: Ord + Clone, A: Clone> Default for MemoryCommitter<K, A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone, A: Clone> MemoryCommitter<K, A> {
    /// Empty, every partition at epoch 0.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                checkpoints: HashMap::new(),
                epochs: HashMap::new(),
                sink: BTreeMap::new(),
                commits: 0,
            }),
        }
    }

    /// Moves `partition` to a new epoch and returns it: commits under older epochs
    /// are refused from now on.
    pub fn fence(&self, partition: u32) -> u64 {
        let mut inner = self.inner.lock();
        let epoch = inner.epochs.entry(partition).or_insert(0);
        *epoch += 1;
        *epoch
    }

    /// The sink's contents: each window's last value per key.
    #[must_use]
    pub fn results(&self) -> BTreeMap<(Window, K), A> {
        self.inner.lock().sink.clone()
    }

    /// Commits so far.
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.inner.lock().commits
    }
}

impl<K, A> Committer<K, A> for MemoryCommitter<K, A>
where
    K: Ord + Clone + Hash + Send + Sync + 'static,
    A: Clone + Send + Sync + 'static,
{
    type Error = StaleEpoch;

    async fn load(&self, partition: u32) -> Result<Option<Checkpoint>, StaleEpoch> {
        Ok(self.inner.lock().checkpoints.get(&partition).cloned())
    }

    async fn commit(
        &self,
        partition: u32,
        epoch: u64,
        checkpoint: &Checkpoint,
        emissions: &[Emission<K, A>],
    ) -> Result<(), StaleEpoch> {
        let mut inner = self.inner.lock();
        let current = inner.epochs.get(&partition).copied().unwrap_or(0);
        if current != epoch {
            return Err(StaleEpoch { partition, offered: epoch, current });
        }
        for e in emissions {
            let key = (e.window, e.key.clone());
            if e.kind == EmissionKind::Retract {
                inner.sink.remove(&key);
            } else {
                inner.sink.insert(key, e.value.clone());
            }
        }
        inner.checkpoints.insert(partition, checkpoint.clone());
        inner.commits += 1;
        Ok(())
    }
}
