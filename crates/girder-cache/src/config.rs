//! The one place a cache's behaviour is chosen: sizes, lifetimes and bounds, each with
//! its unit in its name, checked once by [`CacheConfig::validate`] before a cache exists.

use thiserror::Error;

/// The longest lifetime any TTL field accepts: ten years, in milliseconds.
///
/// Far beyond any useful cache lifetime, and small enough that `now + ttl + stale`
/// can never overflow a `u64` of Unix milliseconds.
pub const TTL_MAX_MS: u64 = 10 * 365 * 24 * 60 * 60 * 1000;

/// The largest accepted [`CacheConfig::ttl_jitter_fraction`]: lifetimes vary by at most ±50%.
pub const JITTER_FRACTION_MAX: f64 = 0.5;

/// How a [`Cache`](crate::Cache) behaves. Build one with struct-update syntax over
/// [`Default`]:
///
/// ```
/// use girder_cache::CacheConfig;
/// let config = CacheConfig { name: "links".into(), ttl_ms: 30_000, ..CacheConfig::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Names the cache: the `cache` label on its metrics, and part of its L2 keys and
    /// invalidation channel, so instances in different processes with the same name
    /// (and namespace) share L2 entries and invalidations.
    pub name: String,
    /// Upper bound on the number of values the in-process L1 holds. Beyond it,
    /// `quick_cache` evicts (counted in `evictions`).
    pub l1_capacity_entries: u64,
    /// Upper bound on the number of cached absences (a loader's `None`) L1 holds,
    /// apart from the values: lookups of keys that do not exist, however many, never
    /// evict values. `0` keeps absences out of L1 (they are still cached in L2, and
    /// concurrent loads of one are still coalesced). L1 holds at most
    /// `l1_capacity_entries + l1_negative_capacity_entries` entries in all.
    pub l1_negative_capacity_entries: u64,
    /// How long a loaded value stays fresh in L1, before jitter.
    ///
    /// This is also the staleness bound when cross-instance invalidation is down: an
    /// L1 entry is never served fresh past `ttl_ms * (1 + ttl_jitter_fraction)`.
    pub ttl_ms: u64,
    /// Each stored lifetime (L1 and L2, positive and negative) is multiplied by a
    /// uniform random factor in `[1 - f, 1 + f]`, so entries written together do not
    /// expire together (no synchronized stampede). `0.0` disables jitter; at most
    /// [`JITTER_FRACTION_MAX`].
    pub ttl_jitter_fraction: f64,
    /// How long a loader's `None` ("no such row") is cached, before jitter; `0`
    /// disables negative caching.
    pub negative_ttl_ms: u64,
    /// Stale-while-revalidate window: an entry past its TTL by less than this is
    /// still served, at once, while one background refresh reloads it. `0` disables it.
    pub stale_ms: u64,
    /// Upper bound on background refreshes running at once. When reached, stale
    /// entries are still served but no further refresh starts until one finishes.
    pub refreshes_max: usize,
    /// Prefix of every L2 key and of the invalidation channel: keys are
    /// `{l2_namespace}:{name}:{key}`, the channel `{l2_namespace}:{name}:invalidate`.
    pub l2_namespace: String,
    /// How long a value written to L2 lives there, before jitter. Usually longer than
    /// `ttl_ms`: L2 absorbs L1 misses across instances, L1 bounds staleness.
    pub l2_ttl_ms: u64,
    /// How long an invalidation's tombstone blocks L2 fills of that key.
    ///
    /// A load that read the store *before* a write may try to fill L2 *after* the
    /// write's invalidation. Fills only succeed on absent keys, so the tombstone
    /// refuses them; set this above your slowest load (your loader's timeout).
    pub l2_tombstone_ms: u64,
    /// Upper bound on one L2 round trip. A slower or failed L2 call counts as an
    /// `l2_error`, and reads fall through to the loader: a sick L2 degrades the cache
    /// to L1 + loader, it never blocks reads.
    pub l2_timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "cache".to_owned(),
            l1_capacity_entries: 100_000,
            l1_negative_capacity_entries: 10_000,
            ttl_ms: 60_000,
            ttl_jitter_fraction: 0.1,
            negative_ttl_ms: 5_000,
            stale_ms: 0,
            refreshes_max: 64,
            l2_namespace: "girder:cache".to_owned(),
            l2_ttl_ms: 600_000,
            l2_tombstone_ms: 10_000,
            l2_timeout_ms: 250,
        }
    }
}

/// Why a [`CacheConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `name` or `l2_namespace` is empty or contains whitespace or control characters.
    #[error("{field} {value:?} must be non-empty, without whitespace or control characters")]
    BadName {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// `l1_capacity_entries` is zero: the cache could hold nothing.
    #[error("l1_capacity_entries must be at least 1")]
    ZeroCapacity,
    /// A lifetime that must be positive (`ttl_ms`, `l2_ttl_ms`, `l2_tombstone_ms`,
    /// `l2_timeout_ms`) is zero.
    #[error("{field} must be at least 1 ms")]
    ZeroDuration {
        /// The offending field.
        field: &'static str,
    },
    /// A lifetime exceeds [`TTL_MAX_MS`].
    #[error("{field} = {value_ms} ms exceeds the maximum of {max_ms} ms")]
    DurationTooLong {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value_ms: u64,
        /// The largest accepted value.
        max_ms: u64,
    },
    /// `ttl_jitter_fraction` is not a number in `0.0..=JITTER_FRACTION_MAX`.
    #[error("ttl_jitter_fraction {0} outside 0.0..={max}", max = JITTER_FRACTION_MAX)]
    JitterOutOfRange(f64),
    /// `stale_ms > 0` but `refreshes_max == 0`: stale entries could never be refreshed.
    #[error("stale_ms > 0 needs refreshes_max >= 1")]
    NoRefreshes,
}

impl CacheConfig {
    /// Checks every field against its bound.
    ///
    /// # Errors
    /// The first violated bound, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("name", &self.name)?;
        check_name("l2_namespace", &self.l2_namespace)?;
        if self.l1_capacity_entries == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        for (field, value_ms, may_be_zero) in [
            ("ttl_ms", self.ttl_ms, false),
            ("negative_ttl_ms", self.negative_ttl_ms, true),
            ("stale_ms", self.stale_ms, true),
            ("l2_ttl_ms", self.l2_ttl_ms, false),
            ("l2_tombstone_ms", self.l2_tombstone_ms, false),
            ("l2_timeout_ms", self.l2_timeout_ms, false),
        ] {
            if value_ms == 0 && !may_be_zero {
                return Err(ConfigError::ZeroDuration { field });
            }
            if value_ms > TTL_MAX_MS {
                return Err(ConfigError::DurationTooLong { field, value_ms, max_ms: TTL_MAX_MS });
            }
        }
        let jitter = self.ttl_jitter_fraction;
        if !(0.0..=JITTER_FRACTION_MAX).contains(&jitter) {
            // NaN fails `contains` too.
            return Err(ConfigError::JitterOutOfRange(jitter));
        }
        if self.stale_ms > 0 && self.refreshes_max == 0 {
            return Err(ConfigError::NoRefreshes);
        }
        Ok(())
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::BadName { field, value: value.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bound_is_checked() {
        assert_eq!(CacheConfig::default().validate(), Ok(()));
        let check = |edit: fn(&mut CacheConfig), want: ConfigError| {
            let mut config = CacheConfig::default();
            edit(&mut config);
            assert_eq!(config.validate(), Err(want));
        };
        check(
            |c| c.name = String::new(),
            ConfigError::BadName { field: "name", value: String::new() },
        );
        check(
            |c| c.l2_namespace = "a b".into(),
            ConfigError::BadName { field: "l2_namespace", value: "a b".into() },
        );
        check(|c| c.l1_capacity_entries = 0, ConfigError::ZeroCapacity);
        check(|c| c.ttl_ms = 0, ConfigError::ZeroDuration { field: "ttl_ms" });
        check(|c| c.l2_timeout_ms = 0, ConfigError::ZeroDuration { field: "l2_timeout_ms" });
        check(
            |c| c.stale_ms = TTL_MAX_MS + 1,
            ConfigError::DurationTooLong {
                field: "stale_ms",
                value_ms: TTL_MAX_MS + 1,
                max_ms: TTL_MAX_MS,
            },
        );
        check(|c| c.ttl_jitter_fraction = 0.6, ConfigError::JitterOutOfRange(0.6));
        check(|c| c.ttl_jitter_fraction = -0.1, ConfigError::JitterOutOfRange(-0.1));
        check(
            |c| {
                c.stale_ms = 10;
                c.refreshes_max = 0;
            },
            ConfigError::NoRefreshes,
        );
        let mut nan = CacheConfig { ttl_jitter_fraction: f64::NAN, ..CacheConfig::default() };
        assert!(matches!(nan.validate(), Err(ConfigError::JitterOutOfRange(j)) if j.is_nan()));
        nan.ttl_jitter_fraction = 0.0;
        nan.negative_ttl_ms = 0;
        assert_eq!(nan.validate(), Ok(()));
    }
}
