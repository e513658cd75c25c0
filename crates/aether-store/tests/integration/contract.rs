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

    mod partitioned_snapshots {
        aether_testkit::snapshot_store_contract!(super::JetStream::partitioned());
    }
}
