//! The actor runtime of one process: activation, command handling with optimistic
//! concurrency, snapshots and passivation.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use aether_core::{Error, SnapshotStore};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::actor::{Actor, Envelope};
use crate::config::RuntimeConfig;
use crate::error::{CommandError, LoadError};
use crate::event::EventCodec;
use crate::reaction::{NoReactor, ReactionSupport, SupportHandle};
use activation::{load, run_actor, run_first};
use lru::Lru;
use slot::{Pushed, Slot, Stopped};
pub use stats::HostStats;
use stats::{bump, Counters};

mod across;
mod activation;
mod lru;
mod recent;
mod retire;
mod slot;
mod stats;
#[cfg(test)]
mod tests;
mod transact;

pub use across::{Decide, Participant, Rejection, Transact, Transacted};
pub use transact::Decision;

/// What handling a command came to, when the actor did not refuse it.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled<R> {
    /// The actor handled it.
    Reply {
        /// The actor's answer.
        reply: R,
        /// The actor's version after the command.
        version: u64,
    },
    /// The command's id was applied before, by an activation that does not keep its first
    /// reply (on another node before a failover, an earlier activation of this host, or a
    /// reply too large to keep): nothing was decided or written again, and `reply` is
    /// [`Actor::reply`] on the current state with no events.
    AlreadyApplied {
        /// The actor's answer on its current state.
        reply: R,
        /// The actor's current version.
        version: u64,
    },
    /// This node does not own the actor (any more): ask the current owner. Only a host with a
    /// [`Fence`] answers this.
    NotOwner,
}

impl<R> Handled<R> {
    /// The reply, whether first or on the current state; `None` for [`Handled::NotOwner`].
    pub fn into_reply(self) -> Option<R> {
        match self {
            Self::Reply { reply, .. } | Self::AlreadyApplied { reply, .. } => Some(reply),
            Self::NotOwner => None,
        }
    }
}

/// Decides whether this host may serve an actor right now (in a cluster: it owns the actor's
/// shard under the newest assignment it knows). Checked before every decision.
pub type Fence = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Called with the actor id when an activation ends.
pub type PassivationHook = Arc<dyn Fn(&str) + Send + Sync>;

pub(crate) type Outcome<A> =
    Result<Handled<<A as Actor>::Reply>, CommandError<<A as Actor>::Error>>;

/// Where a command that finds its actor idle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// On a task of the actor's own, which the sender waits for.
    OnItsOwnTask,
    /// On the sender's task ([`ActorHost::dispatch_inline`]).
    OnTheCaller,
}

pub(crate) enum Answer<A: Actor> {
    Done(Outcome<A>),
    /// The actor was passivating when the command arrived: send it to the next activation.
    Retry(Envelope<A::Command>),
}

pub(crate) struct Request<A: Actor> {
    pub(crate) envelope: Envelope<A::Command>,
    pub(crate) reply: oneshot::Sender<Answer<A>>,
}

/// The host's background work: what is started from an activation, and kept here so that a
/// passivation asked for outside any runtime can still be carried out.
#[derive(Default)]
struct Background {
    /// The idle sweeper, while there are active actors to sweep.
    sweeper: Option<JoinHandle<()>>,
    /// The runtime the latest activation ran in.
    runtime: Option<Handle>,
}

/// How many sweeps for idle actors per idle timeout: an actor is passivated after being idle
/// for between 16 and 17 sixteenths of the timeout.
const SWEEPS_PER_TIMEOUT: u32 = 16;

pub(crate) struct Shared<A: Actor> {
    pub(crate) actor: A,
    pub(crate) codec: EventCodec<A::Event>,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) config: RuntimeConfig,
    /// The active actors. An idle actor is only its slot here: no task, no timer.
    cells: DashMap<Arc<str>, Arc<Slot<A>>>,
    /// Use order of the active actors; kept only under a cap on active actors.
    lru: Option<Mutex<Lru>>,
    fence: RwLock<Fence>,
    on_passivate: RwLock<Option<PassivationHook>>,
    generation: AtomicU64,
    background: Mutex<Background>,
    /// What the reactor serving this host carries out (timers, effect targets).
    reactions: RwLock<SupportHandle>,
    pub(crate) counters: Counters,
}

impl<A: Actor> Shared<A> {
    pub(crate) fn owns(&self, actor_id: &str) -> bool {
        let fence = Arc::clone(&self.fence.read().unwrap_or_else(|e| e.into_inner()));
        fence(actor_id)
    }

    fn lru(&self) -> Option<MutexGuard<'_, Lru>> {
        self.lru
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ends the activation `generation` of `actor_id` in the map, so that new commands start a
    /// new one.
    pub(crate) fn forget(&self, actor_id: &str, generation: u64) {
        // The use order changes under its lock, together with the map, so that a new
        // activation's first use is never lost to the old one leaving.
        let lru = self.lru();
        let removed = self
            .cells
            .remove_if(actor_id, |_, c| c.generation == generation)
            .is_some();
        if let (true, Some(mut lru)) = (removed, lru) {
            lru.remove(actor_id);
        }
        if removed {
            self.counters.active.decrement(1.0);
        }
    }

    fn background(&self) -> MutexGuard<'_, Background> {
        self.background.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes an activation: starts the idle sweeper if none is running (the previous one ends
    /// when no actor is left, or with its runtime), and keeps the runtime for later
    /// passivations.
    fn activated(self: &Arc<Self>) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let mut background = self.background();
        if let Some(idle) = self.config.passivation.idle_timeout {
            if background
                .sweeper
                .as_ref()
                .is_none_or(JoinHandle::is_finished)
            {
                background.sweeper = Some(runtime.spawn(sweep_idle(Arc::downgrade(self), idle)));
            }
        }
        background.runtime = Some(runtime);
    }

    /// Starts a runner for `slot`.
    fn start(self: &Arc<Self>, slot: Arc<Slot<A>>) {
        let run = run_actor(Arc::clone(self), slot);
        // A passivation may be asked for outside the runtime (by a plain thread).
        match Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run);
            }
            Err(_) => match self.background().runtime.clone() {
                Some(runtime) => {
                    runtime.spawn(run);
                }
                None => tracing::warn!(actor_type = A::TYPE, "no runtime to passivate an actor in"),
            },
        }
    }

    /// Asks the actor of `slot` to passivate; returns whether this call did (it was not
    /// passivating already).
    fn stop(self: &Arc<Self>, slot: &Arc<Slot<A>>) -> bool {
        match slot.stop() {
            Stopped::Start => {
                self.start(Arc::clone(slot));
                true
            }
            Stopped::Asked => true,
            Stopped::Already => false,
        }
    }

    /// One sweep for idle actors: passivates those idle for the timeout. Returns `false`, and
    /// the sweeper ends, when no actor is active (the next activation starts another).
    fn sweep(self: &Arc<Self>) -> bool {
        let idle: Vec<Arc<Slot<A>>> = self
            .cells
            .iter()
            .filter(|c| c.value().idle_for(SWEEPS_PER_TIMEOUT))
            .map(|c| Arc::clone(c.value()))
            .collect();
        for slot in &idle {
            if self.stop(slot) {
                bump(&self.counters.passivated_idle);
                tracing::debug!(actor_id = &*slot.id, "passivating an idle actor");
            }
        }
        // Decided under the lock activations start the sweeper under, so that an activation
        // never counts on a sweeper that is leaving.
        let mut background = self.background();
        if self.cells.is_empty() {
            background.sweeper = None;
            return false;
        }
        true
    }

    /// The reaction support set now.
    pub(crate) fn reactions(&self) -> SupportHandle {
        Arc::clone(&self.reactions.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn passivated(&self, actor_id: &str) {
        let hook = self
            .on_passivate
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(actor_id);
        }
    }
}

/// Runs the actors of one type in this process: at most one activation per actor, each
/// handling its commands one at a time, in a task that exists only while it has commands
/// (an idle actor is its state in the host's map). It is the embedded runtime, and what a
/// cluster node runs for the actors it owns.
///
/// - **Activation**: on an actor's first command its state is rebuilt from its latest
///   snapshot (when it has the state's schema version) plus the events after it, decoded
///   through the actor's upcasters.
/// - **Handling**: [`Actor::decide`]; the events are appended with the next versions. On a
///   version conflict (someone else wrote) the actor reloads and decides again, under
///   [`RuntimeConfig::retry`]. Before a rejection is answered, one latest-version read
///   confirms the state it was decided on is current; if not, the actor catches up and
///   decides again.
/// - **Idempotence**: a command with an id ([`CommandMeta::command_id`]) is applied once: the
///   id is recorded on its events (the reply is not), so a retry is never applied again. The
///   activation that decided it answers a retry with the first outcome (kept in memory, within
///   a bound); a new activation (after passivation, a restart or on another node) answers
///   [`Handled::AlreadyApplied`] with the reply on the current state. See `docs/actors.md`
///   for the window in which ids are recognised.
/// - **Fencing**: before each decision the [`Fence`] must confirm the host may serve the actor;
///   otherwise the answer is [`Handled::NotOwner`] and nothing is written.
/// - **Passivation** and **snapshots** follow [`RuntimeConfig`].
///
/// Several processes may run hosts over one store: optimistic concurrency keeps every actor's
/// history consistent (a write decided on stale state fails and is decided again), but each
/// host then keeps its own activation, so work is duplicated and every conflict costs a
/// reload. Give each actor one owner (a cluster, or a fence over your own partitioning) when
/// several processes share a store.
///
/// [`CommandMeta::command_id`]: crate::CommandMeta::command_id
///
/// ```
/// use std::sync::Arc;
/// use aether_actor::{ActorClient, ActorHost, RuntimeConfig};
/// # use aether_actor::{Actor, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Counter { value: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum Added { Added { by: i64 } }
/// # impl DomainEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
/// # #[error("never")] struct Never;
/// # struct Counters;
/// # impl Actor for Counters {
/// #     type State = Counter; type Command = i64; type Event = Added; type Reply = i64;
/// #     type Error = Never; const TYPE: &'static str = "counter";
/// #     async fn decide(&self, _: &str, _: &Counter, by: &i64) -> Result<Vec<Added>, Never> {
/// #         Ok(vec![Added::Added { by: *by }])
/// #     }
/// #     fn apply(s: &mut Counter, e: &Added) { let Added::Added { by } = e; s.value += by; }
/// #     fn reply(s: &Counter, _: &i64, _: &[Added]) -> i64 { s.value }
/// # }
/// use aether_store::InMemoryEventStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let host = ActorHost::new(Counters, Arc::new(InMemoryEventStore::new()), RuntimeConfig::default());
/// assert_eq!(host.send("counter-1", 2).await?, 2);
/// assert_eq!(host.send("counter-1", 3).await?, 5);
/// # Ok(())
/// # }
/// ```
pub struct ActorHost<A: Actor> {
    shared: Arc<Shared<A>>,
}

impl<A: Actor> Clone for ActorHost<A> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<A: Actor> fmt::Debug for ActorHost<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHost")
            .field("type", &A::TYPE)
            .field("active", &self.shared.cells.len())
            .finish_non_exhaustive()
    }
}

impl<A: Actor> ActorHost<A> {
    /// A host running `actor` over `store`, serving every actor id (no fence).
    pub fn new(actor: A, store: Arc<dyn SnapshotStore>, config: RuntimeConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                actor,
                codec: EventCodec::new(A::upcasters()),
                store,
                lru: config.passivation.max_active.map(|_| Mutex::default()),
                config,
                cells: DashMap::new(),
                fence: RwLock::new(Arc::new(|_: &str| true)),
                on_passivate: RwLock::new(None),
                generation: AtomicU64::new(0),
                background: Mutex::default(),
                reactions: RwLock::new(Arc::new(NoReactor)),
                counters: Counters::new(A::TYPE),
            }),
        }
    }

    /// The actor type's implementation.
    pub fn actor(&self) -> &A {
        &self.shared.actor
    }

    /// The codec the host decodes stored events with (the actor's upcasters applied).
    pub fn codec(&self) -> &EventCodec<A::Event> {
        &self.shared.codec
    }

    /// The settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Replaces the ownership check.
    pub fn set_fence(&self, fence: Fence) {
        *self.shared.fence.write().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    /// Sets what to call when an actor is passivated.
    pub fn set_passivation_hook(&self, hook: PassivationHook) {
        *self
            .shared
            .on_passivate
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Tells the host what the reactor serving it carries out: whether timers fire, and which
    /// actor types effects can be sent to. Until it is told, decisions that set a timer are
    /// refused (`TimersUnavailable`) and effects may only go to this host's own type.
    pub fn set_reactions(&self, support: Arc<dyn ReactionSupport>) {
        *self
            .shared
            .reactions
            .write()
            .unwrap_or_else(|e| e.into_inner()) = support;
    }

    /// The timers `actor_id` has pending, as its runtime knows them (the active state's, or
    /// rebuilt from the store when it is not active), without activating it.
    ///
    /// # Errors
    /// As [`load_state`](Self::load_state).
    pub async fn pending_timers(
        &self,
        actor_id: &str,
    ) -> Result<Vec<aether_core::TimerRecord>, LoadError> {
        let l = load(&self.shared, actor_id).await?;
        Ok(l.timers)
    }

    /// Handles `envelope` on `actor_id`, activating the actor if needed.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] with the actor's rejection;
    /// [`CommandError::Conflict`] if conflicts outlasted the retry policy;
    /// [`CommandError::Decode`] if a stored event does not fit the event type;
    /// [`CommandError::Infrastructure`] for store errors, an empty actor id
    /// ([`Error::InvalidInput`]) or an actor that stopped without answering
    /// ([`Error::Closed`]).
    pub async fn dispatch(&self, actor_id: &str, envelope: Envelope<A::Command>) -> Outcome<A> {
        self.dispatch_with(actor_id, envelope, Run::OnItsOwnTask)
            .await
    }

    /// [`dispatch`](Self::dispatch) for a task that exists to serve one request (a node
    /// answering another node's request, say): when the actor is idle, its command runs on
    /// the calling task instead of on a task of the actor's own. That saves handing the
    /// command to another task and the reply back, a thread wake-up each on a busy runtime.
    /// Commands that arrive meanwhile queue as usual and are handed to a task of the actor's
    /// own when this one is done; a command that finds the actor busy waits in its mailbox,
    /// as with `dispatch`. A panic in the actor's code ends its activation and is answered
    /// with [`Error::Closed`], as with `dispatch`.
    ///
    /// Dropping the returned future mid-command ends the actor's activation (its next command
    /// loads it again from the store), and the commands queued behind it get
    /// [`Error::Closed`]: use `dispatch` where the caller may give up early, such as a send
    /// with a timeout.
    ///
    /// # Errors
    /// As [`dispatch`](Self::dispatch).
    pub async fn dispatch_inline(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
    ) -> Outcome<A> {
        self.dispatch_with(actor_id, envelope, Run::OnTheCaller)
            .await
    }

    async fn dispatch_with(
        &self,
        actor_id: &str,
        envelope: Envelope<A::Command>,
        run: Run,
    ) -> Outcome<A> {
        if actor_id.is_empty() {
            return Err(Error::invalid("actor id must not be empty").into());
        }
        let mut envelope = envelope;
        // Without a trace of its own, a command joins the current span's.
        #[cfg(feature = "opentelemetry")]
        if envelope.meta.trace.is_none() {
            envelope.meta.trace = crate::otel::current();
        }
        // A command meets a passivating actor at most a few times in a row; more means the
        // actor cannot stay up (for example its store keeps failing).
        for _ in 0..8 {
            let found = self
                .shared
                .cells
                .get(actor_id)
                .map(|c| Arc::clone(c.value()));
            let (slot, activated) = match found {
                Some(slot) => (slot, false),
                None => self.activate(actor_id),
            };
            self.touch(actor_id, activated);
            let (reply_tx, reply_rx) = oneshot::channel();
            let request = Box::new(Request {
                envelope,
                reply: reply_tx,
            });
            match slot.push(request).await {
                Pushed::Start if run == Run::OnTheCaller => {
                    // A panic in the actor's code is the actor's: it ends the activation (the
                    // runner's guard sees to that while unwinding) and drops the request, so
                    // the reply below reads as a stopped actor, as from a task of its own.
                    let first = AssertUnwindSafe(run_first(&self.shared, &slot));
                    if first.catch_unwind().await.is_err() {
                        tracing::warn!(actor_type = A::TYPE, actor_id, "the actor's code panicked");
                    }
                }
                Pushed::Start => {
                    tokio::spawn(run_actor(Arc::clone(&self.shared), slot));
                }
                Pushed::Queued => {}
                Pushed::Closed(request) => {
                    envelope = request.envelope;
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            match reply_rx.await {
                Ok(Answer::Done(result)) => return result,
                Ok(Answer::Retry(e)) => envelope = e,
                Err(_) => return Err(Error::Closed(format!("actor {actor_id} stopped")).into()),
            }
            tokio::task::yield_now().await;
        }
        Err(Error::Closed(format!(
            "actor {actor_id} kept passivating; the command was not handled"
        ))
        .into())
    }

    /// Records a use of `actor_id`, and passivates the least recently used actor when a new
    /// activation took the host over its cap.
    fn touch(&self, actor_id: &str, activated: bool) {
        let Some(cap) = self.shared.config.passivation.max_active else {
            return;
        };
        let victim = {
            let Some(mut lru) = self.shared.lru() else {
                return;
            };
            lru.touch(actor_id);
            if activated && self.shared.cells.len() > cap {
                lru.oldest_except(actor_id).map(str::to_string)
            } else {
                None
            }
        };
        if let Some(victim) = victim {
            if self.stop(&victim) == Some(true) {
                bump(&self.shared.counters.passivated_evicted);
                tracing::debug!(actor_id = %victim, "passivating the least recently used actor");
            }
        }
    }

    /// The slot of `actor_id`, made (the actor activated) if there is none.
    fn activate(&self, actor_id: &str) -> (Arc<Slot<A>>, bool) {
        let made = match self.shared.cells.entry(Arc::from(actor_id)) {
            Entry::Occupied(cell) => return (Arc::clone(cell.get()), false),
            Entry::Vacant(cell) => {
                let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
                let capacity = self.shared.config.mailbox_capacity;
                let slot = Arc::new(Slot::new(Arc::clone(cell.key()), generation, capacity));
                bump(&self.shared.counters.activations);
                self.shared.counters.active.increment(1.0);
                cell.insert(Arc::clone(&slot));
                slot
            }
        };
        self.shared.activated();
        tracing::debug!(
            actor_type = A::TYPE,
            actor_id,
            generation = made.generation,
            "actor activated"
        );
        (made, true)
    }

    /// Asks `actor_id` to passivate: `None` if it is not active, else whether this call asked
    /// (it was not passivating already).
    fn stop(&self, actor_id: &str) -> Option<bool> {
        let slot = self
            .shared
            .cells
            .get(actor_id)
            .map(|c| Arc::clone(c.value()))?;
        Some(self.shared.stop(&slot))
    }

    /// Asks `actor_id` to passivate (after the command it is handling); returns whether it was
    /// active.
    pub fn passivate(&self, actor_id: &str) -> bool {
        match self.stop(actor_id) {
            Some(asked) => {
                if asked {
                    bump(&self.shared.counters.passivated_requested);
                }
                true
            }
            None => false,
        }
    }

    /// Passivates every active actor for which `pred` holds; returns them.
    pub fn passivate_where(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let ids: Vec<String> = self
            .shared
            .cells
            .iter()
            .filter(|c| pred(c.key()))
            .map(|c| c.key().to_string())
            .collect();
        for id in &ids {
            self.passivate(id);
        }
        ids
    }

    /// Passivates every actor.
    pub fn passivate_all(&self) -> Vec<String> {
        self.passivate_where(|_| true)
    }

    /// Whether `actor_id` is active here.
    pub fn is_active(&self, actor_id: &str) -> bool {
        self.shared.cells.contains_key(actor_id)
    }

    /// The active actors, sorted.
    pub fn active_actors(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .cells
            .iter()
            .map(|c| c.key().to_string())
            .collect();
        v.sort();
        v
    }

    /// Number of active actors.
    pub fn active_count(&self) -> usize {
        self.shared.cells.len()
    }

    /// The counters.
    pub fn stats(&self) -> HostStats {
        self.shared.counters.read(self.shared.cells.len())
    }

    /// Rebuilds an actor's state and version from the store the way activation does (latest
    /// usable snapshot, then the events after it), without activating it.
    ///
    /// # Errors
    /// [`LoadError::Decode`] for an event that does not fit the event type;
    /// [`LoadError::Store`] for store errors.
    pub async fn load_state(&self, actor_id: &str) -> Result<(A::State, u64), LoadError> {
        let l = load(&self.shared, actor_id).await?;
        Ok((l.state, l.version))
    }
}

/// Passivates the host's idle actors, sweeping them a number of times per idle timeout. Ends
/// with the host, or when no actor is left active.
async fn sweep_idle<A: Actor>(shared: std::sync::Weak<Shared<A>>, idle_timeout: Duration) {
    let every = (idle_timeout / SWEEPS_PER_TIMEOUT).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.sweep() {
            return;
        }
    }
}
