//! Activation: rebuilding an actor the way `ActorHost` activates it (its latest snapshot, then
//! the 100 events after it, decoded and applied) on the JetStream store, next to the raw reads
//! of the same messages (a direct get of the snapshot message, then an ordered consumer over
//! the 100 event messages from the sequence after it, deleted after use): its floor.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aether_actor::{Actor, ActorHost, DomainEvent, RuntimeConfig};
use aether_core::{EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const SNAPSHOT_AT: u64 = 1_000;
const AFTER: u64 = 100;

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

fn activation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    let actor = "tally-1";
    let (store, stream, first_after) = rt.block_on(async {
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
                .into_event(actor, v)
        };
        // The history before the snapshot is not read by either side; one batch is enough.
        let before: Vec<_> = (1..=SNAPSHOT_AT).map(stored).collect();
        store.save_events(actor, &before).await.expect("save");
        let mut state = serde_json::Map::new();
        state.insert("total".into(), SNAPSHOT_AT.into());
        store
            .save_snapshot(
                &Snapshot::new(actor, SNAPSHOT_AT, state).with_schema_version(Tally::STATE_VERSION),
            )
            .await
            .expect("snapshot");
        for v in SNAPSHOT_AT + 1..=SNAPSHOT_AT + AFTER {
            store.save_event(&stored(v)).await.expect("save");
        }
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(store.stream_name())
            .await
            .expect("stream");
        // Where the events after the snapshot start: known in advance by the raw side.
        let first_after = stream.info().await.expect("info").state.last_sequence - AFTER + 1;
        (store, stream, first_after)
    });
    let host = ActorHost::new(Tally, store.clone(), RuntimeConfig::default());
    // The rebuild uses the snapshot: state and version as the full history says.
    let (state, version) = rt.block_on(host.load_state(actor)).expect("load");
    assert_eq!(
        (state.total, version),
        ((SNAPSHOT_AT + AFTER) as i64, SNAPSHOT_AT + AFTER)
    );
    assert_eq!(host.stats().snapshots_ignored, 0);

    let events_subject = store.event_subject(actor);
    let snapshot_subject = store.snapshot_subject(actor);
    let mut g = c.benchmark_group("activation_snapshot_100");
    g.bench_function("aether", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(host.load_state(actor).await.expect("load")) })
    });
    g.bench_function("raw_reads", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (stream, events_subject, snapshot_subject) = (
                stream.clone(),
                events_subject.clone(),
                snapshot_subject.clone(),
            );
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let snap = stream
                        .get_last_raw_message_by_subject(&snapshot_subject)
                        .await
                        .unwrap_or_else(|e| panic!("reading {snapshot_subject}: {e}"));
                    black_box(snap.payload.len());
                    // A pull consumer from the known start, deleted after use (the server
                    // limits how many a stream may have): the same server work a replay does,
                    // without finding where to start.
                    let c = stream
                        .create_consumer(consumer::pull::Config {
                            filter_subject: events_subject.clone(),
                            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                                start_sequence: first_after,
                            },
                            ack_policy: consumer::AckPolicy::None,
                            memory_storage: true,
                            num_replicas: 1,
                            ..Default::default()
                        })
                        .await
                        .expect("consumer");
                    let name = c.cached_info().name.clone();
                    let mut msgs = c
                        .fetch()
                        .max_messages(AFTER as usize)
                        .messages()
                        .await
                        .expect("messages");
                    for _ in 0..AFTER {
                        let m = msgs.next().await.expect("message").expect("ok");
                        black_box(m.payload.len());
                    }
                    stream.delete_consumer(&name).await.expect("delete");
                }
                start.elapsed()
            }
        })
    });
    g.finish();
}

criterion_group!(benches, activation);
criterion_main!(benches);
