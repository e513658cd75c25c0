//! Benchmarks for Aether. Each criterion group measures an Aether operation next to its floor
//! (the raw NATS call it wraps) or its peer (another crate doing the same job), so the ratio
//! holds on a noisy shared machine. `scripts/bench` runs them all and writes
//! `docs/benchmarks.md` with `bench-report`.
//!
//! What several benchmarks and binaries share lives here:
//! - [`bank`]: the actor the cluster measurements send commands to;
//! - [`echo`]: the actor the send-path measurements send a read to, and the two-node cluster
//!   they run on;
//! - [`alloc`]: a counting allocator, for memory per item;
//! - [`setup`]: how a benchmark stops when something it cannot go on without fails;
//! - [`saves`]: timed runs of saves, by one writer or by several at once;
//! - [`pg`]: PostgreSQL as the store's peer (a server of the benchmark's own, its events table,
//!   a connection with prepared statements), for `benches/postgres.rs` and the
//!   `peer-throughput` probe;
//! - [`ring`]: a consistent hash ring with virtual nodes, the placement the cluster used
//!   before shard tables, kept as the comparison the placement benchmark makes.
#![warn(missing_docs)]
// Only the counting allocator needs `unsafe` (a `GlobalAlloc` implementation).
#![deny(unsafe_code)]

pub mod ring;

pub mod setup {
    //! A benchmark that cannot start its servers, connect or save has nothing to measure: it
    //! stops with one line saying what failed (exit status 1) rather than a panic.

    use std::fmt::Display;

    /// Stops the benchmark with `message` (exit status 1).
    pub fn fail(message: impl Display) -> ! {
        eprintln!("benchmark stopped: {message}");
        std::process::exit(1);
    }

    /// The value, or the benchmark stopped saying `what` failed and why.
    pub trait OrFail<T> {
        /// The value, or [`fail`] with `what` and the error.
        fn or_fail(self, what: &str) -> T;
    }

    impl<T, E: Display> OrFail<T> for Result<T, E> {
        fn or_fail(self, what: &str) -> T {
            self.unwrap_or_else(|e| fail(format!("{what}: {e}")))
        }
    }

    impl<T> OrFail<T> for Option<T> {
        fn or_fail(self, what: &str) -> T {
            self.unwrap_or_else(|| fail(what))
        }
    }
}

pub mod pg;

pub mod saves {
    //! Timed runs of saves through any [`EventStore`]: one writer saving in turn, or several
    //! writers (one task each, each on its own actor) all at once.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use aether_core::{Event, EventStore};

    use crate::setup::OrFail;

    /// Saves `events` one at a time, each once the previous is acknowledged; the time taken.
    pub async fn in_turn<S: EventStore + ?Sized>(store: &S, events: &[Event]) -> Duration {
        let start = Instant::now();
        for e in events {
            store.save_event(e).await.or_fail("save");
        }
        start.elapsed()
    }

    /// One task per chain, each saving its chain in turn, all started at once; the time until
    /// the last is done.
    pub async fn chains<S: EventStore + ?Sized + 'static>(
        store: Arc<S>,
        chains: Vec<Vec<Event>>,
    ) -> Duration {
        let start = Instant::now();
        let tasks: Vec<_> = chains
            .into_iter()
            .map(|chain| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { in_turn(&*store, &chain).await })
            })
            .collect();
        for t in tasks {
            t.await.or_fail("writer task");
        }
        start.elapsed()
    }
}

pub mod echo {
    //! An actor that answers a command with the command itself (a read: no events), and the
    //! cluster of two nodes in one process that the send-path measurements run on
    //! (`benches/cluster_send.rs`, the `remote-send` probe).

    use std::sync::Arc;
    use std::time::Duration;

    use aether_actor::{Actor, DomainEvent};
    use aether_cluster::{Actors, ClusterConfig, ClusterNode};
    use aether_core::StorageKind;
    use aether_placement::ShardConfig;
    use aether_store::InMemoryEventStore;
    use serde::{Deserialize, Serialize};

    /// The actor records nothing.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Never {}

    impl DomainEvent for Never {
        fn event_type(&self) -> &'static str {
            match *self {}
        }
    }

    /// The actor never refuses; its error type says so.
    #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
    #[error("refused")]
    pub struct Refused;

    /// An actor that answers with the command it was sent: a read, no events.
    pub struct Echo;

    impl Actor for Echo {
        type State = ();
        type Command = String;
        type Event = Never;
        type Reply = String;
        type Error = Refused;
        const TYPE: &'static str = "echo";

        async fn decide(&self, _: &str, _: &(), _: &String) -> Result<Vec<Never>, Refused> {
            Ok(Vec::new())
        }

        fn apply(_: &mut (), event: &Never) {
            match *event {}
        }

        fn reply(_: &(), command: &String, _: &[Never]) -> String {
            command.clone()
        }
    }

    /// The nodes' configuration: in-memory storage, 64 shards, heartbeats every 200 ms.
    pub fn config(node: &str) -> ClusterConfig {
        ClusterConfig::default()
            .cluster_name("bench")
            .node_id(node)
            .heartbeat_interval(Duration::from_millis(200))
            .failure_timeout(Duration::from_secs(5))
            .shards(ShardConfig::default().shard_count(64))
            .storage(StorageKind::Memory)
    }

    /// Two nodes `a` and `b` hosting [`Echo`] on the server at `url`, each on a connection of
    /// its own, once each lists both; then an actor owned by `b` and one owned by `a`, both
    /// activated.
    ///
    /// # Errors
    /// A connection, a node or the membership that failed, as text.
    pub async fn two_nodes(url: &str) -> Result<(Vec<Arc<ClusterNode>>, String, String), String> {
        let store = Arc::new(InMemoryEventStore::new());
        let mut nodes = Vec::new();
        for id in ["a", "b"] {
            let client = async_nats::connect(url)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let actors = Actors::new(store.clone() as _).with(Echo);
            let node = ClusterNode::start(client, config(id), actors)
                .await
                .map_err(|e| format!("node {id}: {e}"))?;
            nodes.push(Arc::new(node));
        }
        for n in &nodes {
            n.wait_for_members(&["a", "b"], Duration::from_secs(30))
                .await
                .map_err(|e| format!("members: {e}"))?;
        }
        let owned_by = |node: &str| {
            (0..10_000)
                .map(|i| format!("echo-{i}"))
                .find(|a| nodes[0].owner_of(a).as_deref() == Some(node))
                .ok_or_else(|| format!("no actor owned by {node}"))
        };
        let (remote, local) = (owned_by("b")?, owned_by("a")?);
        for actor in [&remote, &local] {
            nodes[0]
                .send::<Echo>(actor, "warm".into())
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        Ok((nodes, remote, local))
    }

    /// The size of the request a send of `command` to `actor` makes from `node` (the
    /// routed `ActorRequest`'s JSON with the command id every send carries): the raw floor
    /// sends a payload this large.
    ///
    /// # Errors
    /// The request could not be encoded.
    pub fn request_size(node: &ClusterNode, actor: &str, command: &str) -> Result<usize, String> {
        let request = aether_cluster::routing::ActorRequest {
            actor_type: Echo::TYPE.into(),
            actor_id: actor.to_string(),
            shard: Some(node.shard_of(actor)),
            epoch: node.assignment().epoch,
            // As long as the id a send makes (a uuid's 32 hex digits).
            meta: aether_actor::CommandMeta::new().command_id("0".repeat(32)),
            command: serde_json::json!(command),
            refresh: false,
        };
        aether_cluster::routing::encode(&request)
            .map(|b| b.len())
            .map_err(|e| e.to_string())
    }

    /// A responder on a connection of its own (as the owner node has) that answers each
    /// request on `subject` with its payload: the raw floor of a remote send.
    ///
    /// # Errors
    /// The connection or subscription failed, as text.
    pub async fn raw_responder(url: &str, subject: &str) -> Result<(), String> {
        use futures::StreamExt;
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut sub = client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        client.flush().await.map_err(|e| format!("flush: {e}"))?;
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = client.publish(reply, msg.payload).await;
                }
            }
        });
        Ok(())
    }
}

pub mod bank {
    //! A bank account actor: deposits are events, a balance read writes nothing.

    use aether_actor::{Actor, DomainEvent};
    use serde::{Deserialize, Serialize};

    /// An account's state.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Account {
        /// The sum of the deposits.
        pub balance: i64,
    }

    /// What the actor is asked.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Command {
        /// Deposit an amount (one event).
        Deposit {
            /// The amount.
            amount: i64,
        },
        /// Read the balance (no event).
        Balance,
    }

    /// What the actor records.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Moved {
        /// An amount was deposited.
        Deposited {
            /// The amount.
            amount: i64,
        },
    }

    impl DomainEvent for Moved {
        fn event_type(&self) -> &'static str {
            "Deposited"
        }
    }

    /// Never returned: the actor refuses nothing.
    #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
    #[error("refused")]
    pub struct Refused;

    /// The actor.
    #[derive(Debug, Clone, Copy)]
    pub struct Bank;

    impl Actor for Bank {
        type State = Account;
        type Command = Command;
        type Event = Moved;
        type Reply = i64;
        type Error = Refused;
        const TYPE: &'static str = "bank";

        async fn decide(
            &self,
            _: &str,
            _: &Account,
            command: &Command,
        ) -> Result<Vec<Moved>, Refused> {
            Ok(match *command {
                Command::Deposit { amount } => vec![Moved::Deposited { amount }],
                Command::Balance => Vec::new(),
            })
        }

        fn apply(state: &mut Account, Moved::Deposited { amount }: &Moved) {
            state.balance += amount;
        }

        fn reply(state: &Account, _: &Command, _: &[Moved]) -> i64 {
            state.balance
        }
    }
}

#[allow(unsafe_code)]
pub mod alloc {
    //! The system allocator, counting the bytes currently allocated: unlike resident memory,
    //! the count does not depend on what the allocator keeps cached, so small differences
    //! show. A binary installs it with
    //! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    /// Bytes currently allocated through [`CountingAllocator`] (0 when it is not installed).
    pub fn live_bytes() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    /// See the module docs.
    #[derive(Debug)]
    pub struct CountingAllocator;

    // SAFETY: every call is forwarded to the system allocator unchanged; only a counter is
    // updated.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            }
            p
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_add(new_size, Ordering::Relaxed);
                LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            }
            p
        }
    }
}
