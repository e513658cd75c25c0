//! An actor's identity: its type and its id.
//!
//! Two actors of different types may share an id: an `order` `o-1` and an `invoice` `o-1` are
//! two actors with two histories. An actor without a type (an *untyped* actor) is what the
//! store's id-only methods address: raw events written without a type, and every event written
//! before actor types existed.

use std::fmt;

use crate::error::{Error, Result};

/// Longest actor type name, in bytes.
pub const MAX_ACTOR_TYPE_BYTES: usize = 64;

/// Which actor: its type (`None` for an untyped actor) and its id.
///
/// Cheap to copy; it borrows both strings. Build one with [`ActorKey::new`] or
/// [`ActorKey::untyped`] (or `From<&str>`), or take one from a stored event with
/// [`Event::actor_key`](crate::Event::actor_key).
///
/// ```
/// use aether_core::ActorKey;
///
/// let show = ActorKey::new("show", "s-1");
/// let customer = ActorKey::new("customer", "s-1");
/// assert_ne!(show, customer);
/// assert_eq!(show.to_string(), "show/s-1");
/// assert_eq!(ActorKey::from("s-1").to_string(), "s-1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorKey<'a> {
    /// The actor type, `None` for an untyped actor.
    pub actor_type: Option<&'a str>,
    /// The actor's id within its type.
    pub actor_id: &'a str,
}

impl<'a> ActorKey<'a> {
    /// The actor `actor_id` of type `actor_type`.
    pub fn new(actor_type: &'a str, actor_id: &'a str) -> Self {
        Self {
            actor_type: Some(actor_type),
            actor_id,
        }
    }

    /// The untyped actor `actor_id`.
    pub fn untyped(actor_id: &'a str) -> Self {
        Self {
            actor_type: None,
            actor_id,
        }
    }

    /// Checks the id is not empty and the type, when set, is a valid type name
    /// ([`validate_actor_type`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the rule broken.
    pub fn validate(&self) -> Result<()> {
        if self.actor_id.is_empty() {
            return Err(Error::invalid("actor id must not be empty"));
        }
        match self.actor_type {
            Some(t) => validate_actor_type(t),
            None => Ok(()),
        }
    }
}

impl<'a> From<&'a str> for ActorKey<'a> {
    fn from(actor_id: &'a str) -> Self {
        Self::untyped(actor_id)
    }
}

impl<'a> From<&'a String> for ActorKey<'a> {
    fn from(actor_id: &'a String) -> Self {
        Self::untyped(actor_id)
    }
}

impl fmt::Display for ActorKey<'_> {
    /// `type/id`, or the id alone for an untyped actor, the id's control and non-printable
    /// characters escaped (`\n`, `\u{1b}`) so that a hostile id cannot reach a terminal raw.
    /// For people: ids may hold `/`, so the form is not parsed back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.actor_type {
            write!(f, "{t}/")?;
        }
        write!(f, "{}", self.actor_id.escape_debug())
    }
}

/// Checks an actor type name: 1 to [`MAX_ACTOR_TYPE_BYTES`] bytes of ASCII letters, digits, `-`
/// and `_`. Type names appear as they are in store subjects, so that the server can select one
/// type's events and NATS permissions can name a type.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn validate_actor_type(actor_type: &str) -> Result<()> {
    if actor_type.is_empty()
        || actor_type.len() > MAX_ACTOR_TYPE_BYTES
        || !actor_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(format!(
            "actor type {:?} must be 1 to {MAX_ACTOR_TYPE_BYTES} ASCII letters, digits, '-' or '_'",
            actor_type.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_checked() {
        for ok in ["show", "Customer_2", "a-b", &"x".repeat(64)] {
            assert!(validate_actor_type(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(validate_actor_type(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        assert!(ActorKey::new("show", "").validate().is_err());
        assert!(ActorKey::new("sh.ow", "s").validate().is_err());
        assert!(ActorKey::untyped("s").validate().is_ok());
    }

    #[test]
    fn keys_of_two_types_with_one_id_differ() {
        assert_ne!(ActorKey::new("a", "x"), ActorKey::new("b", "x"));
        assert_ne!(ActorKey::new("a", "x"), ActorKey::untyped("x"));
        assert_eq!(ActorKey::from("x"), ActorKey::untyped("x"));
        assert_eq!(
            ActorKey::new("t", "a\u{1b}[2J").to_string(),
            "t/a\\u{1b}[2J"
        );
    }
}
