//! The subjects of the store's stream.
//!
//! | actor | events | snapshots |
//! |---|---|---|
//! | typed (`type`, `id`) | `<stream>.events.<type>.<bucket>.<id>` | `<stream>.snapshots.<type>.<bucket>.<id>` |
//! | untyped `id` | `<stream>.events.<id>` | `<stream>.snapshots.<id>` |
//!
//! `<id>` is the actor id encoded into one token by [`aether_nats::subject::encode_actor_id`] (see
//! the codec rules and length policy in `aether_nats`); `<type>` is the type name as it is (only
//! letters, digits, `-` and `_`: [`aether_core::validate_actor_type`]); `<bucket>` is
//! [`aether_placement::bucket_for`] of the id, in decimal. The server can therefore select one
//! type's events (`<stream>.events.<type>.*.*`) and the actors of some buckets
//! (`<stream>.events.<type>.<bucket>.*`), which is how projections read only their types and
//! their partitions. Untyped subjects are the layout of streams written before actor types; a
//! store configured with a legacy actor type keeps that type's actors on them.

use aether_core::ActorKey;
use aether_nats::subject::{decode_actor_id, encode_actor_id};
use aether_placement::bucket_for;

use super::codec::Owner;

/// The subjects of one stream: events and snapshots under separate prefixes.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    events_prefix: String,
    snapshots_prefix: String,
    /// The actor type whose actors live on untyped (id-only) subjects.
    legacy_type: Option<String>,
}

/// An actor as read back from a subject: owned type and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectActor {
    pub(crate) actor_type: Option<String>,
    pub(crate) actor_id: String,
}

impl Subjects {
    /// Subjects for `stream_name` (already sanitised). Prefixing with the stream name keeps the
    /// subjects of different streams (namespaces) apart, which JetStream requires.
    pub(crate) fn new(stream_name: &str, legacy_type: Option<String>) -> Self {
        Self {
            events_prefix: format!("{stream_name}.events"),
            snapshots_prefix: format!("{stream_name}.snapshots"),
            legacy_type,
        }
    }

    /// The subjects the stream captures: both layouts, events and snapshots.
    pub(crate) fn stream_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.*", self.events_prefix),
            format!("{}.*.*.*", self.events_prefix),
            format!("{}.*", self.snapshots_prefix),
            format!("{}.*.*.*", self.snapshots_prefix),
        ]
    }

    /// The type the actor is stored under: `None` for untyped subjects.
    fn stored_type<'a>(&self, actor: ActorKey<'a>) -> Option<&'a str> {
        match actor.actor_type {
            Some(t) if self.legacy_type.as_deref() != Some(t) => Some(t),
            _ => None,
        }
    }

    fn subject(prefix: &str, actor_type: Option<&str>, actor_id: &str) -> String {
        match actor_type {
            Some(t) => format!(
                "{prefix}.{t}.{}.{}",
                bucket_for(actor_id),
                encode_actor_id(actor_id)
            ),
            None => format!("{prefix}.{}", encode_actor_id(actor_id)),
        }
    }

    /// The events subject of `actor`.
    pub(crate) fn events(&self, actor: ActorKey<'_>) -> String {
        Self::subject(&self.events_prefix, self.stored_type(actor), actor.actor_id)
    }

    /// The snapshots subject of `actor`.
    pub(crate) fn snapshots(&self, actor: ActorKey<'_>) -> String {
        Self::subject(
            &self.snapshots_prefix,
            self.stored_type(actor),
            actor.actor_id,
        )
    }

    /// The filter of every actor's events subject, both layouts.
    pub(crate) fn events_filter(&self) -> String {
        format!("{}.>", self.events_prefix)
    }

    /// The filters selecting the events of `types` (every type when empty) whose actors are in
    /// `buckets` (every bucket when `None`). A type that is the legacy type also selects the
    /// untyped subjects, which carry no bucket (the reader checks those itself).
    pub(crate) fn events_filters(&self, types: &[String], buckets: Option<&[u32]>) -> Vec<String> {
        let p = &self.events_prefix;
        let mut out = Vec::new();
        let legacy = |t: &str| self.legacy_type.as_deref() == Some(t);
        if types.is_empty() {
            match buckets {
                None => out.push(self.events_filter()),
                Some(bs) => {
                    out.push(format!("{p}.*"));
                    out.extend(bs.iter().map(|b| format!("{p}.*.{b}.*")));
                }
            }
            return out;
        }
        for t in types {
            if legacy(t) {
                out.push(format!("{p}.*"));
            }
            match buckets {
                // Not `{p}.{t}.>`: servers before 2.10 accept a filter only when it lies
                // within one of the stream's subjects (`{p}.*.*.*`).
                None => out.push(format!("{p}.{t}.*.*")),
                Some(bs) => out.extend(bs.iter().map(|b| format!("{p}.{t}.{b}.*"))),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The actor whose events subject `subject` is, `None` for anything else (a snapshot, a
    /// foreign or malformed subject, a bucket that does not match the id).
    pub(crate) fn actor_of(&self, subject: &str) -> Option<SubjectActor> {
        let rest = subject
            .strip_prefix(&self.events_prefix)?
            .strip_prefix('.')?;
        let mut tokens = rest.split('.');
        match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
            (Some(id), None, None, None) => Some(SubjectActor {
                actor_type: self.legacy_type.clone(),
                actor_id: decode_actor_id(id).ok()?,
            }),
            (Some(t), Some(bucket), Some(id), None) => {
                aether_core::validate_actor_type(t).ok()?;
                let actor_id = decode_actor_id(id).ok()?;
                (bucket == bucket_for(&actor_id).to_string()).then(|| SubjectActor {
                    actor_type: Some(t.to_string()),
                    actor_id,
                })
            }
            _ => None,
        }
    }

    /// The actor as stored: the legacy type's actors as untyped ones (they share subjects).
    pub(crate) fn stored_key<'a>(&self, actor: ActorKey<'a>) -> ActorKey<'a> {
        ActorKey {
            actor_type: self.stored_type(actor),
            actor_id: actor.actor_id,
        }
    }

    /// The key of `actor` in the store's caches: one per subject, so the legacy type's actor
    /// and the untyped one with the same id share it.
    pub(crate) fn key(&self, actor: ActorKey<'_>) -> String {
        crate::key::owned_key(self.stored_key(actor))
    }

    /// Runs `f` with [`key`](Self::key) of `actor`, built without allocating.
    pub(crate) fn with_key<R>(&self, actor: ActorKey<'_>, f: impl FnOnce(&str) -> R) -> R {
        crate::key::with_key(self.stored_key(actor), f)
    }

    /// Who owns the messages of `actor`'s subjects, for decoding them.
    pub(crate) fn owner<'a>(&'a self, actor: ActorKey<'a>) -> Owner<'a> {
        Owner {
            actor_id: actor.actor_id,
            subject_type: self.stored_type(actor),
            legacy_type: self.legacy_type.as_deref(),
        }
    }

    /// Who owns the messages of a subject read back with [`actor_of`](Self::actor_of).
    pub(crate) fn owner_of<'a>(&'a self, actor: &'a SubjectActor) -> Owner<'a> {
        self.owner(actor.key())
    }
}

impl SubjectActor {
    /// The actor as a key.
    pub(crate) fn key(&self) -> ActorKey<'_> {
        ActorKey {
            actor_type: self.actor_type.as_deref(),
            actor_id: &self.actor_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_placement::bucket_for;

    #[test]
    fn untyped_subjects_are_as_before() {
        let s = Subjects::new("NS_EVENTS", None);
        let a = ActorKey::untyped("a.b");
        assert_eq!(s.events(a), "NS_EVENTS.events.YS5i");
        assert_eq!(s.snapshots(a), "NS_EVENTS.snapshots.YS5i");
        assert_eq!(
            s.actor_of("NS_EVENTS.events.YS5i"),
            Some(SubjectActor {
                actor_type: None,
                actor_id: "a.b".into()
            })
        );
        assert_eq!(s.actor_of("NS_EVENTS.snapshots.YS5i"), None);
        assert_eq!(s.events_filter(), "NS_EVENTS.events.>");
    }

    #[test]
    fn typed_subjects_carry_type_and_bucket() {
        let s = Subjects::new("NS", None);
        let b = bucket_for("s-1");
        let show = ActorKey::new("show", "s-1");
        let subject = s.events(show);
        assert_eq!(subject, format!("NS.events.show.{b}.cy0x"));
        assert_eq!(s.snapshots(show), format!("NS.snapshots.show.{b}.cy0x"));
        assert_ne!(s.events(ActorKey::new("customer", "s-1")), subject);
        assert_ne!(s.events(ActorKey::untyped("s-1")), subject);
        assert_eq!(
            s.actor_of(&subject),
            Some(SubjectActor {
                actor_type: Some("show".into()),
                actor_id: "s-1".into()
            })
        );
        // A bucket that does not match the id, a padded bucket, a bad type: not an actor.
        let wrong = (b + 1) % aether_placement::ACTOR_BUCKETS;
        assert_eq!(s.actor_of(&format!("NS.events.show.{wrong}.cy0x")), None);
        assert_eq!(s.actor_of(&format!("NS.events.show.0{b}.cy0x")), None);
        assert_eq!(s.actor_of(&format!("NS.events.sh%w.{b}.cy0x")), None);
        assert_eq!(s.actor_of("NS.events.show.cy0x"), None);
    }

    #[test]
    fn the_legacy_type_lives_on_untyped_subjects() {
        let s = Subjects::new("NS", Some("account".into()));
        assert_eq!(s.events(ActorKey::new("account", "a")), "NS.events.YQ");
        assert_eq!(s.events(ActorKey::untyped("a")), "NS.events.YQ");
        assert!(s
            .events(ActorKey::new("order", "a"))
            .starts_with("NS.events.order."));
        assert_eq!(
            s.actor_of("NS.events.YQ").and_then(|a| a.actor_type),
            Some("account".into())
        );
        assert_eq!(
            s.events_filters(&["account".into()], None),
            ["NS.events.*", "NS.events.account.*.*"]
        );
    }

    #[test]
    fn filters_select_types_and_buckets() {
        let s = Subjects::new("NS", None);
        assert_eq!(s.events_filters(&[], None), ["NS.events.>"]);
        assert_eq!(
            s.events_filters(&["show".into(), "customer".into()], None),
            ["NS.events.customer.*.*", "NS.events.show.*.*"]
        );
        assert_eq!(
            s.events_filters(&["show".into()], Some(&[3, 11])),
            ["NS.events.show.11.*", "NS.events.show.3.*"]
        );
        assert_eq!(
            s.events_filters(&[], Some(&[3])),
            ["NS.events.*", "NS.events.*.3.*"]
        );
    }
}
