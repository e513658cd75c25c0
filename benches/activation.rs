//! Activation: rebuilding an actor the way `ActorHost` activates it (its latest snapshot, then
//! its events from 32 versions before the snapshot, whose command ids it keeps, to the last,
//! decoded and applied) on the JetStream store, next to raw reads of the same messages.
//!
//! The actor has 1 100 events, saved one per message as commands save them, and a snapshot at
//! version 1 000. Activation reads the snapshot, then replays versions 969 to 1 100: 132
//! messages, through one consumer. The store must first find where that replay starts and
//! ends (a direct get of the last event, then a search of direct gets over stream sequences);
//! that search is the store's own cost, so it is on the store's side only.
//!
//! Two raw references, each a direct get of the snapshot and one pull consumer from a start
//! known in advance, deleted after use off the caller's path as the store deletes its own:
//! - `raw_same_reads`: the 132 messages the store reads (the row with the verdict);
//! - `raw_after_snapshot_only`: the 100 messages after the snapshot, the floor of a design not
//!   built, where the snapshot keeps the recent command ids and records where the replay
//!   starts (reported only).
//!
//! Both sides leave their consumer deletions running in the background, so a deletion
//! overlaps the next activation on both alike. Each sample starts once the stream has no
//! consumer left, so that one function's deletions do not fall into the next one's time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{Actor, ActorHost, DomainEvent, RuntimeConfig};
use aether_core::{ActorKey, EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::Stream;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const SNAPSHOT_AT: u64 = 1_000;
const AFTER: u64 = 100;
/// How many events before the snapshot activation reads for their command ids (the host's
/// `COMMAND_ID_LOOKBACK`, private to aether-actor; the assertions below check the effect).
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

fn activation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let actor = "tally-1";
    let (store, stream) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let store = Arc::new(
            JetStreamEventStore::new(
                client.clone(),
                JetStreamConfig::default().namespace("activation"),
            )
            .await
            .expect("store"),
        );
        let codec = aether_actor::EventCodec::<Counted>::default();
        let stored = |v: u64| {
            codec
                .encode(&Counted::Added { n: 1 })
                .expect("encode")
                .into_event_of(ActorKey::new(Tally::TYPE, actor), v)
        };
        // One message per event, as commands save them: the replay reads the 32 events before
        // the snapshot as 32 messages, like an actor's real history.
        for v in 1..=SNAPSHOT_AT {
            store.save_event(&stored(v)).await.expect("save");
        }
        let mut state = serde_json::Map::new();
        state.insert("total".into(), SNAPSHOT_AT.into());
        store
            .save_snapshot(
                &Snapshot::new(actor, SNAPSHOT_AT, state)
                    .with_actor_type(Tally::TYPE)
                    .with_schema_version(Tally::STATE_VERSION),
            )
            .await
            .expect("snapshot");
        for v in SNAPSHOT_AT + 1..=SNAPSHOT_AT + AFTER {
            store.save_event(&stored(v)).await.expect("save");
        }
        let stream = async_nats::jetstream::new(client)
            .get_stream(store.stream_name())
            .await
            .expect("stream");
        (store, stream)
    });
    // The stream holds this actor only: versions 1 to 1 000 at sequences 1 to 1 000, the
    // snapshot at 1 001, versions 1 001 to 1 100 at 1 002 to 1 101. The raw sides know their
    // starts from that layout; the store finds its own.
    let state = rt.block_on(stream.get_info()).expect("stream info").state;
    assert_eq!(
        (state.messages, state.last_sequence),
        (SNAPSHOT_AT + 1 + AFTER, SNAPSHOT_AT + 1 + AFTER)
    );
    let lookback_start = SNAPSHOT_AT + 1 - LOOKBACK;
    let after_snapshot_start = SNAPSHOT_AT + 2;
    let host = ActorHost::new(Tally, store.clone(), RuntimeConfig::default());
    // The rebuild uses the snapshot: state and version as the full history says.
    let (state, version) = rt.block_on(host.load_state(actor)).expect("load");
    assert_eq!(
        (state.total, version),
        ((SNAPSHOT_AT + AFTER) as i64, SNAPSHOT_AT + AFTER)
    );
    assert_eq!(host.stats().snapshots_ignored, 0);
    // The replay's range, as the store reads it: from the lookback's first version to the last.
    let replayed = rt
        .block_on(store.events_of(ActorKey::new(Tally::TYPE, actor), lookback_start))
        .expect("replay");
    assert_eq!(replayed.len() as u64, LOOKBACK + AFTER);

    let events_subject = store.event_subject(ActorKey::new(Tally::TYPE, actor));
    let snapshot_subject = store.snapshot_subject(ActorKey::new(Tally::TYPE, actor));
    let mut g = c.benchmark_group("activation_snapshot_100");
    g.bench_function("aether", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            timed(&stream, iters, || async {
                black_box(host.load_state(actor).await.expect("load"));
            })
        })
    });
    for (id, start, count) in [
        ("raw_same_reads", lookback_start, LOOKBACK + AFTER),
        ("raw_after_snapshot_only", after_snapshot_start, AFTER),
    ] {
        g.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                timed(&stream, iters, || {
                    raw_reads(&stream, &snapshot_subject, &events_subject, start, count)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, activation);
criterion_main!(benches);
