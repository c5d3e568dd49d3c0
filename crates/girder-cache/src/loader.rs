//! Where values come from on a miss: the system of record, behind one small trait.

use std::future::Future;

/// Loads the authoritative value of a key (a database row, a computed result).
///
/// The cache calls it on a miss in both layers, at most once at a time per key per
/// cache instance (single-flight). `Ok(None)` means "no such value" and is cached for
/// `negative_ttl_ms`; an error is returned to every caller waiting on that load and
/// is never cached.
pub trait Loader<K, V>: Send + Sync + 'static {
    /// Why a load failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The value of `key`, `None` if it has none.
    fn load(&self, key: &K) -> impl Future<Output = Result<Option<V>, Self::Error>> + Send;
}

/// A [`Loader`] made from an async closure taking the key by value; see [`loader_fn`].
#[derive(Debug, Clone, Copy)]
pub struct FnLoader<F>(F);

/// Wraps `f` (`Fn(K) -> impl Future<Output = Result<Option<V>, E>>`) as a [`Loader`].
///
/// ```
/// # use girder_cache::loader_fn;
/// let loader = loader_fn(|id: u64| async move {
///     Ok::<_, std::io::Error>(Some(format!("user {id}")))
/// });
/// ```
pub const fn loader_fn<F>(f: F) -> FnLoader<F> {
    FnLoader(f)
}

impl<K, V, E, F, Fut> Loader<K, V> for FnLoader<F>
where
    K: Clone,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<V>, E>> + Send,
{
    type Error = E;

    fn load(&self, key: &K) -> impl Future<Output = Result<Option<V>, E>> + Send {
        (self.0)(key.clone())
    }
}

impl<K, V, L: Loader<K, V>> Loader<K, V> for std::sync::Arc<L> {
    type Error = L::Error;

    fn load(&self, key: &K) -> impl Future<Output = Result<Option<V>, Self::Error>> + Send {
        (**self).load(key)
    }
}
