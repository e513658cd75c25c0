//! Reactions on JetStream (nats-server 2.12+; on an older server the bench says so and
//! measures nothing).
//!
//! - `reaction_decision`: `ActorHost::send` to one active actor whose decision sets (replaces)
//!   a timer, against the same decision without one (the same actor type, the same event, a
//!   state in which the actor declares no timer). What the runtime adds is comparing the
//!   declarations before and after the decision and recording the change on the event
//!   (metadata); the reactor sets the schedule after the commit, outside the decision's
//!   latency. The two are measured in both orders, A B B A, with no reactor running (the
//!   host is only told that one serves it), then the decision without a timer while an idle
//!   reactor runs over another stream (a probe: what running a reactor costs by itself), and
//!   then both again in both orders with the reactor following their stream, so that its work
//!   (reading the log, publishing each schedule) is on the same two cores; each of those
//!   functions starts once the reactor has caught up with the one before.
//! - `process_steps`: a `ProcessRouter` reading 4 000 source events from the store and
//!   delivering each to a process instance that decides one event per step, against raw
//!   consumers over the same source subjects sending the same command, with the same command
//!   id, to the same kind of host: a durable pull consumer acknowledging each event (a
//!   persistent subscription), an ordered consumer with nothing to acknowledge, and fetches of
//!   up to 1 000 events followed by their steps (as the store's log reads go). Every side takes
//!   one step at a time (the router with one partition). Every sample starts a new process
//!   store (a stream of its own, so every step is decided anew) and a new router or consumer,
//!   and times the steady state only: from the 400th step decided to the last.
//!
//! How late timers fire is measured by `src/bin/reaction-lateness.rs` (a steady-state run with
//! 1 000 and 100 000 timers pending), not here.
//!
//! Run without `--bench` (the test suite), every function runs once on small sizes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_actor::{
    Actor, ActorClient, ActorHost, CommandMeta, DomainEvent, Envelope, EventCodec, RuntimeConfig,
    Timer,
};
use aether_benches::setup::OrFail;
use aether_core::{ActorKey, Event, EventLog};
use aether_projection::{ActorEvents, InMemoryProjectionStore, Projected, WorkerConfig};
use aether_reactions::{
    routed_command_id, Process, ProcessRouter, Reactor, ReactorConfig, Targets, TimersConfig,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Whether criterion measures (`--bench`) rather than running each function once (the test
/// suite), which gets small sizes.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("never refused")]
struct Never;

// ---- reaction_decision: a decision that sets a timer, and the same one without ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Bell {
    due: Option<DateTime<Utc>>,
    armed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum BellCommand {
    /// Moves the due time; `armed` says whether the actor then declares a timer at it.
    Set {
        due: DateTime<Utc>,
        armed: bool,
    },
    Ring,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BellEvent {
    Set { due: DateTime<Utc>, armed: bool },
    Rang,
}

impl DomainEvent for BellEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Set { .. } => "Set",
            Self::Rang => "Rang",
        }
    }
}

struct Bells;

impl Actor for Bells {
    type State = Bell;
    type Command = BellCommand;
    type Event = BellEvent;
    type Reply = ();
    type Error = Never;
    const TYPE: &'static str = "bell";

    async fn decide(&self, _: &str, _: &Bell, c: &BellCommand) -> Result<Vec<BellEvent>, Never> {
        Ok(match c {
            BellCommand::Set { due, armed } => vec![BellEvent::Set {
                due: *due,
                armed: *armed,
            }],
            BellCommand::Ring => vec![BellEvent::Rang],
        })
    }

    fn apply(s: &mut Bell, e: &BellEvent) {
        match e {
            BellEvent::Set { due, armed } => {
                s.due = Some(*due);
                s.armed = *armed;
            }
            BellEvent::Rang => s.armed = false,
        }
    }

    fn reply(_: &Bell, _: &BellCommand, _: &[BellEvent]) {}

    fn timers(_: &str, s: &Bell) -> Vec<Timer<BellCommand>> {
        match (s.due, s.armed) {
            (Some(at), true) => vec![Timer::at("ring", at, BellCommand::Ring)],
            _ => Vec::new(),
        }
    }
}

/// Sends one decision to `id`: a due time an hour ahead and a millisecond later than the last
/// (so an armed bell replaces its timer every time; none fires during the run).
struct Ringer {
    host: ActorHost<Bells>,
    base: DateTime<Utc>,
    next: AtomicU64,
    /// The last due time an armed bell was given, in ms after `base`.
    last_armed: AtomicU64,
}

impl Ringer {
    async fn once(&self, id: &str, armed: bool) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self.base + chrono::Duration::milliseconds(n as i64);
        self.host
            .send(id, BellCommand::Set { due, armed })
            .await
            .or_fail("decision");
        if armed {
            self.last_armed.store(n, Ordering::Relaxed);
        }
    }
}

/// Bells on a store of their own (`namespace`) with a reactor that serves them; the two
/// actors active, their first decisions behind them.
async fn bells(
    client: &async_nats::Client,
    namespace: &str,
) -> (Arc<JetStreamEventStore>, Arc<Reactor>, Arc<Ringer>) {
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default().namespace(namespace),
        )
        .await
        .or_fail("store"),
    );
    let host = ActorHost::new(Bells, store.clone(), RuntimeConfig::default());
    let reactor = Reactor::new(Targets::new().host(host.clone()))
        .with_timers_on(
            async_nats::jetstream::new(client.clone()),
            TimersConfig::default(),
        )
        .await
        .or_fail("timers");
    // The host learns that timers are carried out, whether the reactor runs or not.
    reactor.attach();
    let base = Utc::now() + chrono::Duration::hours(1);
    let base = DateTime::from_timestamp_millis(base.timestamp_millis()).or_fail("due time");
    let ringer = Arc::new(Ringer {
        host,
        base,
        next: AtomicU64::new(0),
        last_armed: AtomicU64::new(0),
    });
    for _ in 0..20 {
        ringer.once(ARMED, true).await;
        ringer.once(UNARMED, false).await;
    }
    (store, Arc::new(reactor), ringer)
}

const ARMED: &str = "with-timer";
const UNARMED: &str = "without";

/// Waits until the running reactor has set the armed bell's last timer (its schedule holds
/// the last due time), so that no backlog of one function weighs on the next.
async fn caught_up(js: &async_nats::jetstream::Context, ringer: &Ringer) {
    let stream = js
        .get_stream("AETHER_TIMERS")
        .await
        .or_fail("timers stream");
    let subject = format!(
        "aether.timers.set.{}.{}.ring",
        Bells::TYPE,
        aether_nats::subject::encode_actor_id(ARMED)
    );
    let want = ringer.base
        + chrono::Duration::milliseconds(ringer.last_armed.load(Ordering::Relaxed) as i64);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let due = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => serde_json::from_slice::<serde_json::Value>(&m.payload)
                .ok()
                .and_then(|v| v["due"].as_str().map(str::to_string))
                .and_then(|d| DateTime::parse_from_rfc3339(&d).ok()),
            Err(_) => None,
        };
        if due.is_some_and(|d| d >= want) {
            return;
        }
        if Instant::now() > deadline {
            aether_benches::setup::fail("the reactor did not catch up within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn decisions(c: &mut Criterion) {
    let rt = runtime();
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    if !server.version().at_least(2, 12) {
        eprintln!(
            "reaction_decision needs nats-server 2.12+ (message schedules); {} is older, nothing measured",
            server.version()
        );
        return;
    }
    let client = rt.block_on(async { async_nats::connect(server.url()).await.or_fail("connect") });
    let js = rt.block_on(async { async_nats::jetstream::new(client.clone()) });
    let (_, _, quiet) = rt.block_on(bells(&client, "quiet"));

    let mut g = c.benchmark_group("reaction_decision");
    g.throughput(Throughput::Elements(1));
    let bench =
        |g: &mut criterion::BenchmarkGroup<'_, _>, ringer: &Ringer, name: &str, order: &str| {
            let (id, armed) = match name {
                "sets_timer" => (ARMED, true),
                _ => (UNARMED, false),
            };
            g.bench_function(BenchmarkId::new(name, order), |b| {
                b.iter(|| rt.block_on(ringer.once(id, armed)))
            });
        };
    // No reactor running, A B B A: the timer first, then the decision without one first.
    bench(&mut g, &quiet, "sets_timer", "timer_first");
    bench(&mut g, &quiet, "no_timer", "timer_first");
    bench(&mut g, &quiet, "no_timer", "no_timer_first");
    bench(&mut g, &quiet, "sets_timer", "no_timer_first");

    // A probe, not a row: the same decision while a reactor with nothing to do runs over
    // another stream (its partitions polling the log), to tell what running a reactor costs
    // the machine from what carrying out timers costs.
    let (idle_store, idle_reactor, _) = rt.block_on(bells(&client, "idle"));
    let idle_stop = CancellationToken::new();
    let idle = rt.spawn(idle_reactor.run(
        idle_store as Arc<dyn EventLog>,
        Arc::new(InMemoryProjectionStore::new()),
        ReactorConfig::new("idle"),
        idle_stop.clone(),
    ));
    bench(&mut g, &quiet, "no_timer", "idle_reactor_elsewhere");
    idle_stop.cancel();
    rt.block_on(idle).or_fail("reactor task").or_fail("reactor");

    // The reactor running over a stream of its own (nothing else to read), A B B A, each
    // function starting once the reactor has carried out the one before.
    let (store, reactor, busy) = rt.block_on(bells(&client, "busy"));
    let shutdown = CancellationToken::new();
    let running = rt.spawn(Arc::clone(&reactor).run(
        store.clone() as Arc<dyn EventLog>,
        Arc::new(InMemoryProjectionStore::new()),
        ReactorConfig::new("bench"),
        shutdown.clone(),
    ));
    for (name, order) in [
        ("sets_timer", "reactor_timer_first"),
        ("no_timer", "reactor_timer_first"),
        ("no_timer", "reactor_no_timer_first"),
        ("sets_timer", "reactor_no_timer_first"),
    ] {
        rt.block_on(caught_up(&js, &busy));
        bench(&mut g, &busy, name, order);
    }
    g.finish();
    shutdown.cancel();
    rt.block_on(running)
        .or_fail("reactor task")
        .or_fail("reactor");
}

// ---- process_steps: a router against a raw consumer doing the same work ----

#[derive(Debug, Clone, Serialize, Deserialize)]
enum OrderCommand {
    Place { n: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    Placed { n: u64 },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        "Placed"
    }
}

/// The source actors the process hears.
struct Orders;

impl Actor for Orders {
    type State = ();
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Reply = ();
    type Error = Never;
    const TYPE: &'static str = "order";

    async fn decide(&self, _: &str, _: &(), c: &OrderCommand) -> Result<Vec<OrderEvent>, Never> {
        let OrderCommand::Place { n } = c;
        Ok(vec![OrderEvent::Placed { n: *n }])
    }

    fn apply(_: &mut (), _: &OrderEvent) {}

    fn reply(_: &(), _: &OrderCommand, _: &[OrderEvent]) {}
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Heard {
    Order(OrderEvent),
}

impl DomainEvent for Heard {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Order(e) => e.event_type(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum StepEvent {
    Stepped { n: u64 },
}

impl DomainEvent for StepEvent {
    fn event_type(&self) -> &'static str {
        "Stepped"
    }
}

/// When the steady-state window of a sample starts and ends: the step that opens it and the
/// last one.
struct Window {
    steps: AtomicU64,
    from: u64,
    to: u64,
    times: Mutex<(Option<Instant>, Option<Instant>)>,
    done: tokio::sync::Notify,
}

impl Window {
    fn new(from: u64, to: u64) -> Arc<Self> {
        Arc::new(Self {
            steps: AtomicU64::new(0),
            from,
            to,
            times: Mutex::new((None, None)),
            done: tokio::sync::Notify::new(),
        })
    }

    fn step(&self) {
        let n = self.steps.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.from || n == self.to {
            let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
            if n == self.from {
                t.0 = Some(Instant::now());
            }
            if n == self.to {
                t.1 = Some(Instant::now());
                self.done.notify_one();
            }
        }
    }

    async fn elapsed(&self) -> Duration {
        let waited = tokio::time::timeout(Duration::from_secs(120), self.done.notified()).await;
        waited.or_fail("the process to take every step");
        let t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        match *t {
            (Some(a), Some(b)) => b - a,
            _ => aether_benches::setup::fail("the steady-state window was not recorded"),
        }
    }
}

/// The process: one instance per order, one event per step. Each sample gives its hosts a
/// window of its own.
struct Checkouts(Arc<Window>);

impl Actor for Checkouts {
    type State = u64;
    type Command = Step;
    type Event = StepEvent;
    type Reply = ();
    type Error = Never;
    const TYPE: &'static str = "checkout";

    async fn decide(&self, _: &str, _: &u64, c: &Step) -> Result<Vec<StepEvent>, Never> {
        self.0.step();
        Ok(vec![StepEvent::Stepped { n: c.n }])
    }

    fn apply(s: &mut u64, _: &StepEvent) {
        *s += 1;
    }

    fn reply(_: &u64, _: &Step, _: &[StepEvent]) {}
}

impl Process for Checkouts {
    type Input = Heard;

    fn sources() -> ActorEvents<Heard> {
        ActorEvents::new().actor::<Orders>(Heard::Order)
    }

    fn route(e: &Projected<Heard>) -> Option<(String, Step)> {
        let Heard::Order(OrderEvent::Placed { n }) = &e.event;
        Some((e.actor_id.clone(), Step { n: *n }))
    }
}

/// The reference's loop: each source event decoded and sent to its instance as the router
/// would (the same command, command id, causation and correlation), then acknowledged when
/// the consumer wants acknowledgements.
async fn raw_steps<E: std::fmt::Display>(
    mut messages: impl futures::Stream<Item = Result<async_nats::jetstream::Message, E>> + Unpin,
    host: &ActorHost<Checkouts>,
    events: u64,
    ack: bool,
) {
    let codec = EventCodec::<OrderEvent>::default();
    for _ in 0..events {
        let m = messages.next().await.or_fail("message").or_fail("read");
        let e = Event::from_json_bytes(&m.payload).or_fail("event");
        let OrderEvent::Placed { n } = codec.decode(&e).or_fail("order event");
        let source = ActorKey::new(Orders::TYPE, &e.actor_id);
        let meta = CommandMeta {
            command_id: Some(routed_command_id(source, e.version)),
            causation_id: Some(e.id.clone()),
            correlation_id: Some(e.actor_id.clone()),
            ..CommandMeta::default()
        };
        host.send_envelope(&e.actor_id, Envelope::new(Step { n }).with_meta(meta))
            .await
            .or_fail("step");
        if ack {
            m.ack().await.or_fail("ack");
        }
    }
}

fn process_steps(c: &mut Criterion) {
    let rt = runtime();
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    let (orders_n, versions) = if measuring() { (400, 10) } else { (20, 5) };
    let events = orders_n * versions;
    let (client, source) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        let store = Arc::new(
            JetStreamEventStore::new(
                client.clone(),
                JetStreamConfig::default().namespace("source"),
            )
            .await
            .or_fail("store"),
        );
        let orders = ActorHost::new(Orders, store.clone(), RuntimeConfig::default());
        for n in 0..versions {
            futures::stream::iter(0..orders_n)
                .for_each_concurrent(32, |o| {
                    let orders = &orders;
                    async move {
                        orders
                            .send(&format!("o-{o}"), OrderCommand::Place { n })
                            .await
                            .or_fail("source event");
                    }
                })
                .await;
        }
        (client, store)
    });
    let samples = AtomicU64::new(0);
    // A process store of its own per sample: every step is decided anew.
    let fresh = || {
        let k = samples.fetch_add(1, Ordering::Relaxed);
        let client = client.clone();
        async move {
            let ns = format!("proc{k}");
            let store = Arc::new(
                JetStreamEventStore::new(client, JetStreamConfig::default().namespace(&ns))
                    .await
                    .or_fail("process store"),
            );
            let window = Window::new(events / 10, events);
            let host = ActorHost::new(
                Checkouts(window.clone()),
                store.clone(),
                RuntimeConfig::default(),
            );
            (store, host, window)
        }
    };
    let drop_stream = |store: Arc<JetStreamEventStore>| {
        let js = async_nats::jetstream::new(client.clone());
        async move {
            js.delete_stream(store.stream_name())
                .await
                .or_fail("delete process stream");
        }
    };

    // Borrowed by the samples' futures.
    let (source, client, fresh, drop_stream) = (&source, &client, &fresh, &drop_stream);
    let mut g = c.benchmark_group("process_steps");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events - events / 10));
    g.bench_function("router_1_partition", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (store, host, window) = fresh().await;
                let targets = Targets::new().host(host);
                let router = Arc::new(ProcessRouter::<Checkouts>::new(&targets).or_fail("router"));
                let mut config = ReactorConfig::new("bench");
                config.worker_config = WorkerConfig {
                    partitions: 1,
                    ..WorkerConfig::default()
                };
                let shutdown = CancellationToken::new();
                let running = tokio::spawn(router.run(
                    source.clone() as Arc<dyn EventLog>,
                    Arc::new(InMemoryProjectionStore::new()),
                    config,
                    shutdown.clone(),
                ));
                total += window.elapsed().await;
                shutdown.cancel();
                running.await.or_fail("router task").or_fail("router");
                drop_stream(store).await;
            }
            total
        })
    });
    let subjects = format!(
        "{}.events.{}.*.*",
        source.stream_name(),
        <Orders as Actor>::TYPE
    );
    let subjects = &subjects;
    // Two floors: a durable consumer acknowledging each event once its step is taken (a
    // persistent subscription), and an ordered consumer with nothing to acknowledge (how the
    // store's log reads are done).
    // A third reads pages as the store's log reads do (a fetch of up to 1 000, then the steps),
    // reported only, to tell reading in pages from reading a stream of messages.
    for name in ["raw_consumer", "raw_ordered_consumer", "raw_fetched_pages"] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (store, host, window) = fresh().await;
                    let js = async_nats::jetstream::new(client.clone());
                    let stream = js
                        .get_stream(source.stream_name())
                        .await
                        .or_fail("source stream");
                    // A task of its own, as the router's worker is: not the thread that waits.
                    let subjects = subjects.clone();
                    let reading = tokio::spawn(async move {
                        if name == "raw_consumer" {
                            let consumer = stream
                                .create_consumer(pull::Config {
                                    filter_subject: subjects.clone(),
                                    ack_policy: AckPolicy::Explicit,
                                    ..Default::default()
                                })
                                .await
                                .or_fail("consumer");
                            let messages = consumer.messages().await.or_fail("messages");
                            raw_steps(messages, &host, events, true).await;
                            let consumer_name = consumer.cached_info().name.clone();
                            stream
                                .delete_consumer(&consumer_name)
                                .await
                                .or_fail("delete consumer");
                        } else if name == "raw_fetched_pages" {
                            let consumer = stream
                                .create_consumer(pull::Config {
                                    filter_subject: subjects.clone(),
                                    ack_policy: AckPolicy::None,
                                    ..Default::default()
                                })
                                .await
                                .or_fail("consumer");
                            let mut done = 0;
                            while done < events {
                                let page: Vec<_> = consumer
                                    .fetch()
                                    .max_messages(1000)
                                    .messages()
                                    .await
                                    .or_fail("fetch")
                                    .collect()
                                    .await;
                                let n = page.len() as u64;
                                raw_steps(futures::stream::iter(page), &host, n, false).await;
                                done += n;
                            }
                            let consumer_name = consumer.cached_info().name.clone();
                            stream
                                .delete_consumer(&consumer_name)
                                .await
                                .or_fail("delete consumer");
                        } else {
                            let consumer = stream
                                .create_consumer(pull::OrderedConfig {
                                    filter_subject: subjects.clone(),
                                    ..Default::default()
                                })
                                .await
                                .or_fail("consumer");
                            let messages = consumer.messages().await.or_fail("messages");
                            raw_steps(messages, &host, events, false).await;
                        }
                    });
                    total += window.elapsed().await;
                    reading.await.or_fail("reading task");
                    drop_stream(store).await;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decisions, process_steps);
criterion_main!(benches);
