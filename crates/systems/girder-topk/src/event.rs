//! A view event as the log holds it, and the rules a video id and a timestamp obey.
//!
//! A record is `version (1) | at_ms (8, little-endian) | video id bytes`: small, and
//! decoded without allocation beyond the id. The decoder refuses (never panics on)
//! any other bytes; the runner routes those to its side output.

use girder_stream::EventTime;

/// The longest video id, in bytes.
pub const VIDEO_ID_MAX: usize = 64;

const VERSION: u8 = 1;

/// Whether `id` is a video id: 1–64 characters of `A-Z a-z 0-9 _ -` (YouTube's
/// alphabet).
#[must_use]
pub fn valid_video_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= VIDEO_ID_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The log record of one view of `video` at `at_ms`.
#[must_use]
pub fn encode(video: &str, at_ms: EventTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + video.len());
    out.push(VERSION);
    out.extend_from_slice(&at_ms.to_le_bytes());
    out.extend_from_slice(video.as_bytes());
    out
}

/// The video and time of a record written by [`encode`], and a count of one.
///
/// # Errors
/// A description of what is wrong with the bytes.
pub fn decode(bytes: &[u8]) -> Result<(String, EventTime, u64), String> {
    let (&version, rest) = bytes.split_first().ok_or("an empty record")?;
    if version != VERSION {
        return Err(format!("record version {version}"));
    }
    if rest.len() < 8 {
        return Err("a record shorter than its timestamp".to_owned());
    }
    let (at, video) = rest.split_at(8);
    let at = i64::from_le_bytes(at.try_into().map_err(|_| "a torn timestamp")?);
    let video = std::str::from_utf8(video).map_err(|_| "a video id that is not UTF-8")?;
    if !valid_video_id(video) {
        return Err(format!("an invalid video id {video:?}"));
    }
    Ok((video.to_owned(), at, 1))
}

/// Why an event's timestamp is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its minute closed longer ago than the allowed lateness.
    TooOld,
    /// It lies further ahead of this instance's clock than the allowed skew.
    InFuture,
}

/// The bounds on an event's time relative to the instance's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// How far ahead of the clock an event may be.
    pub future_ms_max: i64,
    /// How far behind the newest event the watermark trails.
    pub out_of_orderness_ms: i64,
    /// How long a closed minute still takes events.
    pub allowed_lateness_ms: i64,
}

impl TimeBounds {
    /// Whether an event at `at` is counted when the clock reads `now`. An event ahead
    /// of the clock would move the watermark on and close the current minute early
    /// for everyone else, so the skew allowed is small; an event whose minute the
    /// watermark has already expired would be refused by the pipeline anyway.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check(&self, at: EventTime, now: EventTime) -> Result<(), Refusal> {
        if at > now.saturating_add(self.future_ms_max) {
            return Err(Refusal::InFuture);
        }
        let minute_end = crate::span::minute_of(at).saturating_add(1).saturating_mul(60_000);
        let watermark = now.saturating_sub(self.out_of_orderness_ms);
        if minute_end.saturating_add(self.allowed_lateness_ms) <= watermark {
            return Err(Refusal::TooOld);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let bytes = encode("dQw4w9WgXcQ", 1_700_000_000_123);
        assert_eq!(decode(&bytes), Ok(("dQw4w9WgXcQ".to_owned(), 1_700_000_000_123, 1)));
        for bad in [
            &[][..],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, b'a'],
            &[1, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, b' '],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn video_ids() {
        for good in ["a", "dQw4w9WgXcQ", "v-1_2", &"x".repeat(64)] {
            assert!(valid_video_id(good), "{good}");
        }
        for bad in ["", " ", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(!valid_video_id(bad), "{bad}");
        }
    }

    #[test]
    fn time_bounds() {
        let b = TimeBounds {
            future_ms_max: 2_000,
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 60_000,
        };
        let now = 10 * 60_000 + 30_000; // 10:30 into minute 10
        let check = |at: i64| b.check(at, now);
        assert_eq!(check(now), Ok(()));
        assert_eq!(check(now + 2_000), Ok(()));
        assert_eq!(check(now + 2_001), Err(Refusal::InFuture));
        // Minute 9 ended at 10:00; with a minute of lateness it takes events until the
        // watermark (now − 5 s) reaches 11:00.
        assert_eq!(check(9 * 60_000), Ok(()));
        assert_eq!(check(8 * 60_000 + 59_999), Err(Refusal::TooOld));
    }
}
