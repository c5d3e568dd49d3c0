//! The lookup seam on the redirect path: code → link. Today it reads the
//! store; a multi-layer cache slots in here without touching the handlers.

use super::store::{Link, LinkStore, StoreError};

/// Resolves codes to links.
#[derive(Debug, Clone)]
pub struct Resolver {
    store: LinkStore,
}

impl Resolver {
    /// A resolver reading straight from `store`.
    #[must_use]
    pub fn new(store: LinkStore) -> Self {
        Self { store }
    }

    /// The link for `code`, expired or not; the caller decides what expiry means.
    ///
    /// # Errors
    /// The store failed.
    pub async fn resolve(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.store.get(code).await
    }

    /// Forgets anything cached about `code`, after the store has changed it.
    pub async fn invalidate(&self, code: &str) {
        // Nothing is cached yet; the cache's invalidation goes here.
        let _ = code;
    }
}
