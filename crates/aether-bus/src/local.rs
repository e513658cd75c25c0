//! The in-process event bus.

use std::sync::Arc;

use aether_core::{
    validate_namespace, Event, EventBroadcaster, Result, SubscribeOptions, Subscription,
};
use async_trait::async_trait;

use crate::metrics::{BusMetrics, MetricsSnapshot};
use crate::registry::SubscriberRegistry;

/// An in-process [`EventBroadcaster`]: publish to a namespace, and every subscription whose
/// pattern and filter match receives the event once, in publish order per publisher.
///
/// Nothing is lost silently: each subscription has a bounded buffer and the overflow policy it
/// chose ([`OverflowPolicy`](aether_core::OverflowPolicy)): backpressure makes the publisher
/// wait, drop-newest tells the subscriber how many events it missed; every drop is counted in
/// [`metrics`](Self::metrics).
///
/// Cloning is cheap and every clone is the same bus.
///
/// # Security
/// Wildcard subscriptions (`*`, `>`) cross namespaces. They are for trusted, cross-cutting
/// consumers (audit, metrics); isolate tenants by giving them exact namespaces only.
///
/// # Example
/// ```
/// use aether_bus::EventBus;
/// use aether_core::{Delivery, Event, EventBroadcaster, SubscriptionFilter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let bus = EventBus::new();
/// let mut orders = bus.subscribe("orders").await?;
/// let mut audit = bus.subscribe(">").await?;
/// let mut placed = bus
///     .subscribe_with_filter("orders", SubscriptionFilter::new().event_type("OrderPlaced"))
///     .await?;
///
/// bus.publish("orders", &Event::new("OrderPlaced", "order-1", 1)).await?;
/// bus.publish("orders", &Event::new("OrderShipped", "order-1", 2)).await?;
///
/// assert!(matches!(orders.recv().await, Some(Delivery::Event(e)) if e.version == 1));
/// assert!(matches!(audit.recv().await, Some(Delivery::Event(e)) if e.version == 1));
/// assert!(matches!(placed.recv().await, Some(Delivery::Event(e)) if e.event_type == "OrderPlaced"));
/// assert!(placed.try_recv().is_none());
/// assert_eq!(bus.metrics().namespace("orders").published, 2);
/// # Ok::<(), aether_core::Error>(())
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct EventBus {
    registry: SubscriberRegistry,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self {
            registry: SubscriberRegistry::new(Arc::new(BusMetrics::new())),
        }
    }

    /// A copy of the bus's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.registry.metrics().snapshot()
    }

    /// Number of open subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.registry.len()
    }

    /// Publishes `event` to `namespace` (see [`EventBroadcaster::publish`]). The inherent form
    /// avoids the boxed future of the object-safe trait method on the hot path.
    ///
    /// # Errors
    /// [`aether_core::Error::InvalidInput`] for an empty or wildcard namespace.
    pub async fn publish(&self, namespace: &str, event: &Event) -> Result<()> {
        validate_namespace(namespace)?;
        self.registry
            .publish_local(namespace, Arc::new(event.clone()))
            .await;
        Ok(())
    }
}

#[async_trait]
impl EventBroadcaster for EventBus {
    async fn publish(&self, namespace: &str, event: &Event) -> Result<()> {
        EventBus::publish(self, namespace, event).await
    }

    async fn subscribe_with_options(
        &self,
        namespace_pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        self.registry.subscribe(namespace_pattern, options)
    }
}
