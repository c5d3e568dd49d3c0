//! Versioned values in process memory: the default for one server, and the model
//! the other backends are checked against.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use parking_lot::Mutex;

use super::{VersionError, VersionStore, Versioned};

/// A [`VersionStore`] in a mutex-guarded map; every operation is one critical section.
#[derive(Debug, Default)]
pub struct MemoryVersionStore {
    map: Mutex<HashMap<String, Versioned>>,
}

impl MemoryVersionStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl VersionStore for MemoryVersionStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, VersionError> {
        Ok(self.map.lock().get(key).cloned())
    }

    async fn insert(&self, key: &str, value: &[u8]) -> Result<Versioned, VersionError> {
        match self.map.lock().entry(key.to_owned()) {
            Entry::Occupied(_) => Err(VersionError::Exists),
            Entry::Vacant(slot) => {
                Ok(slot.insert(Versioned { value: value.to_vec(), version: 1 }).clone())
            }
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: &[u8],
    ) -> Result<Versioned, VersionError> {
        let mut map = self.map.lock();
        match map.get_mut(key) {
            Some(stored) if stored.version == expected_version => {
                *stored = Versioned { value: value.to_vec(), version: expected_version + 1 };
                Ok(stored.clone())
            }
            other => Err(VersionError::Conflict {
                expected: expected_version,
                current: other.map(|s| s.version),
            }),
        }
    }

    async fn delete(&self, key: &str, expected_version: u64) -> Result<(), VersionError> {
        let mut map = self.map.lock();
        match map.get(key).map(|s| s.version) {
            Some(v) if v == expected_version => {
                map.remove(key);
                Ok(())
            }
            current => Err(VersionError::Conflict { expected: expected_version, current }),
        }
    }
}
