//! Slow dependencies: a store whose writes hang and a bucket whose writes take longer than a
//! failure timeout, and what the node still does on time.

use super::*;
use aether_core::ActorKey;

/// A store whose writes hang while `hang` is set, as a JetStream store does while its
/// server is gone and the client waits for an acknowledgement.
struct HangingWrites {
    inner: InMemoryEventStore,
    hang: std::sync::atomic::AtomicBool,
}

impl HangingWrites {
    async fn maybe_hang(&self) {
        if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl EventStore for HangingWrites {
    async fn save_event(&self, event: &aether_core::Event) -> aether_core::Result<()> {
        self.maybe_hang().await;
        self.inner.save_event(event).await
    }
    async fn save_events(
        &self,
        actor_id: &str,
        events: &[aether_core::Event],
    ) -> aether_core::Result<()> {
        self.maybe_hang().await;
        self.inner.save_events(actor_id, events).await
    }
    async fn events_of(
        &self,
        actor: ActorKey<'_>,
        from: u64,
    ) -> aether_core::Result<Vec<aether_core::Event>> {
        self.inner.events_of(actor, from).await
    }
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> aether_core::Result<u64> {
        self.inner.latest_version_of(actor).await
    }
}

#[async_trait::async_trait]
impl aether_core::SnapshotStore for HangingWrites {
    async fn save_snapshot(&self, snapshot: &aether_core::Snapshot) -> aether_core::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn latest_snapshot_of(
        &self,
        actor: ActorKey<'_>,
    ) -> aether_core::Result<Option<aether_core::Snapshot>> {
        self.inner.latest_snapshot_of(actor).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_on_the_senders_own_node_ends_within_the_send_timeout() {
    let net = LocalNetwork::new();
    let store = Arc::new(HangingWrites {
        inner: InMemoryEventStore::new(),
        hang: std::sync::atomic::AtomicBool::new(false),
    });
    let send_timeout = Duration::from_secs(3);
    let actors = Actors::new(Arc::clone(&store) as _).with(Bank);
    let node = ClusterNode::start_local(&net, config("solo").send_timeout(send_timeout), actors)
        .await
        .expect("node starts");
    node.wait_for_members(&["solo"], WAIT)
        .await
        .expect("cluster forms");
    assert_eq!(
        node.send::<Bank>("local", Cmd::Deposit(1)).await.unwrap(),
        1
    );

    store.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let outcome = node.send::<Bank>("local", Cmd::Deposit(2)).await;
    let took = started.elapsed();
    match outcome {
        Err(CommandError::Infrastructure(aether_core::Error::Unavailable { .. })) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // On paused time the deadline is exact: no margin beyond the send timeout.
    assert_eq!(took, send_timeout, "the send took {took:?}");
    node.kill().await;
}

/// A network whose bucket writes (lease and table) take far longer than a failure timeout
/// while `slow` is set, as a key-value bucket whose stream lost its leader does until the
/// client's request times out. It counts the lease operations.
#[derive(Debug)]
struct SlowWrites {
    net: LocalNetwork,
    slow: AtomicBool,
    lease_reads: AtomicUsize,
    lease_writes: AtomicUsize,
}

impl SlowWrites {
    async fn maybe_stall(&self) {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(FAILURE * 100).await;
        }
    }
}

#[async_trait::async_trait]
impl Transport for SlowWrites {
    async fn publish(&self, message: MemberMessage) -> aether_core::Result<()> {
        self.net.publish(message).await
    }
    async fn members(&self) -> aether_core::Result<BoxStream<'static, MemberMessage>> {
        self.net.members().await
    }
    async fn read_lease(&self) -> aether_core::Result<Versioned<LeaderLease>> {
        self.lease_reads.fetch_add(1, Ordering::SeqCst);
        self.net.read_lease().await
    }
    async fn write_lease(&self, lease: &LeaderLease, expected: u64) -> aether_core::Result<Cas> {
        self.lease_writes.fetch_add(1, Ordering::SeqCst);
        self.maybe_stall().await;
        self.net.write_lease(lease, expected).await
    }
    async fn release_lease(&self, revision: u64) -> aether_core::Result<()> {
        self.net.release_lease(revision).await
    }
    async fn read_table(&self) -> aether_core::Result<Versioned<AssignmentTable>> {
        self.net.read_table().await
    }
    async fn write_table(
        &self,
        table: &AssignmentTable,
        expected: u64,
    ) -> aether_core::Result<Cas> {
        self.maybe_stall().await;
        self.net.write_table(table, expected).await
    }
    async fn watch_table(
        &self,
    ) -> aether_core::Result<BoxStream<'static, aether_core::Result<Versioned<AssignmentTable>>>>
    {
        self.net.watch_table().await
    }
    async fn request(
        &self,
        node: &str,
        payload: Bytes,
        traceparent: Option<String>,
        timeout: Duration,
    ) -> Result<Bytes, RequestFailure> {
        self.net.request(node, payload, traceparent, timeout).await
    }
    async fn serve(&self, node: &str) -> aether_core::Result<BoxStream<'static, Incoming>> {
        self.net.serve(node).await
    }
    async fn settle(&self) -> aether_core::Result<()> {
        self.net.settle().await
    }
}

/// The node's loop alone steps its core, and carries the bucket's work out beside its other
/// inputs instead of waiting for it: while the leader's renewal hangs for longer than a
/// failure timeout, its heartbeats still go out on every interval, its own heartbeats keep
/// coming back (so it keeps serving), and the core asks for no second lease step on top of
/// the hung one.
#[tokio::test(start_paused = true)]
async fn a_hung_bucket_write_delays_no_heartbeat_and_is_not_asked_for_again() {
    let net = LocalNetwork::new();
    let transport = Arc::new(SlowWrites {
        net: net.clone(),
        slow: AtomicBool::new(false),
        lease_reads: AtomicUsize::new(0),
        lease_writes: AtomicUsize::new(0),
    });
    let store = Arc::new(InMemoryEventStore::new());
    let hosts = Actors::new(store as _).with(Bank).into_hosts().unwrap();
    let node = ClusterNode::start_on(Arc::clone(&transport) as _, config("a"), hosts)
        .await
        .expect("node starts");
    node.wait_for_members(&["a"], WAIT).await.unwrap();
    eventually("a leads", || node.is_leader()).await;
    assert_eq!(node.send::<Bank>("x", Cmd::Deposit(1)).await.unwrap(), 1);

    let mut heard = net.members().await.unwrap();
    transport.slow.store(true, Ordering::SeqCst);
    let (reads, writes) = (
        transport.lease_reads.load(Ordering::SeqCst),
        transport.lease_writes.load(Ordering::SeqCst),
    );
    let window = FAILURE * 3;
    let end = Instant::now() + window;
    let mut beats = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(end, heard.next()).await {
        if matches!(&message, MemberMessage::Heartbeat(hb) if hb.node_id == "a") {
            beats.push(Instant::now());
        }
    }
    let expected = (window.as_millis() / HEARTBEAT.as_millis()) as usize;
    assert!(beats.len() >= expected - 1, "{} heartbeats", beats.len());
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap <= HEARTBEAT + Duration::from_millis(1),
            "a gap of {gap:?}"
        );
    }
    // One renewal went out and hangs; the ticks since asked for nothing more.
    assert_eq!(transport.lease_writes.load(Ordering::SeqCst) - writes, 1);
    assert_eq!(transport.lease_reads.load(Ordering::SeqCst) - reads, 1);
    // Its heartbeats still come back to it: it serves.
    assert_eq!(node.send::<Bank>("x", Cmd::Deposit(1)).await.unwrap(), 2);
    node.kill().await;
}
