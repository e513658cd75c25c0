//! Personal data in Aether's immutable log: crypto-shredding.
//!
//! An event log keeps every event forever; a person can still ask to be erased. Fields that
//! belong to a data subject (a person, named by an opaque id the application gives) are
//! written as [`Personal`] values. A [`PrivateStore`] in front of the event store seals them
//! with the subject's own key (AES-256-GCM) before they are stored, and opens them
//! when they are read. Erasing the subject deletes its key from the [`KeyStore`]: from then
//! on every reader through a private store sees those fields as erased ([`Personal::is_erased`]),
//! while the events themselves, their ids, versions and every other field stay as they were.
//! Tools that should not read personal data at all show it sealed or erased ([`redact`]).
//!
//! Stores refuse clear personal fields ([`aether_core::personal`]), so personal data cannot
//! reach a log unsealed by a forgotten wrapper.
//!
//! # Layout
//! - [`Personal`]: the typed field.
//! - [`KeyStore`], [`DataKey`], [`KeyState`], [`Erasure`]: where the keys live;
//!   [`MemoryKeyStore`]; `NatsKeyStore` and `KeyStoreConfig` (feature `nats`): a NATS
//!   key-value bucket of their own, the default.
//! - [`seal`], [`reveal`], [`redact`]: the three transformations of event data.
//! - [`PrivateStore`]: any event store, snapshot store and event log, sealing and opening.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use aether_core::{Event, EventStore};
//! use aether_privacy::{KeyStore, MemoryKeyStore, Personal, PrivateStore};
//! use aether_store::InMemoryEventStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let keys = Arc::new(MemoryKeyStore::new());
//! let store = PrivateStore::new(Arc::new(InMemoryEventStore::new()), keys.clone());
//! let name = Personal::new("person-7", "Ada Lovelace".to_string());
//! store.save_event(&Event::new("Joined", "member-1", 1).with_field("name", serde_json::to_value(&name).unwrap())).await?;
//!
//! keys.erase("person-7").await?;
//! let events = store.get_events("member-1", 1).await?;
//! let name: Personal<String> = serde_json::from_value(events[0].data["name"].clone()).unwrap();
//! assert!(name.is_erased());
//! # Ok::<(), aether_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! See `docs/data-lifecycle.md` for the model, the threat it answers and its limits.

mod keys;
#[cfg(feature = "nats")]
mod nats;
mod personal;
mod seal;
mod store;

pub use keys::{DataKey, Erasure, KeyState, KeyStore, MemoryKeyStore, KEY_BYTES};
#[cfg(feature = "nats")]
pub use nats::{KeyStoreConfig, NatsKeyStore, DEFAULT_KEY_BUCKET};
pub use personal::Personal;
pub use seal::{redact, reveal, seal, ALGORITHM};
pub use store::PrivateStore;
