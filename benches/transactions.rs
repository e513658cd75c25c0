//! Transactions on JetStream: a transfer between two actors committed as one atomic batch,
//! next to two sequential `save_event` calls (no atomicity) and next to the raw atomic batch
//! publish of the same two messages with the same headers (its floor).
//!
//! Order effects: on a fresh stream, whichever batch function ran first measured about 1.5
//! times slower (the server warming its batch staging), so neither order can be trusted alone.
//! Both sides are first warmed up together, untimed (alternating store and raw batches), then
//! measured in both orders, A B B A: `aether/store_first` and `raw_atomic_batch/store_first`,
//! then `raw_atomic_batch/raw_first` and `aether/raw_first`. `bench-report` gives the ratio of
//! each order; a drift that is linear in time weighs on both sides equally over the four.
//!
//! A second group runs the transaction and the two single saves on a stream with three
//! replicas (a three-server cluster started by the bench), also A B B A: on one server the
//! server stages an atomic batch on disk before its commit, which a replicated stream does not
//! need to (the batch goes through the stream's Raft log as one proposal).
//!
//! Needs nats-server 2.12+ (atomic batch publish); on an older server it says so and measures
//! nothing.

use std::sync::Arc;

use aether_benches::setup::OrFail;
use aether_core::{Event, EventStore, Transaction};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::{NatsCluster, NatsServer};
use async_nats::jetstream::{self, message::PublishMessage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Untimed transfers of each kind, alternating, before anything is measured.
const WARM_UP_BATCHES: usize = 200;

fn moved(actor: &str, v: u64, amount: i64) -> Event {
    Event::new("Moved", actor, v).with_field("amount", amount)
}

/// The store's transfer: one transaction over two actors, each at its next version.
struct StoreTransfer {
    store: Arc<JetStreamEventStore>,
    version: u64,
}

impl StoreTransfer {
    async fn once(&mut self) {
        let v = self.version;
        let txn = Transaction::new()
            .append("from", v, vec![moved("from", v + 1, -1)])
            .append("to", v, vec![moved("to", v + 1, 1)]);
        self.store.commit(&txn).await.or_fail("commit");
        self.version += 1;
    }
}

/// The raw floor: the same two messages, with the store's headers, the batch headers and each
/// actor's expected last subject sequence, tracked from the acknowledgements.
struct RawTransfer {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: (String, String),
    seqs: (u64, u64),
    version: u64,
    batch: u64,
}

impl RawTransfer {
    async fn once(&mut self) {
        self.batch += 1;
        self.version += 1;
        let x = self.version;
        let id = format!("raw-{}", self.batch);
        let headers = |version: u64, seq: u64, batch_seq: u64| {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Aether-Version", version.to_string().as_str());
            h.insert("Aether-First-Version", version.to_string().as_str());
            h.insert("Aether-Count", "1");
            h.insert("Nats-Batch-Id", id.as_str());
            h.insert("Nats-Batch-Sequence", batch_seq.to_string().as_str());
            h.insert(
                "Nats-Expected-Last-Subject-Sequence",
                seq.to_string().as_str(),
            );
            h
        };
        let first = moved("raw-from", x, -1).to_json_bytes().or_fail("json");
        let second = moved("raw-to", x, 1).to_json_bytes().or_fail("json");
        self.client
            .publish_with_headers(
                self.subjects.0.clone(),
                headers(x, self.seqs.0, 1),
                first.into(),
            )
            .await
            .or_fail("publish");
        let mut h = headers(x, self.seqs.1, 2);
        h.insert("Nats-Batch-Commit", "1");
        let ack = self
            .js
            .send_publish(
                self.subjects.1.clone(),
                PublishMessage::build().payload(second.into()).headers(h),
            )
            .await
            .or_fail("send")
            .await
            .or_fail("ack");
        self.seqs = (ack.sequence - 1, ack.sequence);
    }
}

fn transactions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server for benchmarks");
    if !server.version().at_least(2, 12) {
        eprintln!(
            "transactions need nats-server 2.12+; {} is older, nothing measured",
            server.version()
        );
        return;
    }
    // The JetStream context spawns a task: it is made inside the runtime.
    let (client, js, store) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .or_fail("store");
        (client.clone(), jetstream::new(client), Arc::new(store))
    });
    let mut txn = StoreTransfer {
        store: store.clone(),
        version: 0,
    };
    let mut raw = RawTransfer {
        js,
        client,
        subjects: (
            store.event_subject("raw-from"),
            store.event_subject("raw-to"),
        ),
        seqs: (0, 0),
        version: 0,
        batch: 0,
    };
    rt.block_on(async {
        for _ in 0..WARM_UP_BATCHES {
            txn.once().await;
            raw.once().await;
        }
    });

    let mut g = c.benchmark_group("js_transaction_2_actors");
    // A B B A: the store's transaction and its floor in both orders.
    g.bench_function(BenchmarkId::new("aether", "store_first"), |b| {
        b.iter(|| rt.block_on(txn.once()))
    });
    g.bench_function(BenchmarkId::new("raw_atomic_batch", "store_first"), |b| {
        b.iter(|| rt.block_on(raw.once()))
    });
    g.bench_function(BenchmarkId::new("raw_atomic_batch", "raw_first"), |b| {
        b.iter(|| rt.block_on(raw.once()))
    });
    g.bench_function(BenchmarkId::new("aether", "raw_first"), |b| {
        b.iter(|| rt.block_on(txn.once()))
    });

    // Reported, not compared for a goal: no atomicity, so not the same work.
    let mut w = 0u64;
    g.bench_function("two_save_event", |b| {
        b.iter(|| {
            rt.block_on(async {
                store
                    .save_event(&moved("a", w + 1, -1))
                    .await
                    .or_fail("save");
                store
                    .save_event(&moved("b", w + 1, 1))
                    .await
                    .or_fail("save");
                w += 1;
            })
        })
    });

    g.finish();
    drop(server);
    replicated(c, &rt);
}

/// The transaction against two single saves on a stream with three replicas.
fn replicated(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let cluster = NatsCluster::start(3).or_fail("a three-server cluster for benchmarks");
    let store = rt.block_on(async {
        let servers: Vec<async_nats::ServerAddr> = cluster
            .url_list()
            .iter()
            .map(|u| u.parse().or_fail("a server address"))
            .collect();
        let client = async_nats::connect(servers).await.or_fail("connect");
        let store = JetStreamEventStore::new(
            client,
            JetStreamConfig::default().namespace("r3").replicas(3),
        )
        .await
        .or_fail("store");
        Arc::new(store)
    });
    let mut txn = StoreTransfer {
        store: store.clone(),
        version: 0,
    };
    let mut w = 0u64;
    let mut saves = move |store: Arc<JetStreamEventStore>| {
        w += 1;
        let v = w;
        async move {
            store.save_event(&moved("a", v, -1)).await.or_fail("save");
            store.save_event(&moved("b", v, 1)).await.or_fail("save");
        }
    };
    rt.block_on(async {
        for _ in 0..WARM_UP_BATCHES {
            txn.once().await;
            saves(store.clone()).await;
        }
    });
    let mut g = c.benchmark_group("js_transaction_2_actors_r3");
    // A B B A, as above.
    g.bench_function(BenchmarkId::new("aether", "transaction_first"), |b| {
        b.iter(|| rt.block_on(txn.once()))
    });
    g.bench_function(
        BenchmarkId::new("two_save_event", "transaction_first"),
        |b| b.iter(|| rt.block_on(saves(store.clone()))),
    );
    g.bench_function(BenchmarkId::new("two_save_event", "saves_first"), |b| {
        b.iter(|| rt.block_on(saves(store.clone())))
    });
    g.bench_function(BenchmarkId::new("aether", "saves_first"), |b| {
        b.iter(|| rt.block_on(txn.once()))
    });
    g.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
