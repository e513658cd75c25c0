//! The outcomes of an actor's recent commands, by command id, so that a retried command gets
//! its first outcome instead of being decided again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use aether_core::{Event, METADATA_MESSAGE_ID, METADATA_REPLY};

/// How many command ids an activation remembers.
pub(crate) const RECENT_IDS: usize = 1024;

/// What is known of a command seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Remembered {
    /// It caused events; its reply (JSON) when the writer recorded one.
    Applied(Option<Arc<str>>),
    /// The actor refused it, on a state confirmed current (JSON of the rejection). Known only
    /// to the activation that decided it: a rejection writes nothing.
    Rejected(Arc<str>),
}

/// Bounded, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct RecentOutcomes {
    order: VecDeque<Arc<str>>,
    outcomes: HashMap<Arc<str>, Remembered>,
}

impl RecentOutcomes {
    pub(crate) fn get(&self, id: &str) -> Option<&Remembered> {
        self.outcomes.get(id)
    }

    pub(crate) fn remember(&mut self, id: &str, outcome: Remembered) {
        if let Some(slot) = self.outcomes.get_mut(id) {
            *slot = outcome;
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(Arc::clone(&id));
        self.outcomes.insert(id, outcome);
        while self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }

    /// Learns from a stored event: its command id, and the reply when this is the command's
    /// last event.
    pub(crate) fn record_event(&mut self, e: &Event) {
        let Some(id) = e.metadata_value(METADATA_MESSAGE_ID) else {
            return;
        };
        let reply = e.metadata_value(METADATA_REPLY).map(Arc::from);
        match (self.outcomes.get(id), &reply) {
            // An earlier event of the same command; keep what we know.
            (Some(Remembered::Applied(Some(_))), None) => {}
            _ => self.remember(id, Remembered::Applied(reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_learns_replies_from_the_last_event() {
        let mut r = RecentOutcomes::default();
        for i in 0..RECENT_IDS + 10 {
            r.remember(&i.to_string(), Remembered::Applied(None));
        }
        assert!(r.get("0").is_none() && r.get("9").is_none());
        assert!(r.get("10").is_some());
        let first = Event::new("A", "x", 1).with_metadata(METADATA_MESSAGE_ID, "c");
        let last = Event::new("A", "x", 2)
            .with_metadata(METADATA_MESSAGE_ID, "c")
            .with_metadata(METADATA_REPLY, "7");
        r.record_event(&first);
        assert_eq!(r.get("c"), Some(&Remembered::Applied(None)));
        r.record_event(&last);
        r.record_event(&first);
        assert_eq!(r.get("c"), Some(&Remembered::Applied(Some(Arc::from("7")))));
        r.record_event(&Event::new("A", "x", 3));
        assert_eq!(r.outcomes.len(), RECENT_IDS);
    }
}
