//! Input rules for links: which destinations are allowed and what an alias
//! may look like. Pure functions, property-tested against hostile input.

use url::Url;

/// The longest destination URL accepted, in bytes.
pub const URL_BYTES_MAX: usize = 2_048;
/// The shortest custom alias accepted.
pub const ALIAS_LEN_MIN: usize = 3;
/// The longest custom alias accepted.
pub const ALIAS_LEN_MAX: usize = 64;

/// Why a destination URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`URL_BYTES_MAX`].
    #[error("url is {len} bytes; the limit is {URL_BYTES_MAX}")]
    TooLong {
        /// The submitted length in bytes.
        len: usize,
    },
    /// Not an absolute URL.
    #[error("not a valid absolute url: {0}")]
    Malformed(String),
    /// A scheme other than http or https (`javascript:`, `data:`, `file:`, ...).
    #[error("scheme {0:?} is not allowed; only http and https")]
    Scheme(String),
    /// No host to redirect to.
    #[error("url has no host")]
    NoHost,
    /// Embedded credentials (`https://user@host`), a classic disguise for phishing.
    #[error("urls with embedded credentials are not allowed")]
    Credentials,
}

/// Checks a destination and returns its normalised form.
///
/// # Errors
/// The first rule the URL breaks.
pub fn destination(raw: &str) -> Result<Url, UrlError> {
    let raw = raw.trim();
    if raw.len() > URL_BYTES_MAX {
        return Err(UrlError::TooLong { len: raw.len() });
    }
    let url = Url::parse(raw).map_err(|e| UrlError::Malformed(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(UrlError::Scheme(other.to_owned())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    // Normalisation (punycode, percent-encoding) can lengthen the URL.
    if url.as_str().len() > URL_BYTES_MAX {
        return Err(UrlError::TooLong { len: url.as_str().len() });
    }
    Ok(url)
}

/// Why a custom alias was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AliasError {
    /// Outside [`ALIAS_LEN_MIN`]..=[`ALIAS_LEN_MAX`] characters.
    #[error("alias must be {ALIAS_LEN_MIN} to {ALIAS_LEN_MAX} characters, got {len}")]
    Length {
        /// The submitted length in characters.
        len: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ -`.
    #[error("alias may contain only A-Z, a-z, 0-9, '_' and '-'; found {ch:?}")]
    Charset {
        /// The first offending character.
        ch: char,
    },
    /// The alias names one of the server's own paths.
    #[error("alias {0:?} is reserved by the server")]
    Reserved(String),
}

/// Checks a custom alias against the charset, length and reserved names.
///
/// # Errors
/// The first rule the alias breaks.
pub fn alias(alias: &str, reserved: &Reserved) -> Result<(), AliasError> {
    let len = alias.chars().count();
    if !(ALIAS_LEN_MIN..=ALIAS_LEN_MAX).contains(&len) {
        return Err(AliasError::Length { len });
    }
    if let Some(ch) = alias.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(AliasError::Charset { ch });
    }
    if reserved.contains(alias) {
        return Err(AliasError::Reserved(alias.to_owned()));
    }
    Ok(())
}

/// The server's own top-level path segments, which no code may shadow.
///
/// Matching ignores ASCII case, so `/Healthz` cannot be taken either: some
/// proxies and people fold case, and a link that looks like the health check is
/// confusing at best.
#[derive(Debug, Clone, Default)]
pub struct Reserved(Vec<String>);

impl Reserved {
    /// The segments the server itself serves or may serve.
    pub const SERVER_PATHS: &'static [&'static str] = girder_system::SERVER_PATHS;

    /// A reserved set from the given names.
    #[must_use]
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        Self(names.into_iter().map(|s| s.as_ref().to_ascii_lowercase()).collect())
    }

    /// The server's own paths.
    #[must_use]
    pub fn server_paths() -> Self {
        Self::new(Self::SERVER_PATHS)
    }

    /// Whether `segment` is reserved.
    #[must_use]
    pub fn contains(&self, segment: &str) -> bool {
        self.0.iter().any(|r| r.eq_ignore_ascii_case(segment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let check = |raw: &str, want: Result<&str, &str>| {
            let got = destination(raw).map(|u| u.to_string()).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(u), Ok(w)) => assert_eq!(u, w, "{raw}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{raw}: {e} lacks {w}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        };
        check("https://example.com", Ok("https://example.com/"));
        check("  http://example.com/a?b=c#d ", Ok("http://example.com/a?b=c#d"));
        check("https://bücher.example/", Ok("https://xn--bcher-kva.example/"));
        check("javascript:alert(1)", Err("scheme \"javascript\""));
        check("data:text/html,<b>x</b>", Err("scheme \"data\""));
        check("JAVASCRIPT:alert(1)", Err("scheme \"javascript\""));
        check("ftp://example.com/f", Err("scheme \"ftp\""));
        check("file:///etc/passwd", Err("scheme \"file\""));
        check("example.com", Err("not a valid absolute url"));
        check("", Err("not a valid absolute url"));
        check("https://user:pw@example.com", Err("credentials"));
        check("https://user@example.com", Err("credentials"));
        let long = format!("https://example.com/{}", "a".repeat(URL_BYTES_MAX));
        check(&long, Err("the limit is 2048"));
        let exact = format!("https://example.com/{}", "a".repeat(URL_BYTES_MAX - 20));
        assert_eq!(exact.len(), URL_BYTES_MAX);
        assert!(destination(&exact).is_ok());
    }

    #[test]
    fn aliases() {
        let reserved = Reserved::server_paths();
        let check = |a: &str, ok: bool| assert_eq!(alias(a, &reserved).is_ok(), ok, "{a}");
        check("my-link_1", true);
        check("abc", true);
        check(&"x".repeat(ALIAS_LEN_MAX), true);
        check("ab", false);
        check(&"x".repeat(ALIAS_LEN_MAX + 1), false);
        check("has space", false);
        check("slash/y", false);
        check("dot.x", false);
        check("ünï", false);
        check("healthz", false);
        check("HealthZ", false);
        check("api", false);
        check("metrics", false);
    }

    proptest::proptest! {
        #[test]
        fn validation_never_panics(s in "\\PC{0,300}") {
            let _ = destination(&s);
            let _ = alias(&s, &Reserved::server_paths());
        }

        #[test]
        fn accepted_urls_are_http_and_bounded(s in "(https?|ftp|javascript|data)://[a-z.]{0,20}(/[ -~]{0,40})?") {
            if let Ok(url) = destination(&s) {
                proptest::prop_assert!(matches!(url.scheme(), "http" | "https"));
                proptest::prop_assert!(url.as_str().len() <= URL_BYTES_MAX);
            }
        }
    }
}
