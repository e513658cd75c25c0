//! Timers and effects against a real nats-server: cluster nodes in this process over one
//! in-memory event store, each node with its reactor on a connection of its own.
//!
//! - 1 000 timers over three nodes, one node killed mid-run (its reactor and dispatcher
//!   aborted with it): every timer's command applied exactly once, counted from the events.
//! - A replaced timer fires once, at its new time; a cancelled one never fires.
//! - Timers set before the server is killed and restarted fire after it; the ones that fell
//!   due while it was down fire on recovery.
//! - Effects reach an actor and a JetStream stream after the events that caused them, once.
//! - Before 2.12 (no message schedules): a decision that sets a timer is refused and writes
//!   nothing; effects still work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{Actor, CommandError, DomainEvent, Effect, RuntimeConfig, Timer};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{ActorKey, EventStore, ReactionError, StorageKind};

use aether_placement::ShardConfig;
use aether_projection::{InMemoryProjectionStore, WorkerConfig};
use aether_reactions::{Reactor, ReactorConfig, Targets, TimersConfig};
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

// ---- the model: holds that expire, and payments that effects reach ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hold {
    expires: Option<DateTime<Utc>>,
    expired: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum HoldCommand {
    Place { expires: DateTime<Utc> },
    Pay,
    Expire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum HoldEvent {
    Placed { expires: DateTime<Utc> },
    Paid,
    Expired,
}

impl DomainEvent for HoldEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "Placed",
            Self::Paid => "Paid",
            Self::Expired => "Expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("not held")]
struct NotHeld;

struct Holds;

impl Actor for Holds {
    type State = Hold;
    type Command = HoldCommand;
    type Event = HoldEvent;
    type Reply = u32;
    type Error = NotHeld;
    const TYPE: &'static str = "hold";

    async fn decide(&self, _: &str, s: &Hold, c: &HoldCommand) -> Result<Vec<HoldEvent>, NotHeld> {
        Ok(match c {
            HoldCommand::Place { expires } => vec![HoldEvent::Placed { expires: *expires }],
            // Paying needs no hold (so effects work without timers too).
            HoldCommand::Pay => vec![HoldEvent::Paid],
            HoldCommand::Expire if s.expires.is_none() => return Err(NotHeld),
            HoldCommand::Expire => vec![HoldEvent::Expired],
        })
    }

    fn apply(s: &mut Hold, e: &HoldEvent) {
        match e {
            HoldEvent::Placed { expires } => s.expires = Some(*expires),
            HoldEvent::Paid => s.expires = None,
            HoldEvent::Expired => {
                s.expires = None;
                s.expired += 1;
            }
        }
    }

    fn reply(s: &Hold, _: &HoldCommand, _: &[HoldEvent]) -> u32 {
        s.expired
    }

    fn timers(_: &str, s: &Hold) -> Vec<Timer<HoldCommand>> {
        s.expires
            .map(|at| Timer::at("expire", at, HoldCommand::Expire))
            .into_iter()
            .collect()
    }

    /// A paid hold charges its payment actor and announces itself on a stream.
    fn effects(id: &str, e: &HoldEvent) -> Vec<Effect> {
        match e {
            HoldEvent::Paid => vec![
                Effect::send::<Payments>(
                    format!("pay-{id}"),
                    &PaymentCommand::Charge {
                        hold: id.to_string(),
                    },
                ),
                Effect::publish(format!("shop.paid.{id}"), &id),
            ],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Payment {
    charged: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum PaymentCommand {
    Charge { hold: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum PaymentEvent {
    /// `hold_version`: the hold's version when the charge was decided, read from the store.
    Charged { hold: String, hold_version: u64 },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> &'static str {
        "Charged"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

/// Records, with each charge, how far the causing hold's history was stored when the charge
/// was decided: an effect delivered before its event would see it missing.
struct Payments(Arc<InMemoryEventStore>);

impl Actor for Payments {
    type State = Payment;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Reply = u32;
    type Error = Never;
    const TYPE: &'static str = "payment";

    async fn decide(
        &self,
        _: &str,
        _: &Payment,
        c: &PaymentCommand,
    ) -> Result<Vec<PaymentEvent>, Never> {
        let PaymentCommand::Charge { hold } = c;
        let hold_version = self
            .0
            .latest_version_of(ActorKey::new("hold", hold))
            .await
            .unwrap_or(0);
        Ok(vec![PaymentEvent::Charged {
            hold: hold.clone(),
            hold_version,
        }])
    }

    fn apply(s: &mut Payment, _: &PaymentEvent) {
        s.charged += 1;
    }

    fn reply(s: &Payment, _: &PaymentCommand, _: &[PaymentEvent]) -> u32 {
        s.charged
    }
}

// ---- a node with its reactor ----

struct Node {
    node: Arc<ClusterNode>,
    reactor: JoinHandle<aether_core::Result<()>>,
    shutdown: CancellationToken,
}

impl Node {
    /// Stops the reactor where it stands (its dispatcher takes no more timers, its partitions
    /// stop), then kills the node without a goodbye: its shards move after the failure
    /// timeout. The SIGKILL of a whole process is `examples/tests/timers_crash.rs`.
    async fn kill(self) {
        self.shutdown.cancel();
        let _ = self.reactor.await;
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.kill().await,
            Err(_) => panic!("the node is still shared"),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.reactor.await;
        if let Ok(node) = Arc::try_unwrap(self.node) {
            let _ = node.shutdown().await;
        }
    }
}

fn cluster_config(cluster: &str, node: &str) -> ClusterConfig {
    // File storage: the cluster's bucket outlives a restart of the server.
    ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(3))
        .send_timeout(Duration::from_secs(10))
        .shards(ShardConfig::default().shard_count(64))
        .storage(StorageKind::File)
}

fn timers_config() -> TimersConfig {
    TimersConfig {
        // A dispatcher killed mid-delivery leaves its timers to the others after this.
        ack_wait: Duration::from_secs(3),
        ..TimersConfig::default()
    }
}

fn reactor_config(worker: &str) -> ReactorConfig {
    let mut c = ReactorConfig::new(worker);
    c.worker_config = WorkerConfig {
        partitions: 8,
        heartbeat: Duration::from_millis(200),
        lease_timeout: Duration::from_secs(2),
    };
    c
}

async fn start_node(
    server: &NatsServer,
    cluster: &str,
    id: &str,
    store: &Arc<InMemoryEventStore>,
    checkpoints: &Arc<InMemoryProjectionStore>,
) -> Node {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let actors = Actors::new(Arc::clone(store) as _)
        .with_config(Holds, RuntimeConfig::default())
        .with(Payments(Arc::clone(store)));
    let node = Arc::new(
        ClusterNode::start(client.clone(), cluster_config(cluster, id), actors)
            .await
            .expect("node starts"),
    );
    let js = async_nats::jetstream::new(client);
    let targets = Targets::new()
        .cluster::<Holds>(Arc::clone(&node))
        .cluster::<Payments>(Arc::clone(&node));
    let reactor = Arc::new(
        Reactor::new(targets)
            .with_timers_on(js.clone(), timers_config())
            .await
            .expect("timers open or are unsupported")
            .with_publisher(js),
    );
    // Commands may arrive before the reactor's loop runs.
    reactor.attach();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(Arc::clone(&reactor).run(
        Arc::clone(store) as _,
        Arc::clone(checkpoints) as _,
        reactor_config(id),
        shutdown.clone(),
    ));
    Node {
        node,
        reactor: handle,
        shutdown,
    }
}

async fn cluster_of(
    server: &NatsServer,
    cluster: &str,
    ids: &[&str],
) -> (Arc<InMemoryEventStore>, Vec<Node>) {
    let store = Arc::new(InMemoryEventStore::new());
    let checkpoints = Arc::new(InMemoryProjectionStore::new());
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start_node(server, cluster, id, &store, &checkpoints).await);
    }
    for n in &nodes {
        n.node
            .wait_for_members(ids, WAIT)
            .await
            .expect("the cluster forms");
    }
    (store, nodes)
}

fn timers_supported(server: &NatsServer) -> bool {
    server.version().at_least(2, 12)
}

/// The number of each event type in `actor`'s history.
async fn counts(store: &InMemoryEventStore, actor_type: &str, id: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in store
        .events_of(ActorKey::new(actor_type, id), 1)
        .await
        .expect("events")
    {
        *out.entry(e.event_type).or_insert(0) += 1;
    }
    out
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn at(from_now: Duration) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::from_std(from_now).expect("a duration");
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a time")
}

/// Before 2.12 a decision that sets a timer is refused and writes nothing.
async fn assert_timers_unsupported(node: &ClusterNode, store: &InMemoryEventStore) {
    let refused = node
        .send::<Holds>(
            "h-old",
            HoldCommand::Place {
                expires: at(Duration::from_secs(1)),
            },
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Reaction(ReactionError::TimersUnavailable { ref reason })) if reason.contains("2.12")
        ),
        "{refused:?}"
    );
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("hold", "h-old"))
            .await
            .expect("read"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_over_three_nodes_fire_once_with_a_node_killed_mid_run() {
    let server = NatsServer::start().expect("nats-server");
    let (store, mut nodes) = cluster_of(&server, "thousand", &["a", "b", "c"]).await;
    if !timers_supported(&server) {
        assert_timers_unsupported(&nodes[0].node, &store).await;
        for n in nodes {
            n.stop().await;
        }
        return;
    }
    const TIMERS: usize = 1_000;
    // Due 2 to 5 s from now, spread, so that some fall due before the kill and some after.
    let started = Instant::now();
    let client = Arc::clone(&nodes[1].node);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..TIMERS {
        let node = Arc::clone(&client);
        let due = at(Duration::from_millis(
            2_000 + (i as u64 * 3_000) / TIMERS as u64,
        ));
        sends.spawn(async move {
            node.send::<Holds>(&format!("h-{i}"), HoldCommand::Place { expires: due })
                .await
                .map(|_| ())
        });
        if sends.len() >= 32 {
            sends
                .join_next()
                .await
                .expect("a send")
                .expect("joins")
                .expect("placed");
        }
    }
    while let Some(r) = sends.join_next().await {
        r.expect("joins").expect("placed");
    }
    eprintln!("{TIMERS} timers set in {:?}", started.elapsed());
    // Kill a node that owns actors, while timers are falling due.
    tokio::time::sleep(Duration::from_millis(2_500).saturating_sub(started.elapsed())).await;
    let victim = nodes.remove(0);
    let victim_id = victim.node.node_id().to_string();
    let owned_by_victim = (0..TIMERS)
        .filter(|i| client.owner_of(&format!("h-{i}")).as_deref() == Some(victim_id.as_str()))
        .count();
    assert!(owned_by_victim > 0, "the victim owns some of the actors");
    victim.kill().await;

    eventually("every timer to fire", || {
        let store = Arc::clone(&store);
        async move {
            for i in 0..TIMERS {
                if store
                    .latest_version_of(ActorKey::new("hold", &format!("h-{i}")))
                    .await
                    .unwrap_or(0)
                    < 2
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    eprintln!(
        "all {TIMERS} fired {:?} after they were set",
        started.elapsed()
    );
    // Exactly once each: one placement, one expiry, nothing after.
    for i in 0..TIMERS {
        let c = counts(&store, "hold", &format!("h-{i}")).await;
        assert_eq!(c.get("Expired"), Some(&1), "h-{i}: {c:?}");
        assert_eq!(c.get("Placed"), Some(&1), "h-{i}: {c:?}");
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_timer_fires_once_at_its_new_time_and_a_cancelled_one_never() {
    let server = NatsServer::start().expect("nats-server");
    let (store, nodes) = cluster_of(&server, "replace", &["a", "b"]).await;
    let node = &nodes[0].node;
    if !timers_supported(&server) {
        assert_timers_unsupported(node, &store).await;
        for n in nodes {
            n.stop().await;
        }
        return;
    }
    let soon = at(Duration::from_millis(1_500));
    let later = at(Duration::from_millis(3_500));
    // Replaced: set for soon, then for later.
    node.send::<Holds>("moved", HoldCommand::Place { expires: soon })
        .await
        .expect("set");
    node.send::<Holds>("moved", HoldCommand::Place { expires: later })
        .await
        .expect("replaced");
    // Cancelled: set for soon, then paid.
    node.send::<Holds>("paid", HoldCommand::Place { expires: soon })
        .await
        .expect("set");
    node.send::<Holds>("paid", HoldCommand::Pay)
        .await
        .expect("paid");
    // A witness due after the cancelled timer: once it fired, the cancelled one would have.
    node.send::<Holds>(
        "witness",
        HoldCommand::Place {
            expires: at(Duration::from_millis(2_000)),
        },
    )
    .await
    .expect("set");

    eventually("the replaced timer to fire", || {
        let store = Arc::clone(&store);
        async move {
            counts(&store, "hold", "moved")
                .await
                .contains_key("Expired")
        }
    })
    .await;
    eventually("the witness to fire", || {
        let store = Arc::clone(&store);
        async move {
            counts(&store, "hold", "witness")
                .await
                .contains_key("Expired")
        }
    })
    .await;
    let moved = store
        .events_of(ActorKey::new("hold", "moved"), 1)
        .await
        .expect("events");
    let expired: Vec<_> = moved.iter().filter(|e| e.event_type == "Expired").collect();
    assert_eq!(expired.len(), 1, "{moved:?}");
    assert!(
        expired[0].timestamp >= later,
        "fired at {} for a timer moved to {later}",
        expired[0].timestamp
    );
    assert!(!counts(&store, "hold", "paid").await.contains_key("Expired"));
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_set_before_a_server_restart_fire_after_it_and_late_ones_on_recovery() {
    let mut server = NatsServer::start().expect("nats-server");
    let (store, nodes) = cluster_of(&server, "restart", &["a"]).await;
    if !timers_supported(&server) {
        assert_timers_unsupported(&nodes[0].node, &store).await;
        for n in nodes {
            n.stop().await;
        }
        return;
    }
    let node = Arc::clone(&nodes[0].node);
    const N: usize = 20;
    for i in 0..N {
        // Half fall due while the server is down, half after it is back.
        let due = if i % 2 == 0 {
            at(Duration::from_millis(1_500))
        } else {
            at(Duration::from_secs(8))
        };
        node.send::<Holds>(&format!("r-{i}"), HoldCommand::Place { expires: due })
            .await
            .expect("set");
    }
    // The schedules are set once the reactor has handled the placements.
    eventually("the reactor to set every schedule", || {
        let server = &server;
        async move {
            let Ok(info) = async_nats::connect(server.url()).await else {
                return false;
            };
            let js = async_nats::jetstream::new(info);
            match js.get_stream("AETHER_TIMERS").await {
                Ok(mut s) => s
                    .info()
                    .await
                    .map(|i| i.state.messages as usize >= N)
                    .unwrap_or(false),
                Err(_) => false,
            }
        }
    })
    .await;
    server.kill().expect("SIGKILL the server");
    // Down past the first half's due time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again().expect("the server restarts");
    eventually("every timer to fire after the restart", || {
        let store = Arc::clone(&store);
        async move {
            for i in 0..N {
                if !counts(&store, "hold", &format!("r-{i}"))
                    .await
                    .contains_key("Expired")
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for i in 0..N {
        assert_eq!(
            counts(&store, "hold", &format!("r-{i}"))
                .await
                .get("Expired"),
            Some(&1),
            "r-{i}"
        );
    }
    drop(node);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_reach_an_actor_and_a_stream_after_their_events_once() {
    let server = NatsServer::start().expect("nats-server");
    let (store, nodes) = cluster_of(&server, "effects", &["a", "b"]).await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SHOP".into(),
        subjects: vec!["shop.>".into()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("a stream for the published effects");
    let node = &nodes[0].node;
    if !timers_supported(&server) {
        assert_timers_unsupported(node, &store).await;
    }
    // Effects need no timers: this runs on every server.
    const N: usize = 20;
    for i in 0..N {
        node.send::<Holds>(&format!("e-{i}"), HoldCommand::Pay)
            .await
            .expect("paid");
    }
    eventually("every payment to be charged", || {
        let store = Arc::clone(&store);
        async move {
            for i in 0..N {
                if store
                    .latest_version_of(ActorKey::new("payment", &format!("pay-e-{i}")))
                    .await
                    .unwrap_or(0)
                    == 0
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for i in 0..N {
        let charges = store
            .events_of(ActorKey::new("payment", &format!("pay-e-{i}")), 1)
            .await
            .expect("events");
        assert_eq!(charges.len(), 1, "charged once");
        // The charge saw the hold's `Paid` event (version 1) already stored.
        assert_eq!(
            charges[0].data.get("hold_version"),
            Some(&serde_json::json!(1)),
            "{:?}",
            charges[0]
        );
        assert!(charges[0]
            .metadata_value(aether_core::METADATA_MESSAGE_ID)
            .is_some_and(|id| id.starts_with("effect:")));
    }
    let mut stream = js.get_stream("SHOP").await.expect("stream");
    eventually("every publish", || {
        let js = js.clone();
        async move {
            let Ok(mut s) = js.get_stream("SHOP").await else {
                return false;
            };
            s.info()
                .await
                .map(|i| i.state.messages as usize >= N)
                .unwrap_or(false)
        }
    })
    .await;
    assert_eq!(
        stream.info().await.expect("info").state.messages as usize,
        N
    );
    for n in nodes {
        n.stop().await;
    }
}
