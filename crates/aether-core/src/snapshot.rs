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
}

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

    /// Checks the snapshot names an actor and a version of at least 1.
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
    }

    #[test]
    fn validation_and_garbage() {
        assert!(Snapshot::new("", 1, EventData::new()).validate().is_err());
        assert!(Snapshot::new("a", 0, EventData::new()).validate().is_err());
        assert!(Snapshot::from_json_bytes(b"\xff\x00garbage").is_err());
    }
}
