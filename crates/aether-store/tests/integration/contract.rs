//! The `aether-testkit` contract suites on every store: the in-memory store, the same wrapped
//! in `Notify` (a wrapper must not change what the store does), and the JetStream store.

mod in_memory {
    use aether_store::InMemoryEventStore;
    use aether_testkit::contract::Shared;

    mod events {
        use super::*;
        aether_testkit::event_store_contract!(Shared::new(InMemoryEventStore::new()));
    }

    mod snapshots {
        use super::*;
        aether_testkit::snapshot_store_contract!(Shared::new(InMemoryEventStore::new()));
    }
}

mod notifying {
    use std::sync::Arc;

    use aether_bus::EventBus;
    use aether_store::{InMemoryEventStore, Notify};
    use aether_testkit::contract::Shared;

    fn store() -> Shared<Notify<InMemoryEventStore>> {
        Shared::new(Notify::new(
            InMemoryEventStore::new(),
            Arc::new(EventBus::new()),
            "stored",
        ))
    }

    mod events {
        aether_testkit::event_store_contract!(super::store());
    }

    mod snapshots {
        aether_testkit::snapshot_store_contract!(super::store());
    }
}

#[cfg(feature = "nats")]
mod jetstream {
    use std::future::Future;

    use aether_store::JetStreamConfig;
    use aether_store::JetStreamEventStore;
    use aether_testkit::contract::StoreBackend;
    use aether_testkit::NatsServer;

    /// A server of its own; every handle is a new connection and a new store object, so each
    /// starts with a cold cache.
    pub(crate) struct JetStream {
        server: NatsServer,
        config: JetStreamConfig,
    }

    impl JetStream {
        pub(crate) fn start() -> Self {
            Self::with(JetStreamConfig::default())
        }

        fn with(config: JetStreamConfig) -> Self {
            Self {
                server: crate::jetstream::start(),
                config,
            }
        }

        /// The log spread over four streams.
        pub(crate) fn partitioned() -> Self {
            Self::with(JetStreamConfig::default().partitions(4))
        }
    }

    impl StoreBackend for JetStream {
        type Store = JetStreamEventStore;

        fn open(&self) -> impl Future<Output = Self::Store> + Send {
            crate::jetstream::open(&self.server, self.config.clone())
        }
    }

    mod events {
        aether_testkit::event_store_contract!(super::JetStream::start());
    }

    mod snapshots {
        aether_testkit::snapshot_store_contract!(super::JetStream::start());
    }

    mod partitioned_events {
        aether_testkit::event_store_contract!(super::JetStream::partitioned());
    }

    mod compactable_events {
        aether_testkit::event_store_contract!(super::Compacting::start());
    }

    mod compactable_snapshots {
        aether_testkit::snapshot_store_contract!(super::Compacting::start());
    }

    /// A compactable store that compacts an actor's history at every snapshot saved, so that
    /// every case reads across cuts: what it sees must not change.
    pub(crate) struct Compacting(JetStream);

    impl Compacting {
        pub(crate) fn start() -> Self {
            Self(JetStream::with(
                JetStreamConfig::default().compactable(true),
            ))
        }
    }

    impl StoreBackend for Compacting {
        type Store = CompactingStore;

        fn open(&self) -> impl Future<Output = Self::Store> + Send {
            let opened = self.0.open();
            async move { CompactingStore(opened.await) }
        }
    }

    pub(crate) struct CompactingStore(JetStreamEventStore);

    #[async_trait::async_trait]
    impl aether_core::EventStore for CompactingStore {
        async fn save_event(&self, event: &aether_core::Event) -> aether_core::Result<()> {
            self.0.save_event(event).await
        }
        async fn save_events(
            &self,
            actor_id: &str,
            events: &[aether_core::Event],
        ) -> aether_core::Result<()> {
            self.0.save_events(actor_id, events).await
        }
        async fn events_of(
            &self,
            actor: aether_core::ActorKey<'_>,
            from_version: u64,
        ) -> aether_core::Result<Vec<aether_core::Event>> {
            self.0.events_of(actor, from_version).await
        }
        async fn latest_version_of(
            &self,
            actor: aether_core::ActorKey<'_>,
        ) -> aether_core::Result<u64> {
            self.0.latest_version_of(actor).await
        }
        async fn commit(&self, transaction: &aether_core::Transaction) -> aether_core::Result<()> {
            self.0.commit(transaction).await
        }
    }

    #[async_trait::async_trait]
    impl aether_core::EventStoreWithErrors for CompactingStore {
        async fn events_with_errors_of(
            &self,
            actor: aether_core::ActorKey<'_>,
            from_version: u64,
        ) -> aether_core::Result<aether_core::ReplayResult> {
            self.0.events_with_errors_of(actor, from_version).await
        }
    }

    #[async_trait::async_trait]
    impl aether_core::SnapshotStore for CompactingStore {
        async fn save_snapshot(&self, snapshot: &aether_core::Snapshot) -> aether_core::Result<()> {
            self.0.save_snapshot(snapshot).await?;
            match self.0.compact(snapshot.actor_key(), false).await {
                // A snapshot ahead of the events (or of an actor without any) has nothing
                // to compact.
                Ok(_) | Err(aether_core::Error::InvalidInput(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        async fn latest_snapshot_of(
            &self,
            actor: aether_core::ActorKey<'_>,
        ) -> aether_core::Result<Option<aether_core::Snapshot>> {
            self.0.latest_snapshot_of(actor).await
        }
        async fn snapshot_and_events_of(
            &self,
            actor: aether_core::ActorKey<'_>,
            start: &aether_core::ReplayStart,
        ) -> aether_core::Result<aether_core::SnapshotAndEvents> {
            self.0.snapshot_and_events_of(actor, start).await
        }
    }

    mod partitioned_snapshots {
        aether_testkit::snapshot_store_contract!(super::JetStream::partitioned());
    }
}
