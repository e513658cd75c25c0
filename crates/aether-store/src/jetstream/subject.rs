//! The subjects of the store's stream: `<stream>.events.<actor>` and `<stream>.snapshots.<actor>`,
//! the actor id encoded into one token by [`aether_nats::subject::encode_actor_id`] (see the codec rules
//! and length policy in `aether_nats`).

use aether_nats::subject::encode_actor_id;

/// The subjects of one stream: events and snapshots under separate prefixes, one token per actor.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    events_prefix: String,
    snapshots_prefix: String,
}

impl Subjects {
    /// Subjects for `stream_name` (already sanitised): `<stream>.events.<actor>` and
    /// `<stream>.snapshots.<actor>`. Prefixing with the stream name keeps the subjects of
    /// different streams (namespaces) apart, which JetStream requires.
    pub(crate) fn new(stream_name: &str) -> Self {
        Self {
            events_prefix: format!("{stream_name}.events"),
            snapshots_prefix: format!("{stream_name}.snapshots"),
        }
    }

    /// The subjects the stream captures.
    pub(crate) fn stream_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.*", self.events_prefix),
            format!("{}.*", self.snapshots_prefix),
        ]
    }

    pub(crate) fn events(&self, actor_id: &str) -> String {
        format!("{}.{}", self.events_prefix, encode_actor_id(actor_id))
    }

    /// The filter of every actor's events subject.
    pub(crate) fn events_filter(&self) -> String {
        format!("{}.*", self.events_prefix)
    }

    /// The actor whose events subject `subject` is.
    pub(crate) fn actor_of(&self, subject: &str) -> Option<String> {
        let token = subject
            .strip_prefix(&self.events_prefix)?
            .strip_prefix('.')?;
        aether_nats::subject::decode_actor_id(token).ok()
    }

    pub(crate) fn snapshots(&self, actor_id: &str) -> String {
        format!("{}.{}", self.snapshots_prefix, encode_actor_id(actor_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_under_the_stream() {
        let s = Subjects::new("NS_EVENTS");
        assert_eq!(s.events("a.b"), "NS_EVENTS.events.YS5i");
        assert_eq!(s.snapshots("a.b"), "NS_EVENTS.snapshots.YS5i");
        assert_eq!(s.actor_of("NS_EVENTS.events.YS5i").as_deref(), Some("a.b"));
        assert_eq!(s.actor_of("NS_EVENTS.snapshots.YS5i"), None);
        assert_eq!(s.events_filter(), "NS_EVENTS.events.*");
        assert_eq!(
            s.stream_subjects(),
            ["NS_EVENTS.events.*", "NS_EVENTS.snapshots.*"]
        );
    }
}
