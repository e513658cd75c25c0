//! Transactions across actor types: one decision over actors of several types (a `show` and a
//! `customer`), committed atomically.
//!
//! Each participant is added to a [`Transact`] with its typed host and id, which gives back a
//! typed handle, a [`Participant`]. The decision reads each participant's state and records
//! its events through its handle ([`Decide`]), and refuses through a handle too, so a
//! [`Rejection`] always names its actor and gives back that actor's typed error.
//!
//! The module is split by concept: [`Transact`] and its outcome [`Transacted`] here, the
//! handles and the decision's view in `decide`, a refusal in `rejection`, and the
//! type-erased participant a transaction drives in `part`.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aether_core::{ActorKey, Error, Transaction, TransactionConflictError, VersionConflictError};

use super::ActorHost;
use crate::actor::{Actor, CommandMeta};
use crate::error::CommandError;
use crate::retry::RetryPolicy;

mod decide;
mod part;
mod rejection;

pub use decide::{Decide, Participant};
pub use rejection::Rejection;

use part::{Member, Part};

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
            for (((part, version), state), decided) in
                parts.iter().zip(&versions).zip(&states).zip(events)
            {
                let Some(decided) = decided else { continue };
                let stored = part.encode(&**state, decided, *version, &self.meta)?;
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
