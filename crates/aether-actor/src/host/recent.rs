//! The outcomes of an actor's recent commands, by command id, so that a retried command gets
//! its first outcome instead of being decided again.
//!
//! What is stored with the events is the command id alone (the message id every event of a
//! command carries), so the stored size of an event never depends on the actor's state or its
//! reply. The outcomes themselves (replies and rejections, as JSON) live only in the memory of
//! the activation that decided them, under a byte budget; a new activation (after
//! passivation, a restart or a failover) learns the ids from the events and answers a retry
//! as already applied, with the reply on the current state.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;

use aether_core::{Event, METADATA_MESSAGE_ID, METADATA_REPLY, SNAPSHOT_COMMAND_IDS};
use serde::Serialize;

/// How many command ids an activation remembers.
pub(crate) const RECENT_IDS: usize = 1024;

/// The largest reply or rejection (as JSON) an activation keeps to answer a retry with; a
/// larger one is answered as already applied, with the reply on the current state.
pub(crate) const MAX_KEPT_OUTCOME_BYTES: usize = 16 * 1024;

/// How many bytes of replies and rejections one activation keeps in all; the oldest are
/// dropped first (their ids stay known).
pub(crate) const KEPT_OUTCOME_BUDGET: usize = 64 * 1024;

/// What is known of a command seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Remembered {
    /// It caused events (or decided none); its reply (JSON) while this activation keeps it.
    Applied(Option<Arc<str>>),
    /// The actor refused it, on a state confirmed current (JSON of the rejection). Known only
    /// to the activation that decided it: a rejection writes nothing.
    Rejected(Arc<str>),
}

impl Remembered {
    fn kept_bytes(&self) -> usize {
        match self {
            Self::Applied(Some(json)) | Self::Rejected(json) => json.len(),
            Self::Applied(None) => 0,
        }
    }
}

/// Bounded in ids and in kept bytes, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct RecentOutcomes {
    order: VecDeque<Arc<str>>,
    outcomes: HashMap<Arc<str>, Remembered>,
    /// Ids whose outcome kept bytes when they were remembered, oldest first; entries whose
    /// outcome has since been dropped or replaced are skipped when met.
    kept: VecDeque<Arc<str>>,
    kept_bytes: usize,
    /// The ids of the latest commands whose events are stored, oldest first, at most
    /// [`SNAPSHOT_COMMAND_IDS`]: what a snapshot keeps so that a rebuild from it recognises
    /// them without reading the events before it.
    stored: VecDeque<Arc<str>>,
}

impl RecentOutcomes {
    pub(crate) fn get(&self, id: &str) -> Option<&Remembered> {
        self.outcomes.get(id)
    }

    pub(crate) fn remember(&mut self, id: &str, outcome: Remembered) {
        let bytes = outcome.kept_bytes();
        let id: Arc<str> = match self.outcomes.get_key_value(id) {
            Some((key, old)) => {
                self.kept_bytes -= old.kept_bytes();
                Arc::clone(key)
            }
            None => {
                let key: Arc<str> = Arc::from(id);
                self.order.push_back(Arc::clone(&key));
                key
            }
        };
        if bytes > 0 {
            self.kept.push_back(Arc::clone(&id));
            self.kept_bytes += bytes;
        }
        self.outcomes.insert(id, outcome);
        while self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                if let Some(gone) = self.outcomes.remove(&old) {
                    self.kept_bytes -= gone.kept_bytes();
                }
            }
        }
        self.shed();
    }

    /// Drops the oldest kept outcomes until the budget holds: an applied command's id stays
    /// known (a retry is answered as already applied), a rejection is forgotten (a retry is
    /// decided again, which is safe: the rejection changed nothing).
    fn shed(&mut self) {
        while self.kept_bytes > KEPT_OUTCOME_BUDGET {
            let Some(id) = self.kept.pop_front() else {
                break;
            };
            match self.outcomes.get_mut(&id) {
                Some(slot @ Remembered::Applied(Some(_))) => {
                    self.kept_bytes -= slot.kept_bytes();
                    *slot = Remembered::Applied(None);
                }
                Some(Remembered::Rejected(json)) => {
                    self.kept_bytes -= json.len();
                    self.outcomes.remove(&id);
                    self.order.retain(|o| *o != id);
                }
                _ => {}
            }
        }
        // Entries of ids forgotten or replaced since are only skipped above; keep the queue
        // from growing with them.
        if self.kept.len() > 2 * RECENT_IDS {
            let outcomes = &self.outcomes;
            self.kept
                .retain(|id| outcomes.get(id).is_some_and(|o| o.kept_bytes() > 0));
        }
    }

    /// Remembers the outcome of a command whose events were just stored.
    pub(crate) fn remember_stored(&mut self, id: &str, outcome: Remembered) {
        self.remember(id, outcome);
        self.note_stored(id);
    }

    /// Learns the id of a command whose events are stored, from a snapshot that kept it.
    pub(crate) fn learn_stored(&mut self, id: &str) {
        if !self.outcomes.contains_key(id) {
            self.remember(id, Remembered::Applied(None));
        }
        self.note_stored(id);
    }

    /// The ids of the latest commands whose events are stored, oldest first.
    pub(crate) fn stored_ids(&self) -> impl Iterator<Item = &str> {
        self.stored.iter().map(|id| &**id)
    }

    fn note_stored(&mut self, id: &str) {
        // A command of several events is seen once per event, one after another.
        if self.stored.back().is_some_and(|last| &**last == id) {
            return;
        }
        let key = match self.outcomes.get_key_value(id) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(id),
        };
        self.stored.push_back(key);
        while self.stored.len() > SNAPSHOT_COMMAND_IDS {
            self.stored.pop_front();
        }
    }

    /// Learns from a stored event: its command id (and, for events written by releases that
    /// stored replies, the reply on the command's last event, when small enough to keep).
    pub(crate) fn record_event(&mut self, e: &Event) {
        let Some(id) = e.metadata_value(METADATA_MESSAGE_ID) else {
            return;
        };
        let reply = e
            .metadata_value(METADATA_REPLY)
            .filter(|r| r.len() <= MAX_KEPT_OUTCOME_BYTES)
            .map(Arc::from);
        match (self.outcomes.get(id), &reply) {
            // An earlier event of the same command, or one already known; keep what we know.
            (Some(_), None) => {}
            _ => self.remember(id, Remembered::Applied(reply)),
        }
        self.note_stored(id);
    }
}

/// The JSON of `value` when it is at most [`MAX_KEPT_OUTCOME_BYTES`] long; `None` when it is
/// longer or does not serialise. Encoding stops as soon as the limit is passed, so a huge
/// reply costs little more than the limit.
pub(crate) fn keepable_json<T: Serialize + ?Sized>(value: &T) -> Option<Arc<str>> {
    let mut out = Capped {
        buf: Vec::new(),
        cap: MAX_KEPT_OUTCOME_BYTES,
    };
    serde_json::to_writer(&mut out, value).ok()?;
    // serde_json writes valid UTF-8.
    String::from_utf8(out.buf).ok().map(Arc::from)
}

/// A writer that refuses to grow past `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            return Err(io::Error::other("over the cap"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_ids_and_learns_ids_from_events() {
        let mut r = RecentOutcomes::default();
        for i in 0..RECENT_IDS + 10 {
            r.remember(&i.to_string(), Remembered::Applied(None));
        }
        assert!(r.get("0").is_none() && r.get("9").is_none());
        assert!(r.get("10").is_some());
        let first = Event::new("A", "x", 1).with_metadata(METADATA_MESSAGE_ID, "c");
        let second = Event::new("A", "x", 2).with_metadata(METADATA_MESSAGE_ID, "c");
        r.record_event(&first);
        r.record_event(&second);
        assert_eq!(r.get("c"), Some(&Remembered::Applied(None)));
        r.record_event(&Event::new("A", "x", 3));
        assert_eq!(r.outcomes.len(), RECENT_IDS);
    }

    #[test]
    fn stored_ids_keep_the_latest_commands_with_events() {
        let mut r = RecentOutcomes::default();
        for i in 0..SNAPSHOT_COMMAND_IDS + 5 {
            let id = format!("c{i}");
            // Two events of one command count once; a command that stored nothing not at all.
            r.record_event(&Event::new("A", "x", 1).with_metadata(METADATA_MESSAGE_ID, &id));
            r.record_event(&Event::new("A", "x", 2).with_metadata(METADATA_MESSAGE_ID, &id));
            r.remember(&format!("read{i}"), Remembered::Applied(None));
        }
        let ids: Vec<&str> = r.stored_ids().collect();
        assert_eq!(ids.len(), SNAPSHOT_COMMAND_IDS);
        assert_eq!(ids.first(), Some(&"c5"));
        assert_eq!(
            ids.last(),
            Some(&format!("c{}", SNAPSHOT_COMMAND_IDS + 4).as_str())
        );
        let mut fresh = RecentOutcomes::default();
        fresh.learn_stored("c1");
        fresh.remember_stored("c2", Remembered::Applied(Some(Arc::from("1"))));
        assert_eq!(fresh.get("c1"), Some(&Remembered::Applied(None)));
        assert_eq!(fresh.stored_ids().collect::<Vec<_>>(), ["c1", "c2"]);
    }

    #[test]
    fn a_reply_stored_by_an_older_release_is_still_used_when_small() {
        let mut r = RecentOutcomes::default();
        let first = Event::new("A", "x", 1).with_metadata(METADATA_MESSAGE_ID, "c");
        let last = Event::new("A", "x", 2)
            .with_metadata(METADATA_MESSAGE_ID, "c")
            .with_metadata(METADATA_REPLY, "7");
        r.record_event(&first);
        r.record_event(&last);
        r.record_event(&first);
        assert_eq!(r.get("c"), Some(&Remembered::Applied(Some(Arc::from("7")))));
        let huge = "x".repeat(MAX_KEPT_OUTCOME_BYTES + 1);
        r.record_event(
            &Event::new("A", "x", 3)
                .with_metadata(METADATA_MESSAGE_ID, "d")
                .with_metadata(METADATA_REPLY, huge),
        );
        assert_eq!(r.get("d"), Some(&Remembered::Applied(None)));
    }

    #[test]
    fn kept_outcomes_stay_within_the_budget_oldest_dropped_first() {
        let mut r = RecentOutcomes::default();
        let reply: Arc<str> = Arc::from("r".repeat(MAX_KEPT_OUTCOME_BYTES));
        let per_budget = KEPT_OUTCOME_BUDGET / MAX_KEPT_OUTCOME_BYTES;
        r.remember("refused", Remembered::Rejected(Arc::clone(&reply)));
        for i in 0..per_budget * 3 {
            r.remember(
                &i.to_string(),
                Remembered::Applied(Some(Arc::clone(&reply))),
            );
            assert!(r.kept_bytes <= KEPT_OUTCOME_BUDGET, "{}", r.kept_bytes);
        }
        // The newest keep their replies, the oldest are known as applied, the rejection is
        // forgotten.
        let newest = (per_budget * 3 - 1).to_string();
        assert!(matches!(r.get(&newest), Some(Remembered::Applied(Some(_)))));
        assert_eq!(r.get("0"), Some(&Remembered::Applied(None)));
        assert_eq!(r.get("refused"), None);
        let counted: usize = r.outcomes.values().map(Remembered::kept_bytes).sum();
        assert_eq!(counted, r.kept_bytes);
        // Replacing and evicting keep the count exact.
        for i in 0..RECENT_IDS * 3 {
            r.remember(
                &(i % 7).to_string(),
                Remembered::Applied(Some(Arc::from("1"))),
            );
            r.remember(&format!("n{i}"), Remembered::Applied(None));
        }
        let counted: usize = r.outcomes.values().map(Remembered::kept_bytes).sum();
        assert_eq!(counted, r.kept_bytes);
        assert!(r.kept.len() <= 2 * RECENT_IDS + 1);
    }

    #[test]
    fn keepable_json_stops_at_the_limit() {
        assert_eq!(keepable_json(&7).as_deref(), Some("7"));
        let big = vec![1u8; MAX_KEPT_OUTCOME_BYTES];
        assert_eq!(keepable_json(&big), None);
    }
}
