//! The names capture puts into SQL text: consumer (slot) names and table names,
//! checked before any statement is built from them.

/// PostgreSQL's identifier limit, and so the longest name accepted.
const MAX_NAME_BYTES: usize = 63;

/// Capture's own tables start with this; capturing them would feed the change table
/// into itself.
pub(super) const OWN_PREFIX: &str = "girder_cdc_";

/// A consumer name: 1–63 bytes of `[a-z0-9_]`, what PostgreSQL accepts as a slot name.
pub(super) fn is_consumer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= MAX_NAME_BYTES
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A table name capture accepts: an identifier, on PostgreSQL optionally
/// `schema.table`, and not one of capture's own tables. Returns (schema, table).
pub(super) fn table(name: &str, schema_allowed: bool) -> Option<(Option<&str>, &str)> {
    let (schema, table) = match name.split_once('.') {
        Some((schema, table)) if schema_allowed => (Some(schema), table),
        Some(_) => return None,
        None => (None, name),
    };
    let own = table.to_ascii_lowercase().starts_with(OWN_PREFIX);
    (schema.is_none_or(is_identifier) && is_identifier(table) && !own).then_some((schema, table))
}

/// `"name"`, for SQL text (identifiers are checked, so there is nothing to escape;
/// SQLite column names are escaped by the caller).
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names() {
        let long = "a".repeat(63);
        for good in ["a", "search_index", "x9", "_", long.as_str()] {
            assert!(is_consumer_name(good), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "Search", "a-b", "a b", "a.b", "é", "a;drop", too_long.as_str()] {
            assert!(!is_consumer_name(bad), "{bad}");
        }
    }

    #[test]
    fn table_names() {
        let check = |name: &str, schema_allowed: bool, want: Option<(Option<&str>, &str)>| {
            assert_eq!(table(name, schema_allowed), want, "{name} {schema_allowed}");
        };
        check("comments", false, Some((None, "comments")));
        check("Seat_2", false, Some((None, "Seat_2")));
        check("public.comments", true, Some((Some("public"), "comments")));
        check("public.comments", false, None);
        check("a.b.c", true, None);
        check("", false, None);
        check("2x", false, None);
        check("x y", false, None);
        check("x\"; drop table y; --", false, None);
        check("girder_cdc_changes", false, None);
        check("GIRDER_CDC_consumers", false, None);
        check("public.girder_cdc_changes", true, None);
        check(&"t".repeat(64), false, None);
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
