//! How to subscribe: which events ([`SubscriptionFilter`]), how many buffered
//! ([`DEFAULT_SUBSCRIPTION_BUFFER`]) and what happens when the buffer is full
//! ([`OverflowPolicy`]), together [`SubscribeOptions`].

use crate::event::Event;
use crate::pattern::match_actor_pattern;

#[cfg(doc)]
use super::Delivery;

/// Default number of events a subscription buffers before its overflow policy applies.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 1024;

/// Narrows a namespace subscription to some event types and/or actors.
///
/// An event passes when its type is one of `event_types` (any one; an empty list lets every
/// type through) **and** its actor id matches `actor_pattern` (see
/// [`match_actor_pattern`]; `None` lets every actor through).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Event types to deliver; empty means all.
    pub event_types: Vec<String>,
    /// Actor id pattern (`*` one token, `>` the rest); `None` means all actors.
    pub actor_pattern: Option<String>,
}

impl SubscriptionFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event type to deliver.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// Restricts delivery to actors matching `pattern`.
    pub fn actor_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.actor_pattern = Some(pattern.into());
        self
    }

    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.actor_pattern.as_deref().is_none_or(str::is_empty)
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        let type_ok = self.event_types.is_empty() || self.event_types.contains(&event.event_type);
        let actor_ok = match self.actor_pattern.as_deref() {
            None | Some("") => true,
            Some(p) => match_actor_pattern(p, &event.actor_id),
        };
        type_ok && actor_ok
    }
}

/// What a subscription does when its buffer is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The publisher waits until the subscriber has room. Nothing is dropped; a slow subscriber
    /// slows its publishers down.
    #[default]
    Backpressure,
    /// The new event is dropped, counted, and the subscriber receives
    /// [`Delivery::Lagged`] with the number of events it missed, at the point of the gap.
    DropNewest,
}

/// How to subscribe: filter, buffer size and overflow policy.
///
/// ```
/// use aether_core::{OverflowPolicy, SubscribeOptions, SubscriptionFilter};
///
/// let opts = SubscribeOptions::default()
///     .filter(SubscriptionFilter::new().event_type("OrderPlaced"))
///     .buffer_size(10_000)
///     .overflow(OverflowPolicy::DropNewest);
/// assert_eq!(opts.buffer_size, 10_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Which events of the matching namespaces to deliver.
    pub filter: SubscriptionFilter,
    /// Events buffered before the overflow policy applies (0 falls back to the default).
    pub buffer_size: usize,
    /// What happens when the buffer is full.
    pub overflow: OverflowPolicy,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            filter: SubscriptionFilter::default(),
            buffer_size: DEFAULT_SUBSCRIPTION_BUFFER,
            overflow: OverflowPolicy::default(),
        }
    }
}

impl SubscribeOptions {
    /// Sets the filter.
    pub fn filter(mut self, filter: SubscriptionFilter) -> Self {
        self.filter = filter;
        self
    }
    /// Sets the buffer size (0 means the default).
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size;
        self
    }
    /// Sets the overflow policy.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }
    pub(super) fn effective_buffer(&self) -> usize {
        if self.buffer_size == 0 {
            DEFAULT_SUBSCRIPTION_BUFFER
        } else {
            self.buffer_size
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_rules() {
        let e = Event::new("OrderPlaced", "order.1", 1);
        assert!(SubscriptionFilter::new().matches(&e));
        assert!(SubscriptionFilter::new().is_empty());
        assert!(SubscriptionFilter::new()
            .event_type("X")
            .event_type("OrderPlaced")
            .matches(&e));
        assert!(!SubscriptionFilter::new().event_type("X").matches(&e));
        assert!(SubscriptionFilter::new()
            .actor_pattern("order.*")
            .matches(&e));
        assert!(!SubscriptionFilter::new()
            .actor_pattern("user.*")
            .matches(&e));
        assert!(!SubscriptionFilter::new()
            .event_type("OrderPlaced")
            .actor_pattern("user.>")
            .matches(&e));
        assert!(SubscriptionFilter::new().actor_pattern("").matches(&e));
    }
}
