//! Leader election: a lease in the cluster's key-value bucket, taken and renewed with
//! compare-and-set.
//!
//! The key `leader` holds a [`LeaderLease`] (holder, incarnation, term). The holder renews it
//! every heartbeat interval with `update(key, value, revision)`, so each renewal gives the key
//! a new revision. Other nodes watch the revision with their own monotonic clock (no clock
//! agreement needed): a lease whose revision has not changed for the failure timeout has
//! expired, and any node may take it over with `update` on the revision it saw, with the term
//! plus one. Compare-and-set lets exactly one contender win. A leader leaving cleanly deletes
//! the key so a successor does not have to wait. The decisions are the node core's
//! (`core/`); this module holds the lease's data, and the expiry clock is
//! [`aether_placement::LeaseTracker`].
//!
//! Private: applications see the lease through the observer (`ObservedLeader`). The lease is
//! public only through `routing` with the feature `unstable-wire`, hence the lint setting.
#![cfg_attr(not(feature = "unstable-wire"), allow(unreachable_pub))]

use serde::{Deserialize, Serialize};

/// The key of the lease in the cluster's bucket.
#[cfg_attr(not(feature = "nats"), allow(dead_code))] // the NATS transport's and the observer's
pub(crate) const LEADER_KEY: &str = "leader";

/// The value of the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderLease {
    /// The leader.
    pub node_id: String,
    /// The leader's incarnation (a restarted node does not inherit its old lease).
    pub incarnation: String,
    /// Grows by one with every change of leader.
    pub term: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_wire_format() {
        let l = LeaderLease {
            node_id: "a".into(),
            incarnation: "i".into(),
            term: 3,
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["nodeId"], "a");
        assert_eq!(v["term"], 3);
    }
}
