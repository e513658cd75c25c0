//! One activation of an actor: its loop, loading, deciding and saving.

use std::sync::Arc;

use aether_core::{ActorKey, Error, Event, ReactionError, Snapshot, TimerRecord};
use serde_json::Value;

use super::recent::{keepable_json, RecentOutcomes, Remembered};
use super::slot::{Next, Slot};
use super::stats::{bump, Counters};
use super::{Answer, Handled, Outcome, Shared};
use crate::actor::{Actor, Envelope};
use crate::error::{CommandError, LoadError, RetiredError};
use crate::event::EventCodec;
use crate::reaction;

/// An active actor's state.
pub(crate) struct Loaded<S> {
    pub(crate) state: S,
    pub(crate) version: u64,
    snapshot_version: u64,
    /// Outcomes of the actor's recent commands, by command id.
    pub(crate) recent: RecentOutcomes,
    /// The timers the state declares ([`Actor::timers`]).
    pub(crate) timers: Vec<TimerRecord>,
}

/// How many events before a snapshot that kept no command ids (one of an earlier release)
/// activation reads for their command ids only, so that a command applied just before the
/// snapshot is still recognised when its sender retries it.
const COMMAND_ID_LOOKBACK: u64 = 32;

/// Drains an actor's mailbox: started when a command reaches an actor with no runner (or an
/// idle actor is asked to passivate), it ends when the queue is empty, leaving the state in
/// the slot, or when it has passivated the actor.
pub(crate) async fn run_actor<A: Actor>(shared: Arc<Shared<A>>, slot: Arc<Slot<A>>) {
    let abandoned = Abandoned {
        shared: &shared,
        slot: &slot,
    };
    let mut loaded = None;
    let mut waited = false;
    loop {
        let request = match slot.next(&mut loaded, !waited) {
            Next::Handle(request) => request,
            Next::Empty => {
                // A sender that awaits each reply before sending again (a request-response
                // loop) queues its next command within one turn of the scheduler: looking
                // once more after a yield saves ending this task and starting another.
                waited = true;
                tokio::task::yield_now().await;
                continue;
            }
            Next::Idle => {
                std::mem::forget(abandoned);
                return;
            }
            Next::Passivate => break,
        };
        waited = false;
        let result = handle(&shared, &slot.id, &mut loaded, &request.envelope).await;
        bump(&shared.counters.commands);
        let _ = request.reply.send(Answer::Done(result));
    }
    std::mem::forget(abandoned);

    // Leave the map first so new commands start a new activation, then hand back whatever
    // was already queued here.
    shared.forget(&slot.id, slot.generation);
    for request in slot.close() {
        let _ = request.reply.send(Answer::Retry(request.envelope));
    }
    if let Some(l) = &mut loaded {
        if shared.config.snapshot.on_passivation && l.version > l.snapshot_version {
            save_snapshot(&shared, &slot.id, l).await;
        }
    }
    shared.passivated(&slot.id);
    tracing::debug!(
        actor_type = A::TYPE,
        actor_id = &*slot.id,
        generation = slot.generation,
        "actor passivated"
    );
}

/// Handles the command a sender has just queued on an idle actor, on the sender's own task
/// (see `ActorHost::dispatch_inline`): the same steps as [`run_actor`]'s, for that one
/// command. Then the actor goes idle, or, if more commands were queued meanwhile (or a
/// passivation was asked for), a runner task takes it over. Unlike a runner, it does not look
/// again after a yield: the sender it serves is elsewhere and cannot send again that soon.
pub(crate) async fn run_first<A: Actor>(shared: &Arc<Shared<A>>, slot: &Arc<Slot<A>>) {
    let abandoned = Abandoned {
        shared,
        slot: slot.as_ref(),
    };
    let mut loaded = None;
    // The sender's command is the only one queued: a sender starts a runner only on an
    // empty queue. A passivation asked for since then is left to the runner below.
    if let Next::Handle(request) = slot.next(&mut loaded, true) {
        let result = handle(shared, &slot.id, &mut loaded, &request.envelope).await;
        bump(&shared.counters.commands);
        let _ = request.reply.send(Answer::Done(result));
    }
    let more = slot.hand_back(&mut loaded);
    std::mem::forget(abandoned);
    if more {
        tokio::spawn(run_actor(Arc::clone(shared), Arc::clone(slot)));
    }
}

/// Ends the activation when its runner is dropped before it is done (the actor's code
/// panicked, or the runtime is shutting down): otherwise the slot would keep saying a runner
/// is draining it, and commands would wait there forever. The commands queued are dropped,
/// so their senders learn the actor stopped.
struct Abandoned<'a, A: Actor> {
    shared: &'a Shared<A>,
    slot: &'a Slot<A>,
}

impl<A: Actor> Drop for Abandoned<'_, A> {
    fn drop(&mut self) {
        self.shared.forget(&self.slot.id, self.slot.generation);
        drop(self.slot.close());
    }
}

/// Handles one command: decide on the current state, save, reply.
async fn handle<A: Actor>(
    shared: &Shared<A>,
    actor_id: &str,
    loaded: &mut Option<Loaded<A::State>>,
    envelope: &Envelope<A::Command>,
) -> Outcome<A> {
    let command = &envelope.command;
    let command_id = envelope.meta.command_id.as_deref();
    let policy = shared.config.retry;
    let mut attempts = 0u32;
    loop {
        if !shared.owns(actor_id) {
            return Ok(Handled::NotOwner);
        }
        let l = match loaded {
            Some(l) => l,
            None => loaded.insert(
                load(shared, actor_id)
                    .await
                    .map_err(|e| failed(shared, e))?,
            ),
        };
        if let Some(id) = command_id {
            if let Some(seen) = l.recent.get(id) {
                // Seen before (the sender retried after losing the answer): the first outcome.
                tracing::debug!(actor_id, command_id = id, "command already handled");
                bump(&shared.counters.deduplicated);
                return remembered::<A>(seen, l, command);
            }
        }
        if let Some(fire) = &envelope.meta.timer {
            // A timer replaced or cancelled after it fired must not act in its old form: only
            // a fire of a timer still pending (same name, same due time) is decided.
            if !l
                .timers
                .iter()
                .any(|t| t.name == fire.name && t.due == fire.due)
            {
                bump(&shared.counters.stale_timers);
                tracing::debug!(actor_id, timer = %fire, "dropping the command of a timer no longer pending");
                return Err(CommandError::Reaction(ReactionError::StaleTimer {
                    fire: fire.clone(),
                }));
            }
        }
        attempts += 1;
        let events = match shared.actor.decide(actor_id, &l.state, command).await {
            Ok(events) => events,
            Err(rejection) => {
                // A rejection writes nothing, so no version check would catch a decision on a
                // stale state: confirm the state is current before answering.
                let latest = shared
                    .store
                    .latest_version_of(ActorKey::new(A::TYPE, actor_id))
                    .await?;
                if latest > l.version && attempts <= policy.max_retries {
                    bump(&shared.counters.stale_rejections);
                    tracing::debug!(actor_id, latest, seen = l.version, "stale rejection");
                    catch_up(shared, actor_id, l)
                        .await
                        .map_err(|e| failed(shared, e))?;
                    continue;
                }
                bump(&shared.counters.rejections);
                if let Some(id) = command_id {
                    // A rejection too large to keep is decided again on a retry: it changed
                    // nothing, so that is safe.
                    if let Some(json) = keepable_json(&rejection) {
                        l.recent.remember(id, Remembered::Rejected(json));
                    }
                }
                return Err(CommandError::Rejected(rejection));
            }
        };
        if events.is_empty() {
            let reply = A::reply(&l.state, command, &events);
            if let Some(id) = command_id {
                l.recent
                    .remember(id, Remembered::Applied(keepable_json(&reply)));
            }
            return Ok(Handled::Reply {
                reply,
                version: l.version,
            });
        }

        let mut stored: Vec<Event> = Vec::with_capacity(events.len());
        for (event, version) in events.iter().zip(l.version + 1..) {
            let encoded = shared
                .codec
                .encode(event)
                .map_err(|e| Error::Encoding(e.to_string()))?;
            let mut e = encoded.into_event_of(ActorKey::new(A::TYPE, actor_id), version);
            envelope.meta.stamp(&mut e);
            stored.push(e);
        }
        // The state after the decision, to learn which timers it declares: applied before the
        // save, and dropped (reloaded) if the save or the reactions' checks fail.
        for event in &events {
            A::apply(&mut l.state, event);
        }
        let timers = match reaction::record::<A>(
            &|| shared.reactions(),
            actor_id,
            &l.timers,
            &l.state,
            &events,
            &mut stored,
        ) {
            Ok(t) => t,
            Err(e) => {
                *loaded = None;
                bump(&shared.counters.reactions_refused);
                return Err(CommandError::Reaction(e));
            }
        };
        // The events carry the command id and nothing of the reply, so what is stored per
        // event never grows with the state or the reply.
        let saved = match stored.as_slice() {
            [one] => shared.store.save_event(one).await,
            many => shared.store.save_events(actor_id, many).await,
        };
        match saved {
            Ok(()) => {
                // `loaded` was set above and only cleared on the error paths.
                let Some(l) = loaded.as_mut() else {
                    return Err(Error::Closed("actor state lost".into()).into());
                };
                l.version = stored.last().map_or(l.version, |e| e.version);
                l.timers = timers;
                let reply = A::reply(&l.state, command, &events);
                if let Some(id) = command_id {
                    l.recent
                        .remember_stored(id, Remembered::Applied(keepable_json(&reply)));
                }
                if let Some(every) = shared.config.snapshot.every {
                    if every > 0 && l.version - l.snapshot_version >= every {
                        save_snapshot(shared, actor_id, l).await;
                    }
                }
                return Ok(Handled::Reply {
                    reply,
                    version: l.version,
                });
            }
            Err(Error::VersionConflict(conflict)) => {
                // Someone else wrote this actor: rebuild from the store and decide again.
                bump(&shared.counters.conflicts);
                *loaded = None;
                if attempts > policy.max_retries {
                    bump(&shared.counters.conflicts_exhausted);
                    return Err(CommandError::Conflict {
                        actor_id: actor_id.to_string(),
                        attempts,
                        last: conflict,
                    });
                }
                tracing::debug!(actor_id, %conflict, "version conflict; reloading");
                tokio::time::sleep(policy.backoff(attempts)).await;
            }
            Err(e) => {
                *loaded = None;
                return Err(e.into());
            }
        }
    }
}

fn failed<A: Actor>(shared: &Shared<A>, e: LoadError) -> CommandError<A::Error> {
    count_load_error(&shared.counters, &e);
    e.into()
}

/// Counts a failed load: an undecodable history, or a retired actor asked to act.
pub(crate) fn count_load_error(counters: &Counters, e: &LoadError) {
    match e {
        LoadError::Decode(_) | LoadError::WrongType(_) => bump(&counters.decode_errors),
        LoadError::Retired(_) => bump(&counters.retired_refusals),
        LoadError::Store(_) => {}
    }
}

/// The first outcome of a command seen before.
fn remembered<A: Actor>(
    seen: &Remembered,
    l: &Loaded<A::State>,
    command: &A::Command,
) -> Outcome<A> {
    let decoding = |e: serde_json::Error| {
        CommandError::Infrastructure(Error::Decoding(format!(
            "the recorded outcome of a command to actor type {}: {e}",
            A::TYPE
        )))
    };
    match seen {
        Remembered::Applied(Some(json)) => Ok(Handled::Reply {
            reply: serde_json::from_str(json).map_err(decoding)?,
            version: l.version,
        }),
        // Applied, by an activation whose reply is not kept here (another node's, an earlier
        // one of this host, or one too large to keep): answer from the current state, saying
        // so.
        Remembered::Applied(None) => Ok(Handled::AlreadyApplied {
            reply: A::reply(&l.state, command, &[]),
            version: l.version,
        }),
        Remembered::Rejected(json) => Err(CommandError::Rejected(
            serde_json::from_str(json).map_err(decoding)?,
        )),
    }
}

/// Rebuilds an actor from its latest usable snapshot plus the events after it.
pub(crate) async fn load<A: Actor>(
    shared: &Shared<A>,
    actor_id: &str,
) -> Result<Loaded<A::State>, LoadError> {
    let key = ActorKey::new(A::TYPE, actor_id);
    // Where to read events from, given the snapshot: right after it when it kept the ids of
    // the latest commands; a few events before it for their ids when it did not (a snapshot
    // of an earlier release); from the start when it is of another state schema.
    let start = |snap: Option<&Snapshot>| match snap {
        Some(s) if s.schema_version == Some(A::STATE_VERSION) => match s.command_ids {
            Some(_) => s.version + 1,
            None => (s.version + 1).saturating_sub(COMMAND_ID_LOOKBACK).max(1),
        },
        _ => 1,
    };
    let read = shared.store.snapshot_and_events_of(key, &start).await?;
    let mut state = A::State::default();
    let mut snapshot_version = 0;
    let mut events = read.events;
    let mut recent = RecentOutcomes::default();
    if let Some(snap) = read.snapshot {
        if snap.schema_version == Some(A::STATE_VERSION) {
            match serde_json::from_value::<A::State>(Value::Object(snap.state)) {
                Ok(s) => {
                    state = s;
                    snapshot_version = snap.version;
                    for id in snap.command_ids.iter().flatten() {
                        recent.learn_stored(id);
                    }
                }
                Err(e) => {
                    // A snapshot is derived data: replaying everything gives the same state.
                    bump(&shared.counters.snapshots_ignored);
                    tracing::warn!(actor_id, error = %e, "ignoring an undecodable snapshot");
                    if read.from_version > 1 {
                        events = shared.store.events_of(key, 1).await?;
                    }
                }
            }
        } else {
            bump(&shared.counters.snapshots_ignored);
            tracing::info!(
                actor_id,
                found = ?snap.schema_version,
                expected = A::STATE_VERSION,
                "ignoring a snapshot of another state schema version; rebuilding from events"
            );
        }
    }
    let mut l = Loaded {
        state,
        version: snapshot_version,
        snapshot_version,
        recent,
        timers: Vec::new(),
    };
    apply_events::<A>(shared, &mut l, events)?;
    l.timers = reaction::pending_after_load::<A>(actor_id, &l.state);
    Ok(l)
}

/// Brings a loaded actor up to the store's latest version.
async fn catch_up<A: Actor>(
    shared: &Shared<A>,
    actor_id: &str,
    l: &mut Loaded<A::State>,
) -> Result<(), LoadError> {
    let from = l.version + 1;
    apply_stored(shared, actor_id, l, from).await?;
    l.timers = reaction::pending_after_load::<A>(actor_id, &l.state);
    Ok(())
}

async fn apply_stored<A: Actor>(
    shared: &Shared<A>,
    actor_id: &str,
    l: &mut Loaded<A::State>,
    from: u64,
) -> Result<(), LoadError> {
    let events = shared
        .store
        .events_of(ActorKey::new(A::TYPE, actor_id), from)
        .await?;
    apply_events::<A>(shared, l, events)
}

/// Applies stored events after the loaded version; events up to it only teach their command
/// ids.
fn apply_events<A: Actor>(
    shared: &Shared<A>,
    l: &mut Loaded<A::State>,
    events: Vec<Event>,
) -> Result<(), LoadError> {
    for e in events {
        EventCodec::<A::Event>::check_type(A::TYPE, &e)?;
        if e.is_retirement() {
            // The history ends here: nothing loads the actor for writing any more, so no
            // activation, command or transaction can append after its final event.
            return Err(LoadError::Retired(RetiredError {
                actor_type: A::TYPE.to_string(),
                actor_id: e.actor_id,
                version: e.version,
            }));
        }
        l.recent.record_event(&e);
        if e.version > l.version {
            let event = shared.codec.decode_for(A::TYPE, &e)?;
            A::apply(&mut l.state, &event);
            l.version = e.version;
        }
    }
    Ok(())
}

async fn save_snapshot<A: Actor>(shared: &Shared<A>, actor_id: &str, l: &mut Loaded<A::State>) {
    let state = match serde_json::to_value(&l.state) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            tracing::warn!(actor_id, "state is not a JSON object; not snapshotted");
            return;
        }
        Err(e) => {
            tracing::warn!(actor_id, error = %e, "state could not be encoded; not snapshotted");
            return;
        }
    };
    let snapshot = Snapshot::new(actor_id, l.version, state)
        .with_actor_type(A::TYPE)
        .with_schema_version(A::STATE_VERSION)
        .with_command_ids(l.recent.stored_ids());
    match shared.store.save_snapshot(&snapshot).await {
        Ok(()) => {
            l.snapshot_version = l.version;
            bump(&shared.counters.snapshots_saved);
        }
        Err(e) => tracing::warn!(actor_id, error = %e, "snapshot failed"),
    }
}
