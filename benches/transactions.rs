//! Transactions on JetStream: a transfer between two actors committed as one atomic batch,
//! next to two sequential `save_event` calls (no atomicity) and next to the raw atomic batch
//! publish of the same two messages with the same headers (its floor).
//!
//! Needs nats-server 2.12+ (atomic batch publish); on an older server it says so and measures
//! nothing.

use std::sync::Arc;

use aether_core::{Event, EventStore, Transaction};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::{self, message::PublishMessage};
use criterion::{criterion_group, criterion_main, Criterion};

fn moved(actor: &str, v: u64, amount: i64) -> Event {
    Event::new("Moved", actor, v).with_field("amount", amount)
}

fn transactions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = NatsServer::start().expect("nats-server for benchmarks");
    if !server.version().at_least(2, 12) {
        eprintln!(
            "transactions need nats-server 2.12+; {} is older, nothing measured",
            server.version()
        );
        return;
    }
    let (client, store) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let store = JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
            .await
            .expect("store");
        (client, Arc::new(store))
    });
    let js = rt.block_on(async { jetstream::new(client.clone()) });
    let mut g = c.benchmark_group("js_transaction_2_actors");

    let mut w = 0u64;
    g.bench_function("two_save_event", |b| {
        b.iter(|| {
            rt.block_on(async {
                store
                    .save_event(&moved("a", w + 1, -1))
                    .await
                    .expect("save");
                store.save_event(&moved("b", w + 1, 1)).await.expect("save");
                w += 1;
            })
        })
    });

    // The raw floor: the same two messages, with the store's headers, the batch headers and
    // each actor's expected last subject sequence, tracked from the acknowledgements.
    let (s1, s2) = (
        store.event_subject("raw-from"),
        store.event_subject("raw-to"),
    );
    let (mut seq1, mut seq2, mut x, mut n) = (0u64, 0u64, 0u64, 0u64);
    g.bench_function("raw_atomic_batch", |b| {
        b.iter(|| {
            rt.block_on(async {
                n += 1;
                x += 1;
                let id = format!("raw-{n}");
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
                let first = moved("raw-from", x, -1).to_json_bytes().expect("json");
                let second = moved("raw-to", x, 1).to_json_bytes().expect("json");
                client
                    .publish_with_headers(s1.clone(), headers(x, seq1, 1), first.into())
                    .await
                    .expect("publish");
                let mut h = headers(x, seq2, 2);
                h.insert("Nats-Batch-Commit", "1");
                let ack = js
                    .send_publish(
                        s2.clone(),
                        PublishMessage::build().payload(second.into()).headers(h),
                    )
                    .await
                    .expect("send")
                    .await
                    .expect("ack");
                seq2 = ack.sequence;
                seq1 = ack.sequence - 1;
            })
        })
    });
    // Last: the first function of the group ran on a fresh stream about 1.5 times slower
    // (the server warming its batch staging), whichever it was.
    let mut v = 0u64;
    g.bench_function("aether", |b| {
        b.iter(|| {
            rt.block_on(async {
                let txn = Transaction::new()
                    .append("from", v, vec![moved("from", v + 1, -1)])
                    .append("to", v, vec![moved("to", v + 1, 1)]);
                store.commit(&txn).await.expect("commit");
                v += 1;
            })
        })
    });

    g.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
