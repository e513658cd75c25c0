//! The one naming rule for what becomes part of a NATS subject or a key-value key: cluster
//! names, node ids and incarnations, actor types, projection and worker names.

use aether_core::{Error, Result};

/// Checks a cluster name or node id (or any name under the same rule): 1 to 64 letters,
/// digits, `-` or `_` (they become parts of NATS subjects and key-value bucket names). `what`
/// names the value in the error.
///
/// ```
/// use aether_placement::validate_name;
/// assert!(validate_name("node id", "node-1").is_ok());
/// let e = validate_name("node id", "a.b").unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     r#"invalid input: node id "a.b" must be 1 to 64 letters, digits, '-' or '_'"#
/// );
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] saying what is allowed. Handling: a configuration or input error;
/// pick another name.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {name:?} must be 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

/// The rule of [`validate_name`] without building an error: a node checks every id that
/// arrives in a heartbeat with it, and a refused one must cost no allocation (a flood sends
/// thousands a second, some of them as long as a message can be).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("node id", "a-1_B").is_ok());
        assert!(is_valid_name(&"x".repeat(64)));
        for bad in [
            "",
            "a.b",
            "a b",
            "a*",
            "a>",
            "<img src=x>",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
            assert!(
                matches!(validate_name("node id", bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }
}
