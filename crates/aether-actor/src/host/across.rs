//! Transactions across actor types: one decision over actors of several types (a `show` and a
//! `customer`), committed atomically.
//!
//! Each participant is added to a [`Transact`] with its typed host and id, which gives back a
//! typed handle, a [`Participant`]. The decision reads each participant's state and records
//! its events through its handle ([`Decide`]), and refuses through a handle too, so a
//! [`Rejection`] always names its actor and gives back that actor's typed error.

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aether_core::{
    ActorKey, Error, Event, SnapshotStore, Transaction, TransactionConflictError,
    VersionConflictError,
};
use async_trait::async_trait;

use super::activation::load;
use super::stats::{bump, Count, Counters};
use super::ActorHost;
use crate::actor::{Actor, CommandMeta};
use crate::error::{CommandError, LoadError};
use crate::retry::RetryPolicy;

/// Tells the handles of one [`Transact`] from those of another.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A decision over actors of several types, committed atomically: all of its events or none,
/// each actor at the version its state was read at
/// ([`EventStore::commit`](aether_core::EventStore::commit)).
///
/// Add each participant with its host and id ([`actor`](Self::actor)); each gives back a typed
/// handle. [`run`](Self::run) then rebuilds every participant from the store, calls the
/// decision with their states, and commits the events it recorded. On a conflict (another
/// writer changed one of the participants in between) the states are read again and the
/// decision runs again, under the retry policy; so the decision must only read.
///
/// ```
/// use std::sync::Arc;
/// use aether_actor::{ActorClient, ActorHost, CommandError, CommandMeta, RuntimeConfig, Transact};
/// # use aether_actor::{Actor, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Show { free: u32 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum ShowEvent { Reserved { seats: u32 } }
/// # impl DomainEvent for ShowEvent { fn event_type(&self) -> &'static str { "Reserved" } }
/// # #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
/// # #[error("sold out: {free} left")] struct SoldOut { free: u32 }
/// # struct Shows;
/// # impl Actor for Shows {
/// #     type State = Show; type Command = (); type Event = ShowEvent; type Reply = ();
/// #     type Error = SoldOut; const TYPE: &'static str = "show";
/// #     async fn decide(&self, _: &str, _: &Show, _: &()) -> Result<Vec<ShowEvent>, SoldOut> { Ok(vec![]) }
/// #     fn apply(s: &mut Show, ShowEvent::Reserved { seats }: &ShowEvent) { s.free -= seats }
/// #     fn reply(_: &Show, _: &(), _: &[ShowEvent]) {}
/// # }
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Wallet { cents: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum WalletEvent { Funded { cents: i64 }, Charged { cents: i64 } }
/// # impl DomainEvent for WalletEvent { fn event_type(&self) -> &'static str {
/// #     match self { Self::Funded { .. } => "Funded", Self::Charged { .. } => "Charged" } } }
/// # #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
/// # #[error("insufficient funds")] struct Broke;
/// # struct Customers;
/// # impl Actor for Customers {
/// #     type State = Wallet; type Command = i64; type Event = WalletEvent; type Reply = i64;
/// #     type Error = Broke; const TYPE: &'static str = "customer";
/// #     async fn decide(&self, _: &str, _: &Wallet, c: &i64) -> Result<Vec<WalletEvent>, Broke> {
/// #         Ok(vec![WalletEvent::Funded { cents: *c }]) }
/// #     fn apply(s: &mut Wallet, e: &WalletEvent) { match e {
/// #         WalletEvent::Funded { cents } => s.cents += cents,
/// #         WalletEvent::Charged { cents } => s.cents -= cents } }
/// #     fn reply(s: &Wallet, _: &i64, _: &[WalletEvent]) -> i64 { s.cents }
/// # }
/// use aether_store::InMemoryEventStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let shows = ActorHost::new(Shows, store.clone(), RuntimeConfig::default());
/// let customers = ActorHost::new(Customers, store, RuntimeConfig::default());
/// customers.send("c-1", 500).await?;
///
/// let mut tx = Transact::new(CommandMeta::new().command_id("order-1"));
/// let show = tx.actor(&shows, "s-1");
/// let customer = tx.actor(&customers, "c-1");
/// let result = tx
///     .run(|d| {
///         let (seats, price) = (2, 300);
///         if d.state(&show).free < seats {
///             return Err(show.reject(SoldOut { free: d.state(&show).free }));
///         }
///         if d.state(&customer).cents < price {
///             return Err(customer.reject(Broke));
///         }
///         d.emit(&show, [ShowEvent::Reserved { seats }]);
///         d.emit(&customer, [WalletEvent::Charged { cents: price }]);
///         Ok(seats)
///     })
///     .await;
/// match result {
///     // A new show has no free seats: the show refused, typed.
///     Err(CommandError::Rejected(r)) => assert_eq!(r.of(&show).map(|e| e.free), Some(0)),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub struct Transact {
    meta: CommandMeta,
    token: u64,
    retry: Option<RetryPolicy>,
    parts: Vec<Box<dyn Part>>,
}

impl fmt::Debug for Transact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transact")
            .field("meta", &self.meta)
            .field("actors", &self.keys())
            .finish_non_exhaustive()
    }
}

impl Transact {
    /// A transaction with no participants yet; `meta` is stamped on every event it writes, and
    /// its command id, when set, becomes the transaction id and makes a retry apply once (see
    /// [`run`](Self::run)).
    pub fn new(meta: CommandMeta) -> Self {
        Self {
            meta,
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            retry: None,
            parts: Vec::new(),
        }
    }

    /// Adds the actor `actor_id` of `host`'s type; the handle reads its state and records its
    /// events in the decision. Every participant's host must use the same store (checked by
    /// [`run`](Self::run)).
    pub fn actor<A: Actor>(
        &mut self,
        host: &ActorHost<A>,
        actor_id: impl Into<String>,
    ) -> Participant<A> {
        let actor_id: Arc<str> = Arc::from(actor_id.into());
        let index = self.parts.len();
        self.parts.push(Box::new(Member {
            host: host.clone(),
            actor_id: Arc::clone(&actor_id),
        }));
        Participant {
            token: self.token,
            index,
            actor_id,
            _actor: PhantomData,
        }
    }

    /// Retries conflicts under `policy` instead of the first participant's host's
    /// [`RuntimeConfig::retry`](crate::RuntimeConfig::retry).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The participants, in the order they were added: what a cluster tells to reload after
    /// a commit.
    pub fn keys(&self) -> Vec<ActorKey<'_>> {
        self.parts
            .iter()
            .map(|p| ActorKey::new(p.actor_type(), p.actor_id()))
            .collect()
    }

    /// Decides and commits.
    ///
    /// `decide` reads the participants' current states ([`Decide::state`], rebuilt from the
    /// store: another node may own them) and records each participant's events
    /// ([`Decide::emit`]; a participant may get none), then returns the reply, or a rejection
    /// made by one participant ([`Participant::reject`]). It may run more than once: on a
    /// conflict the states are read again and it decides again, under the retry policy; and
    /// a rejection is answered only once every participant is confirmed current (otherwise
    /// the decision runs again on the current states).
    ///
    /// After a commit this process's activations of every participant are passivated, so that
    /// their next command sees the committed events. Activations elsewhere (other processes,
    /// other cluster nodes) are not told: on a cluster use `ClusterNode::transaction`, which
    /// tells their owners to reload; otherwise they notice at their next write.
    ///
    /// With a command id in the meta, the id is the transaction id and is recorded on every
    /// event: when a participant's recent history (the window an activation recognises
    /// command ids in, see `docs/actors.md`) already holds it, nothing is decided or written
    /// and the answer is [`Transacted::AlreadyApplied`].
    ///
    /// # Errors
    /// - [`CommandError::Rejected`] with the [`Rejection`] of the participant that refused
    ///   ([`Rejection::of`] gives back its typed error). Nothing was written.
    /// - [`CommandError::Conflict`] when conflicts outlast the retry policy.
    /// - [`CommandError::Decode`], [`CommandError::WrongType`]: a participant's history does
    ///   not fit its type.
    /// - [`CommandError::Infrastructure`] with [`Error::InvalidInput`] for no participants,
    ///   one twice, an empty id, hosts over different stores, a command id that is not a
    ///   valid transaction id, or a decision that used a handle of another transaction;
    ///   [`Error::Unsupported`] from a store that cannot commit atomically (nats-server before
    ///   2.12); other store errors as [`EventStore::commit`](aether_core::EventStore::commit)
    ///   says.
    pub async fn run<R, F>(self, mut decide: F) -> Result<Transacted<R>, CommandError<Rejection>>
    where
        F: FnMut(&mut Decide<'_>) -> Result<R, Rejection> + Send,
        R: Send,
    {
        self.check()?;
        let parts = &self.parts;
        let store = Arc::clone(parts[0].store());
        let policy = self.retry.unwrap_or_else(|| parts[0].retry());
        let command_id = self.meta.command_id.as_deref();
        let mut attempts = 0u32;
        loop {
            let mut states = Vec::with_capacity(parts.len());
            let mut versions = Vec::with_capacity(parts.len());
            let mut applied = None;
            for (i, part) in parts.iter().enumerate() {
                let loaded = part.load(command_id).await?;
                if loaded.applied && applied.is_none() {
                    applied = Some(i);
                }
                versions.push(loaded.version);
                states.push(loaded.state);
            }
            if let Some(i) = applied {
                tracing::debug!(
                    command_id,
                    actor = %ActorKey::new(parts[i].actor_type(), parts[i].actor_id()),
                    "transaction already applied"
                );
                parts[i].bump(|c| &c.deduplicated);
                return Ok(Transacted::AlreadyApplied);
            }
            attempts += 1;
            let (decided, events, misuse) = {
                let mut d = Decide {
                    token: self.token,
                    states: &states,
                    versions: &versions,
                    events: (0..parts.len()).map(|_| None).collect(),
                    misuse: None,
                };
                let decided = decide(&mut d);
                (decided, d.events, d.misuse)
            };
            if let Some(misuse) = misuse {
                return Err(Error::invalid(misuse).into());
            }
            let reply = match decided {
                Ok(reply) => reply,
                Err(rejection) => {
                    if rejection.token != self.token {
                        return Err(Error::invalid(format!(
                            "the decision refused through a participant of another transaction \
                             ({}); refuse through this transaction's handles",
                            rejection.key()
                        ))
                        .into());
                    }
                    // A rejection writes nothing, so no version check would catch a decision
                    // on a stale state: confirm every participant is current first.
                    let mut stale = false;
                    for (part, seen) in parts.iter().zip(&versions) {
                        let key = ActorKey::new(part.actor_type(), part.actor_id());
                        stale |= store.latest_version_of(key).await? > *seen;
                    }
                    let refused = &parts[rejection.index];
                    if stale && attempts <= policy.max_retries {
                        refused.bump(|c| &c.stale_rejections);
                        continue;
                    }
                    refused.bump(|c| &c.rejections);
                    return Err(CommandError::Rejected(rejection));
                }
            };
            let mut txn = match command_id {
                Some(id) => Transaction::with_id(id),
                None => Transaction::new(),
            };
            for ((part, version), decided) in parts.iter().zip(&versions).zip(events) {
                let Some(decided) = decided else { continue };
                let stored = part.encode(decided, *version, &self.meta)?;
                if !stored.is_empty() {
                    txn = txn.append(part.actor_id(), *version, stored);
                }
            }
            if txn.appends().is_empty() {
                return Ok(Transacted::Committed(reply));
            }
            match store.commit(&txn).await {
                Ok(()) => {
                    for part in parts {
                        part.passivate();
                    }
                    return Ok(Transacted::Committed(reply));
                }
                Err(Error::TransactionConflict(conflict)) => {
                    let conflicting = self.conflicting(&txn, &conflict);
                    for &i in &conflicting {
                        parts[i].bump(|c| &c.conflicts);
                    }
                    if attempts > policy.max_retries {
                        for &i in &conflicting {
                            parts[i].bump(|c| &c.conflicts_exhausted);
                        }
                        let last = conflict.conflicts.into_iter().next().unwrap_or_else(|| {
                            VersionConflictError {
                                actor_id: parts[0].actor_id().to_string(),
                                attempted_version: versions[0] + 1,
                                current_version: versions[0],
                            }
                        });
                        return Err(CommandError::Conflict {
                            actor_id: last.actor_id.clone(),
                            attempts,
                            last,
                        });
                    }
                    tracing::debug!(%conflict, attempts, "transaction conflict; deciding again");
                    tokio::time::sleep(policy.backoff(attempts)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The shape every store requires, checked before anything is read.
    fn check(&self) -> Result<(), Error> {
        let Some(first) = self.parts.first() else {
            return Err(Error::invalid("a transaction needs at least one actor"));
        };
        let mut seen = HashSet::new();
        for part in &self.parts {
            let key = ActorKey::new(part.actor_type(), part.actor_id());
            key.validate()?;
            if !seen.insert(key) {
                return Err(Error::invalid(format!(
                    "actor {key} is in the transaction twice; add it once"
                )));
            }
            // Compare the data pointers alone: two `dyn` pointers to one store may differ in
            // their vtables.
            let same = std::ptr::eq(
                Arc::as_ptr(part.store()).cast::<()>(),
                Arc::as_ptr(first.store()).cast::<()>(),
            );
            if !same {
                return Err(Error::invalid(format!(
                    "actor {key} is hosted over another store than {}; one transaction commits \
                     to one store",
                    ActorKey::new(first.actor_type(), first.actor_id())
                )));
            }
        }
        Ok(())
    }

    /// The participants named by a conflict (by id: the conflict carries no type), else all
    /// of those with events.
    fn conflicting(&self, txn: &Transaction, conflict: &TransactionConflictError) -> Vec<usize> {
        let written: Vec<usize> = txn
            .appends()
            .iter()
            .filter_map(|a| {
                self.parts
                    .iter()
                    .position(|p| a.actor_key() == ActorKey::new(p.actor_type(), p.actor_id()))
            })
            .collect();
        let named: Vec<usize> = written
            .iter()
            .copied()
            .filter(|&i| {
                conflict
                    .conflicts
                    .iter()
                    .any(|c| c.actor_id == self.parts[i].actor_id())
            })
            .collect();
        if named.is_empty() {
            written
        } else {
            named
        }
    }
}

/// What [`Transact::run`] came to when no participant refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transacted<R> {
    /// Decided now, its events committed (or none to commit): the decision's reply.
    Committed(R),
    /// The command id was committed before (a retry of a command whose answer was lost):
    /// nothing was decided or written again. Read the participants for their current states.
    AlreadyApplied,
}

impl<R> Transacted<R> {
    /// The reply, when decided now.
    pub fn into_reply(self) -> Option<R> {
        match self {
            Self::Committed(reply) => Some(reply),
            Self::AlreadyApplied => None,
        }
    }

    /// Whether the command id had been committed before.
    pub fn is_already_applied(&self) -> bool {
        matches!(self, Self::AlreadyApplied)
    }
}

/// A typed handle on one participant of a [`Transact`]: reads its state and records its
/// events in the decision ([`Decide`]), and makes its rejection ([`reject`](Self::reject)).
/// Cheap to clone.
pub struct Participant<A: Actor> {
    token: u64,
    index: usize,
    actor_id: Arc<str>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Clone for Participant<A> {
    fn clone(&self) -> Self {
        Self {
            token: self.token,
            index: self.index,
            actor_id: Arc::clone(&self.actor_id),
            _actor: PhantomData,
        }
    }
}

impl<A: Actor> fmt::Debug for Participant<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant")
            .field("actor_type", &A::TYPE)
            .field("actor_id", &self.actor_id)
            .finish()
    }
}

impl<A: Actor> Participant<A> {
    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.actor_id
    }

    /// The actor: its type and id.
    pub fn key(&self) -> ActorKey<'_> {
        ActorKey::new(A::TYPE, &self.actor_id)
    }

    /// This actor's refusal, for the decision to return: the transaction writes nothing and
    /// answers [`CommandError::Rejected`] with it.
    pub fn reject(&self, error: A::Error) -> Rejection {
        Rejection {
            actor_type: A::TYPE,
            actor_id: Arc::clone(&self.actor_id),
            token: self.token,
            index: self.index,
            error: Box::new(error),
        }
    }
}

/// The participants' states, and the events the decision records for them: what the decision
/// of [`Transact::run`] gets.
pub struct Decide<'t> {
    token: u64,
    states: &'t [Box<dyn Any + Send + Sync>],
    versions: &'t [u64],
    /// Per participant, its events so far (a `Vec<A::Event>`).
    events: Vec<Option<Box<dyn Any + Send>>>,
    /// A handle of another transaction was used: reported once the decision returns.
    misuse: Option<String>,
}

impl fmt::Debug for Decide<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decide")
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Decide<'_> {
    /// The participant's current state, rebuilt from the store.
    ///
    /// # Panics
    /// If `participant` was added to another [`Transact`]: a programming error, like an index
    /// out of bounds.
    pub fn state<A: Actor>(&self, participant: &Participant<A>) -> &A::State {
        let state = (participant.token == self.token)
            .then(|| self.states.get(participant.index))
            .flatten()
            .and_then(|s| s.downcast_ref::<A::State>());
        match state {
            Some(state) => state,
            None => panic!(
                "participant {} belongs to another transaction",
                participant.key()
            ),
        }
    }

    /// The participant's version when its state was read (0: no events yet).
    ///
    /// # Panics
    /// As [`state`](Self::state).
    pub fn version<A: Actor>(&self, participant: &Participant<A>) -> u64 {
        match (participant.token == self.token)
            .then(|| self.versions.get(participant.index))
            .flatten()
        {
            Some(v) => *v,
            None => panic!(
                "participant {} belongs to another transaction",
                participant.key()
            ),
        }
    }

    /// Records events for the participant, after any recorded before. A handle of another
    /// transaction is reported by [`Transact::run`] as [`Error::InvalidInput`].
    pub fn emit<A: Actor>(
        &mut self,
        participant: &Participant<A>,
        events: impl IntoIterator<Item = A::Event>,
    ) {
        let slot = if participant.token == self.token {
            self.events.get_mut(participant.index)
        } else {
            None
        };
        let recorded = slot.and_then(|slot| {
            slot.get_or_insert_with(|| Box::new(Vec::<A::Event>::new()))
                .downcast_mut::<Vec<A::Event>>()
        });
        match recorded {
            Some(recorded) => recorded.extend(events),
            None => {
                self.misuse.get_or_insert_with(|| {
                    format!(
                        "the decision recorded events for {}, a participant of another \
                         transaction",
                        participant.key()
                    )
                });
            }
        }
    }
}

/// A participant's refusal in a [`Transact`]: which actor refused, and its typed error.
///
/// Handling: a business answer, as [`CommandError::Rejected`] says; nothing was written. Get
/// the typed error back with [`of`](Self::of) (`Some` only for the participant that refused)
/// or [`downcast_ref`](Self::downcast_ref).
pub struct Rejection {
    actor_type: &'static str,
    actor_id: Arc<str>,
    token: u64,
    index: usize,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("actor_type", &self.actor_type)
            .field("actor_id", &self.actor_id)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.key(), self.error)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

impl Rejection {
    /// The actor that refused.
    pub fn key(&self) -> ActorKey<'_> {
        ActorKey::new(self.actor_type, &self.actor_id)
    }

    /// Whether `participant` refused.
    pub fn is_from<A: Actor>(&self, participant: &Participant<A>) -> bool {
        self.token == participant.token && self.index == participant.index
    }

    /// The typed error, when `participant` is the one that refused.
    pub fn of<A: Actor>(&self, participant: &Participant<A>) -> Option<&A::Error> {
        if self.is_from(participant) {
            self.error.downcast_ref::<A::Error>()
        } else {
            None
        }
    }

    /// The error, when it is an `E` (whichever participant refused).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref::<E>()
    }

    /// The error, when it is an `E`; otherwise the rejection back.
    ///
    /// # Errors
    /// The rejection itself, when its error is not an `E`.
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, Self> {
        if self.error.is::<E>() {
            match self.error.downcast::<E>() {
                Ok(e) => Ok(*e),
                // Checked just above; rebuilt to keep the signature total.
                Err(error) => Err(Self { error, ..self }),
            }
        } else {
            Err(self)
        }
    }

    /// The error, untyped.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

/// A participant as loaded for one decision.
struct LoadedPart {
    state: Box<dyn Any + Send + Sync>,
    version: u64,
    /// Its recent history holds the transaction's command id.
    applied: bool,
}

/// One participant with its type erased: what a transaction over several types needs.
#[async_trait]
trait Part: Send + Sync {
    fn actor_type(&self) -> &'static str;
    fn actor_id(&self) -> &str;
    fn store(&self) -> &Arc<dyn SnapshotStore>;
    fn retry(&self) -> RetryPolicy;
    async fn load(&self, command_id: Option<&str>) -> Result<LoadedPart, CommandError<Rejection>>;
    /// The stored form of the events (a `Vec<A::Event>`) after `version`, `meta` stamped.
    fn encode(
        &self,
        events: Box<dyn Any + Send>,
        version: u64,
        meta: &CommandMeta,
    ) -> Result<Vec<Event>, Error>;
    fn passivate(&self);
    fn bump(&self, counter: fn(&Counters) -> &Count);
}

struct Member<A: Actor> {
    host: ActorHost<A>,
    actor_id: Arc<str>,
}

#[async_trait]
impl<A: Actor> Part for Member<A> {
    fn actor_type(&self) -> &'static str {
        A::TYPE
    }

    fn actor_id(&self) -> &str {
        &self.actor_id
    }

    fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.host.shared.store
    }

    fn retry(&self) -> RetryPolicy {
        self.host.shared.config.retry
    }

    async fn load(&self, command_id: Option<&str>) -> Result<LoadedPart, CommandError<Rejection>> {
        let shared = &self.host.shared;
        let loaded = load(shared, &self.actor_id).await.map_err(|e| {
            if matches!(e, LoadError::Decode(_) | LoadError::WrongType(_)) {
                bump(&shared.counters.decode_errors);
            }
            CommandError::from(e)
        })?;
        Ok(LoadedPart {
            applied: command_id.is_some_and(|id| loaded.recent.get(id).is_some()),
            version: loaded.version,
            state: Box::new(loaded.state),
        })
    }

    fn encode(
        &self,
        events: Box<dyn Any + Send>,
        version: u64,
        meta: &CommandMeta,
    ) -> Result<Vec<Event>, Error> {
        let Ok(events) = events.downcast::<Vec<A::Event>>() else {
            return Err(Error::invalid(format!(
                "events recorded for {} are not of its type",
                ActorKey::new(A::TYPE, &self.actor_id)
            )));
        };
        let key = ActorKey::new(A::TYPE, &self.actor_id);
        let mut stored = Vec::with_capacity(events.len());
        for (event, v) in events.iter().zip(version + 1..) {
            let encoded = self
                .host
                .shared
                .codec
                .encode(event)
                .map_err(|e| Error::Encoding(e.to_string()))?;
            let mut e = encoded.into_event_of(key, v);
            meta.stamp(&mut e);
            stored.push(e);
        }
        Ok(stored)
    }

    fn passivate(&self) {
        self.host.passivate(&self.actor_id);
    }

    fn bump(&self, counter: fn(&Counters) -> &Count) {
        bump(counter(&self.host.shared.counters));
    }
}
