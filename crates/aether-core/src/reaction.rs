//! Reactions recorded on events: the timers a decision set or cancelled and the effects
//! (messages to other actors or NATS subjects) its events send.
//!
//! They are written into the metadata of the events that caused them (key
//! [`METADATA_REACTIONS`]), so they are stored atomically with those events by construction:
//! no timer or effect without its event, no event without its timers and effects. A follower
//! of the log (`aether-reactions`) carries them out after the commit, idempotently: a timer is
//! one schedule per actor and timer name (set again: replaced), and every effect carries an id
//! derived from its event, so a receiver can drop a repeat.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actor::ActorKey;
use crate::event::Event;

/// Metadata key of the reactions an event records, as JSON ([`Reactions`]).
pub const METADATA_REACTIONS: &str = "reactions";

/// The most timers one actor may have pending. A decision that would leave more is refused
/// with [`ReactionError::TooManyTimers`] and writes nothing.
pub const MAX_TIMERS_PER_ACTOR: usize = 64;

/// The most effects one event may send ([`ReactionError::TooManyEffects`]).
pub const MAX_EFFECTS_PER_EVENT: usize = 64;

/// The longest a timer name may be, in bytes.
pub const MAX_TIMER_NAME_BYTES: usize = 64;

/// How far before the decision a timer being set may be due: a timer due a little in the past
/// fires at once (a deadline computed from an older fact); one due longer ago is almost
/// certainly a bug (a wrong unit, a zero time), and is refused with
/// [`ReactionError::TooFarPast`].
pub fn max_timer_lateness() -> Duration {
    Duration::hours(1)
}

/// How far after the decision a timer may be due (400 days: a yearly renewal with room to
/// spare); later is refused with [`ReactionError::TooFarFuture`].
pub fn max_timer_delay() -> Duration {
    Duration::days(400)
}

/// What one event records: timer changes (on the last event of a decision) and the effects
/// this event sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reactions {
    /// Timers set (or replaced) and cancelled, by name, in the order to carry them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<TimerOp>,
    /// Messages this event sends, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<EffectRecord>,
}

impl Reactions {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty() && self.effects.is_empty()
    }

    /// The reactions `event` records: `Ok(None)` when it records none.
    ///
    /// # Errors
    /// [`crate::Error::Decoding`] when the metadata holds something that is not a reactions
    /// record (a hand-written or corrupted event).
    pub fn of(event: &Event) -> crate::Result<Option<Self>> {
        Self::from_metadata(&event.metadata).map_err(|e| {
            crate::Error::Decoding(format!(
                "the reactions recorded on event {} of actor {} (version {}): {e}",
                event.id, event.actor_id, event.version
            ))
        })
    }

    /// The reactions recorded in an event's `metadata`: `Ok(None)` when none.
    ///
    /// # Errors
    /// The decoder's error, for a value that is not a reactions record.
    pub fn from_metadata(
        metadata: &crate::Metadata,
    ) -> std::result::Result<Option<Self>, serde_json::Error> {
        metadata
            .get(METADATA_REACTIONS)
            .map(|json| serde_json::from_str(json))
            .transpose()
    }

    /// Writes these reactions into `event`'s metadata (nothing when empty).
    pub fn stamp(&self, event: &mut Event) {
        if self.is_empty() {
            return;
        }
        // Serialising plain strings, timestamps and JSON values cannot fail.
        if let Ok(json) = serde_json::to_string(self) {
            event.set_metadata(METADATA_REACTIONS, json);
        }
    }
}

/// A change to one of an actor's timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum TimerOp {
    /// Set the timer, replacing any pending one of the same name.
    Set(TimerRecord),
    /// Cancel the pending timer of this name.
    Cancel {
        /// The timer's name.
        name: String,
    },
}

impl TimerOp {
    /// The name of the timer it changes.
    pub fn name(&self) -> &str {
        match self {
            Self::Set(t) => &t.name,
            Self::Cancel { name } => name,
        }
    }
}

/// A pending timer: at `due`, `command` is sent to the actor that set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerRecord {
    /// Its name, unique among the actor's timers.
    pub name: String,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The command it sends, in its serde form.
    pub command: Value,
}

impl TimerRecord {
    /// The id the command of this timer carries when it fires ([`timer_command_id`]).
    pub fn command_id(&self) -> String {
        timer_command_id(&self.name, self.due)
    }

    /// Which fire this is.
    pub fn fire(&self) -> TimerFire {
        TimerFire {
            name: self.name.clone(),
            due: self.due,
        }
    }
}

/// The command id a timer's command carries when it fires: the same for every delivery of one
/// timer (name and due time), so a repeat is absorbed by the actor's idempotency record, and
/// different for the same name set again for another time.
pub fn timer_command_id(name: &str, due: DateTime<Utc>) -> String {
    format!("timer:{name}@{}", due.timestamp_millis())
}

/// Which timer a fired command comes from; carried with the command so that the actor drops
/// it when that timer is no longer pending (replaced, cancelled, or already fired and
/// consumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerFire {
    /// The timer's name.
    pub name: String,
    /// The due time it was set for.
    pub due: DateTime<Utc>,
}

impl fmt::Display for TimerFire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.due.to_rfc3339())
    }
}

/// A message an event sends once it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum EffectRecord {
    /// A command to an actor, delivered through the actor runtime with the effect's id as its
    /// command id (so the target applies it once).
    #[serde(rename_all = "camelCase")]
    Command {
        /// The target's actor type.
        actor_type: String,
        /// The target actor.
        actor_id: String,
        /// The command, in its serde form.
        command: Value,
    },
    /// A message published to a NATS subject that a JetStream stream captures, with the
    /// effect's id as its `Nats-Msg-Id` (the stream drops a repeat within its duplicate
    /// window).
    Publish {
        /// The subject.
        subject: String,
        /// The payload, as JSON.
        payload: Value,
    },
}

/// The id of the `index`th effect of the event at `version` of `actor`: stable across every
/// delivery of it.
pub fn effect_id(actor: ActorKey<'_>, version: u64, index: usize) -> String {
    format!("effect:{actor}@{version}#{index}")
}

/// Checks a timer name: 1 to [`MAX_TIMER_NAME_BYTES`] ASCII letters, digits, `-` and `_` (it
/// becomes a subject token).
///
/// # Errors
/// [`ReactionError::InvalidTimerName`].
pub fn validate_timer_name(name: &str) -> Result<(), ReactionError> {
    if name.is_empty()
        || name.len() > MAX_TIMER_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ReactionError::InvalidTimerName {
            name: name.chars().take(80).collect(),
        });
    }
    Ok(())
}

/// Checks the due time of a timer being set by a decision made at `now`.
///
/// # Errors
/// [`ReactionError::TooFarPast`] or [`ReactionError::TooFarFuture`].
pub fn validate_timer_due(
    name: &str,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), ReactionError> {
    if due < now - max_timer_lateness() {
        return Err(ReactionError::TooFarPast {
            name: name.to_string(),
            due: due.to_rfc3339(),
        });
    }
    if due > now + max_timer_delay() {
        return Err(ReactionError::TooFarFuture {
            name: name.to_string(),
            due: due.to_rfc3339(),
        });
    }
    Ok(())
}

/// Checks the subject of a publish effect: NATS tokens separated by dots, no wildcards, no
/// whitespace, at most 255 bytes, and not a system subject (`$JS.API...`, `$KV...`: an effect
/// is data for an application, never a request to the server).
///
/// # Errors
/// [`ReactionError::InvalidSubject`].
pub fn validate_effect_subject(subject: &str) -> Result<(), ReactionError> {
    let bad = subject.is_empty()
        || subject.len() > 255
        || subject.starts_with('$')
        || subject.split('.').any(|t| {
            t.is_empty()
                || t == "*"
                || t == ">"
                || t.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
    if bad {
        return Err(ReactionError::InvalidSubject {
            subject: subject.chars().take(120).collect(),
        });
    }
    Ok(())
}

/// Why a decision's timers or effects were refused (nothing was written), or why a fired
/// timer was dropped. It crosses the wire between nodes as itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum ReactionError {
    /// A timer name that is not 1 to 64 letters, digits, `-` and `_`.
    ///
    /// Handling: fix the actor's `timers`.
    #[error("timer name {name:?} must be 1 to 64 ASCII letters, digits, '-' or '_'")]
    InvalidTimerName {
        /// The name (cut to 80 characters).
        name: String,
    },
    /// Two pending timers with one name.
    ///
    /// Handling: fix the actor's `timers`: names identify timers.
    #[error("two timers are named {name:?}")]
    DuplicateTimer {
        /// The name.
        name: String,
    },
    /// A timer due more than an hour before the decision.
    ///
    /// Handling: check the due time's computation (units, a zero time).
    #[error("timer {name:?} is due at {due}, more than an hour before the decision")]
    TooFarPast {
        /// The timer.
        name: String,
        /// Its due time (RFC 3339).
        due: String,
    },
    /// A timer due more than 400 days after the decision.
    ///
    /// Handling: set a nearer timer and set the next one when it fires.
    #[error("timer {name:?} is due at {due}, more than 400 days after the decision")]
    TooFarFuture {
        /// The timer.
        name: String,
        /// Its due time (RFC 3339).
        due: String,
    },
    /// More pending timers than [`MAX_TIMERS_PER_ACTOR`].
    ///
    /// Handling: keep fewer timers per actor (one timer for the earliest of several
    /// deadlines, say).
    #[error("the decision would leave {count} timers pending; an actor may have at most {limit}")]
    TooManyTimers {
        /// How many the decision would leave.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More effects on one event than [`MAX_EFFECTS_PER_EVENT`].
    ///
    /// Handling: spread the effects over several events, or send one message that stands for
    /// many.
    #[error("an event would send {count} effects; at most {limit} are allowed")]
    TooManyEffects {
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An effect to an actor type no reactor here can deliver to.
    ///
    /// Handling: register the target type with the reactor (or fix the name).
    #[error("effect to unknown actor type {actor_type:?}")]
    UnknownTarget {
        /// The type named.
        actor_type: String,
    },
    /// An effect's actor id is empty.
    ///
    /// Handling: fix the effect.
    #[error("effect to an actor of type {actor_type:?} with an empty id")]
    EmptyTargetId {
        /// The type named.
        actor_type: String,
    },
    /// A publish effect's subject is not a plain NATS subject.
    ///
    /// Handling: fix the subject (dot-separated tokens, no wildcards, no spaces, not starting
    /// with `$`).
    #[error("effect subject {subject:?} is not a valid NATS subject without wildcards")]
    InvalidSubject {
        /// The subject (cut to 120 characters).
        subject: String,
    },
    /// A timer's command or an effect's content could not be encoded.
    ///
    /// Handling: fix the type's `Serialize`.
    #[error("a reaction could not be encoded: {reason}")]
    Encoding {
        /// The encoder's message.
        reason: String,
    },
    /// The decision sets a timer, and no timer service runs for this actor type (none was
    /// started, or the NATS server is older than 2.12 and has no message schedules).
    ///
    /// Handling: start the reactor with timers (on nats-server 2.12 or later).
    #[error("timers are not available: {reason}")]
    TimersUnavailable {
        /// Why.
        reason: String,
    },
    /// A fired timer that is no longer pending on its actor (replaced, cancelled, or fired
    /// and consumed before): dropped without a decision.
    ///
    /// Handling: none; a timer service treats it as delivered.
    #[error("timer {fire} is no longer pending; its command was not applied")]
    StaleTimer {
        /// The fire dropped.
        fire: TimerFire,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_metadata() {
        let due = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .expect("a time");
        let r = Reactions {
            timers: vec![
                TimerOp::Set(TimerRecord {
                    name: "expire".into(),
                    due,
                    command: serde_json::json!({"Expire": {}}),
                }),
                TimerOp::Cancel {
                    name: "remind".into(),
                },
            ],
            effects: vec![EffectRecord::Command {
                actor_type: "payment".into(),
                actor_id: "p-1".into(),
                command: serde_json::json!("Charge"),
            }],
        };
        let mut event = Event::new("Held", "b-1", 3);
        r.stamp(&mut event);
        assert_eq!(Reactions::of(&event).expect("decodes"), Some(r));
        assert_eq!(
            Reactions::of(&Event::new("Held", "b-1", 3)).expect("none"),
            None
        );
        event.set_metadata(METADATA_REACTIONS, "not json");
        assert!(Reactions::of(&event).is_err());
    }

    #[test]
    fn ids_are_deterministic() {
        let due = DateTime::from_timestamp_millis(1_700_000_000_123).expect("a time");
        assert_eq!(
            timer_command_id("expire", due),
            "timer:expire@1700000000123"
        );
        assert_eq!(
            effect_id(ActorKey::new("order", "o-1"), 4, 1),
            format!("effect:{}@4#1", ActorKey::new("order", "o-1"))
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for bad in ["", "a.b", "a b", "*", &"x".repeat(65)] {
            assert!(validate_timer_name(bad).is_err(), "{bad:?}");
        }
        validate_timer_name("hold-expiry_2").expect("valid");
        let now = Utc::now();
        assert!(matches!(
            validate_timer_due("t", now - Duration::hours(2), now),
            Err(ReactionError::TooFarPast { .. })
        ));
        assert!(matches!(
            validate_timer_due("t", now + Duration::days(401), now),
            Err(ReactionError::TooFarFuture { .. })
        ));
        validate_timer_due("t", now - Duration::minutes(5), now).expect("a little late");
        validate_timer_due("t", now + Duration::days(399), now).expect("within a year");
        for bad in [
            "",
            "a..b",
            "a.*",
            "a.>",
            "a b",
            ".a",
            "$JS.API.STREAM.DELETE.X",
        ] {
            assert!(validate_effect_subject(bad).is_err(), "{bad:?}");
        }
        validate_effect_subject("orders.placed.eu").expect("valid");
    }
}
