//! Reads criterion's results and writes `docs/benchmarks.md`: one table with each Aether
//! operation next to its floor or peer, both medians, the ratio and whether the target is met.
//!
//! Usage: `bench-report <criterion dir> <output.md> [footprint.json]`; the environment variables
//! `AETHER_BENCH_SERVER` (server version) and `AETHER_BENCH_MACHINE` describe the run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// How a row's target is judged.
#[derive(Clone, Copy)]
enum Target {
    /// Aether's time ≤ factor × the reference's time.
    TimeAtMost(f64),
    /// Aether's throughput ≥ factor × the reference's (time ≤ reference / factor).
    ThroughputAtLeast(f64),
    /// The reference's time ≥ factor × Aether's (Aether is `factor` times faster).
    SpeedupAtLeast(f64),
    /// Aether's median time ≤ this many nanoseconds (no reference).
    AbsoluteNs(f64),
    /// Aether's time per element ≤ this many nanoseconds (throughput target).
    PerElementNs(f64),
    /// No target: the row reports the ratio.
    Report,
}

struct Row {
    operation: &'static str,
    group: &'static str,
    aether: &'static str,
    reference: Option<(&'static str, &'static str)>,
    target: Target,
    target_text: &'static str,
    reproduce: &'static str,
}

const fn row(
    operation: &'static str,
    group: &'static str,
    aether: &'static str,
    reference: Option<(&'static str, &'static str)>,
    target: Target,
    target_text: &'static str,
    reproduce: &'static str,
) -> Row {
    Row {
        operation,
        group,
        aether,
        reference,
        target,
        target_text,
        reproduce,
    }
}

const JS: &str = "cargo bench -p aether-benches --bench jetstream";
const MEM: &str = "cargo bench -p aether-benches --bench memory_store";
const BUS: &str = "cargo bench -p aether-benches --bench local_bus";
const NBUS: &str = "cargo bench -p aether-benches --bench nats_bus";
const RING: &str = "cargo bench -p aether-benches --bench cluster";
const ACTORS: &str = "cargo bench -p aether-benches --bench actors";
const TXN: &str = "cargo bench -p aether-benches --bench transactions";
const PROJ: &str = "cargo bench -p aether-benches --bench projections";
const SEND: &str = "cargo bench -p aether-benches --bench cluster_send";
const ACTIVATION: &str = "cargo bench -p aether-benches --bench activation";

const ROWS: &[Row] = &[
    row(
        "`get_latest_version`, JetStream, cache cold",
        "js_get_latest_version_cold",
        "aether",
        Some(("raw direct get of the last message", "raw_direct_get")),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        JS,
    ),
    row(
        "latest version through `LatestVersions` (bounded staleness, 1 s)",
        "js_get_latest_version_cold",
        "aether_view",
        Some(("raw direct get of the last message", "raw_direct_get")),
        Target::Report,
        "reported",
        JS,
    ),
    row(
        "`get_latest_version` at 100 000 events",
        "js_get_latest_version_by_history",
        "aether/100000",
        Some(("itself at 10 events", "aether/10")),
        Target::TimeAtMost(1.2),
        "flat (≤ 1.2×)",
        JS,
    ),
    row(
        "`get_latest_version` at 1 000 events",
        "js_get_latest_version_by_history",
        "aether/1000",
        Some(("itself at 10 events", "aether/10")),
        Target::TimeAtMost(1.2),
        "flat (≤ 1.2×)",
        JS,
    ),
    row(
        "`get_latest_version`, JetStream, cache cold",
        "js_get_latest_version_cold",
        "aether",
        Some((
            "the Go store's way: consumer with deliver-last",
            "go_style_consumer",
        )),
        Target::SpeedupAtLeast(3.0),
        "≥ 3× faster",
        JS,
    ),
    row(
        "`get_latest_version`, cache warm",
        "js_get_latest_version_warm",
        "aether",
        None,
        Target::AbsoluteNs(50.0),
        "≤ 50 ns (Go: ~630 ns)",
        JS,
    ),
    row(
        "`save_event` (server-side concurrency check)",
        "js_save_event",
        "aether",
        Some(("raw JetStream publish + ack", "raw_publish_ack")),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        JS,
    ),
    row(
        "`save_event`, same check in the raw call",
        "js_save_event",
        "aether",
        Some((
            "raw publish + ack with `Nats-Expected-Last-Subject-Sequence`",
            "raw_publish_ack_expected_seq",
        )),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        JS,
    ),
    row(
        "appends across 100 actors, 1 000 in flight",
        "js_pipelined_appends",
        "aether",
        Some(("raw pipelined JetStream publishes", "raw_pipelined_publish")),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        JS,
    ),
    row(
        "appends across 100 actors, same check in the raw calls",
        "js_pipelined_appends",
        "aether",
        Some((
            "raw pipelined publishes with the expected-sequence header",
            "raw_pipelined_publish_expected_seq",
        )),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        JS,
    ),
    row(
        "`save_events` of 10 events",
        "js_save_10_events",
        "aether_save_events",
        Some(("10 × `save_event`", "aether_10x_save_event")),
        Target::TimeAtMost(1.0),
        "faster",
        JS,
    ),
    row(
        "replay of a 10 000-event actor",
        "js_replay_10k",
        "aether",
        Some((
            "raw ordered consumer on the subject",
            "raw_ordered_consumer",
        )),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        JS,
    ),
    row(
        "in-memory `save_event`",
        "memory_save_event",
        "aether",
        None,
        Target::PerElementNs(1000.0),
        "≥ 1 M saves/s",
        MEM,
    ),
    row(
        "in-memory `get_latest_version`",
        "memory_get_latest_version",
        "aether",
        None,
        Target::AbsoluteNs(50.0),
        "≤ 50 ns",
        MEM,
    ),
    row(
        "hash ring `get_node`, 100 nodes × 150 vnodes",
        "ring_get_node",
        "aether",
        Some(("`hashring` crate, same nodes and keys", "hashring_crate")),
        Target::TimeAtMost(1.0),
        "faster",
        RING,
    ),
    row(
        "activation from a snapshot plus 100 events (JetStream)",
        "activation_snapshot_100",
        "aether",
        Some((
            "raw reads: direct get of the snapshot, a consumer over the 100 events",
            "raw_reads",
        )),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        ACTIVATION,
    ),
    row(
        "failover: a follower of 3 dies; all its 10 000 active actors answer from their new owners (a JetStream store per node)",
        "failover_10k",
        "aether",
        None,
        Target::AbsoluteNs(6e9),
        "≤ failure timeout (5 s, the default) + 1 s",
        "cargo bench -p aether-benches --bench failover",
    ),
    row(
        "failover as above, one in-memory store shared by the nodes (the cluster's part alone)",
        "failover_10k",
        "aether_in_memory_store",
        None,
        Target::AbsoluteNs(6e9),
        "≤ failure timeout (5 s, the default) + 1 s",
        "cargo bench -p aether-benches --bench failover",
    ),
    row(
        "`ClusterNode::send` to an actor active on another node (a read, no write)",
        "cluster_send_remote",
        "aether",
        Some((
            "raw NATS request/reply of the same request size",
            "raw_request_reply",
        )),
        Target::TimeAtMost(1.3),
        "≤ 1.3×",
        SEND,
    ),
    row(
        "`ClusterNode::send` to an actor active on the same node",
        "cluster_send_local",
        "aether",
        None,
        Target::AbsoluteNs(10_000.0),
        "≤ 10 µs, no NATS hop",
        SEND,
    ),
    row(
        "`ClusterNode::send` to an actor active on the same node, next to its floor",
        "cluster_send_local",
        "aether",
        Some((
            "raw round trip through a task's channel and a oneshot",
            "raw_task_round_trip",
        )),
        Target::Report,
        "reported",
        SEND,
    ),
    row(
        "projection of 10 000 events into a no-op sink",
        "projection_10k",
        "noop_sink",
        Some((
            "raw ordered consumer over the same subjects",
            "raw_ordered_consumer",
        )),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        PROJ,
    ),
    row(
        "projection of 10 000 events into a map of balances",
        "projection_10k",
        "map_sink",
        Some((
            "raw ordered consumer over the same subjects",
            "raw_ordered_consumer",
        )),
        Target::Report,
        "reported",
        PROJ,
    ),
    row(
        "projection of 10 000 events into SQLite (a file; one transaction per event with its position)",
        "projection_10k",
        "sqlite_sink",
        Some((
            "raw ordered consumer over the same subjects",
            "raw_ordered_consumer",
        )),
        Target::Report,
        "reported",
        PROJ,
    ),
    row(
        "transaction over two actors (one atomic batch)",
        "js_transaction_2_actors",
        "aether",
        Some((
            "raw atomic batch publish, same messages and headers",
            "raw_atomic_batch",
        )),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        TXN,
    ),
    row(
        "transaction over two actors (one atomic batch)",
        "js_transaction_2_actors",
        "aether",
        Some(("two sequential `save_event` (not atomic)", "two_save_event")),
        Target::Report,
        "reported",
        TXN,
    ),
    row(
        "typed rebuild of a 10 000-event actor (decode + apply)",
        "actor_rebuild_10k",
        "typed",
        Some(("untyped replay of the same stream", "untyped_replay")),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        ACTORS,
    ),
    row(
        "typed rebuild, an upcaster on every deposit (4 in 5 events)",
        "actor_rebuild_10k",
        "typed_upcast_every_deposit",
        Some(("untyped replay of the same stream", "untyped_replay")),
        Target::Report,
        "reported",
        ACTORS,
    ),
    row(
        "shard lookup `get_shard`",
        "shard_get_shard",
        "aether",
        None,
        Target::AbsoluteNs(50.0),
        "≤ 50 ns",
        RING,
    ),
    row(
        "local bus publish → 1 subscriber",
        "local_bus_1_subscriber",
        "aether",
        Some(("tokio `broadcast`", "tokio_broadcast")),
        Target::ThroughputAtLeast(0.5),
        "≥ 0.5× throughput",
        BUS,
    ),
    row(
        "local bus publish → 10 subscribers",
        "local_bus_10_subscribers",
        "aether",
        Some(("tokio `broadcast`", "tokio_broadcast")),
        Target::ThroughputAtLeast(0.5),
        "≥ 0.5× throughput",
        BUS,
    ),
    row(
        "local bus publish → 1 filtered subscriber",
        "local_bus_filtered",
        "aether",
        Some(("tokio `broadcast` + filter", "tokio_broadcast")),
        Target::ThroughputAtLeast(0.5),
        "≥ 0.5× throughput",
        BUS,
    ),
    row(
        "NATS bus publish → remote subscriber",
        "nats_bus_publish_receive",
        "aether",
        Some(("raw async-nats publish/subscribe", "raw_async_nats")),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        NBUS,
    ),
    row(
        "durable appends, 8 writers on 8 actors (fsync before ack / commit)",
        "pg_durable_8_writers",
        "aether",
        Some(("PostgreSQL events table, `synchronous_commit=on`", "postgres")),
        Target::ThroughputAtLeast(1.0),
        "≥ 1.0× throughput",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "durable append, one writer (latency)",
        "pg_durable_1_writer",
        "aether",
        Some(("PostgreSQL events table, `synchronous_commit=on`", "postgres")),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "durable appends, 8 writers, group commit on (one server)",
        "pg_durable_8_writers",
        "aether_grouped",
        Some(("PostgreSQL events table, `synchronous_commit=on`", "postgres")),
        Target::Report,
        "reported",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "durable append, one writer, group commit on (a lone writer waits for no group)",
        "pg_durable_1_writer",
        "aether_grouped",
        Some(("the same store with group commit off", "aether")),
        Target::TimeAtMost(1.1),
        "≤ 1.1×",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "group commit, R3 on three servers, 8 writers",
        "group_commit_r3_8_writers",
        "grouped",
        Some(("every save its own publish (`GroupCommitMode::Never`)", "alone")),
        Target::Report,
        "reported",
        "cargo bench -p aether-benches --bench group_commit",
    ),
    row(
        "group commit, R3 on three servers, one writer (latency)",
        "group_commit_r3_1_writer",
        "grouped",
        Some(("every save its own publish (`GroupCommitMode::Never`)", "alone")),
        Target::TimeAtMost(1.1),
        "≤ 1.1×",
        "cargo bench -p aether-benches --bench group_commit",
    ),
    row(
        "relaxed appends, 8 writers on 8 actors (no fsync wait)",
        "pg_relaxed_8_writers",
        "aether",
        Some(("PostgreSQL events table, `synchronous_commit=off`", "postgres")),
        Target::ThroughputAtLeast(1.0),
        "≥ 1.0× throughput",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "relaxed append, one writer (latency)",
        "pg_relaxed_1_writer",
        "aether",
        Some(("PostgreSQL events table, `synchronous_commit=off`", "postgres")),
        Target::Report,
        "reported",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "latest version of an actor with 10 000 events, uncached",
        "pg_latest_version_cold",
        "aether",
        Some(("PostgreSQL `SELECT max(sequence)`", "postgres")),
        Target::Report,
        "reported",
        "cargo bench -p aether-benches --bench postgres",
    ),
    row(
        "replay of 10 000 events",
        "pg_replay_10k",
        "aether",
        Some(("PostgreSQL `SELECT … ORDER BY sequence`", "postgres")),
        Target::Report,
        "reported",
        "cargo bench -p aether-benches --bench postgres",
    ),
];

/// Median time in ns of one benchmark, and its throughput elements per iteration.
fn read(dir: &Path, group: &str, id: &str) -> Option<(f64, Option<f64>)> {
    let base = dir.join(group).join(id).join("new");
    let est: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("estimates.json")).ok()?).ok()?;
    let median = est["median"]["point_estimate"].as_f64()?;
    let bench: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("benchmark.json")).ok()?).ok()?;
    let elements = bench["throughput"]["Elements"].as_f64();
    Some((median, elements))
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench-report <criterion dir> <output.md> [footprint.json]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    let server = std::env::var("AETHER_BENCH_SERVER").unwrap_or_else(|_| "unknown".into());
    let machine = std::env::var("AETHER_BENCH_MACHINE").unwrap_or_else(|_| "unknown".into());

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Each Aether operation is measured next to its floor (the raw NATS call it wraps) or its \
         peer, in the same criterion group of the same run, so the ratio holds on a noisy shared \
         machine. Medians; ratio = Aether's time / the reference's time (below 1 is faster). \
         Written by `scripts/bench` from a real run.\n"
    );
    let _ = writeln!(md, "- nats-server: {server}");
    let _ = writeln!(md, "- machine: {machine}\n");
    let _ = writeln!(
        md,
        "| operation | Aether (median) | reference | reference (median) | ratio | target | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let mut missing = Vec::new();
    for r in ROWS {
        let Some((a, elements)) = read(&dir, r.group, r.aether) else {
            missing.push(format!("{}/{}", r.group, r.aether));
            continue;
        };
        let reference = r
            .reference
            .and_then(|(label, id)| read(&dir, r.group, id).map(|(t, _)| (label, t)));
        if r.reference.is_some() && reference.is_none() {
            missing.push(format!(
                "{}/{}",
                r.group,
                r.reference.map(|x| x.1).unwrap_or_default()
            ));
            continue;
        }
        let (ref_label, ref_time, ratio) = match reference {
            Some((label, t)) => (label.to_string(), fmt_ns(t), Some(a / t)),
            None => ("—".to_string(), "—".to_string(), None),
        };
        let met = match (r.target, ratio) {
            (Target::TimeAtMost(f), Some(x)) => x <= f,
            (Target::ThroughputAtLeast(f), Some(x)) => x <= 1.0 / f,
            (Target::SpeedupAtLeast(f), Some(x)) => x <= 1.0 / f,
            (Target::AbsoluteNs(ns), _) => a <= ns,
            (Target::PerElementNs(ns), _) => a / elements.unwrap_or(1.0) <= ns,
            (Target::Report, _) => true,
            _ => false,
        };
        let aether_text = match r.target {
            Target::PerElementNs(_) => {
                let per = a / elements.unwrap_or(1.0);
                format!("{} ({:.2} M/s)", fmt_ns(per), 1_000.0 / per)
            }
            _ => fmt_ns(a),
        };
        let ratio_text = match (r.target, ratio) {
            (Target::SpeedupAtLeast(_), Some(x)) => format!("{:.2}× ({:.1}× faster)", x, 1.0 / x),
            (Target::ThroughputAtLeast(_), Some(x)) => {
                format!("{:.2}× ({:.2}× throughput)", x, 1.0 / x)
            }
            (_, Some(x)) => format!("{x:.2}×"),
            (_, None) => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.operation,
            aether_text,
            ref_label,
            ref_time,
            ratio_text,
            r.target_text,
            match (r.target, met) {
                (Target::Report, _) => "—",
                (_, true) => "yes",
                (_, false) => "**no**",
            }
        );
    }
    if let Some(fp) = args.get(3) {
        if let Ok(text) = std::fs::read_to_string(fp) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = writeln!(md, "\n## Memory\n");
                let _ = writeln!(md, "| measure | value | target | met |");
                let _ = writeln!(md, "|---|---|---|---|");
                if let Some(rows) = v.as_array() {
                    for r in rows {
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} | {} |",
                            r["measure"].as_str().unwrap_or(""),
                            r["value"].as_str().unwrap_or(""),
                            r["target"].as_str().unwrap_or(""),
                            r["met"].as_str().unwrap_or(""),
                        );
                    }
                }
            }
        }
    }
    // Notes and figures measured by other runs (the soak, the PostgreSQL peer, the scale run)
    // live in their own files and are carried over.
    for extra in ["benchmark-notes.md", "soak.md", "postgres.md", "scale.md"] {
        if let Ok(text) = std::fs::read_to_string(out.with_file_name(extra)) {
            let _ = writeln!(md);
            md.push_str(text.trim_end());
            let _ = writeln!(md);
        }
    }
    let _ = writeln!(md, "\n## Reproduce\n");
    let _ = writeln!(
        md,
        "`scripts/bench` runs everything and rewrites this file. One group at a time:\n"
    );
    let mut cmds: Vec<&str> = ROWS.iter().map(|r| r.reproduce).collect();
    cmds.dedup();
    cmds.sort();
    cmds.dedup();
    for c in cmds {
        let _ = writeln!(md, "- `{c}`");
    }
    let _ = writeln!(
        md,
        "- `cargo run --release -p aether-benches --bin footprint` (memory)"
    );
    if !missing.is_empty() {
        let _ = writeln!(md, "\nNot measured in this run: {}", missing.join(", "));
    }
    if let Err(e) = std::fs::write(&out, md) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}
