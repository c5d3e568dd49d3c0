//! Base62: known values, every error, and round-trip and order properties.

use girder_id::base62::{
    self, ALPHABET, DecodeError, EncodeError, capacity, decode, decode_u128, encode, encode_buf,
    encode_fixed, encode_fixed_buf, encode_into, encode_u128,
};
use proptest::prelude::*;

/// (value, minimal encoding): the alphabet's boundaries, powers of 62, and the limits.
const KNOWN: &[(u64, &str)] = &[
    (0, "0"),
    (1, "1"),
    (9, "9"),
    (10, "A"),
    (35, "Z"),
    (36, "a"),
    (61, "z"),
    (62, "10"),
    (63, "11"),
    (3_843, "zz"),
    (3_844, "100"),
    // The catalogue's example, "1ly7vk" in its 0-9a-zA-Z alphabet: ours swaps the cases.
    (1_234_567_890, "1LY7VK"),
    (4_294_967_296, "4gfFC4"),
    (56_800_235_584, "1000000"),
    (3_521_614_606_208, "10000000"),
    (i64::MAX as u64, "AzL8n0Y58m7"),
    (u64::MAX, "LygHa16AHYF"),
];

#[test]
fn known_values_encode_and_decode() {
    for &(n, text) in KNOWN {
        assert_eq!(encode(n), text, "encode({n})");
        assert_eq!(encode_buf(n).as_str(), text, "encode_buf({n})");
        assert_eq!(decode(text), Ok(n), "decode({text:?})");
    }
}

#[test]
fn alphabet_is_ascii_ordered_and_distinct() {
    assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
    assert!(ALPHABET.iter().all(u8::is_ascii_alphanumeric));
}

#[test]
fn decode_errors() {
    let check = |input: &str, want: DecodeError| assert_eq!(decode(input), Err(want), "{input:?}");
    check("", DecodeError::Empty);
    check("ab-c", DecodeError::InvalidChar { ch: '-', index: 2 });
    check(" 1", DecodeError::InvalidChar { ch: ' ', index: 0 });
    check("1é", DecodeError::InvalidChar { ch: 'é', index: 1 });
    check("abc+", DecodeError::InvalidChar { ch: '+', index: 3 });
    // 2^64, one past u64::MAX.
    check("LygHa16AHYG", DecodeError::Overflow);
    check("zzzzzzzzzzz", DecodeError::Overflow);
    check("100000000000", DecodeError::Overflow);
    // Decoding runs left to right: overflow is found before a later invalid character.
    check("zzzzzzzzzzzz!", DecodeError::Overflow);
}

#[test]
fn leading_zeros_decode_to_the_same_value() {
    assert_eq!(decode("0000000000000000000001"), Ok(1));
    assert_eq!(decode("000LygHa16AHYF"), Ok(u64::MAX));
}

#[test]
fn fixed_width_pads_and_rejects_what_does_not_fit() {
    assert_eq!(encode_fixed(0, 1).as_deref(), Ok("0"));
    assert_eq!(encode_fixed(5, 3).as_deref(), Ok("005"));
    assert_eq!(encode_fixed(3_843, 2).as_deref(), Ok("zz"));
    assert_eq!(encode_fixed(3_844, 2), Err(EncodeError::TooWide { value: 3_844, width: 2 }));
    assert_eq!(encode_fixed(0, 0), Err(EncodeError::TooWide { value: 0, width: 0 }));
    assert_eq!(encode_fixed(u64::MAX, 11).as_deref(), Ok("LygHa16AHYF"));
    assert_eq!(encode_fixed(1, 20).as_deref(), Ok("00000000000000000001"));
}

#[test]
fn fixed_width_buf_pads_and_rejects_what_does_not_fit() {
    assert_eq!(encode_fixed_buf(5, 3).unwrap(), "005");
    assert_eq!(encode_fixed_buf(u64::MAX, 11).unwrap(), "LygHa16AHYF");
    assert_eq!(encode_fixed_buf(56_800_235_584, 7).unwrap(), "1000000");
    assert_eq!(encode_fixed_buf(3_844, 2), Err(EncodeError::TooWide { value: 3_844, width: 2 }));
    assert_eq!(encode_fixed_buf(0, 0), Err(EncodeError::TooWide { value: 0, width: 0 }));
    // An Encoded holds 11 digits; encode_fixed pads further.
    assert_eq!(encode_fixed_buf(1, 12), Err(EncodeError::WidthUnsupported { width: 12, max: 11 }));
}

#[test]
fn encoded_reads_as_its_text() {
    let code = encode_buf(1_234_567_890);
    assert_eq!(code.as_str(), "1LY7VK");
    assert_eq!(code.as_bytes(), b"1LY7VK");
    assert_eq!(code.len(), 6); // through Deref<Target = str>
    assert_eq!(format!("{code}|{code:>8}|{code:?}"), "1LY7VK|  1LY7VK|\"1LY7VK\"");
    assert_eq!(code, "1LY7VK");
    assert_eq!(decode(&code), Ok(1_234_567_890));
}

#[test]
fn encode_into_appends() {
    let mut out = String::from("https://short.ly/");
    encode_into(1_234_567_890, &mut out);
    encode_into(0, &mut out);
    assert_eq!(out, "https://short.ly/1LY7VK0");
}

#[test]
fn u128_known_values_and_errors() {
    assert_eq!(encode_u128(u128::MAX, 22).as_deref(), Ok("7n42DGM5Tflk9n8mt7Fhc7"));
    assert_eq!(encode_u128(0, 22).as_deref(), Ok("0000000000000000000000"));
    assert_eq!(
        encode_u128(u128::MAX, 21),
        Err(EncodeError::TooWide { value: u128::MAX, width: 21 })
    );
    assert_eq!(decode_u128("7n42DGM5Tflk9n8mt7Fhc7"), Ok(u128::MAX));
    // 2^128.
    assert_eq!(decode_u128("7n42DGM5Tflk9n8mt7Fhc8"), Err(DecodeError::Overflow));
    assert_eq!(decode_u128(""), Err(DecodeError::Empty));
    assert_eq!(decode_u128("12_"), Err(DecodeError::InvalidChar { ch: '_', index: 2 }));
    assert_eq!(decode_u128("LygHa16AHYG"), Ok(1 << 64));
}

#[test]
fn capacity_matches_the_catalogue_and_saturates() {
    assert_eq!(capacity(0), 1);
    assert_eq!(capacity(1), 62);
    assert_eq!(capacity(6), 56_800_235_584);
    assert_eq!(capacity(7), 3_521_614_606_208);
    assert_eq!(capacity(8), 218_340_105_584_896);
    assert_eq!(capacity(10), 839_299_365_868_340_224);
    assert_eq!(capacity(11), u64::MAX);
    assert_eq!(capacity(u32::MAX), u64::MAX);
    // Every value below capacity(w) fits in w digits, capacity(w) itself does not.
    for width in 1..=10 {
        let cap = capacity(width);
        let width = width as usize;
        assert!(encode_fixed(cap - 1, width).is_ok(), "{width}");
        assert!(encode_fixed(cap, width).is_err(), "{width}");
    }
}

/// The digits of `n`, most significant first, by repeated division: slow and obviously right.
fn model_encode(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(ALPHABET[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

/// `model_encode` padded to `width`, or `TooWide`.
fn model_encode_fixed(n: u64, width: usize) -> Result<String, EncodeError> {
    let digits = model_encode(n);
    if digits.len() > width {
        return Err(EncodeError::TooWide { value: u128::from(n), width });
    }
    Ok(format!("{}{digits}", "0".repeat(width - digits.len())))
}

/// Left to right, one character at a time, in `u128` so overflow is a plain comparison.
fn model_decode(s: &str) -> Result<u64, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut n: u128 = 0;
    for (index, ch) in s.char_indices() {
        let Some(d) = ALPHABET.iter().position(|&a| char::from(a) == ch) else {
            return Err(DecodeError::InvalidChar { ch, index });
        };
        n = n * 62 + d as u128;
        if n > u128::from(u64::MAX) {
            return Err(DecodeError::Overflow);
        }
    }
    Ok(n as u64)
}

/// Each digit-count boundary, where the encoders switch paths, against the model.
#[test]
fn digit_count_boundaries_match_the_model() {
    for k in 0..=10 {
        let p = 62u64.pow(k);
        for n in [p - 1, p, p + 1] {
            assert_eq!(encode_buf(n).as_str(), model_encode(n), "encode_buf({n})");
            assert_eq!(decode(&model_encode(n)), Ok(n), "decode({n})");
            let width = model_encode(n).len();
            assert_eq!(encode_fixed_buf(n, width).map(|c| c.to_string()), Ok(model_encode(n)));
            assert!(encode_fixed_buf(n, width - 1).is_err(), "{n} in {} digits", width - 1);
        }
    }
}

/// Any `u64`, with every digit count equally likely (a uniform `u64` has 11 digits).
fn any_magnitude() -> impl Strategy<Value = u64> {
    (any::<u64>(), 0u32..64).prop_map(|(n, shift)| n >> shift)
}

proptest! {
    #[test]
    fn encoders_match_the_model(n in any_magnitude()) {
        let want = model_encode(n);
        let code = encode_buf(n);
        prop_assert_eq!(code.as_str(), &want);
        prop_assert_eq!(code.as_bytes(), want.as_bytes());
        prop_assert_eq!(code.to_string(), want.clone());
        prop_assert_eq!(encode(n), want.clone());
        let mut out = String::from("x");
        encode_into(n, &mut out);
        prop_assert_eq!(out, format!("x{want}"));
    }

    #[test]
    fn fixed_encoders_match_the_model(n in any_magnitude(), width in 0usize..24) {
        let want = model_encode_fixed(n, width);
        prop_assert_eq!(encode_fixed(n, width), want.clone());
        let buf = encode_fixed_buf(n, width);
        if width > base62::MAX_U64_LEN {
            prop_assert_eq!(buf, Err(EncodeError::WidthUnsupported { width, max: 11 }));
        } else {
            prop_assert_eq!(buf.map(|code| code.to_string()), want);
        }
    }

    #[test]
    fn decode_matches_the_model(
        s in "[0-9A-Za-z]{0,13}|[0-9A-Za-z]{0,11}[^0-9A-Za-z][0-9A-Za-z]{0,3}|\\PC{0,12}"
    ) {
        prop_assert_eq!(decode(&s), model_decode(&s));
    }

    #[test]
    fn buf_codes_round_trip(n in any_magnitude(), extra in 0usize..11) {
        prop_assert_eq!(decode(&encode_buf(n)), Ok(n));
        let width = (model_encode(n).len() + extra).min(base62::MAX_U64_LEN);
        prop_assert_eq!(decode(&encode_fixed_buf(n, width).unwrap()), Ok(n));
    }

    #[test]
    fn fixed_width_bufs_sort_like_numbers(a in any_magnitude(), b in any_magnitude()) {
        let (ca, cb) = (encode_fixed_buf(a, 11).unwrap(), encode_fixed_buf(b, 11).unwrap());
        prop_assert_eq!(a.cmp(&b), ca.cmp(&cb));
        prop_assert_eq!(a == b, ca == cb);
    }

    #[test]
    fn round_trips_every_u64(n in any::<u64>()) {
        let text = encode(n);
        prop_assert!(text.len() <= base62::MAX_U64_LEN);
        prop_assert!(text == "0" || !text.starts_with('0'));
        prop_assert_eq!(decode(&text), Ok(n));
    }

    #[test]
    fn round_trips_fixed_widths(n in any::<u64>(), extra in 0usize..12) {
        let width = encode(n).len() + extra;
        let text = encode_fixed(n, width).unwrap();
        prop_assert_eq!(text.len(), width);
        prop_assert_eq!(decode(&text), Ok(n));
    }

    #[test]
    fn fixed_width_text_sorts_like_numbers(a in any::<u64>(), b in any::<u64>()) {
        let (ta, tb) = (encode_fixed(a, 11).unwrap(), encode_fixed(b, 11).unwrap());
        prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
    }

    #[test]
    fn round_trips_and_sorts_every_u128(a in any::<u128>(), b in any::<u128>()) {
        let (ta, tb) = (encode_u128(a, 22).unwrap(), encode_u128(b, 22).unwrap());
        prop_assert_eq!(decode_u128(&ta), Ok(a));
        prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
    }

    /// Untrusted input: any string decodes or fails cleanly, and a success is canonical
    /// up to leading zeros.
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,16}|[0-9A-Za-z]{0,14}") {
        match decode(&s) {
            Ok(n) => {
                let canonical = s.trim_start_matches('0');
                prop_assert_eq!(encode(n), if canonical.is_empty() { "0" } else { canonical });
            }
            Err(DecodeError::InvalidChar { ch, index }) => {
                prop_assert!(!ch.is_ascii_alphanumeric());
                prop_assert_eq!(s[index..].chars().next(), Some(ch));
            }
            Err(DecodeError::Empty) => prop_assert!(s.is_empty()),
            Err(_) => {}
        }
    }
}
