//! What the node's loop publishes after every step of its core: an immutable view that
//! routing, fencing and the public accessors read without waiting for the loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::assignment::Assignment;
use crate::routing::{WireRange, MIN_WIRE_VERSION};

/// This node's view as of the core's last step.
///
/// Published through a `tokio::sync::watch` channel by the loop, the only writer. Receivers
/// are woken only when the assignment changes (what routing and `wait_for_assignment` wait
/// for); the rest is updated in place, so the serving deadline, which moves with every own
/// heartbeat, wakes nobody.
#[derive(Debug, Clone)]
pub(super) struct NodeView {
    /// The newest assignment table this node knows, with its epoch.
    pub(super) assignment: Arc<Assignment>,
    /// Our term while we hold the leader lease.
    pub(super) term: Option<u64>,
    /// The leader as last seen.
    pub(super) leader: Option<String>,
    /// The live members, this node included, sorted.
    pub(super) members: Arc<[String]>,
    /// Until when this node may serve the actors its table gives it (`None`: not now; see
    /// `NodeCore::serving_until`).
    pub(super) serving_until: Option<Instant>,
    /// The wire versions each live member announced.
    pub(super) peer_wire: Arc<BTreeMap<String, WireRange>>,
}

impl NodeView {
    /// The wire version to send `node` a request in, from a node that speaks up to
    /// `own_max`: the highest both speak; the oldest this node reads while `node` has not
    /// been heard (or shares none, when its refusal will say so).
    pub(super) fn wire_version_for(&self, node: &str, own_max: u16) -> u16 {
        self.peer_wire
            .get(node)
            .and_then(|range| range.common(own_max))
            .unwrap_or(MIN_WIRE_VERSION)
    }

    /// Whether `node` may serve `actor_id` at `now`: the table gives it the actor's shard, and
    /// its own heartbeats still reach the others (self-fencing).
    pub(super) fn may_serve(&self, node: &str, actor_id: &str, now: Instant) -> bool {
        self.serving_until.is_some_and(|until| now < until)
            && self.assignment.serves(node, actor_id)
    }
}
