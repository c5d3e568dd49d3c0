//! Topic names and subscription patterns.
//!
//! A topic is one to 16 dot-separated segments (`news.sports.football`), each 1–64
//! bytes of ASCII letters, digits, `_`, `-` and `:`, 255 bytes in all. A pattern is a
//! topic whose segments may also be `*` (exactly one segment) or, as the last segment
//! only, `>` (one or more segments): `news.*` matches `news.sports` but not
//! `news.sports.football`; `news.>` matches both, but not `news` itself.

use std::fmt;

/// The most segments in a topic or pattern.
pub const SEGMENTS_MAX: usize = 16;
/// The longest segment, in bytes.
pub const SEGMENT_BYTES_MAX: usize = 64;
/// The longest topic or pattern, in bytes.
pub const TOPIC_BYTES_MAX: usize = 255;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?}: {reason}")]
pub struct TopicError {
    /// `topic` or `pattern`.
    pub what: &'static str,
    /// The text given (cut to 80 bytes).
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

fn error(what: &'static str, text: &str, reason: &'static str) -> TopicError {
    let mut cut = text.len().min(80);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    TopicError { what, text: text[..cut].to_owned(), reason }
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SEGMENT_BYTES_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
}

fn check_shape(what: &'static str, text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(error(what, text, "empty"));
    }
    if text.len() > TOPIC_BYTES_MAX {
        return Err(error(what, text, "longer than 255 bytes"));
    }
    if text.split('.').count() > SEGMENTS_MAX {
        return Err(error(what, text, "more than 16 segments"));
    }
    Ok(())
}

/// A valid topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Checks `text` as a topic.
    ///
    /// # Errors
    /// [`TopicError`] saying what is wrong.
    pub fn new(text: impl Into<String>) -> Result<Self, TopicError> {
        let text = text.into();
        check_shape("topic", &text)?;
        if !text.split('.').all(segment_ok) {
            return Err(error(
                "topic",
                &text,
                "a segment is empty or has a character other than A-Z a-z 0-9 _ - :",
            ));
        }
        Ok(Self(text))
    }

    /// `<prefix>.<hash of id>`: a topic for an id that may be any text (a user's, a
    /// ride's), as 24 hex digits of its BLAKE3 hash, so it is always a valid segment.
    ///
    /// # Errors
    /// [`TopicError`] if `prefix` is not a valid topic itself.
    pub fn hashed(prefix: &str, id: &str) -> Result<Self, TopicError> {
        use std::fmt::Write as _;
        let hash = blake3::hash(id.as_bytes());
        let mut text = String::with_capacity(prefix.len() + 25);
        text.push_str(prefix);
        text.push('.');
        for b in &hash.as_bytes()[..12] {
            let _ = write!(text, "{b:02x}");
        }
        Self::new(text)
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Literal(String),
    One,
    Rest,
}

/// A subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

impl Pattern {
    /// Checks `text` as a pattern.
    ///
    /// # Errors
    /// [`TopicError`] saying what is wrong.
    pub fn new(text: impl Into<String>) -> Result<Self, TopicError> {
        let text = text.into();
        check_shape("pattern", &text)?;
        let segments: Vec<&str> = text.split('.').collect();
        let mut parts = Vec::with_capacity(segments.len());
        for (i, s) in segments.iter().enumerate() {
            parts.push(match *s {
                "*" => Part::One,
                ">" if i + 1 == segments.len() => Part::Rest,
                ">" => return Err(error("pattern", &text, "'>' may only be the last segment")),
                s if segment_ok(s) => Part::Literal(s.to_owned()),
                _ => {
                    return Err(error(
                        "pattern",
                        &text,
                        "a segment is empty or has a character other than A-Z a-z 0-9 _ - : (or is not a lone * or >)",
                    ));
                }
            });
        }
        Ok(Self { text, parts })
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The topic this pattern names when it has no wildcard.
    #[must_use]
    pub fn exact(&self) -> Option<Topic> {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_))).then(|| Topic(self.text.clone()))
    }

    /// Whether `topic` matches.
    #[must_use]
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut segments = topic.0.split('.');
        for part in &self.parts {
            match part {
                Part::Rest => return segments.next().is_some(),
                Part::One => {
                    if segments.next().is_none() {
                        return false;
                    }
                }
                Part::Literal(l) => {
                    if segments.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        segments.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_topics_take_any_id_and_keep_ids_apart() {
        let a = Topic::hashed("app.u", "ann with spaces/and.dots").unwrap();
        let b = Topic::hashed("app.u", "bob").unwrap();
        assert!(a.as_str().starts_with("app.u.") && a.as_str().len() == "app.u.".len() + 24);
        assert_ne!(a, b);
        assert_eq!(a, Topic::hashed("app.u", "ann with spaces/and.dots").unwrap(), "stable");
        assert_eq!(
            Topic::hashed("x", "").unwrap().as_str(),
            "x.af1349b9f5f9a1a6a0404dea",
            "BLAKE3 of nothing, its first 12 bytes"
        );
        assert!(Topic::hashed("bad..prefix", "ann").is_err());
    }

    #[test]
    fn wildcards_match_as_documented() {
        let t = |s: &str| Topic::new(s).unwrap();
        let p = |s: &str| Pattern::new(s).unwrap();
        let table = [
            ("news.*", "news.sports", true),
            ("news.*", "news.sports.football", false),
            ("news.*", "news", false),
            ("news.>", "news.sports", true),
            ("news.>", "news.sports.football", true),
            ("news.>", "news", false),
            ("*.sports", "news.sports", true),
            ("*.*.football", "news.sports.football", true),
            (">", "a", true),
            (">", "a.b.c", true),
            ("news.sports", "news.sports", true),
            ("news.sports", "news.sport", false),
            ("chat:room:1", "chat:room:1", true),
        ];
        for (pattern, topic, want) in table {
            assert_eq!(p(pattern).matches(&t(topic)), want, "{pattern} vs {topic}");
        }
        assert_eq!(p("a.b").exact(), Some(t("a.b")));
        assert_eq!(p("a.*").exact(), None);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            "a b",
            "a.*",
            "a.>",
            "é",
            &"a.".repeat(17),
            &"x".repeat(65),
            &"ab.".repeat(90),
        ] {
            assert!(Topic::new(bad).is_err(), "topic {bad:?}");
        }
        for bad in ["", "a.>.b", "a.**", "a.b*", ">.a", "a..b", "a b"] {
            assert!(Pattern::new(bad).is_err(), "pattern {bad:?}");
        }
    }
}
