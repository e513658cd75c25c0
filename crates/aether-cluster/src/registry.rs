//! Which node hosts which actor.

use std::fmt;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use crate::vm::{VMProvider, VirtualMachine};

/// Knows which node hosts which actor, and reaches the local machines through a
/// [`VMProvider`].
///
/// Every node keeps one: it records the actors activated locally (and, when known, where
/// others run), forgets a node's actors when the node fails, and answers lookups without
/// depending on the runtime that hosts the machines. The authoritative placement is the shard
/// assignment; the registry is the node's knowledge of where actors are actually active.
///
/// ```
/// use aether_cluster::DistributedVMRegistry;
///
/// let registry = DistributedVMRegistry::new("node-a");
/// registry.register("order-1", "node-a");
/// registry.register("order-2", "node-b");
/// assert_eq!(registry.node_of("order-2").as_deref(), Some("node-b"));
/// assert_eq!(registry.local_actors(), ["order-1"]);
/// assert_eq!(registry.remove_node("node-b"), ["order-2"]);
/// ```
pub struct DistributedVMRegistry {
    local_node: String,
    locations: DashMap<String, String>,
    provider: RwLock<Option<Arc<dyn VMProvider>>>,
}

impl fmt::Debug for DistributedVMRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedVMRegistry")
            .field("local_node", &self.local_node)
            .field("actors", &self.locations.len())
            .finish_non_exhaustive()
    }
}

impl DistributedVMRegistry {
    /// An empty registry for the node `local_node`.
    pub fn new(local_node: impl Into<String>) -> Self {
        Self {
            local_node: local_node.into(),
            locations: DashMap::new(),
            provider: RwLock::new(None),
        }
    }

    /// The node this registry belongs to.
    pub fn local_node(&self) -> &str {
        &self.local_node
    }

    /// Sets where local machines are looked up.
    pub fn set_vm_provider(&self, provider: Arc<dyn VMProvider>) {
        *self.provider.write().unwrap_or_else(|e| e.into_inner()) = Some(provider);
    }

    fn provider(&self) -> Option<Arc<dyn VMProvider>> {
        self.provider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records that `actor_id` runs on `node`.
    pub fn register(&self, actor_id: impl Into<String>, node: impl Into<String>) {
        self.locations.insert(actor_id.into(), node.into());
    }

    /// Forgets `actor_id`; returns the node it was on.
    pub fn unregister(&self, actor_id: &str) -> Option<String> {
        self.locations.remove(actor_id).map(|(_, n)| n)
    }

    /// Forgets `actor_id` only if it is recorded on `node` (so a stale removal cannot erase a
    /// newer location).
    pub fn unregister_if_on(&self, actor_id: &str, node: &str) -> bool {
        self.locations
            .remove_if(actor_id, |_, n| n == node)
            .is_some()
    }

    /// The node `actor_id` is known to run on.
    pub fn node_of(&self, actor_id: &str) -> Option<String> {
        self.locations.get(actor_id).map(|n| n.clone())
    }

    /// Whether `actor_id` is known to run on this node.
    pub fn is_local(&self, actor_id: &str) -> bool {
        self.locations
            .get(actor_id)
            .is_some_and(|n| *n == self.local_node)
    }

    /// The actors known to run on `node`, sorted.
    pub fn actors_on(&self, node: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .locations
            .iter()
            .filter(|e| e.value() == node)
            .map(|e| e.key().clone())
            .collect();
        v.sort();
        v
    }

    /// The actors known to run on this node, sorted.
    pub fn local_actors(&self) -> Vec<String> {
        self.actors_on(&self.local_node)
    }

    /// Forgets every actor of `node` (it failed or left); returns them, sorted.
    pub fn remove_node(&self, node: &str) -> Vec<String> {
        let actors = self.actors_on(node);
        for a in &actors {
            self.locations.remove_if(a, |_, n| n == node);
        }
        actors
    }

    /// Keeps only the locations for which `keep(actor, node)` holds.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.locations.retain(|a, n| keep(a, n));
    }

    /// Number of actors with a known location.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// Whether no location is known.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// The local machine running `actor_id`, through the provider.
    pub fn get_vm(&self, actor_id: &str) -> Option<Arc<dyn VirtualMachine>> {
        self.provider()?.get_vm(actor_id)
    }

    /// Every local machine, through the provider.
    pub fn active_vms(&self) -> std::collections::HashMap<String, Arc<dyn VirtualMachine>> {
        self.provider().map(|p| p.active_vms()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::VMState;
    use std::collections::HashMap;

    #[derive(Debug)]
    struct Vm(String);
    impl VirtualMachine for Vm {
        fn id(&self) -> &str {
            "vm-1"
        }
        fn actor_id(&self) -> &str {
            &self.0
        }
        fn state(&self) -> VMState {
            VMState::Running
        }
    }

    struct Provider;
    impl VMProvider for Provider {
        fn get_vm(&self, actor_id: &str) -> Option<Arc<dyn VirtualMachine>> {
            (actor_id == "a").then(|| Arc::new(Vm("a".into())) as Arc<dyn VirtualMachine>)
        }
        fn active_vms(&self) -> HashMap<String, Arc<dyn VirtualMachine>> {
            self.get_vm("a")
                .map(|v| ("a".to_string(), v))
                .into_iter()
                .collect()
        }
    }

    #[test]
    fn locations() {
        let r = DistributedVMRegistry::new("me");
        assert!(r.is_empty());
        r.register("a", "me");
        r.register("b", "other");
        r.register("c", "other");
        assert!(r.is_local("a") && !r.is_local("b"));
        assert_eq!(r.actors_on("other"), ["b", "c"]);
        assert!(!r.unregister_if_on("b", "me"));
        assert!(r.unregister_if_on("b", "other"));
        assert_eq!(r.unregister("c").as_deref(), Some("other"));
        assert_eq!(r.len(), 1);
        r.register("d", "x");
        r.retain(|_, n| n != "x");
        assert_eq!(r.node_of("d"), None);
        assert_eq!(r.local_node(), "me");
        assert!(format!("{r:?}").contains("me"));
    }

    #[test]
    fn provider_lookups() {
        let r = DistributedVMRegistry::new("me");
        assert!(r.get_vm("a").is_none());
        assert!(r.active_vms().is_empty());
        r.set_vm_provider(Arc::new(Provider));
        let vm = r.get_vm("a").unwrap();
        assert_eq!(
            (vm.id(), vm.actor_id(), vm.state()),
            ("vm-1", "a", VMState::Running)
        );
        assert!(r.get_vm("b").is_none());
        assert_eq!(r.active_vms().len(), 1);
    }
}
