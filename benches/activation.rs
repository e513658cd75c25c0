//! Activation: rebuilding an actor the way `ActorHost` activates it (its latest snapshot, then
//! its events after the snapshot, decoded and applied) on the JetStream store, next to raw
//! reads of the same messages.
//!
//! The actor has 1 100 events, saved one per message as commands save them (each with its
//! command id), and a snapshot at version 1 000 that kept the ids of the 32 latest commands.
//! Activation reads the snapshot and the actor's last message at once, then versions 1 001 to
//! 1 100 through one consumer from right after the snapshot's message (checked: the first
//! event read must be version 1 001). The raw reference does the reads a rebuild cannot do
//! without: a direct get of the snapshot, then one pull consumer over the 100 messages from a
//! start known in advance.
//!
//! A second actor, in a stream of its own, has the same history and a snapshot of an earlier
//! release, which kept no command ids: its activation also reads the 32 events before the
//! snapshot for their ids, and must search the stream for where they start. Its reference
//! reads the same 132 messages from a start known in advance (reported only).
//!
//! Both sides leave their consumer deletions running in the background, so a deletion
//! overlaps the next activation on both alike. Each sample starts once the stream has no
//! consumer left, so that one function's deletions do not fall into the next one's time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{Actor, ActorHost, DomainEvent, RuntimeConfig};
use aether_core::{ActorKey, EventStore, Snapshot, SnapshotStore, METADATA_MESSAGE_ID};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::Stream;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const SNAPSHOT_AT: u64 = 1_000;
const AFTER: u64 = 100;
/// How many command ids the snapshot keeps, and how many events before a snapshot without
/// them activation reads for their ids (the host's `COMMAND_ID_LOOKBACK`, private to
/// aether-actor; the assertions below check the effect).
const LOOKBACK: u64 = 32;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Counted {
    Added { n: i64 },
}

impl DomainEvent for Counted {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

struct Tally;

impl Actor for Tally {
    type State = Counter;
    type Command = ();
    type Event = Counted;
    type Reply = i64;
    type Error = Never;
    const TYPE: &'static str = "tally";

    async fn decide(&self, _: &str, _: &Counter, _: &()) -> Result<Vec<Counted>, Never> {
        Ok(Vec::new())
    }

    fn apply(state: &mut Counter, event: &Counted) {
        let Counted::Added { n } = event;
        state.total += n;
    }

    fn reply(state: &Counter, _: &(), _: &[Counted]) -> i64 {
        state.total
    }
}

/// Reads an actor's snapshot with a direct get, then `count` event messages from stream
/// sequence `start` through one pull consumer, as raw calls: no search, no decoding. The
/// consumer is configured as the store's replay consumer is, and deleted after use off the
/// caller's path, as the store deletes its own.
async fn raw_reads(
    stream: &Stream,
    snapshot_subject: &str,
    events_subject: &str,
    start: u64,
    count: u64,
) {
    let snap = stream
        .direct_get_last_for_subject(snapshot_subject)
        .await
        .unwrap_or_else(|e| panic!("reading {snapshot_subject}: {e}"));
    black_box(snap.payload.len());
    let c = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: events_subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let name = c.cached_info().name.clone();
    let mut msgs = c
        .fetch()
        .max_messages(count as usize)
        .messages()
        .await
        .expect("messages");
    for _ in 0..count {
        let m = msgs.next().await.expect("message").expect("ok");
        black_box(m.payload.len());
    }
    let stream = stream.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
}

/// Waits, untimed, until the deletions of earlier consumers have gone through (or the server
/// has dropped them as inactive), so that a sample does not pay for another's.
async fn settle(stream: &Stream) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        match stream.get_info().await {
            Ok(info) if info.state.consumer_count == 0 => return,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Times `iters` runs of `once`, starting with no consumer left on `stream`.
async fn timed<F, Fut>(stream: &Stream, iters: u64, mut once: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    settle(stream).await;
    let start = Instant::now();
    for _ in 0..iters {
        once().await;
    }
    start.elapsed()
}

/// Stores an actor's history (1 100 events, one message each, each with its command id) and
/// a snapshot at version 1 000, in a stream of its own; `with_ids`: the snapshot keeps the
/// latest command ids (this release), else not (an earlier one).
async fn history(
    client: &async_nats::Client,
    namespace: &str,
    actor: &str,
    with_ids: bool,
) -> (Arc<JetStreamEventStore>, Stream) {
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default().namespace(namespace),
        )
        .await
        .expect("store"),
    );
    let codec = aether_actor::EventCodec::<Counted>::default();
    let command = |v: u64| format!("command-{v}");
    let stored = |v: u64| {
        codec
            .encode(&Counted::Added { n: 1 })
            .expect("encode")
            .into_event_of(ActorKey::new(Tally::TYPE, actor), v)
            .with_metadata(METADATA_MESSAGE_ID, command(v))
    };
    for v in 1..=SNAPSHOT_AT {
        store.save_event(&stored(v)).await.expect("save");
    }
    let mut state = serde_json::Map::new();
    state.insert("total".into(), SNAPSHOT_AT.into());
    let mut snapshot = Snapshot::new(actor, SNAPSHOT_AT, state)
        .with_actor_type(Tally::TYPE)
        .with_schema_version(Tally::STATE_VERSION);
    if with_ids {
        snapshot =
            snapshot.with_command_ids((SNAPSHOT_AT + 1 - LOOKBACK..=SNAPSHOT_AT).map(command));
    }
    store.save_snapshot(&snapshot).await.expect("snapshot");
    for v in SNAPSHOT_AT + 1..=SNAPSHOT_AT + AFTER {
        store.save_event(&stored(v)).await.expect("save");
    }
    let stream = async_nats::jetstream::new(client.clone())
        .get_stream(store.stream_name())
        .await
        .expect("stream");
    // The stream holds this actor only: versions 1 to 1 000 at sequences 1 to 1 000, the
    // snapshot at 1 001, versions 1 001 to 1 100 at 1 002 to 1 101. The raw sides know their
    // starts from that layout; the store finds its own.
    let info = stream.get_info().await.expect("stream info").state;
    assert_eq!(
        (info.messages, info.last_sequence),
        (SNAPSHOT_AT + 1 + AFTER, SNAPSHOT_AT + 1 + AFTER)
    );
    (store, stream)
}

fn activation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let actor = "tally-1";
    let (store, stream, old_store, old_stream) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (store, stream) = history(&client, "activation", actor, true).await;
        let (old_store, old_stream) = history(&client, "activation-earlier", actor, false).await;
        (store, stream, old_store, old_stream)
    });
    let lookback_start = SNAPSHOT_AT + 1 - LOOKBACK;
    let after_snapshot_start = SNAPSHOT_AT + 2;
    let host = ActorHost::new(Tally, store.clone(), RuntimeConfig::default());
    let old_host = ActorHost::new(Tally, old_store.clone(), RuntimeConfig::default());
    // Both rebuilds use their snapshot: state and version as the full history says.
    for h in [&host, &old_host] {
        let (state, version) = rt.block_on(h.load_state(actor)).expect("load");
        assert_eq!(
            (state.total, version),
            ((SNAPSHOT_AT + AFTER) as i64, SNAPSHOT_AT + AFTER)
        );
        assert_eq!(h.stats().snapshots_ignored, 0);
    }
    // The reads the rebuild makes: with the ids kept, the events after the snapshot only.
    let key = ActorKey::new(Tally::TYPE, actor);
    let read = rt
        .block_on(store.snapshot_and_events_of(key, &|s| s.map_or(1, |s| s.version + 1)))
        .expect("read");
    assert_eq!(read.events.len() as u64, AFTER);
    let replayed = rt
        .block_on(old_store.events_of(key, lookback_start))
        .expect("replay");
    assert_eq!(replayed.len() as u64, LOOKBACK + AFTER);

    let mut g = c.benchmark_group("activation_snapshot_100");
    for (id, h, st, raw, start, count) in [
        (
            "aether",
            &host,
            &store,
            "raw_after_snapshot",
            after_snapshot_start,
            AFTER,
        ),
        (
            "aether_snapshot_without_ids",
            &old_host,
            &old_store,
            "raw_same_reads_without_ids",
            lookback_start,
            LOOKBACK + AFTER,
        ),
    ] {
        let s = if id == "aether" { &stream } else { &old_stream };
        g.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                timed(s, iters, || async {
                    black_box(h.load_state(actor).await.expect("load"));
                })
            })
        });
        let events_subject = st.event_subject(key);
        let snapshot_subject = st.snapshot_subject(key);
        g.bench_function(raw, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                timed(s, iters, || {
                    raw_reads(s, &snapshot_subject, &events_subject, start, count)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, activation);
criterion_main!(benches);
