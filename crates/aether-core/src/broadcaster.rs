//! The publish/subscribe face of an event bus.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::Event;
use crate::subscription::{SubscribeOptions, Subscription, SubscriptionFilter};

/// Publishes events to namespaces and lets subscribers follow namespace patterns.
///
/// Namespaces are dot-separated names (`orders`, `tenant-a.orders`). A subscription pattern is a
/// namespace or a wildcard pattern (`*` one token, `>` the rest; see [`validate_pattern`](crate::validate_pattern)).
/// Wildcard subscriptions cross namespaces, so they are for trusted, cross-cutting consumers
/// (audit, metrics), not for isolating tenants.
///
/// Implementations are usable as `Arc<dyn EventBroadcaster>`.
#[async_trait]
pub trait EventBroadcaster: Send + Sync {
    /// Publishes `event` to `namespace`; every matching subscriber receives it once.
    ///
    /// Under [`OverflowPolicy::Backpressure`](crate::OverflowPolicy::Backpressure) this waits for
    /// slow subscribers.
    async fn publish(&self, namespace: &str, event: &Event) -> Result<()>;

    /// Subscribes to `namespace_pattern` with explicit options.
    async fn subscribe_with_options(
        &self,
        namespace_pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription>;

    /// Subscribes to every event of the namespaces matching `namespace_pattern`, with the
    /// default buffer and backpressure.
    async fn subscribe(&self, namespace_pattern: &str) -> Result<Subscription> {
        self.subscribe_with_options(namespace_pattern, SubscribeOptions::default())
            .await
    }

    /// Subscribes to the events of the matching namespaces that pass `filter`.
    async fn subscribe_with_filter(
        &self,
        namespace_pattern: &str,
        filter: SubscriptionFilter,
    ) -> Result<Subscription> {
        self.subscribe_with_options(
            namespace_pattern,
            SubscribeOptions::default().filter(filter),
        )
        .await
    }
}

macro_rules! forward_broadcaster {
    ($ty:ty) => {
        #[async_trait]
        impl<T: EventBroadcaster + ?Sized> EventBroadcaster for $ty {
            async fn publish(&self, namespace: &str, event: &Event) -> Result<()> {
                (**self).publish(namespace, event).await
            }
            async fn subscribe_with_options(
                &self,
                namespace_pattern: &str,
                options: SubscribeOptions,
            ) -> Result<Subscription> {
                (**self)
                    .subscribe_with_options(namespace_pattern, options)
                    .await
            }
        }
    };
}

forward_broadcaster!(Arc<T>);
forward_broadcaster!(Box<T>);
