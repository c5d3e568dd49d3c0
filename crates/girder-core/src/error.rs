//! Reading error chains.

use std::error::Error;

/// The first error of type `T` in `err`'s source chain, `err` itself included: how a
/// caller reaches the driver error (`sqlx::Error`, `redis::RedisError`) under the
/// typed errors the crates return.
#[must_use]
pub fn source_of<'e, T: Error + 'static>(err: &'e (dyn Error + 'static)) -> Option<&'e T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error, PartialEq)]
    #[error("root")]
    struct Root;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Root);

    #[test]
    fn finds_itself_a_cause_or_nothing() {
        let outer = Outer(Root);
        assert_eq!(source_of::<Root>(&outer), Some(&Root));
        assert!(source_of::<Outer>(&outer).is_some());
        assert!(source_of::<std::io::Error>(&outer).is_none());
    }
}
