//! Contract suites: one generic suite per trait of `aether-core`, run against every backend so
//! that each backend is held to the same behaviour instead of restating the same tests.
//!
//! - [`event_store`]: [`EventStore`] (and the replay of
//!   [`EventStoreWithErrors`]), for any [`StoreBackend`].
//! - [`snapshot_store`]: [`SnapshotStore`], for any
//!   [`StoreBackend`] whose store keeps snapshots.
//! - [`broadcaster`]: [`EventBroadcaster`], for any
//!   [`BusBackend`].
//!
//! Each case is a public async function taking the backend, so a backend's test file can call
//! one case directly; [`event_store_contract!`](crate::event_store_contract),
//! [`snapshot_store_contract!`](crate::snapshot_store_contract) and
//! [`broadcaster_contract!`](crate::broadcaster_contract) expand to one `#[tokio::test]` per
//! case, named after it, so that a failure names the case.
//!
//! Cases panic (through `assert!` and `expect`) when the backend breaks the contract: they are
//! test code.
//!
//! [`EventStoreWithErrors`]: aether_core::EventStoreWithErrors
//! [`SnapshotStore`]: aether_core::SnapshotStore

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aether_core::{Delivery, Event, EventBroadcaster, EventStore, Subscription};

pub mod broadcaster;
pub mod event_store;
pub mod snapshot_store;

/// How long a case waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A storage backend under test: hands out stores that share one set of data.
pub trait StoreBackend: Send + Sync {
    /// The store the suite exercises.
    type Store: EventStore + 'static;

    /// A handle on the backend's data. An in-process backend returns the same store every time;
    /// a server-backed one opens a new connection and a new store object (with cold caches) on
    /// the same server, so that cases can check what another writer or a fresh reader sees.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;
}

/// The simplest [`StoreBackend`]: one in-process store shared by every handle.
#[derive(Debug, Default)]
pub struct Shared<S>(Arc<S>);

impl<S> Shared<S> {
    /// Shares `store` between every handle the suite opens.
    pub fn new(store: S) -> Self {
        Self(Arc::new(store))
    }
}

impl<S: EventStore + 'static> StoreBackend for Shared<S> {
    type Store = Arc<S>;

    fn open(&self) -> impl Future<Output = Self::Store> + Send {
        std::future::ready(Arc::clone(&self.0))
    }
}

/// A bus's counters for one namespace, as far as the contract looks at them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusCounts {
    /// Events published to the namespace through this bus.
    pub published: u64,
    /// Deliveries of the namespace's events into this bus's subscriber buffers.
    pub delivered: u64,
    /// Deliveries of the namespace's events this bus dropped.
    pub dropped: u64,
    /// Deliveries this bus dropped over all namespaces.
    pub total_dropped: u64,
    /// Subscriptions open on this bus, as its metrics count them.
    pub active_subscriptions: u64,
    /// Subscriptions in this bus's subscriber table.
    pub subscriptions: usize,
}

/// An event bus backend under test: hands out buses that reach each other.
pub trait BusBackend: Send + Sync {
    /// The bus the suite exercises.
    type Bus: EventBroadcaster + Clone + 'static;

    /// A bus on the backend's transport. An in-process backend returns the same bus every
    /// time; a networked one connects a new bus to the same server, so that events cross it.
    fn open(&self) -> impl Future<Output = Self::Bus> + Send;

    /// The bus's counters for `namespace`.
    fn counts(bus: &Self::Bus, namespace: &str) -> BusCounts;
}

/// An event of type `Happened` for `actor` at `version`, with the version as field `n`.
pub fn event(actor: &str, version: u64) -> Event {
    Event::new("Happened", actor, version).with_field("n", version)
}

/// The versions of `events`, in order.
pub fn versions(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// The next delivery, failing the test after [`DEADLINE`] or when the subscription ended.
pub async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(DEADLINE, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for a delivery on {}", sub.pattern()))
        .unwrap_or_else(|| panic!("subscription {} ended", sub.pattern()))
}

/// The next event, failing the test on lag.
pub async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match next(sub).await {
        Delivery::Event(e) => e,
        Delivery::Lagged(n) => panic!("unexpected lag of {n} on {}", sub.pattern()),
    }
}

/// Publishes a marker to `namespace` and asserts that it is the very next thing `sub`
/// receives (markers published earlier by other checks aside): everything `publisher`
/// published before it has been delivered, and nothing else is pending for `sub`.
pub async fn assert_nothing_before_marker<B: EventBroadcaster + ?Sized>(
    publisher: &B,
    namespace: &str,
    sub: &mut Subscription,
) {
    let marker = Event::new("Marker", "marker", 1);
    publisher
        .publish(namespace, &marker)
        .await
        .unwrap_or_else(|e| panic!("publishing a marker to {namespace:?}: {e}"));
    loop {
        let got = next_event(sub).await;
        if got.id == marker.id {
            return;
        }
        assert_eq!(
            got.event_type,
            "Marker",
            "expected nothing but markers in {}, got {got:?}",
            sub.pattern()
        );
    }
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
pub async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Expands to one `#[tokio::test]` per listed case of `contract::$suite`, each building the
/// backend with `$backend`.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_cases {
    ($suite:ident, $backend:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let backend = $backend;
                $crate::contract::$suite::$case(&backend).await;
            }
        )+
    };
}
