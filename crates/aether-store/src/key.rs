//! The key of an actor in the stores' maps: `type NUL id` for a typed actor, `NUL id` for an
//! untyped one. A type name is never empty and holds no NUL, so the keys of different actors
//! never meet, whatever the id holds.
//!
//! Lookups build the key in a buffer of the thread ([`with_key`]) rather than a new string:
//! reading a cached version is a map lookup on the hot path of every command, and an
//! allocation would double its cost.

use std::cell::RefCell;

use aether_core::ActorKey;

thread_local! {
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

fn write_key(actor: ActorKey<'_>, out: &mut String) {
    out.clear();
    out.push_str(actor.actor_type.unwrap_or(""));
    out.push('\0');
    out.push_str(actor.actor_id);
}

/// The key of `actor`, as a new string (to insert it).
pub(crate) fn owned_key(actor: ActorKey<'_>) -> String {
    let t = actor.actor_type.unwrap_or("");
    let mut key = String::with_capacity(t.len() + 1 + actor.actor_id.len());
    write_key(actor, &mut key);
    key
}

/// Runs `f` with the key of `actor`, built without allocating (once the thread's buffer has
/// grown to the longest key it has seen). `f` must not call `with_key` itself.
pub(crate) fn with_key<R>(actor: ActorKey<'_>, f: impl FnOnce(&str) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            write_key(actor, &mut buf);
            f(buf.as_str())
        }
        // Re-entered (not done by this crate): fall back to a key of its own.
        Err(_) => f(&owned_key(actor)),
    })
}

/// The actor a key names.
pub(crate) fn split_key(key: &str) -> ActorKey<'_> {
    match key.split_once('\0') {
        Some(("", id)) => ActorKey::untyped(id),
        Some((t, id)) => ActorKey::new(t, id),
        None => ActorKey::untyped(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_meet() {
        let keys = [
            ActorKey::new("show", "s-1"),
            ActorKey::new("customer", "s-1"),
            ActorKey::untyped("s-1"),
            ActorKey::untyped("show\0s-1"),
        ];
        let owned: Vec<String> = keys.iter().map(|k| owned_key(*k)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(split_key(&owned[i]), *k);
            assert!(with_key(*k, |b| b == owned[i]));
        }
        let distinct: std::collections::HashSet<&String> = owned.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
