//! Resident memory per stored event in the in-memory store at 1 M events, compared with the
//! events' JSON size. Prints a JSON array of rows for `bench-report`.
//!
//! Run with `cargo run --release -p aether-benches --bin footprint`.

use aether_core::{Event, EventStore};
use aether_store::InMemoryEventStore;

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
    let rows = serde_json::json!([{
        "measure": format!("in-memory store, resident bytes per event at {EVENTS} events ({ACTORS} actors)"),
        "value": format!("{per_event:.0} B (JSON {json_per_event:.0} B, {ratio:.2}×)"),
        "target": "≤ 2× the JSON size",
        "met": if ratio <= 2.0 { "yes" } else { "**no**" },
    }]);
    println!("{rows}");
    drop(store);
}
