//! The `aether-testkit` broadcaster contract on every bus: the local `EventBus` (every handle
//! is the same bus) and the `NatsEventBus` (every handle a new bus on its own connection to one
//! server, so events cross NATS).

use std::future::Future;

use aether_bus::{EventBus, MetricsSnapshot};
use aether_testkit::contract::{BusBackend, BusCounts};

fn counts(metrics: &MetricsSnapshot, subscriptions: usize, namespace: &str) -> BusCounts {
    let ns = metrics.namespace(namespace);
    BusCounts {
        published: ns.published,
        delivered: ns.delivered,
        dropped: ns.dropped,
        total_dropped: metrics.total.dropped,
        active_subscriptions: metrics.active_subscriptions,
        subscriptions,
    }
}

/// The local bus.
#[derive(Default)]
struct Local(EventBus);

impl BusBackend for Local {
    type Bus = EventBus;

    fn open(&self) -> impl Future<Output = EventBus> + Send {
        std::future::ready(self.0.clone())
    }

    fn counts(bus: &EventBus, namespace: &str) -> BusCounts {
        counts(&bus.metrics(), bus.subscription_count(), namespace)
    }
}

mod local {
    aether_testkit::broadcaster_contract!(super::Local::default());
}

/// The counters of a NATS bus, for the contract.
#[cfg(feature = "nats")]
pub(crate) fn nats_counts(bus: &aether_bus::NatsEventBus, namespace: &str) -> BusCounts {
    counts(&bus.metrics(), bus.subscription_count(), namespace)
}

#[cfg(feature = "nats")]
mod nats {
    use std::future::Future;

    use aether_bus::NatsEventBus;
    use aether_testkit::contract::{BusBackend, BusCounts};
    use aether_testkit::NatsServer;

    /// A server of its own; every handle is a new bus on a new connection.
    pub(crate) struct Nats(NatsServer);

    impl Nats {
        pub(crate) fn start() -> Self {
            Self(crate::nats_support::server())
        }
    }

    impl BusBackend for Nats {
        type Bus = NatsEventBus;

        fn open(&self) -> impl Future<Output = NatsEventBus> + Send {
            crate::nats_support::bus(&self.0)
        }

        fn counts(bus: &NatsEventBus, namespace: &str) -> BusCounts {
            super::nats_counts(bus, namespace)
        }
    }

    mod cases {
        aether_testkit::broadcaster_contract!(super::Nats::start());
    }
}
