//! The virtual waiting room (Pattern: Virtual Waiting Room / admission control).
//!
//! Positions come from the database (a per-event counter), so every instance
//! agrees on them. Admission is *computed*, not pushed: with the queue opened at
//! `opened_at_ms` and an admission rate of `r` per second, position `p` is
//! admitted once `p <= floor((now_ms - opened_at_ms) * r / 1000)`. The frontier is
//! a function of shared data and the clock, so instances agree without talking,
//! and it only grows, so an admission never lapses.
//!
//! An admitted user gets an admission token: a keyed BLAKE3 MAC over (event,
//! user) with a key stored once in the shared database, which `reserve` checks.

/// The admission frontier: every position at or below it is admitted.
#[must_use]
pub fn frontier(opened_at_ms: i64, admit_per_sec: i64, now_ms: i64) -> i64 {
    let elapsed = i128::from(now_ms.saturating_sub(opened_at_ms).max(0));
    let admitted = elapsed * i128::from(admit_per_sec.max(0)) / 1000;
    i64::try_from(admitted).unwrap_or(i64::MAX)
}

/// Milliseconds until `position` is admitted (0 when it already is).
#[must_use]
pub fn wait_ms(position: i64, opened_at_ms: i64, admit_per_sec: i64, now_ms: i64) -> u64 {
    if admit_per_sec <= 0 {
        return u64::MAX;
    }
    // The earliest t with (t - opened) * r / 1000 >= position.
    let needed =
        (i128::from(position) * 1000 + i128::from(admit_per_sec) - 1) / i128::from(admit_per_sec);
    let at = i128::from(opened_at_ms) + needed;
    u64::try_from((at - i128::from(now_ms)).max(0)).unwrap_or(u64::MAX)
}

/// Signs and checks admission tokens.
#[derive(Clone)]
pub struct Admissions {
    key: [u8; 32],
}

impl std::fmt::Debug for Admissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admissions { key: <hidden> }")
    }
}

impl Admissions {
    /// Tokens under `key`; instances sharing a database must share it.
    #[must_use]
    pub const fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, event_id: &str, user: &str) -> blake3::Hash {
        // Length-prefixed fields: ("ab", "c") and ("a", "bc") sign differently.
        let mut message = Vec::with_capacity(16 + event_id.len() + user.len());
        message.extend_from_slice(&(event_id.len() as u64).to_le_bytes());
        message.extend_from_slice(event_id.as_bytes());
        message.extend_from_slice(&(user.len() as u64).to_le_bytes());
        message.extend_from_slice(user.as_bytes());
        blake3::keyed_hash(&self.key, &message)
    }

    /// The token admitting `user` to `event_id`: 64 hex digits.
    #[must_use]
    pub fn token(&self, event_id: &str, user: &str) -> String {
        self.mac(event_id, user).to_hex().to_string()
    }

    /// Whether `token` admits `user` to `event_id`. Constant-time comparison
    /// (`blake3::Hash`'s `PartialEq`).
    #[must_use]
    pub fn verify(&self, event_id: &str, user: &str, token: &str) -> bool {
        blake3::Hash::from_hex(token).is_ok_and(|given| given == self.mac(event_id, user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_follows_the_clock() {
        assert_eq!(frontier(1_000, 10, 1_000), 0);
        assert_eq!(frontier(1_000, 10, 1_099), 0);
        assert_eq!(frontier(1_000, 10, 1_100), 1);
        assert_eq!(frontier(1_000, 10, 2_000), 10);
        assert_eq!(frontier(1_000, 10, 500), 0);
        assert_eq!(wait_ms(1, 1_000, 10, 1_000), 100);
        assert_eq!(wait_ms(10, 1_000, 10, 1_500), 500);
        assert_eq!(wait_ms(3, 1_000, 10, 5_000), 0);
        // wait_ms lands exactly on the admitting instant.
        for position in 1..50 {
            let at = 1_000 + i64::try_from(wait_ms(position, 1_000, 7, 1_000)).unwrap();
            assert!(frontier(1_000, 7, at) >= position);
            assert!(frontier(1_000, 7, at - 1) < position);
        }
    }

    #[test]
    fn tokens_bind_event_and_user() {
        let a = Admissions::new([1; 32]);
        let t = a.token("e1", "alice");
        assert!(a.verify("e1", "alice", &t));
        assert!(!a.verify("e1", "bob", &t));
        assert!(!a.verify("e2", "alice", &t));
        assert!(!Admissions::new([2; 32]).verify("e1", "alice", &t));
        assert!(!a.verify("e1", "alice", "zz"));
        assert!(!a.verify("e1", "alice", ""));
    }
}
