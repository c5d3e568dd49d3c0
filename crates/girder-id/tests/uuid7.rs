//! UUIDv7: RFC 9562 layout, process-wide monotonicity, and the 22-character encodings.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use girder_id::base62::DecodeError;
use girder_id::uuid7::{UuidV7Generator, from_base62, from_base64url, to_base62, to_base64url};
use proptest::prelude::*;
use uuid::Uuid;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn ids_follow_the_rfc_9562_layout() {
    let generator = UuidV7Generator::new();
    let before = unix_ms();
    let ids: Vec<Uuid> = (0..1000).map(|_| generator.next()).collect();
    let after = unix_ms();
    for id in ids {
        assert_eq!(id.get_version(), Some(uuid::Version::SortRand), "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        // The counter may borrow a millisecond ahead of the clock only if it overflows
        // (2^41 ids in a millisecond), which 1000 ids cannot do.
        assert!(before <= ms && ms <= after, "{before} <= {ms} <= {after}");
    }
}

#[test]
fn a_million_ids_from_four_threads_are_distinct_and_increasing_per_thread() {
    let per_thread = 250_000;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                // A generator per thread: ordering is process-wide, not per value.
                let generator = UuidV7Generator::new();
                (0..per_thread).map(|_| generator.next()).collect::<Vec<Uuid>>()
            })
        })
        .collect();
    let mut all = Vec::with_capacity(4 * per_thread);
    for handle in handles {
        let ids = handle.join().unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a thread saw a non-increasing id");
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4 * per_thread);
}

#[test]
fn an_id_made_after_another_on_any_thread_compares_greater() {
    // The shared lock orders the threads: each id is generated after (happens-after)
    // the previous one recorded, from whichever thread and generator, so it must be greater.
    let last = Arc::new(Mutex::new(Uuid::nil()));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let last = Arc::clone(&last);
            std::thread::spawn(move || {
                for _ in 0..25_000 {
                    let mut last = last.lock().unwrap();
                    let id = UuidV7Generator::new().next();
                    assert!(id > *last, "{id} after {}", *last);
                    *last = id;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn base62_text_is_22_chars_and_sorts_like_the_ids() {
    let generator = UuidV7Generator::new();
    let ids: Vec<Uuid> = (0..10_000).map(|_| generator.next()).collect();
    let texts: Vec<String> = ids.iter().map(|&u| to_base62(u)).collect();
    assert!(texts.iter().all(|t| t.len() == 22));
    assert!(texts.windows(2).all(|w| w[0] < w[1]), "text order differs from id order");
    for (id, text) in ids.iter().zip(&texts) {
        assert_eq!(from_base62(text), Ok(*id));
    }
    assert_eq!(to_base62(Uuid::nil()), "0000000000000000000000");
    assert_eq!(to_base62(Uuid::max()), "7n42DGM5Tflk9n8mt7Fhc7");
}

#[test]
fn base64url_known_values() {
    assert_eq!(to_base64url(Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(to_base64url(Uuid::max()), "_____________________w");
    let id = Uuid::parse_str("017f22e2-79b0-7cc3-98c4-dc0c0c07398f").unwrap();
    assert_eq!(to_base64url(id), "AX8i4nmwfMOYxNwMDAc5jw");
    assert_eq!(from_base64url("AX8i4nmwfMOYxNwMDAc5jw"), Ok(id));
}

#[test]
fn malformed_text_is_rejected() {
    let wrong = |found| DecodeError::WrongLength { expected: 22, found };
    assert_eq!(from_base62(""), Err(wrong(0)));
    assert_eq!(from_base62("123"), Err(wrong(3)));
    assert_eq!(from_base62("00000000000000000000000"), Err(wrong(23)));
    assert_eq!(
        from_base62("000000000000000000000-"),
        Err(DecodeError::InvalidChar { ch: '-', index: 21 })
    );
    // 2^128, one more than the largest UUID.
    assert_eq!(from_base62("7n42DGM5Tflk9n8mt7Fhc8"), Err(DecodeError::Overflow));
    assert_eq!(from_base62("zzzzzzzzzzzzzzzzzzzzzz"), Err(DecodeError::Overflow));

    assert_eq!(from_base64url("AAAA"), Err(wrong(4)));
    assert_eq!(from_base64url("AAAAAAAAAAAAAAAAAAAAAA=="), Err(wrong(24)));
    assert_eq!(
        from_base64url("AAAAAAAAAA+AAAAAAAAAAA"),
        Err(DecodeError::InvalidChar { ch: '+', index: 10 })
    );
    // The last character carries 2 bits; "B" sets one of the 4 unused bits.
    assert_eq!(
        from_base64url("AAAAAAAAAAAAAAAAAAAAAB"),
        Err(DecodeError::InvalidChar { ch: 'B', index: 21 })
    );
    // 22 bytes but not 22 characters: reported by length in bytes, never a panic.
    assert!(from_base64url("ééééééééééé").is_err());
}

proptest! {
    #[test]
    fn encodings_round_trip_any_uuid(a in any::<u128>(), b in any::<u128>()) {
        let (ua, ub) = (Uuid::from_u128(a), Uuid::from_u128(b));
        prop_assert_eq!(from_base62(&to_base62(ua)), Ok(ua));
        prop_assert_eq!(from_base64url(&to_base64url(ua)), Ok(ua));
        prop_assert_eq!(to_base64url(ua).len(), 22);
        prop_assert_eq!(a.cmp(&b), to_base62(ua).cmp(&to_base62(ub)));
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,24}") {
        let _ = from_base62(&s);
        let _ = from_base64url(&s);
    }
}
