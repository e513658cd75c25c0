//! JetStream store operations next to the raw async-nats calls they wrap (their floor), and
//! next to the Go store's way of reading the latest version.
//!
//! Every group runs against one fresh `nats-server` started by aether-testkit.

use aether_benches::setup::OrFail;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{Event, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore, LatestVersions};
use aether_testkit::NatsServer;
use async_nats::jetstream::{self, consumer, stream::Stream};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use tokio::runtime::Runtime;

struct Env {
    rt: Runtime,
    _server: NatsServer,
    js: jetstream::Context,
    stream: Stream,
    store: Arc<JetStreamEventStore>,
}

fn env() -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    eprintln!(
        "benchmarking against nats-server {} ({})",
        server.version(),
        server.binary().display()
    );
    let (js, stream, store) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .or_fail("store");
        let js = jetstream::new(client);
        let stream = js.get_stream(store.stream_name()).await.or_fail("stream");
        (js, stream, Arc::new(store))
    });
    Env {
        rt,
        _server: server,
        js,
        stream,
        store,
    }
}

fn event(actor: &str, v: u64) -> Event {
    Event::new("Deposited", actor, v).with_field("amount", v)
}

/// Writes `n` events for `actor` quickly: pipelined raw publishes in the store's own message
/// format (one event JSON per message, version header), so long histories take seconds.
async fn seed_history(
    env_js: &jetstream::Context,
    store: &JetStreamEventStore,
    actor: &str,
    n: u64,
) {
    let subject = store.event_subject(actor);
    let mut v = 1;
    while v <= n {
        let mut acks = Vec::new();
        for _ in 0..1000 {
            if v > n {
                break;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Aether-Version", v.to_string().as_str());
            headers.insert("Aether-First-Version", v.to_string().as_str());
            headers.insert("Aether-Count", "1");
            let payload = event(actor, v).to_json_bytes().or_fail("encode");
            acks.push(
                env_js
                    .publish_with_headers(subject.clone(), headers, payload.into())
                    .await
                    .or_fail("publish"),
            );
            v += 1;
        }
        for a in acks {
            a.await.or_fail("ack");
        }
    }
}

fn latest_version(c: &mut Criterion) {
    let env = env();
    let actor_10 = "latest-10";
    env.rt
        .block_on(seed_history(&env.js, &env.store, actor_10, 10));
    let subject = env.store.event_subject(actor_10);

    let mut g = c.benchmark_group("js_get_latest_version_cold");
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter(|| async {
            black_box(
                env.store
                    .get_latest_version(actor_10)
                    .await
                    .or_fail("latest"),
            )
        })
    });
    // The bounded-staleness view (1 s): a map lookup once the watch has confirmed it current.
    let view = env.rt.block_on(async {
        let view = LatestVersions::start(Arc::clone(&env.store), Duration::from_secs(1))
            .await
            .or_fail("start the view");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !view.is_current() {
            if Instant::now() >= deadline {
                aether_benches::setup::fail("the view never became current");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        view
    });
    g.bench_function("aether_view", |b| {
        b.to_async(&env.rt).iter(|| async {
            black_box(
                view.get_latest_version(actor_10)
                    .await
                    .or_fail("latest from the view"),
            )
        })
    });
    eprintln!(
        "aether_view: {} reads fell back to the store",
        view.fallbacks()
    );
    env.rt.block_on(view.shutdown());
    g.bench_function("raw_direct_get", |b| {
        b.to_async(&env.rt).iter(|| async {
            black_box(
                env.stream
                    .direct_get_last_for_subject(subject.as_str())
                    .await
                    .or_fail("direct get"),
            )
        })
    });
    // What the Go store did: an ephemeral consumer delivering the last message, read one,
    // then remove the consumer.
    g.bench_function("go_style_consumer", |b| {
        b.to_async(&env.rt).iter(|| async {
            let c = env
                .stream
                .create_consumer(consumer::pull::Config {
                    deliver_policy: consumer::DeliverPolicy::Last,
                    filter_subject: subject.clone(),
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await
                .or_fail("consumer");
            let name = c.cached_info().name.clone();
            let mut msgs = c.fetch().max_messages(1).messages().await.or_fail("fetch");
            let m = msgs.next().await.or_fail("one message").or_fail("message");
            black_box(m.payload.len());
            env.stream.delete_consumer(&name).await.or_fail("delete");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("js_get_latest_version_by_history");
    for n in [10u64, 1_000, 100_000] {
        let actor = format!("history-{n}");
        env.rt
            .block_on(seed_history(&env.js, &env.store, &actor, n));
        g.bench_with_input(BenchmarkId::new("aether", n), &actor, |b, actor| {
            b.to_async(&env.rt).iter(|| async {
                let v = env.store.get_latest_version(actor).await.or_fail("latest");
                assert_eq!(v, n);
                black_box(v)
            })
        });
    }
    g.finish();

    let warm = env.rt.block_on(async {
        let client = async_nats::connect(env._server.url())
            .await
            .or_fail("connect");
        let s = JetStreamEventStore::new(client, JetStreamConfig::default())
            .await
            .or_fail("store")
            .with_cached_reads(true);
        s.get_latest_version(actor_10).await.or_fail("prime");
        s
    });
    let mut g = c.benchmark_group("js_get_latest_version_warm");
    g.bench_function("aether", |b| {
        b.iter(|| black_box(warm.cached_latest_version(black_box(actor_10))))
    });
    g.finish();
}

fn save(c: &mut Criterion) {
    let env = env();
    let next = AtomicU64::new(1);
    let mut g = c.benchmark_group("js_save_event");
    g.throughput(Throughput::Elements(1));
    // Events are built outside the timed part, as the raw side's payload is.
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let start_v = next.fetch_add(iters, Ordering::Relaxed);
            let events: Vec<Event> = (start_v..start_v + iters)
                .map(|v| event("saver", v))
                .collect();
            let store = env.store.clone();
            async move {
                let start = Instant::now();
                for e in &events {
                    store.save_event(e).await.or_fail("save");
                }
                start.elapsed()
            }
        })
    });
    let raw_subject = env.store.event_subject("raw-saver");
    let payload = bytes_of(&event("raw-saver", 1));
    g.bench_function("raw_publish_ack", |b| {
        b.to_async(&env.rt).iter(|| async {
            env.js
                .publish(raw_subject.clone(), payload.clone())
                .await
                .or_fail("publish")
                .await
                .or_fail("ack");
        })
    });
    // The same raw publish carrying the optimistic-concurrency header the store sends: the
    // floor for a save the server checks (the server looks up the subject's last message).
    let checked_subject = env.store.event_subject("raw-checked");
    let last_seq = AtomicU64::new(0);
    g.bench_function("raw_publish_ack_expected_seq", |b| {
        b.to_async(&env.rt).iter(|| async {
            let msg = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .expected_last_subject_sequence(last_seq.load(Ordering::Relaxed));
            let ack = env
                .js
                .send_publish(checked_subject.clone(), msg)
                .await
                .or_fail("publish")
                .await
                .or_fail("ack");
            last_seq.store(ack.sequence, Ordering::Relaxed);
        })
    });
    g.finish();

    // Many actors at once: each of 100 actors takes 10 saves in turn (each save once the
    // previous one of that actor is acknowledged), all actors concurrently, so at most 100
    // saves are in flight. Every function of the group does exactly this shape.
    const ACTORS: usize = 100;
    const PER_ACTOR: usize = 10;
    let mut g = c.benchmark_group("js_pipelined_appends");
    g.throughput(Throughput::Elements((ACTORS * PER_ACTOR) as u64));
    g.sample_size(20);
    let round = AtomicU64::new(0);
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let per_actor = PER_ACTOR as u64;
            let first_round = round.fetch_add(iters, Ordering::Relaxed);
            // Each actor gets PER_ACTOR saves per round, chained per actor; events are built
            // before the clock starts.
            let chains: Vec<Vec<Event>> = (0..ACTORS)
                .map(|a| {
                    let actor = format!("pipe-{a}");
                    (first_round * per_actor + 1..=(first_round + iters) * per_actor)
                        .map(|v| event(&actor, v))
                        .collect()
                })
                .collect();
            let store = env.store.clone();
            async move {
                let start = Instant::now();
                for r in 0..iters as usize {
                    let tasks = chains.iter().map(|chain| {
                        let store = store.clone();
                        let slice = &chain[r * PER_ACTOR..(r + 1) * PER_ACTOR];
                        async move {
                            for e in slice {
                                store.save_event(e).await.or_fail("save");
                            }
                        }
                    });
                    futures::future::join_all(tasks).await;
                }
                start.elapsed()
            }
        })
    });
    g.bench_function("raw_pipelined_publish", |b| {
        b.to_async(&env.rt).iter(|| async {
            let tasks = (0..ACTORS).map(|a| {
                let js = env.js.clone();
                let subject = env.store.event_subject(&format!("rawpipe-{a}"));
                let payload = payload.clone();
                async move {
                    for _ in 0..PER_ACTOR {
                        js.publish(subject.clone(), payload.clone())
                            .await
                            .or_fail("publish")
                            .await
                            .or_fail("ack");
                    }
                }
            });
            futures::future::join_all(tasks).await;
        })
    });
    // The raw calls the store makes: each publish carries the store's one header (the
    // event's version) and the actor's expected last subject sequence, taken from the previous
    // acknowledgement and kept across iterations, as the store's tip cache keeps it (no read
    // of the tip in the timed part: the store makes none either once it has seen the actor).
    let tips: Vec<(AtomicU64, AtomicU64)> = (0..ACTORS)
        .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
        .collect();
    g.bench_function("raw_pipelined_publish_expected_seq", |b| {
        b.to_async(&env.rt).iter(|| async {
            let tasks = tips.iter().enumerate().map(|(a, (last_seq, version))| {
                let js = env.js.clone();
                let subject = env.store.event_subject(&format!("rawchk-{a}"));
                let payload = payload.clone();
                async move {
                    let mut last = last_seq.load(Ordering::Relaxed);
                    let mut v = version.load(Ordering::Relaxed);
                    for _ in 0..PER_ACTOR {
                        v += 1;
                        let msg = async_nats::jetstream::message::PublishMessage::build()
                            .payload(payload.clone())
                            .header("Aether-Version", v.to_string().as_str())
                            .expected_last_subject_sequence(last);
                        last = js
                            .send_publish(subject.clone(), msg)
                            .await
                            .or_fail("publish")
                            .await
                            .or_fail("ack")
                            .sequence;
                    }
                    last_seq.store(last, Ordering::Relaxed);
                    version.store(v, Ordering::Relaxed);
                }
            });
            futures::future::join_all(tasks).await;
        })
    });
    g.finish();

    let mut g = c.benchmark_group("js_save_10_events");
    g.throughput(Throughput::Elements(10));
    let batch_next = AtomicU64::new(1);
    g.bench_function("aether_save_events", |b| {
        b.to_async(&env.rt).iter(|| async {
            let start = batch_next.fetch_add(10, Ordering::Relaxed);
            let evs: Vec<Event> = (start..start + 10).map(|v| event("batcher", v)).collect();
            env.store
                .save_events("batcher", &evs)
                .await
                .or_fail("save batch");
        })
    });
    let single_next = AtomicU64::new(1);
    g.bench_function("aether_10x_save_event", |b| {
        b.to_async(&env.rt).iter(|| async {
            let start = single_next.fetch_add(10, Ordering::Relaxed);
            for v in start..start + 10 {
                env.store
                    .save_event(&event("single", v))
                    .await
                    .or_fail("save");
            }
        })
    });
    g.finish();
}

fn bytes_of(e: &Event) -> bytes::Bytes {
    bytes::Bytes::from(e.to_json_bytes().or_fail("encode"))
}

fn replay(c: &mut Criterion) {
    let env = env();
    const N: u64 = 10_000;
    let actor = "replay-10k";
    env.rt.block_on(seed_history(&env.js, &env.store, actor, N));
    let subject = env.store.event_subject(actor);
    let mut g = c.benchmark_group("js_replay_10k");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("aether", |b| {
        b.to_async(&env.rt).iter(|| async {
            let evs = env.store.get_events(actor, 0).await.or_fail("replay");
            assert_eq!(evs.len() as u64, N);
            black_box(evs)
        })
    });
    g.bench_function("raw_ordered_consumer", |b| {
        b.to_async(&env.rt).iter_custom(|iters| {
            let stream = env.stream.clone();
            let subject = subject.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let c = stream
                        .create_consumer(consumer::pull::OrderedConfig {
                            filter_subject: subject.clone(),
                            ..Default::default()
                        })
                        .await
                        .or_fail("consumer");
                    let mut msgs = c.messages().await.or_fail("messages");
                    let mut got = 0;
                    while got < N {
                        let m = msgs.next().await.or_fail("message").or_fail("ok");
                        black_box(m.payload.len());
                        got += 1;
                    }
                }
                start.elapsed()
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = latest_version, save, replay
}
criterion_main!(benches);
