//! Memory figures for `bench-report`, printed as a JSON array of rows:
//! - resident memory per stored event in the in-memory store at 1 M events, compared with the
//!   events' JSON size;
//! - heap bytes per actor in the JetStream store's version cache (the only per-actor state the
//!   store keeps), against a nats-server the program starts itself;
//! - heap bytes per idle active actor in the actor runtime (`ActorHost`), its state aside.
//!
//! Run with `cargo run --release -p aether-benches --bin footprint`.

use aether_benches::alloc::{live_bytes, CountingAllocator};
use std::time::Duration;

use aether_core::StorageKind;
use aether_core::{Event, EventStore};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn resident_bytes() -> u64 {
    // /proc/self/statm: size resident shared text lib data dt, in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let mut rows = vec![in_memory_store(), active_actors()];
    match jetstream_cache() {
        Ok(row) => rows.push(row),
        Err(e) => {
            eprintln!("JetStream version cache not measured: {e}");
            std::process::exit(1);
        }
    }
    println!("{}", serde_json::Value::Array(rows));
}

/// Heap bytes per actor in the JetStream store's version cache: the growth of live heap bytes
/// between two points of a run that caches more actors, divided by the actors added (the
/// client's own buffers are warmed up before the first point).
fn jetstream_cache() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    const WARM: u64 = 2_000;
    const ACTORS: u64 = 20_000;
    let server = aether_testkit::NatsServer::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (before, after, cached) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await?;
        let store = JetStreamEventStore::new(
            client,
            JetStreamConfig::default()
                .namespace("footprint")
                .storage(StorageKind::Memory),
        )
        .await?;
        let save = |i: u64| {
            let store = &store;
            async move {
                store
                    .save_event(&Event::new("Opened", format!("account-{i}"), 1))
                    .await
            }
        };
        for i in 0..WARM {
            save(i).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = live_bytes();
        for i in WARM..WARM + ACTORS {
            save(i).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = live_bytes();
        let cached = (0..WARM + ACTORS)
            .filter(|i| {
                store
                    .cached_latest_version(&format!("account-{i}"))
                    .is_some()
            })
            .count();
        Ok::<_, Box<dyn std::error::Error>>((before, after, cached))
    })?;
    if cached as u64 != WARM + ACTORS {
        return Err(format!("expected {} cached actors, found {cached}", WARM + ACTORS).into());
    }
    let per_actor = after.saturating_sub(before) as f64 / ACTORS as f64;
    Ok(serde_json::json!({
        "measure": format!(
            "JetStream store, heap bytes per cached actor ({} actors, ids like \"account-12345\")",
            WARM + ACTORS
        ),
        "value": format!("{per_actor:.0} B"),
        "target": "reported (no target)",
        "met": "—",
    }))
}

/// An actor whose state is one number and whose command reads it: what the runtime keeps per
/// active actor is then nearly all its own.
struct Counter;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Never {}

impl aether_actor::DomainEvent for Never {
    fn event_type(&self) -> &'static str {
        match *self {}
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("refused")]
struct Refused;

impl aether_actor::Actor for Counter {
    type State = u64;
    type Command = ();
    type Event = Never;
    type Reply = u64;
    type Error = Refused;
    const TYPE: &'static str = "counter";

    async fn decide(&self, _: &str, _: &u64, _: &()) -> Result<Vec<Never>, Refused> {
        Ok(Vec::new())
    }

    fn apply(_: &mut u64, event: &Never) {
        match *event {}
    }

    fn reply(state: &u64, _: &(), _: &[Never]) -> u64 {
        *state
    }
}

/// Heap bytes per idle active actor in an `ActorHost`: the growth of live heap bytes while
/// `ACTORS` more actors are activated (one read-only command each) and left idle, divided by
/// them. The state is 8 bytes; the rest is the runtime's (the actor's slot with its empty
/// mailbox and the state's bookkeeping, its entry in the host's map, its id; an idle actor has
/// no task).
fn active_actors() -> serde_json::Value {
    use aether_actor::{ActorClient, ActorHost, RuntimeConfig};
    const WARM: u64 = 2_000;
    const ACTORS: u64 = 50_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (per_actor, active) = rt.block_on(async {
        let host = ActorHost::new(
            Counter,
            std::sync::Arc::new(InMemoryEventStore::new()),
            RuntimeConfig::default(),
        );
        let ids: Vec<String> = (0..WARM + ACTORS).map(|i| format!("counter-{i}")).collect();
        for id in &ids[..WARM as usize] {
            let _ = host.send(id, ()).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = live_bytes();
        for id in &ids[WARM as usize..] {
            let _ = host.send(id, ()).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = live_bytes();
        let per_actor = after.saturating_sub(before) as f64 / ACTORS as f64;
        (per_actor, host.active_count())
    });
    if active as u64 != WARM + ACTORS {
        eprintln!("expected {} active actors, found {active}", WARM + ACTORS);
        std::process::exit(1);
    }
    serde_json::json!({
        "measure": format!("actor runtime, heap bytes per idle active actor ({} actors, an 8-byte state, ids like \"counter-12345\")", WARM + ACTORS),
        "value": format!("{per_actor:.0} B"),
        "target": "≤ 1 024 B",
        "met": if per_actor <= 1024.0 { "yes" } else { "**no**" },
    })
}

fn in_memory_store() -> serde_json::Value {
    const EVENTS: u64 = 1_000_000;
    const ACTORS: u64 = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = InMemoryEventStore::new();
    let mut json_bytes = 0u64;
    let before = resident_bytes();
    rt.block_on(async {
        for i in 0..EVENTS {
            let actor = format!("account-{}", i % ACTORS);
            let e = Event::new("Deposited", actor, i / ACTORS + 1).with_field("amount", i % 1000);
            json_bytes += e.to_json_bytes().map(|b| b.len() as u64).unwrap_or(0);
            if let Err(err) = store.save_event(&e).await {
                eprintln!("save failed: {err}");
                std::process::exit(1);
            }
        }
    });
    let after = resident_bytes();
    let per_event = (after.saturating_sub(before)) as f64 / EVENTS as f64;
    let json_per_event = json_bytes as f64 / EVENTS as f64;
    let ratio = per_event / json_per_event;
    drop(store);
    serde_json::json!({
        "measure": format!("in-memory store, resident bytes per event at {EVENTS} events ({ACTORS} actors)"),
        "value": format!("{per_event:.0} B (JSON {json_per_event:.0} B, {ratio:.2}×)"),
        "target": "≤ 2× the JSON size",
        "met": if ratio <= 2.0 { "yes" } else { "**no**" },
    })
}
