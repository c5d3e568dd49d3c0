//! The profiles a user has been shown, in two rotating Bloom filters (Pattern: Bloom
//! Filter for Membership Testing).
//!
//! **Why a filter.** Every profile a feed page shows is remembered so no later page
//! shows it again — on any instance, across sessions. An exact set would grow with
//! every profile ever shown; a Bloom filter stays a few kilobytes per user.
//!
//! **The price, and its bound.** A Bloom filter answers "shown" for a profile it
//! never held with probability `p` (a false positive), and a profile that is wrongly
//! "shown" would be hidden from the user for as long as the filter is consulted. So
//! no filter is consulted for ever: each user has a *current* filter, to which shown
//! profiles are added, and a *previous* one; a page checks both. The current filter
//! becomes the previous one (and the old previous one is dropped) when it has been
//! current for one generation (`generation_ms`, 24 h by default) or when it holds
//! `items_per_generation` profiles (2,000 by default, the number it is sized for, so
//! the rate never climbs past `p`). A filter is never consulted once two generations
//! have passed since it became current. Hence:
//!
//! - a false positive hides a profile for less than two generations (48 h by
//!   default), and each generation's filter has its own hash seed (from the user and
//!   the generation's number), so the next filter wrongly holds the same profile only
//!   with probability `p` again, independently;
//! - a profile that was shown stays hidden for at least one generation, unless the
//!   user is shown more than `items_per_generation` profiles within it (the filters
//!   then rotate sooner and remember at least the last `items_per_generation`), and
//!   for less than two; after that it may be shown again if it still qualifies;
//! - the rate: each filter is sized for `items_per_generation` keys at `p`
//!   (0.1% by default; 4,032 bytes of bits per filter — blocked layout, 32,256 bits,
//!   11 hashes); checking two, a profile is wrongly hidden with probability at most
//!   `1 − (1 − p)² ≈ 2p` (0.2%).
//!
//! Profiles the user has swiped are never left to the filter: the feed excludes them
//! exactly, from the swipes table, for ever.
//!
//! **Sharing.** The filters are stored in the user's row of `tinder_seen` as
//! girder-sketch's checksummed bytes, with a version: a page reads them, and writes
//! them back only if the version is unchanged (Pattern: Optimistic Locking with
//! Version Fields), so two pages served at once on two instances never both show a
//! profile (the second one re-reads, drops what the first showed, and tries again).
//! Damaged bytes are never trusted: the row starts over with empty filters, which can
//! only show a profile again, never hide one.

use girder_sketch::bloom::{BloomConfig, BloomFilter};

/// How the seen filters are sized and rotated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeenConfig {
    /// How long a filter is current, ms; it is consulted for less than twice this.
    pub generation_ms: u64,
    /// How many profiles a filter is sized for; a current filter holding this many
    /// rotates early.
    pub items_per_generation: u64,
    /// The false-positive rate of one filter holding `items_per_generation` profiles.
    pub false_positive_rate: f64,
}

impl SeenConfig {
    /// The defaults: a generation of 24 hours, 2,000 profiles at 0.1%.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            generation_ms: 24 * 3_600_000,
            items_per_generation: 2_000,
            false_positive_rate: 0.001,
        }
    }

    fn bloom(&self, seed: u64) -> BloomConfig {
        BloomConfig::new(self.items_per_generation, self.false_positive_rate).seed(seed)
    }

    /// An empty filter of this size with `seed`.
    ///
    /// # Errors
    /// The size is out of girder-sketch's range (settings keep it inside).
    pub fn empty(&self, seed: u64) -> Result<BloomFilter, girder_sketch::ParamError> {
        BloomFilter::new(&self.bloom(seed))
    }
}

impl Default for SeenConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The hash seed of `user`'s filter number `generation`: a false positive of one
/// generation says nothing about the next.
#[must_use]
pub fn seed(user: &str, generation: i64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"girder.tinder.seen\0");
    h.update(&(user.len() as u64).to_le_bytes());
    h.update(user.as_bytes());
    h.update(&generation.to_le_bytes());
    let bytes = h.finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(seed)
}

/// A user's row of `tinder_seen`, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRow {
    /// Bumped by every write; a write expecting another version is refused.
    pub version: i64,
    /// The current filter's number (its seed comes from it).
    pub generation: i64,
    /// When the current filter became current, ms since the epoch.
    pub current_started_ms: i64,
    /// Profiles added to the current filter.
    pub current_count: i64,
    /// The current filter's bytes.
    pub current: Vec<u8>,
    /// When the previous filter became current, and its bytes.
    pub previous: Option<(i64, Vec<u8>)>,
}

/// A user's two filters, read from their row (or new) and rotated to a moment.
#[derive(Debug, Clone)]
pub struct Seen {
    user: String,
    /// The row's version when read; `None` when the user had no row.
    version: Option<i64>,
    generation: i64,
    current_started_ms: i64,
    current_count: i64,
    current: BloomFilter,
    previous: Option<(i64, BloomFilter)>,
    /// Whether the stored bytes failed their checks and were replaced.
    damaged: bool,
}

impl Seen {
    /// Empty filters for `user`, current from `now_ms`.
    ///
    /// # Errors
    /// The configured size is out of range.
    pub fn fresh(
        user: &str,
        config: &SeenConfig,
        now_ms: i64,
    ) -> Result<Self, girder_sketch::ParamError> {
        Ok(Self {
            user: user.to_owned(),
            version: None,
            generation: 0,
            current_started_ms: now_ms,
            current_count: 0,
            current: config.empty(seed(user, 0))?,
            previous: None,
            damaged: false,
        })
    }

    /// `user`'s filters from their row (or fresh ones when `row` is `None`), rotated
    /// to `now_ms`. Bytes that fail girder-sketch's checks start over empty (see the
    /// module docs) and [`Seen::damaged`] says so.
    ///
    /// # Errors
    /// The configured size is out of range.
    pub fn load(
        user: &str,
        row: Option<SeenRow>,
        config: &SeenConfig,
        now_ms: i64,
    ) -> Result<Self, girder_sketch::ParamError> {
        let Some(row) = row else {
            return Self::fresh(user, config, now_ms);
        };
        let previous = row
            .previous
            .map(|(started, bytes)| BloomFilter::from_bytes(&bytes).map(|f| (started, f)))
            .transpose();
        let mut seen = match (BloomFilter::from_bytes(&row.current), previous) {
            (Ok(current), Ok(previous)) => Self {
                user: user.to_owned(),
                version: Some(row.version),
                generation: row.generation,
                current_started_ms: row.current_started_ms,
                current_count: row.current_count,
                current,
                previous,
                damaged: false,
            },
            _ => {
                // A new generation number: a new seed, whatever the damage was.
                let generation = row.generation.saturating_add(1);
                Self {
                    user: user.to_owned(),
                    version: Some(row.version),
                    generation,
                    current_started_ms: now_ms,
                    current_count: 0,
                    current: config.empty(seed(user, generation))?,
                    previous: None,
                    damaged: true,
                }
            }
        };
        seen.rotate(config, now_ms)?;
        Ok(seen)
    }

    /// Applies the rotation rules at `now_ms` (see the module docs): a filter is
    /// dropped once two generations have passed since it became current, the current
    /// one becomes the previous one after one generation or once full.
    ///
    /// # Errors
    /// The configured size is out of range.
    pub fn rotate(
        &mut self,
        config: &SeenConfig,
        now_ms: i64,
    ) -> Result<(), girder_sketch::ParamError> {
        let generation_ms = i64::try_from(config.generation_ms).unwrap_or(i64::MAX);
        let twice = generation_ms.saturating_mul(2);
        if self
            .previous
            .as_ref()
            .is_some_and(|(started, _)| now_ms.saturating_sub(*started) >= twice)
        {
            self.previous = None;
        }
        let age = now_ms.saturating_sub(self.current_started_ms);
        let full = u64::try_from(self.current_count).unwrap_or(0) >= config.items_per_generation;
        if age >= generation_ms || full {
            let next = self.generation.saturating_add(1);
            let old = std::mem::replace(&mut self.current, config.empty(seed(&self.user, next))?);
            self.previous = (age < twice).then_some((self.current_started_ms, old));
            self.generation = next;
            self.current_started_ms = now_ms;
            self.current_count = 0;
        }
        debug_assert!(
            self.consulted_since().all(|started| now_ms - started < twice || now_ms < started)
        );
        Ok(())
    }

    /// When each consulted filter became current.
    fn consulted_since(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.current_started_ms).chain(self.previous.as_ref().map(|p| p.0))
    }

    /// Whether `profile` may have been shown (either filter holds it).
    #[must_use]
    pub fn contains(&self, profile: &str) -> bool {
        self.current.contains(profile)
            || self.previous.as_ref().is_some_and(|(_, f)| f.contains(profile))
    }

    /// Records that `profile` was shown. Every call counts towards the early
    /// rotation, even one whose bits were all set already: the count bounds the keys
    /// the filter holds from above, so the rate stays at most `p`.
    pub fn insert(&mut self, profile: &str) {
        self.current.insert(profile);
        self.current_count = self.current_count.saturating_add(1);
    }

    /// The row's version when read (`None`: there was no row).
    #[must_use]
    pub const fn version(&self) -> Option<i64> {
        self.version
    }

    /// The current filter's number.
    #[must_use]
    pub const fn generation(&self) -> i64 {
        self.generation
    }

    /// Whether the stored bytes were damaged and replaced by empty filters.
    #[must_use]
    pub const fn damaged(&self) -> bool {
        self.damaged
    }

    /// Profiles added to the current filter.
    #[must_use]
    pub const fn current_count(&self) -> i64 {
        self.current_count
    }

    /// The row to store (its version is the next one).
    #[must_use]
    pub fn to_row(&self) -> SeenRow {
        SeenRow {
            version: self.version.map_or(1, |v| v.saturating_add(1)),
            generation: self.generation,
            current_started_ms: self.current_started_ms,
            current_count: self.current_count,
            current: self.current.to_bytes(),
            previous: self.previous.as_ref().map(|(started, f)| (*started, f.to_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn config() -> SeenConfig {
        SeenConfig {
            generation_ms: HOUR as u64,
            items_per_generation: 100,
            false_positive_rate: 0.01,
        }
    }

    #[test]
    fn the_default_size_is_as_documented() {
        let f = SeenConfig::new().empty(seed("ann", 0)).unwrap();
        assert_eq!((f.bits(), f.hashes()), (32_256, 11));
        assert_eq!(f.to_bytes().len(), 4_032 + 31, "the bits and the frame around them");
    }

    /// Adds `key` at `at` (after rotating to it) and says whether each of `keys` is
    /// seen at `then`, after a store round trip.
    fn seen_at(steps: &[(i64, &str)], then: i64, keys: &[&str]) -> Vec<bool> {
        let config = config();
        let mut row = None;
        for (at, key) in steps {
            let mut seen = Seen::load("ann", row.take(), &config, *at).unwrap();
            seen.insert(key);
            row = Some(seen.to_row());
        }
        let seen = Seen::load("ann", row, &config, then).unwrap();
        keys.iter().map(|k| seen.contains(k)).collect()
    }

    #[test]
    fn a_shown_profile_is_remembered_for_one_to_two_generations() {
        // Shown at the start of its generation: remembered through the next one.
        assert_eq!(seen_at(&[(0, "x")], HOUR - 1, &["x"]), [true]);
        assert_eq!(seen_at(&[(0, "x")], HOUR, &["x"]), [true], "now in the previous filter");
        assert_eq!(seen_at(&[(0, "x")], 2 * HOUR - 1, &["x"]), [true]);
        assert_eq!(seen_at(&[(0, "x")], 2 * HOUR, &["x"]), [false], "two generations on");
        // Shown late in a generation: still at least one generation.
        let steps = [(0, "a"), (HOUR - 1, "x")];
        assert_eq!(seen_at(&steps, 2 * HOUR - 1, &["a", "x"]), [true, true]);
        assert_eq!(seen_at(&steps, 2 * HOUR, &["a", "x"]), [false, false]);
        // A rotation in between moves x's filter to previous; the one after drops it.
        let steps = [(0, "x"), (HOUR + 5, "y")];
        assert_eq!(seen_at(&steps, 2 * HOUR - 1, &["x", "y"]), [true, true]);
        assert_eq!(seen_at(&steps, 2 * HOUR, &["x", "y"]), [false, true]);
        assert_eq!(seen_at(&steps, 3 * HOUR + 5, &["x", "y"]), [false, false]);
    }

    #[test]
    fn a_full_filter_rotates_early_and_remembers_at_least_the_last_batch() {
        let config = config();
        let mut seen = Seen::fresh("ann", &config, 0).unwrap();
        for i in 0..100 {
            seen.insert(&format!("p{i}"));
        }
        let generation = seen.generation();
        let mut seen = Seen::load("ann", Some(seen.to_row()), &config, 1).unwrap();
        assert_eq!(seen.generation(), generation + 1, "full: a new current filter");
        assert!((0..100).all(|i| seen.contains(&format!("p{i}"))), "the full one is previous");
        for i in 100..200 {
            seen.insert(&format!("p{i}"));
        }
        let seen = Seen::load("ann", Some(seen.to_row()), &config, 2).unwrap();
        assert!((100..200).all(|i| seen.contains(&format!("p{i}"))));
        let forgotten = (0..100).filter(|i| !seen.contains(&format!("p{i}"))).count();
        assert!(forgotten > 90, "the oldest batch is gone (but for false positives): {forgotten}");
    }

    #[test]
    fn generations_hash_differently_so_false_positives_do_not_repeat() {
        let config = config();
        let mut seen = Seen::fresh("ann", &config, 0).unwrap();
        for i in 0..100 {
            seen.insert(&format!("p{i}"));
        }
        let false_positives: Vec<String> =
            (0..20_000).map(|i| format!("q{i}")).filter(|k| seen.contains(k)).collect();
        assert!(!false_positives.is_empty(), "a full filter at 1% has false positives");
        let mut next = Seen::load("ann", Some(seen.to_row()), &config, 2 * HOUR).unwrap();
        assert_ne!(next.generation(), 0);
        for i in 0..100 {
            next.insert(&format!("p{i}"));
        }
        let again = false_positives.iter().filter(|k| next.contains(k)).count();
        assert!(
            again * 10 < false_positives.len(),
            "{again} of {} repeat under the next seed",
            false_positives.len()
        );
    }

    #[test]
    fn damaged_bytes_start_over_empty_under_a_new_seed() {
        let config = config();
        let mut seen = Seen::fresh("ann", &config, 0).unwrap();
        seen.insert("x");
        let mut row = seen.to_row();
        let last = row.current.len() - 1;
        row.current[last] ^= 1;
        let loaded = Seen::load("ann", Some(row.clone()), &config, 10).unwrap();
        assert!(loaded.damaged());
        assert!(!loaded.contains("x"));
        assert_eq!(loaded.version(), Some(row.version), "the write still checks the version");
        assert_eq!(loaded.generation(), row.generation + 1);
    }
}
