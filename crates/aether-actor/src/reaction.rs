//! Timers and effects, typed: what an actor declares ([`Timer`], [`Effect`]) and how the
//! runtime records them on the events of a decision ([`aether_core::Reactions`]).
//!
//! Timers are declared, not commanded: [`Actor::timers`] says which timers the actor wants
//! pending in a state. After each decision the runtime compares that set with the one before
//! and records what changed (set, replaced, cancelled) on the decision's last event, so a
//! timer is never set without its event nor an event stored without its timers, and
//! rebuilding an actor (from a snapshot too) rebuilds its pending timers. Effects are declared
//! per event by [`Actor::effects`] and recorded on that event.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aether_core::{
    validate_effect_subject, validate_timer_due, validate_timer_name, EffectRecord, Event,
    ReactionError, Reactions, TimerOp, TimerRecord, MAX_EFFECTS_PER_EVENT, MAX_TIMERS_PER_ACTOR,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::actor::Actor;

/// A timer an actor wants pending: at `due`, `command` is sent to the actor itself, with a
/// command id derived from the name and the due time
/// ([`aether_core::timer_command_id`]).
///
/// A timer is identified by its name within its actor: declaring the same name with another
/// due time or command replaces it; no longer declaring it cancels it. A fired timer's command
/// is dropped, undecided, when the actor no longer declares that timer (name and due time) by
/// the time it arrives, so a replaced or cancelled timer never acts in its old form. The
/// command a timer sends should change the state so that the timer is no longer declared (or
/// is declared for a later time).
///
/// To act on another actor at a time, let the timer's command decide an event whose
/// [`Effect`] sends the other actor its command.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer<C> {
    /// Its name: 1 to 64 ASCII letters, digits, `-` and `_`.
    pub name: String,
    /// When it is due. Keep it in the state (taken from an event), never from the clock in
    /// [`Actor::timers`]: the declaration must be the same on every rebuild.
    pub due: DateTime<Utc>,
    /// The command it sends.
    pub command: C,
}

impl<C> Timer<C> {
    /// A timer named `name` due at `due`, sending `command`.
    pub fn at(name: impl Into<String>, due: DateTime<Utc>, command: C) -> Self {
        Self {
            name: name.into(),
            due,
            command,
        }
    }

    /// A timer named `name` due `delay` after `from` (a time kept in the state, such as when
    /// a hold was placed), sending `command`. A delay too large for the calendar saturates
    /// (and is refused as too far in the future).
    pub fn after(
        name: impl Into<String>,
        from: DateTime<Utc>,
        delay: std::time::Duration,
        command: C,
    ) -> Self {
        let due = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| from.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Self::at(name, due, command)
    }
}

/// A message an event sends once it is stored: a command to another actor, or a publish to a
/// NATS subject. Delivered after the commit, never before, at least once, with an id derived
/// from the event ([`aether_core::effect_id`]) so the receiver can drop a repeat (an actor
/// does so by itself: the id is the command id).
#[derive(Debug, Clone, PartialEq)]
pub struct Effect(Result<EffectRecord, ReactionError>);

impl Effect {
    /// Sends `command` to the actor `actor_id` of type `B`.
    pub fn send<B: Actor>(actor_id: impl Into<String>, command: &B::Command) -> Self {
        Self::send_to(B::TYPE, actor_id, command)
    }

    /// Sends `command` (in its serde form) to the actor `actor_id` of type `actor_type`, for a
    /// target whose Rust type is not at hand.
    pub fn send_to(
        actor_type: impl Into<String>,
        actor_id: impl Into<String>,
        command: &impl Serialize,
    ) -> Self {
        Self(encode(command).map(|command| EffectRecord::Command {
            actor_type: actor_type.into(),
            actor_id: actor_id.into(),
            command,
        }))
    }

    /// Publishes `payload` as JSON to `subject`, which a JetStream stream must capture (the
    /// publish is confirmed by the stream, and its effect id is the message id the stream
    /// deduplicates by).
    pub fn publish(subject: impl Into<String>, payload: &impl Serialize) -> Self {
        Self(encode(payload).map(|payload| EffectRecord::Publish {
            subject: subject.into(),
            payload,
        }))
    }

    /// The recorded form, or why it cannot be recorded.
    pub fn record(&self) -> Result<&EffectRecord, &ReactionError> {
        self.0.as_ref()
    }
}

fn encode(value: &impl Serialize) -> Result<serde_json::Value, ReactionError> {
    serde_json::to_value(value).map_err(|e| ReactionError::Encoding {
        reason: e.to_string(),
    })
}

/// What the reactor serving a host can carry out, told to the host
/// ([`ActorHost::set_reactions`](crate::ActorHost::set_reactions)) by whoever runs it. A host
/// with none set refuses decisions that set timers (`TimersUnavailable`) and effects to any
/// type but its own.
pub trait ReactionSupport: Send + Sync {
    /// `Ok` when timers set by this host's actors will fire; else why not.
    ///
    /// # Errors
    /// [`ReactionError::TimersUnavailable`].
    fn timers(&self) -> Result<(), ReactionError>;

    /// Whether commands to `actor_type` can be delivered.
    fn knows(&self, actor_type: &str) -> bool;
}

/// No reactor: no timers, effects to the host's own type only.
pub(crate) struct NoReactor;

impl ReactionSupport for NoReactor {
    fn timers(&self) -> Result<(), ReactionError> {
        Err(ReactionError::TimersUnavailable {
            reason: "no reactor with timers serves this actor type (start one with \
                     aether-reactions)"
                .into(),
        })
    }

    fn knows(&self, _: &str) -> bool {
        false
    }
}

impl fmt::Debug for dyn ReactionSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReactionSupport")
    }
}

/// The pending timers of an actor in a state, in their recorded form, checked.
pub(crate) fn declared_timers<A: Actor>(
    actor_id: &str,
    state: &A::State,
) -> Result<Vec<TimerRecord>, ReactionError> {
    let timers = A::timers(actor_id, state);
    if timers.is_empty() {
        return Ok(Vec::new());
    }
    if timers.len() > MAX_TIMERS_PER_ACTOR {
        return Err(ReactionError::TooManyTimers {
            count: timers.len(),
            limit: MAX_TIMERS_PER_ACTOR,
        });
    }
    let mut out: Vec<TimerRecord> = Vec::with_capacity(timers.len());
    for t in timers {
        validate_timer_name(&t.name)?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(ReactionError::DuplicateTimer { name: t.name });
        }
        out.push(TimerRecord {
            command: encode(&t.command)?,
            name: t.name,
            due: t.due,
        });
    }
    Ok(out)
}

/// The timers of an actor rebuilt from its store, for the runtime's stale-fire check. A
/// declaration the rules refuse now (the limits were changed, say) keeps what it can: the
/// stored history is not refused for it.
pub(crate) fn pending_after_load<A: Actor>(actor_id: &str, state: &A::State) -> Vec<TimerRecord> {
    match declared_timers::<A>(actor_id, state) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(actor_type = A::TYPE, actor_id, error = %e, "the actor's timers do not check");
            Vec::new()
        }
    }
}

/// Records on `stored` (the events of one decision, already encoded) the timer changes from
/// `before` to the timers declared in `state_after`, and each event's effects. Returns the new
/// pending timers.
///
/// # Errors
/// A [`ReactionError`] for a declaration the rules refuse; nothing is stamped then.
///
/// `support` is asked for only when a timer is set or an effect goes to another type, and the
/// clock read only when a timer is set: a decision without reactions pays for neither.
pub(crate) fn record<A: Actor>(
    support: &dyn Fn() -> SupportHandle,
    actor_id: &str,
    before: &[TimerRecord],
    state_after: &A::State,
    events: &[A::Event],
    stored: &mut [Event],
) -> Result<Vec<TimerRecord>, ReactionError> {
    let after = declared_timers::<A>(actor_id, state_after)?;
    let ops = diff(before, &after);
    let mut held: Option<SupportHandle> = None;
    let mut supported = || held.get_or_insert_with(support).clone();
    if ops.iter().any(|op| matches!(op, TimerOp::Set(_))) {
        let now = Utc::now();
        for op in &ops {
            if let TimerOp::Set(t) = op {
                validate_timer_due(&t.name, t.due, now)?;
            }
        }
        supported().timers()?;
    }
    // Stamped as checked: on a refusal the caller drops every event, stamped or not.
    // Effect ids are derived from each event's key and version when they are carried out
    // ([`aether_core::effect_id`]), so nothing of them is stored but the records.
    let last = events.len().saturating_sub(1);
    let mut ops = Some(ops);
    for (i, (event, stored)) in events.iter().zip(stored.iter_mut()).enumerate() {
        let effects = A::effects(actor_id, event);
        if effects.len() > MAX_EFFECTS_PER_EVENT {
            return Err(ReactionError::TooManyEffects {
                count: effects.len(),
                limit: MAX_EFFECTS_PER_EVENT,
            });
        }
        let mut records = Vec::with_capacity(effects.len());
        for effect in effects {
            let record = effect.0?;
            match &record {
                EffectRecord::Command {
                    actor_type,
                    actor_id: target,
                    ..
                } => {
                    if actor_type != A::TYPE && !supported().knows(actor_type) {
                        return Err(ReactionError::UnknownTarget {
                            actor_type: actor_type.chars().take(80).collect(),
                        });
                    }
                    if target.is_empty() {
                        return Err(ReactionError::EmptyTargetId {
                            actor_type: actor_type.clone(),
                        });
                    }
                }
                EffectRecord::Publish { subject, .. } => validate_effect_subject(subject)?,
            }
            records.push(record);
        }
        let timers = if i == last {
            ops.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        Reactions {
            timers,
            effects: records,
        }
        .stamp(stored);
    }
    Ok(after)
}

/// As [`record`], for a decision made outside an activation (a transaction): the timers
/// before come from `state_before`, the state after is `state_before` with `events` applied.
pub(crate) fn record_from<A: Actor>(
    support: &dyn Fn() -> SupportHandle,
    actor_id: &str,
    state_before: &A::State,
    events: &[A::Event],
    stored: &mut [Event],
) -> Result<(), ReactionError> {
    let before = pending_after_load::<A>(actor_id, state_before);
    let mut after = state_before.clone();
    for event in events {
        A::apply(&mut after, event);
    }
    record::<A>(support, actor_id, &before, &after, events, stored).map(|_| ())
}

/// What changed from `before` to `after`: sets for new and changed timers, cancels for the
/// ones gone, by name.
pub(crate) fn diff(before: &[TimerRecord], after: &[TimerRecord]) -> Vec<TimerOp> {
    if before.is_empty() && after.is_empty() {
        return Vec::new();
    }
    let old: BTreeMap<&str, &TimerRecord> = before.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut ops = Vec::new();
    for t in after {
        if old.get(t.name.as_str()) != Some(&t) {
            ops.push(TimerOp::Set(t.clone()));
        }
    }
    for t in before {
        if !after.iter().any(|a| a.name == t.name) {
            ops.push(TimerOp::Cancel {
                name: t.name.clone(),
            });
        }
    }
    ops
}

/// A shared handle on a host's reaction support.
pub(crate) type SupportHandle = Arc<dyn ReactionSupport>;
