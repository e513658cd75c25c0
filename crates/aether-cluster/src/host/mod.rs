//! The actor runtime of one node: activation, message handling with optimistic concurrency,
//! snapshots and passivation.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use aether_core::{Error, Event, Result, Snapshot, SnapshotStore, METADATA_MESSAGE_ID};
use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::ActorConfig;
use crate::vm::{RuntimeModel, VMState, VirtualMachine};

/// What handling a message came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled<R> {
    /// The actor handled it.
    Reply {
        /// The actor's answer.
        reply: R,
        /// The actor's version after the message.
        version: u64,
    },
    /// This node does not own the actor's shard (any more): ask the current owner.
    NotOwner,
}

/// Decides whether this node may serve an actor right now (it owns the actor's shard under
/// the newest assignment it knows). Checked before every message and every retry.
pub type Fence = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Called with the actor id when an activation ends.
pub type PassivationHook = Arc<dyn Fn(&str) + Send + Sync>;

/// One activation of an actor.
#[derive(Debug)]
pub(crate) struct ActorVm {
    id: String,
    actor_id: String,
    state: AtomicU8,
}

impl ActorVm {
    fn new(actor_id: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            actor_id: actor_id.to_string(),
            state: AtomicU8::new(VMState::Idle.to_u8()),
        }
    }

    fn set_state(&self, s: VMState) {
        self.state.store(s.to_u8(), Ordering::Release);
    }
}

impl VirtualMachine for ActorVm {
    fn id(&self) -> &str {
        &self.id
    }
    fn actor_id(&self) -> &str {
        &self.actor_id
    }
    fn state(&self) -> VMState {
        VMState::from_u8(self.state.load(Ordering::Acquire))
    }
}

enum Outcome<M: RuntimeModel> {
    Done(Result<Handled<M::Reply>>),
    /// The actor was passivating when the message arrived: send it to the next activation.
    Retry(M::Message),
}

struct Command<M: RuntimeModel> {
    message: M::Message,
    message_id: Option<Arc<str>>,
    reply: oneshot::Sender<Outcome<M>>,
}

struct Cell<M: RuntimeModel> {
    tx: mpsc::Sender<Command<M>>,
    stop: Arc<Notify>,
    vm: Arc<ActorVm>,
    generation: u64,
}

struct Shared<M: RuntimeModel> {
    model: Arc<M>,
    store: Arc<dyn SnapshotStore>,
    config: ActorConfig,
    cells: DashMap<String, Cell<M>>,
    fence: RwLock<Fence>,
    on_passivate: RwLock<Option<PassivationHook>>,
    generation: AtomicU64,
}

/// Runs the actors of one node: at most one activation per actor, each handling its messages
/// one at a time in its own task.
///
/// - **Activation**: on an actor's first message, its state is rebuilt from its latest
///   snapshot plus the events after it.
/// - **Handling**: the model's `handle` decides the events; they are saved with the next
///   versions; on a version conflict (someone else wrote) the actor reloads and decides again,
///   at most [`ActorConfig::max_conflict_retries`] times.
/// - **Fencing**: before each attempt the [`Fence`] must confirm the node still owns the actor;
///   otherwise the answer is [`Handled::NotOwner`] and nothing is written.
/// - **Passivation**: after [`ActorConfig::idle_timeout`] without messages, or on request, the
///   actor stops (taking a snapshot if configured); its next message activates it again.
pub struct ActorHost<M: RuntimeModel> {
    shared: Arc<Shared<M>>,
}

impl<M: RuntimeModel> Clone for ActorHost<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: RuntimeModel> fmt::Debug for ActorHost<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHost")
            .field("model", &self.shared.model.name())
            .field("active", &self.shared.cells.len())
            .finish_non_exhaustive()
    }
}

struct Loaded<S> {
    state: S,
    version: u64,
    snapshot_version: u64,
    /// Ids of the messages behind the actor's recent events.
    recent: RecentIds,
}

/// How many events before a snapshot activation reads for their message ids only, so that a
/// message applied just before a snapshot is still recognised when its sender retries it.
const MESSAGE_ID_LOOKBACK: u64 = 32;

/// How many message ids an activation remembers.
const RECENT_IDS: usize = 1024;

/// The ids of the messages an actor applied most recently, oldest first, bounded.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn record(&mut self, id: &str) {
        if self.set.contains(id) {
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(Arc::clone(&id));
        self.set.insert(id);
        while self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn record_event(&mut self, e: &Event) {
        if let Some(id) = e.metadata_value(METADATA_MESSAGE_ID) {
            self.record(id);
        }
    }
}

impl<M: RuntimeModel> ActorHost<M> {
    /// A host running `model` over `store`, serving every actor (no fence).
    pub fn new(model: M, store: Arc<dyn SnapshotStore>, config: ActorConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                model: Arc::new(model),
                store,
                config,
                cells: DashMap::new(),
                fence: RwLock::new(Arc::new(|_: &str| true)),
                on_passivate: RwLock::new(None),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.shared.model
    }

    /// Replaces the ownership check.
    pub fn set_fence(&self, fence: Fence) {
        *self.shared.fence.write().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    /// Sets what to call when an actor is passivated (idle, on request or losing its shard).
    pub fn set_passivation_hook(&self, hook: PassivationHook) {
        *self
            .shared
            .on_passivate
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Handles `message` on `actor_id`, activating the actor if needed.
    ///
    /// # Errors
    /// The model's rejection; [`Error::VersionConflict`] if conflicts outlasted the retries;
    /// store errors; [`Error::Closed`] if the actor stopped without answering.
    pub async fn dispatch(&self, actor_id: &str, message: M::Message) -> Result<Handled<M::Reply>> {
        self.dispatch_with_id(actor_id, None, message).await
    }

    /// Handles `message` on `actor_id` at most once per `message_id`.
    ///
    /// The events the message causes carry the id in their metadata
    /// ([`METADATA_MESSAGE_ID`]). When the same id arrives again (a sender retrying after a
    /// lost reply, possibly on a new owner after a failover) and the actor's recent events
    /// carry it, the message is not decided again: the answer is
    /// [`RuntimeModel::reply`] on the current state. "Recent" is every event this activation
    /// saw, back to 32 events before the snapshot it started from, and at
    /// most the last 1024 ids. A message that caused no events leaves no trace and is simply
    /// handled again, which changes nothing.
    ///
    /// # Errors
    /// As [`dispatch`](Self::dispatch).
    pub async fn dispatch_with_id(
        &self,
        actor_id: &str,
        message_id: Option<&str>,
        message: M::Message,
    ) -> Result<Handled<M::Reply>> {
        let message_id: Option<Arc<str>> = message_id.map(Arc::from);
        if actor_id.is_empty() {
            return Err(Error::invalid("actor id must not be empty"));
        }
        let mut message = message;
        // A message meets a passivating actor at most a few times in a row; more means the
        // actor cannot stay up (for example its store keeps failing).
        for _ in 0..8 {
            let (tx, generation) = {
                let cell = self
                    .shared
                    .cells
                    .entry(actor_id.to_string())
                    .or_insert_with(|| self.spawn(actor_id));
                (cell.tx.clone(), cell.generation)
            };
            let (reply_tx, reply_rx) = oneshot::channel();
            let command = Command {
                message,
                message_id: message_id.clone(),
                reply: reply_tx,
            };
            match tx.send(command).await {
                Ok(()) => match reply_rx.await {
                    Ok(Outcome::Done(result)) => return result,
                    Ok(Outcome::Retry(m)) => message = m,
                    Err(_) => return Err(Error::Closed(format!("actor {actor_id} stopped"))),
                },
                Err(mpsc::error::SendError(command)) => {
                    self.shared
                        .cells
                        .remove_if(actor_id, |_, c| c.generation == generation);
                    message = command.message;
                }
            }
        }
        Err(Error::Closed(format!(
            "actor {actor_id} kept passivating; message not handled"
        )))
    }

    fn spawn(&self, actor_id: &str) -> Cell<M> {
        let (tx, rx) = mpsc::channel(self.shared.config.mailbox_capacity.max(1));
        let stop = Arc::new(Notify::new());
        let vm = Arc::new(ActorVm::new(actor_id));
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(run_actor(
            Arc::clone(&self.shared),
            actor_id.to_string(),
            Arc::clone(&vm),
            generation,
            Arc::clone(&stop),
            rx,
        ));
        tracing::debug!(actor_id, vm = %vm.id, "actor activated");
        Cell {
            tx,
            stop,
            vm,
            generation,
        }
    }

    /// Asks `actor_id` to passivate; returns whether it was active.
    pub fn passivate(&self, actor_id: &str) -> bool {
        match self.shared.cells.get(actor_id) {
            Some(cell) => {
                cell.vm.set_state(VMState::Paused);
                cell.stop.notify_one();
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
            .map(|c| c.key().clone())
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
        let mut v: Vec<String> = self.shared.cells.iter().map(|c| c.key().clone()).collect();
        v.sort();
        v
    }

    /// The current activation of `actor_id`, if any.
    #[cfg(test)]
    fn activation(&self, actor_id: &str) -> Option<Arc<ActorVm>> {
        self.shared.cells.get(actor_id).map(|c| Arc::clone(&c.vm))
    }

    /// Number of active actors.
    pub fn active_count(&self) -> usize {
        self.shared.cells.len()
    }

    /// Rebuilds an actor's state and version from the store, the way activation does.
    ///
    /// # Errors
    /// Store errors.
    pub async fn load_state(&self, actor_id: &str) -> Result<(M::State, u64)> {
        let l = load::<M>(&self.shared, actor_id).await?;
        Ok((l.state, l.version))
    }
}

async fn run_actor<M: RuntimeModel>(
    shared: Arc<Shared<M>>,
    actor_id: String,
    vm: Arc<ActorVm>,
    generation: u64,
    stop: Arc<Notify>,
    mut rx: mpsc::Receiver<Command<M>>,
) {
    let mut loaded: Option<Loaded<M::State>> = None;
    let idle = shared.config.idle_timeout;
    loop {
        let next = tokio::select! {
            biased;
            () = stop.notified() => None,
            cmd = rx.recv() => cmd,
            () = sleep_or_forever(idle) => None,
        };
        let Some(cmd) = next else { break };
        vm.set_state(VMState::Running);
        let result = handle(
            &shared,
            &actor_id,
            &mut loaded,
            &cmd.message,
            cmd.message_id.as_deref(),
        )
        .await;
        vm.set_state(VMState::Idle);
        let _ = cmd.reply.send(Outcome::Done(result));
    }

    // Leave the map first so new messages start a new activation, then hand back whatever
    // was already queued here.
    vm.set_state(VMState::Paused);
    shared
        .cells
        .remove_if(&actor_id, |_, c| c.generation == generation);
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        let _ = cmd.reply.send(Outcome::Retry(cmd.message));
    }
    if let Some(l) = &mut loaded {
        if shared.config.snapshot_on_passivate && l.version > l.snapshot_version {
            save_snapshot::<M>(&shared, &actor_id, l).await;
        }
    }
    vm.set_state(VMState::Stopped);
    let hook = shared
        .on_passivate
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(hook) = hook {
        hook(&actor_id);
    }
    tracing::debug!(actor_id, vm = %vm.id, "actor passivated");
}

async fn sleep_or_forever(d: Option<std::time::Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending::<()>().await,
    }
}

fn owns<M: RuntimeModel>(shared: &Shared<M>, actor_id: &str) -> bool {
    let fence = Arc::clone(&shared.fence.read().unwrap_or_else(|e| e.into_inner()));
    fence(actor_id)
}

async fn handle<M: RuntimeModel>(
    shared: &Shared<M>,
    actor_id: &str,
    loaded: &mut Option<Loaded<M::State>>,
    message: &M::Message,
    message_id: Option<&str>,
) -> Result<Handled<M::Reply>> {
    let model = &shared.model;
    let mut last_conflict = None;
    for _ in 0..=shared.config.max_conflict_retries {
        if !owns(shared, actor_id) {
            return Ok(Handled::NotOwner);
        }
        let l = match loaded {
            Some(l) => l,
            None => loaded.insert(load::<M>(shared, actor_id).await?),
        };
        if let Some(id) = message_id {
            if l.recent.contains(id) {
                // Applied before (the sender retried after losing the reply): answer from
                // the current state without deciding again.
                tracing::debug!(actor_id, message_id = id, "message already applied");
                return Ok(Handled::Reply {
                    reply: model.reply(&l.state, message),
                    version: l.version,
                });
            }
        }
        let decided = model.handle(actor_id, &l.state, message)?;
        if decided.is_empty() {
            return Ok(Handled::Reply {
                reply: model.reply(&l.state, message),
                version: l.version,
            });
        }
        let events: Vec<Event> = decided
            .into_iter()
            .zip(l.version + 1..)
            .map(|(ne, v)| {
                let e = Event::new(ne.event_type, actor_id, v).with_data(ne.data);
                match message_id {
                    Some(id) => e.with_metadata(METADATA_MESSAGE_ID, id),
                    None => e,
                }
            })
            .collect();
        let saved = match events.as_slice() {
            [one] => shared.store.save_event(one).await,
            many => shared.store.save_events(actor_id, many).await,
        };
        match saved {
            Ok(()) => {
                for e in &events {
                    model.apply(&mut l.state, e);
                    l.version = e.version;
                }
                if let Some(id) = message_id {
                    l.recent.record(id);
                }
                let every = shared.config.snapshot_every.unwrap_or(0);
                if every > 0 && l.version - l.snapshot_version >= every {
                    save_snapshot::<M>(shared, actor_id, l).await;
                }
                return Ok(Handled::Reply {
                    reply: model.reply(&l.state, message),
                    version: l.version,
                });
            }
            Err(e) if e.is_version_conflict() => {
                // Someone else wrote this actor (another activation during a handover): rebuild
                // from the store and decide again.
                tracing::debug!(actor_id, error = %e, "version conflict; reloading");
                *loaded = None;
                last_conflict = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::Closed("no attempt made".into())))
}

async fn load<M: RuntimeModel>(shared: &Shared<M>, actor_id: &str) -> Result<Loaded<M::State>> {
    let model = &shared.model;
    let (mut state, mut version) = match shared.store.get_latest_snapshot(actor_id).await? {
        Some(snap) => match serde_json::from_value::<M::State>(Value::Object(snap.state)) {
            Ok(s) => (s, snap.version),
            Err(e) => {
                // A snapshot is derived data: replaying everything gives the same state.
                tracing::warn!(actor_id, error = %e, "ignoring undecodable snapshot");
                (M::State::default(), 0)
            }
        },
        None => (M::State::default(), 0),
    };
    let snapshot_version = version;
    let mut recent = RecentIds::default();
    // Read a few events before the snapshot for their message ids only.
    let from = (snapshot_version + 1)
        .saturating_sub(MESSAGE_ID_LOOKBACK)
        .max(1);
    for e in shared.store.get_events(actor_id, from).await? {
        recent.record_event(&e);
        if e.version > snapshot_version {
            model.apply(&mut state, &e);
            version = e.version;
        }
    }
    Ok(Loaded {
        state,
        version,
        snapshot_version,
        recent,
    })
}

async fn save_snapshot<M: RuntimeModel>(
    shared: &Shared<M>,
    actor_id: &str,
    l: &mut Loaded<M::State>,
) {
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
    match shared
        .store
        .save_snapshot(&Snapshot::new(actor_id, l.version, state))
        .await
    {
        Ok(()) => l.snapshot_version = l.version,
        Err(e) => tracing::warn!(actor_id, error = %e, "snapshot failed"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
