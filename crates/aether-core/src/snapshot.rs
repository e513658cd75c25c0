//! Snapshots: an actor's state at a version, so replay can start there instead of at 1.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::actor::ActorKey;
use crate::error::{Error, Result};
use crate::event::EventData;

/// An actor's state as of `version`, saved so that rebuilding the actor only replays the events
/// after it. A snapshot is derived data: it can always be rebuilt from the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The type of the actor the state belongs to (`None`: an untyped actor). Omitted from the
    /// JSON form when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<String>,
    /// The actor the state belongs to, within its type.
    pub actor_id: String,
    /// The version of the last event folded into `state`.
    pub version: u64,
    /// The state itself, as a JSON object.
    #[serde(default)]
    pub state: EventData,
    /// When the snapshot was taken (UTC, nanoseconds).
    pub timestamp: DateTime<Utc>,
    /// The schema version of `state`, when the writer recorded one. A reader that expects
    /// another version ignores the snapshot and rebuilds from the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The ids of the commands behind the actor's latest events, oldest first, when the writer
    /// recorded them (`None`: not recorded, as by writers before this field existed). A rebuild
    /// from the snapshot learns them here, so a command retried after the snapshot was taken is
    /// still recognised without reading the events before the snapshot for their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_ids: Option<Vec<String>>,
}

/// The most command ids a snapshot keeps ([`Snapshot::with_command_ids`]).
pub const SNAPSHOT_COMMAND_IDS: usize = 32;

/// The longest command id a snapshot keeps; a longer one is left out (a retry of that command
/// after a rebuild is then decided again, as before snapshots kept ids).
pub const SNAPSHOT_COMMAND_ID_BYTES: usize = 256;

impl Snapshot {
    /// A snapshot taken now.
    pub fn new(actor_id: impl Into<String>, version: u64, state: EventData) -> Self {
        Self {
            actor_type: None,
            actor_id: actor_id.into(),
            version,
            state,
            timestamp: Utc::now(),
            schema_version: None,
            command_ids: None,
        }
    }

    /// Sets the actor type.
    pub fn with_actor_type(mut self, actor_type: impl Into<String>) -> Self {
        self.actor_type = Some(actor_type.into());
        self
    }

    /// The actor the snapshot belongs to: its type and id.
    pub fn actor_key(&self) -> ActorKey<'_> {
        ActorKey {
            actor_type: self.actor_type.as_deref(),
            actor_id: &self.actor_id,
        }
    }

    /// Records the schema version of the state.
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = Some(version);
        self
    }

    /// Records the ids of the commands behind the actor's latest events, oldest first: the
    /// last [`SNAPSHOT_COMMAND_IDS`] of them, leaving out ids longer than
    /// [`SNAPSHOT_COMMAND_ID_BYTES`]. An empty list is recorded too: it says the actor's latest
    /// events carry no command id, so a rebuild need not look for any.
    pub fn with_command_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut kept: Vec<String> = ids
            .into_iter()
            .map(Into::into)
            .filter(|id| id.len() <= SNAPSHOT_COMMAND_ID_BYTES)
            .collect();
        let excess = kept.len().saturating_sub(SNAPSHOT_COMMAND_IDS);
        kept.drain(..excess);
        self.command_ids = Some(kept);
        self
    }

    /// Checks the snapshot names an actor and a version of at least 1, and that its state holds
    /// no personal field in clear ([`personal`](crate::personal)).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.actor_id.is_empty() {
            return Err(Error::invalid("snapshot actor id must not be empty"));
        }
        if let Some(t) = &self.actor_type {
            crate::actor::validate_actor_type(t)?;
        }
        if self.version == 0 {
            return Err(Error::invalid("snapshot version must be at least 1"));
        }
        if crate::personal::holds_clear_personal(&self.state) {
            return Err(Error::invalid(format!(
                "the snapshot of actor {:?} holds a personal field in clear (or a malformed one): \
                 save it through a store that seals personal data (aether-privacy's PrivateStore)",
                self.actor_id
            )));
        }
        if let Some(ids) = &self.command_ids {
            if ids.len() > SNAPSHOT_COMMAND_IDS {
                return Err(Error::invalid(format!(
                    "a snapshot keeps at most {SNAPSHOT_COMMAND_IDS} command ids, not {}",
                    ids.len()
                )));
            }
            if ids.iter().any(|id| id.len() > SNAPSHOT_COMMAND_ID_BYTES) {
                return Err(Error::invalid(format!(
                    "a snapshot keeps command ids of at most {SNAPSHOT_COMMAND_ID_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }

    /// Encodes the snapshot as JSON bytes.
    ///
    /// # Errors
    /// [`Error::Encoding`].
    pub fn to_json_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Encoding(e.to_string()))
    }

    /// Decodes a snapshot from JSON bytes.
    ///
    /// # Errors
    /// [`Error::Decoding`] for any input that is not a snapshot.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Decoding(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_with_camel_case_names() {
        let s = Snapshot::new(
            "acc-1",
            42,
            json!({"balance": 10, "owner": {"name": "Ada"}})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["actorId"], json!("acc-1"));
        assert_eq!(v["version"], json!(42));
        let back = Snapshot::from_json_bytes(&s.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(v.get("schemaVersion").is_none(), "not written when not set");
        let versioned = s.with_schema_version(3);
        let back = Snapshot::from_json_bytes(&versioned.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back.schema_version, Some(3));
        assert!(
            v.get("commandIds").is_none(),
            "not written when not recorded"
        );
    }

    #[test]
    fn command_ids_keep_the_latest_and_read_back() {
        let ids = (0..40).map(|i| format!("cmd-{i}"));
        let s = Snapshot::new("a", 7, EventData::new())
            .with_command_ids(ids.chain(std::iter::once("x".repeat(300))));
        let kept = s.command_ids.clone().unwrap();
        assert_eq!(kept.len(), SNAPSHOT_COMMAND_IDS);
        assert_eq!(kept.first().map(String::as_str), Some("cmd-8"));
        assert_eq!(kept.last().map(String::as_str), Some("cmd-39"));
        s.validate().unwrap();
        let back = Snapshot::from_json_bytes(&s.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
        // None and an empty list differ: the second says there is nothing to look for.
        let none = Snapshot::new("a", 7, EventData::new()).with_command_ids(Vec::<String>::new());
        let back = Snapshot::from_json_bytes(&none.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back.command_ids, Some(vec![]));
        // A snapshot written before the field existed reads as not recorded.
        let old = br#"{"actorId":"a","version":3,"state":{},"timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(Snapshot::from_json_bytes(old).unwrap().command_ids, None);
        let mut bad = Snapshot::new("a", 7, EventData::new());
        bad.command_ids = Some(vec!["y".into(); SNAPSHOT_COMMAND_IDS + 1]);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn validation_and_garbage() {
        assert!(Snapshot::new("", 1, EventData::new()).validate().is_err());
        assert!(Snapshot::new("a", 0, EventData::new()).validate().is_err());
        assert!(Snapshot::from_json_bytes(b"\xff\x00garbage").is_err());
    }
}
