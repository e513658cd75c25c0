//! Typed event-sourced actors for Aether: an application writes its actors as Rust types
//! (state, commands, events, replies, rejections), and the same actor runs embedded in one
//! process or on a cluster node.
//!
//! Stored events stay [`aether_core::Event`]s (JSON payload, metadata, version): that is the
//! wire and storage form every tool reads. This crate is the typed layer on top: events are
//! encoded to that form when written and decoded (through upcasters) when read, and a payload
//! that does not fit its type is a [`DecodeError`], never a silent default.
//!
//! # Layout
//! - [`Actor`]: the actor type an application writes: `decide` (async, may refuse with a typed
//!   error), `apply`, `reply`. [`CommandMeta`] and [`Envelope`]: command ids (idempotence),
//!   correlation, causation and user ids.
//! - [`DomainEvent`] (the trait, and `#[derive(DomainEvent)]`), [`EventCodec`]: typed events
//!   and their stored form.
//! - [`Upcasters`]: schema evolution, per event type and version (renames included).
//! - [`ActorHost`]: the runtime of one process (the embedded default), with
//!   [`RuntimeConfig`]: [`SnapshotPolicy`], [`PassivationPolicy`], [`RetryPolicy`]. Counters
//!   in [`HostStats`].
//! - [`ActorClient`]: sending commands, whichever runtime hosts the actor.
//!   [`ActorHost::transact`]: one decision over several actors of one type, committed
//!   atomically. [`Transact`]: one decision over actors of several types (typed
//!   [`Participant`] handles, the states and events through [`Decide`]), committed atomically,
//!   answering [`Transacted`] or a [`Rejection`] that names the actor that refused.
//! - [`Timer`], [`Effect`]: what an actor declares to react over time and on other actors
//!   ([`Actor::timers`], [`Actor::effects`]), recorded on its events and carried out by a
//!   reactor (`aether-reactions`) that tells the host what it supports ([`ReactionSupport`]).
//! - [`CommandError`], [`DecodeError`], [`LoadError`]: what can go wrong, told apart.
//! - [`replay`]: rebuild a state from events alone.
//! - [`testing`]: given/when/then, and a replay check for property tests.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use aether_actor::{Actor, ActorClient, ActorHost, CommandError, DomainEvent, RuntimeConfig};
//! use aether_store::InMemoryEventStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! struct Account { balance: i64 }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! enum AccountCommand { Deposit { amount: i64 }, Withdraw { amount: i64 } }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum AccountEvent { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
//!
//! impl DomainEvent for AccountEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self {
//!             Self::Deposited { .. } => "Deposited",
//!             Self::Withdrawn { .. } => "Withdrawn",
//!         }
//!     }
//! }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
//! enum AccountError {
//!     #[error("insufficient funds: balance {balance}")]
//!     InsufficientFunds { balance: i64 },
//! }
//!
//! struct Accounts;
//!
//! impl Actor for Accounts {
//!     type State = Account;
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Reply = i64;
//!     type Error = AccountError;
//!     const TYPE: &'static str = "account";
//!
//!     async fn decide(&self, _id: &str, state: &Account, command: &AccountCommand)
//!         -> Result<Vec<AccountEvent>, AccountError>
//!     {
//!         Ok(match *command {
//!             AccountCommand::Deposit { amount } => vec![AccountEvent::Deposited { amount }],
//!             AccountCommand::Withdraw { amount } if amount > state.balance => {
//!                 return Err(AccountError::InsufficientFunds { balance: state.balance })
//!             }
//!             AccountCommand::Withdraw { amount } => vec![AccountEvent::Withdrawn { amount }],
//!         })
//!     }
//!
//!     fn apply(state: &mut Account, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Deposited { amount } => state.balance += amount,
//!             AccountEvent::Withdrawn { amount } => state.balance -= amount,
//!         }
//!     }
//!
//!     fn reply(state: &Account, _: &AccountCommand, _: &[AccountEvent]) -> i64 {
//!         state.balance
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(InMemoryEventStore::new());
//! let accounts: Arc<dyn ActorClient<Accounts>> =
//!     Arc::new(ActorHost::new(Accounts, store, RuntimeConfig::default()));
//! accounts.send("acc-1", AccountCommand::Deposit { amount: 100 }).await?;
//! match accounts.send("acc-1", AccountCommand::Withdraw { amount: 500 }).await {
//!     Err(CommandError::Rejected(AccountError::InsufficientFunds { balance })) => {
//!         assert_eq!(balance, 100)
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod actor;
mod client;
mod config;
mod error;
mod event;
mod host;
#[cfg(feature = "opentelemetry")]
pub mod otel;
mod reaction;
mod replay;
mod retry;
pub mod testing;
mod upcast;

pub use actor::{Actor, CommandMeta, Envelope};
/// `#[derive(DomainEvent)]`: implements [`DomainEvent`](trait@DomainEvent) for a serde enum,
/// each variant's event type being its serde name (`rename` and `rename_all` honoured);
/// `#[domain_event(schema_version = N)]` on the enum sets the schema version. A struct, a
/// union, an enum that is not externally tagged, or a skipped variant is a compile error.
///
/// ```
/// use aether_actor::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// #[serde(rename_all = "snake_case")]
/// #[domain_event(schema_version = 2)]
/// enum AccountEvent {
///     Opened { owner: String },
///     #[serde(rename = "money_in")]
///     Deposited { cents: i64 },
///     Closed,
/// }
///
/// assert_eq!(AccountEvent::Opened { owner: "ann".into() }.event_type(), "opened");
/// assert_eq!(AccountEvent::Deposited { cents: 5 }.event_type(), "money_in");
/// assert_eq!(AccountEvent::Closed.event_type(), "closed");
/// assert_eq!(AccountEvent::Closed.schema_version(), 2);
/// ```
pub use aether_derive::DomainEvent;
pub use client::ActorClient;
pub use config::{PassivationPolicy, RuntimeConfig, SnapshotPolicy};
pub use error::{CommandError, DecodeError, LoadError, RetiredError, WrongTypeError};
pub use event::{DomainEvent, EncodeError, EncodedEvent, EventCodec};
pub use host::{
    ActorHost, Decide, Decision, Fence, Handled, HostStats, Participant, PassivationHook,
    Rejection, Transact, Transacted,
};
pub use reaction::{Effect, ReactionSupport, Timer};
pub use replay::replay;
pub use retry::RetryPolicy;
pub use upcast::{UpcasterClash, Upcasters};
