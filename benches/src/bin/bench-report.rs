//! Reads criterion's results and writes `docs/benchmarks.md`: one table with each Aether
//! operation next to its floor or peer, both medians, the ratio and whether the target is met.
//!
//! Usage: `bench-report <criterion dir> <output.md> [footprint.json] [--peer peer.json]
//! [--keep-rows]`; the environment variables `AETHER_BENCH_SERVER` (server version),
//! `AETHER_BENCH_MACHINE` and `AETHER_BENCH_LOAD` (load average during the run) describe the
//! run.
//!
//! The page is the one place for measurements: below the generated tables it carries the
//! hand-written notes of `benches/notes/` (the rows' notes, the soak, the PostgreSQL peer's
//! method, the scale run), which exist nowhere else in the docs.
//!
//! Verdicts ("yes"/"no") come only from rows that compare like with like: the same work on
//! both sides, measured in the same run. Where a row has a spread (the two orders of a group
//! run A B B A, the rounds of the steady-state probe, the confidence interval of criterion's
//! medians), the ratio states it, and a spread that straddles the target gives "unclear"
//! rather than a verdict. A row that compares unlike things is reported without a verdict, or
//! as an absolute with what it replaces.
//!
//! Rows whose benchmarks did not run this time keep the figures of the file being replaced,
//! marked "not rerun"; a row whose comparison changed since those figures were measured is
//! marked "not rerun since the comparison changed" and judged on nothing.
//!
//! With `--keep-rows`, rows without new results keep their line as it stands, and the run
//! description above the table stays as it is: for carrying an edited note into the page
//! without touching a figure, or for adding one group's rerun to the same revision of the
//! table (the notes then say which run it was).

use std::collections::HashMap;
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
    /// No ratio and no target: Aether's absolute time, next to the operation it replaces
    /// (a ratio of unlike operations is not one to read).
    Replaces,
}

impl Target {
    /// Whether a time ratio (Aether ÷ reference) meets the target.
    fn meets_ratio(self, x: f64) -> bool {
        match self {
            Target::TimeAtMost(f) => x <= f,
            Target::ThroughputAtLeast(f) | Target::SpeedupAtLeast(f) => x <= 1.0 / f,
            _ => true,
        }
    }

    fn judged(self) -> bool {
        !matches!(self, Target::Report | Target::Replaces)
    }
}

/// Where a row's figures were before this version of the table, for rows not rerun.
#[derive(Clone, Copy)]
enum Earlier {
    /// Under the same operation and reference labels.
    Same,
    /// Under other labels, for the same comparison.
    Renamed(&'static str, &'static str),
    /// Under other labels, for a comparison that has changed since (the old figures are kept,
    /// marked, and judged on nothing).
    Changed(&'static str, &'static str),
    /// Nowhere: a new row.
    New,
}

struct Row {
    operation: &'static str,
    group: &'static str,
    aether: &'static str,
    reference: Option<(&'static str, &'static str)>,
    /// Runs of the same pair in several orders (`(label, id suffix)`: the ids become
    /// `<id>/<suffix>` on both sides); empty for one run.
    orders: &'static [(&'static str, &'static str)],
    target: Target,
    target_text: &'static str,
    reproduce: &'static str,
    earlier: Earlier,
}

#[allow(clippy::too_many_arguments)]
const fn row(
    operation: &'static str,
    group: &'static str,
    aether: &'static str,
    reference: Option<(&'static str, &'static str)>,
    target: Target,
    target_text: &'static str,
    reproduce: &'static str,
    earlier: Earlier,
) -> Row {
    Row {
        operation,
        group,
        aether,
        reference,
        orders: &[],
        target,
        target_text,
        reproduce,
        earlier,
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
const TYPES: &str = "cargo bench -p aether-benches --bench types";
const SEND: &str = "cargo bench -p aether-benches --bench cluster_send";
const ACTIVATION: &str = "cargo bench -p aether-benches --bench activation";
const FAILOVER: &str = "cargo bench -p aether-benches --bench failover";
const PG: &str = "cargo bench -p aether-benches --bench postgres";
const PEER: &str = "cargo run --release -p aether-benches --bin peer-throughput";
const REACT: &str = "cargo bench -p aether-benches --bench reactions";
const PRIVACY: &str = "cargo bench -p aether-benches --bench privacy";
const LATENESS: &str = "cargo run --release -p aether-benches --bin reaction-lateness -- --json target/reaction-lateness.json";

const PG_DURABLE: &str = "PostgreSQL events table, `synchronous_commit=on`";
const PG_RELAXED: &str = "PostgreSQL events table, `synchronous_commit=off`";

const ROWS: &[Row] = &[
    row(
        "`get_latest_version`, JetStream, cache cold",
        "js_get_latest_version_cold",
        "aether",
        Some(("raw direct get of the last message", "raw_direct_get")),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        JS,
        Earlier::Same,
    ),
    row(
        "latest version through `LatestVersions` (bounded staleness, 1 s): a local map lookup",
        "js_get_latest_version_cold",
        "aether_view",
        Some((
            "replaces: a direct get of the last message (a network round trip)",
            "raw_direct_get",
        )),
        Target::Replaces,
        "reported",
        JS,
        Earlier::Renamed(
            "latest version through `LatestVersions` (bounded staleness, 1 s)",
            "raw direct get of the last message",
        ),
    ),
    row(
        "`get_latest_version` at 100 000 events",
        "js_get_latest_version_by_history",
        "aether/100000",
        Some(("itself at 10 events", "aether/10")),
        Target::TimeAtMost(1.2),
        "flat (≤ 1.2×)",
        JS,
        Earlier::Same,
    ),
    row(
        "`get_latest_version` at 1 000 events",
        "js_get_latest_version_by_history",
        "aether/1000",
        Some(("itself at 10 events", "aether/10")),
        Target::TimeAtMost(1.2),
        "flat (≤ 1.2×)",
        JS,
        Earlier::Same,
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
        Earlier::Same,
    ),
    row(
        "`get_latest_version`, cache warm",
        "js_get_latest_version_warm",
        "aether",
        None,
        Target::AbsoluteNs(50.0),
        "≤ 50 ns (Go: ~630 ns)",
        JS,
        Earlier::Same,
    ),
    row(
        "`save_event` (server-side concurrency check) next to a publish without the check",
        "js_save_event",
        "aether",
        Some(("raw JetStream publish + ack, no check", "raw_publish_ack")),
        Target::Report,
        "reported",
        JS,
        Earlier::Renamed(
            "`save_event` (server-side concurrency check)",
            "raw JetStream publish + ack",
        ),
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
        Earlier::Same,
    ),
    row(
        "appends to 100 actors, 10 in turn on each (up to 100 in flight), next to publishes without the check",
        "js_pipelined_appends",
        "aether",
        Some((
            "raw publishes, same shape, no check",
            "raw_pipelined_publish",
        )),
        Target::Report,
        "reported",
        JS,
        Earlier::Renamed(
            "appends across 100 actors, 1 000 in flight",
            "raw pipelined JetStream publishes",
        ),
    ),
    row(
        "appends to 100 actors, 10 in turn on each (up to 100 in flight)",
        "js_pipelined_appends",
        "aether",
        Some((
            "raw publishes, same shape, same header and check, the expected sequence kept from the last ack (no reads)",
            "raw_pipelined_publish_expected_seq",
        )),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        JS,
        Earlier::Changed(
            "appends across 100 actors, same check in the raw calls",
            "raw pipelined publishes with the expected-sequence header",
        ),
    ),
    row(
        "`save_events` of 10 events",
        "js_save_10_events",
        "aether_save_events",
        Some(("10 × `save_event`", "aether_10x_save_event")),
        Target::TimeAtMost(1.0),
        "faster",
        JS,
        Earlier::Same,
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
        Earlier::Same,
    ),
    // Activation reads the snapshot (which keeps the latest command ids) and then the events
    // after it, from right after the snapshot's message; the raw reference does the same two
    // reads from a start known in advance. A snapshot of an earlier release kept no ids: its
    // activation reads 32 events more, found by a search, reported next to the same reads.
    row(
        "activation from a snapshot plus 100 events (JetStream; the snapshot keeps the latest command ids, the replay starts right after it)",
        "activation_snapshot_100",
        "aether",
        Some((
            "raw reads: direct get of the snapshot, one consumer over the 100 events after it from a start known in advance",
            "raw_after_snapshot",
        )),
        Target::TimeAtMost(1.2),
        "≤ 1.2×",
        ACTIVATION,
        Earlier::Changed(
            "activation from a snapshot plus 100 events (JetStream; the replay starts 32 events before the snapshot, for their command ids)",
            "raw reads of the same messages: direct get of the snapshot, one consumer over the 132 events from a start known in advance",
        ),
    ),
    row(
        "activation from a snapshot of an earlier release plus 100 events (no command ids kept: the replay starts 32 events before the snapshot, found by a search)",
        "activation_snapshot_100",
        "aether_snapshot_without_ids",
        Some((
            "raw reads of the same messages: direct get of the snapshot, one consumer over the 132 events from a start known in advance",
            "raw_same_reads_without_ids",
        )),
        Target::Report,
        "reported",
        ACTIVATION,
        Earlier::New,
    ),
    row(
        "failover: a follower of 3 dies; its 10 000 active actors, with 10-49 events each and a snapshot for every third, answer from their new owners (a JetStream store per node)",
        "failover_10k",
        "jetstream_histories",
        None,
        Target::AbsoluteNs(6e9),
        "≤ failure timeout (5 s, the default) + 1 s",
        FAILOVER,
        Earlier::New,
    ),
    row(
        "failover as above, one event per actor (every rebuild takes the short-history path: direct gets, no consumer)",
        "failover_10k",
        "jetstream_one_event",
        None,
        Target::Report,
        "reported",
        FAILOVER,
        Earlier::Renamed(
            "failover: a follower of 3 dies; all its 10 000 active actors answer from their new owners (a JetStream store per node)",
            "—",
        ),
    ),
    row(
        "failover as above, one in-memory store shared by the nodes (the cluster's part alone)",
        "failover_10k",
        "aether_in_memory_store",
        None,
        Target::AbsoluteNs(6e9),
        "≤ failure timeout (5 s, the default) + 1 s",
        FAILOVER,
        Earlier::Same,
    ),
    row(
        "`ClusterNode::send` to an actor active on another node (a read, no write)",
        "cluster_send_remote",
        "aether",
        Some((
            "raw NATS request/reply of the same request size, the responder on a connection of its own (as the owner node)",
            "raw_request_reply",
        )),
        Target::TimeAtMost(1.15),
        "≤ 1.15×",
        SEND,
        Earlier::Changed(
            "`ClusterNode::send` to an actor active on another node (a read, no write)",
            "raw NATS request/reply of the same request size",
        ),
    ),
    row(
        "`ClusterNode::send` to an actor active on the same node, from a task of the runtime",
        "cluster_send_local",
        "aether",
        None,
        Target::AbsoluteNs(3_000.0),
        "≤ 3 µs, no NATS hop",
        SEND,
        Earlier::Changed(
            "`ClusterNode::send` to an actor active on the same node",
            "—",
        ),
    ),
    row(
        "`ClusterNode::send` to an actor active on the same node, from a task of the runtime, next to its floor",
        "cluster_send_local",
        "aether",
        Some((
            "raw round trip through a task's channel and a oneshot, from a task of the runtime",
            "raw_task_round_trip",
        )),
        Target::Report,
        "reported",
        SEND,
        Earlier::Changed(
            "`ClusterNode::send` to an actor active on the same node, next to its floor",
            "raw round trip through a task's channel and a oneshot",
        ),
    ),
    row(
        "projection of one actor type in five (2 000 of 10 000 events)",
        "projection_types",
        "one_type_of_five",
        Some((
            "a projection of the whole log (10 000 events)",
            "whole_log",
        )),
        Target::TimeAtMost(0.3),
        "≤ 0.3× (about a fifth)",
        TYPES,
        Earlier::New,
    ),
    row(
        "a worker holding 8 partitions of one type (20 000 events; the server selects each partition's buckets)",
        "worker_partitions",
        "8_partitions",
        Some((
            "8 partitions each reading the whole type, as before buckets",
            "8_partitions_client_side",
        )),
        Target::Report,
        "reported",
        TYPES,
        Earlier::New,
    ),
    row(
        "a worker holding 8 partitions of one type (20 000 events; the server selects each partition's buckets)",
        "worker_partitions",
        "8_partitions",
        Some(("a worker holding the only partition", "1_partitions")),
        Target::Report,
        "reported",
        TYPES,
        Earlier::New,
    ),
    row(
        "`save_event` with two personal fields sealed (`aether-privacy`'s `PrivateStore`, AES-256-GCM, keys cached)",
        "privacy_save",
        "sealed",
        Some(("the same event with the fields in clear, same store", "plain")),
        Target::TimeAtMost(1.3),
        "≤ 1.3×",
        PRIVACY,
        Earlier::New,
    ),
    row(
        "replay of 100 events with two sealed personal fields each (opened)",
        "privacy_replay",
        "sealed",
        Some(("the same 100 events in clear, same store", "plain")),
        Target::TimeAtMost(1.3),
        "≤ 1.3×",
        PRIVACY,
        Earlier::New,
    ),
    row(
        "a transaction across two actor types (`Transact`), two new actors",
        "transact_types",
        "cross_type",
        Some((
            "`ActorHost::transact` over two actors of one type",
            "same_type",
        )),
        Target::TimeAtMost(1.1),
        "≤ 1.1×",
        TYPES,
        Earlier::New,
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
        Earlier::Same,
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
        Earlier::Same,
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
        Earlier::Same,
    ),
    Row {
        operation: "projection of 10 000 events (200 actors) by 4 `ProjectionWorker`s (4 shards each log partition), a sink that awaits per event (a remote read-model write), the log over 8 partitions, full catch-up, both orders",
        group: "projection_partitions_remote",
        aether: "n8",
        reference: Some((
            "the same events and workers, the log as one stream",
            "n1",
        )),
        orders: &[("N = 1 first", "n1_first"), ("N = 8 first", "n8_first")],
        target: Target::ThroughputAtLeast(1.5),
        target_text: "≥ 1.5× throughput",
        reproduce: PROJ,
        earlier: Earlier::New,
    },
    Row {
        operation: "projection of 10 000 events (200 actors) by 4 `ProjectionWorker`s (4 shards each log partition), a no-op sink, the log over 8 partitions, full catch-up, both orders",
        group: "projection_partitions",
        aether: "n8",
        reference: Some((
            "the same events and workers, the log as one stream",
            "n1",
        )),
        orders: &[("N = 1 first", "n1_first"), ("N = 8 first", "n8_first")],
        target: Target::Report,
        target_text: "reported",
        reproduce: PROJ,
        earlier: Earlier::New,
    },
    Row {
        operation: "transaction over two actors (one atomic batch), measured in both orders",
        group: "js_transaction_2_actors",
        aether: "aether",
        reference: Some((
            "raw atomic batch publish, same messages and headers",
            "raw_atomic_batch",
        )),
        orders: &[("store first", "store_first"), ("raw first", "raw_first")],
        target: Target::TimeAtMost(1.2),
        target_text: "≤ 1.2×",
        reproduce: TXN,
        earlier: Earlier::Changed(
            "transaction over two actors (one atomic batch)",
            "raw atomic batch publish, same messages and headers",
        ),
    },
    row(
        "transaction over two actors (one atomic batch)",
        "js_transaction_2_actors",
        "aether/raw_first",
        Some(("two sequential `save_event` (not atomic)", "two_save_event")),
        Target::Report,
        "reported",
        TXN,
        Earlier::Same,
    ),
    Row {
        operation: "transaction over two actors (one atomic batch) on a stream with 3 replicas, measured in both orders",
        group: "js_transaction_2_actors_r3",
        aether: "aether",
        reference: Some((
            "two sequential `save_event` on the same stream (not atomic)",
            "two_save_event",
        )),
        orders: &[
            ("transaction first", "transaction_first"),
            ("saves first", "saves_first"),
        ],
        target: Target::TimeAtMost(2.0),
        target_text: "≤ 2×",
        reproduce: TXN,
        earlier: Earlier::New,
    },
    row(
        "typed rebuild of a 10 000-event actor (decode + apply)",
        "actor_rebuild_10k",
        "typed",
        Some(("untyped replay of the same stream", "untyped_replay")),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        ACTORS,
        Earlier::Same,
    ),
    row(
        "typed rebuild, an upcaster on every deposit (4 in 5 events)",
        "actor_rebuild_10k",
        "typed_upcast_every_deposit",
        Some((
            "untyped replay of the same stream (deposits in schema version 1)",
            "untyped_replay_v1",
        )),
        Target::Report,
        "reported",
        ACTORS,
        Earlier::Changed(
            "typed rebuild, an upcaster on every deposit (4 in 5 events)",
            "untyped replay of the same stream",
        ),
    ),
    row(
        "in-memory `save_event`",
        "memory_save_event",
        "aether",
        None,
        Target::PerElementNs(1000.0),
        "≥ 1 M saves/s",
        MEM,
        Earlier::Same,
    ),
    row(
        "in-memory `get_latest_version`",
        "memory_get_latest_version",
        "aether",
        None,
        Target::AbsoluteNs(50.0),
        "≤ 50 ns",
        MEM,
        Earlier::Same,
    ),
    row(
        "hash ring `get_node`, 100 nodes × 150 vnodes",
        "ring_get_node",
        "aether",
        Some(("`hashring` crate, same nodes and keys", "hashring_crate")),
        Target::TimeAtMost(1.0),
        "faster",
        RING,
        Earlier::Same,
    ),
    row(
        "shard lookup `get_shard`",
        "shard_get_shard",
        "aether",
        None,
        Target::AbsoluteNs(50.0),
        "≤ 50 ns",
        RING,
        Earlier::Same,
    ),
    row(
        "local bus publish → 1 subscriber",
        "local_bus_1_subscriber",
        "aether",
        Some(("tokio `broadcast`", "tokio_broadcast")),
        Target::ThroughputAtLeast(0.5),
        "≥ 0.5× throughput",
        BUS,
        Earlier::Same,
    ),
    row(
        "local bus publish → 10 subscribers",
        "local_bus_10_subscribers",
        "aether",
        Some(("tokio `broadcast`", "tokio_broadcast")),
        Target::ThroughputAtLeast(0.5),
        "≥ 0.5× throughput",
        BUS,
        Earlier::Same,
    ),
    row(
        "local bus publish → 1 filtered subscriber",
        "local_bus_filtered",
        "aether",
        Some(("tokio `broadcast` + filter", "tokio_broadcast")),
        Target::ThroughputAtLeast(0.5),
        "≥ 0.5× throughput",
        BUS,
        Earlier::Same,
    ),
    row(
        "NATS bus publish → remote subscriber",
        "nats_bus_publish_receive",
        "aether",
        Some(("raw async-nats publish/subscribe", "raw_async_nats")),
        Target::ThroughputAtLeast(0.8),
        "≥ 0.8× throughput",
        NBUS,
        Earlier::Same,
    ),
    // The criterion groups of the PostgreSQL bench run their functions one after another
    // while the disk's sync latency drifts: reported only. The verdicts on durable and relaxed
    // appends come from the steady-state probe (PROBE_ROWS).
    row(
        "durable appends, 8 writers on 8 actors, 80 per iteration (criterion, functions one after another)",
        "pg_durable_8_writers",
        "aether",
        Some((PG_DURABLE, "postgres")),
        Target::Report,
        "reported (verdict: steady-state row)",
        PG,
        Earlier::Renamed(
            "durable appends, 8 writers on 8 actors (fsync before ack / commit)",
            PG_DURABLE,
        ),
    ),
    row(
        "durable append, one writer (criterion, functions one after another)",
        "pg_durable_1_writer",
        "aether",
        Some((PG_DURABLE, "postgres")),
        Target::Report,
        "reported (verdict: steady-state row)",
        PG,
        Earlier::Renamed("durable append, one writer (latency)", PG_DURABLE),
    ),
    row(
        "relaxed appends, 8 writers on 8 actors (criterion, functions one after another)",
        "pg_relaxed_8_writers",
        "aether",
        Some((PG_RELAXED, "postgres")),
        Target::Report,
        "reported (verdict: steady-state row)",
        PG,
        Earlier::Renamed(
            "relaxed appends, 8 writers on 8 actors (no fsync wait)",
            PG_RELAXED,
        ),
    ),
    row(
        "relaxed append, one writer (criterion, functions one after another)",
        "pg_relaxed_1_writer",
        "aether",
        Some((PG_RELAXED, "postgres")),
        Target::Report,
        "reported",
        PG,
        Earlier::Renamed("relaxed append, one writer (latency)", PG_RELAXED),
    ),
    row(
        "latest version of an actor with 10 000 events, uncached",
        "pg_latest_version_cold",
        "aether",
        Some(("PostgreSQL `SELECT max(sequence)`", "postgres")),
        Target::Report,
        "reported",
        PG,
        Earlier::Same,
    ),
    row(
        "replay of 10 000 events",
        "pg_replay_10k",
        "aether",
        Some(("PostgreSQL `SELECT … ORDER BY sequence`", "postgres")),
        Target::Report,
        "reported",
        PG,
        Earlier::Same,
    ),
    Row {
        operation: "decision that sets (replaces) a timer, `ActorHost::send` to one active actor, no reactor running, measured in both orders",
        group: "reaction_decision",
        aether: "sets_timer",
        reference: Some(("the same decision setting no timer", "no_timer")),
        orders: &[("timer first", "timer_first"), ("no timer first", "no_timer_first")],
        target: Target::TimeAtMost(1.2),
        target_text: "≤ 1.2×",
        reproduce: REACT,
        earlier: Earlier::New,
    },
    Row {
        operation: "decision that sets (replaces) a timer, the reactor running on the same cores (setting each schedule), both orders",
        group: "reaction_decision",
        aether: "sets_timer",
        reference: Some((
            "the same decision setting no timer, the reactor running",
            "no_timer",
        )),
        orders: &[
            ("timer first", "reactor_timer_first"),
            ("no timer first", "reactor_no_timer_first"),
        ],
        target: Target::Report,
        target_text: "reported",
        reproduce: REACT,
        earlier: Earlier::New,
    },
    row(
        "process-manager steps: a `ProcessRouter` (one partition) over 4 000 stored events, one event decided per step, steady state",
        "process_steps",
        "router_1_partition",
        Some((
            "raw durable pull consumer over the same events calling the same host, same commands and ids",
            "raw_consumer",
        )),
        Target::ThroughputAtLeast(0.7),
        "≥ 0.7× throughput",
        REACT,
        Earlier::New,
    ),
    row(
        "process-manager steps (as above), next to an ordered consumer",
        "process_steps",
        "router_1_partition",
        Some((
            "raw ordered consumer (nothing to acknowledge) calling the same host, same commands and ids",
            "raw_ordered_consumer",
        )),
        Target::Report,
        "reported",
        REACT,
        Earlier::New,
    ),
    row(
        "process-manager steps (as above), next to reads in pages",
        "process_steps",
        "router_1_partition",
        Some((
            "raw fetches of up to 1 000 events, then their steps, same host, commands and ids",
            "raw_fetched_pages",
        )),
        Target::Report,
        "reported",
        REACT,
        Earlier::New,
    ),
];

/// What a steady-state row compares: per round, saves per second or the median latency.
#[derive(Clone, Copy)]
enum Measure {
    Throughput,
    MedianLatency,
}

/// A row from the steady-state probe (`peer-throughput`): two sides of one scenario.
struct ProbeRow {
    operation: &'static str,
    mode: &'static str,
    writers: u64,
    aether: &'static str,
    reference: (&'static str, &'static str),
    measure: Measure,
    target: Target,
    target_text: &'static str,
}

const PROBE_ROWS: &[ProbeRow] = &[
    ProbeRow {
        operation: "durable appends, 8 writers on 8 actors, steady state (interleaved rounds)",
        mode: "durable",
        writers: 8,
        aether: "aether",
        reference: (
            "PostgreSQL events table, `synchronous_commit=on`, a connection per writer",
            "postgres",
        ),
        measure: Measure::Throughput,
        target: Target::ThroughputAtLeast(1.0),
        target_text: "≥ 1.0× throughput",
    },
    ProbeRow {
        operation: "durable appends, 8 writers, the log over 8 partitions, steady state",
        mode: "durable",
        writers: 8,
        aether: "aether_partitioned",
        reference: (
            "PostgreSQL events table, `synchronous_commit=on`, a connection per writer",
            "postgres",
        ),
        measure: Measure::Throughput,
        target: Target::ThroughputAtLeast(1.5),
        target_text: "≥ 1.5× throughput",
    },
    ProbeRow {
        operation: "durable appends, 8 writers, the log over 8 partitions, next to its floor",
        mode: "durable",
        writers: 8,
        aether: "aether_partitioned",
        reference: (
            "raw JetStream publish + ack to the 8 partitions' streams, one connection",
            "nats_raw_partitioned",
        ),
        measure: Measure::Throughput,
        target: Target::Report,
        target_text: "reported",
    },
    ProbeRow {
        operation: "durable appends, 8 writers, the log over 8 partitions against one stream",
        mode: "durable",
        writers: 8,
        aether: "aether_partitioned",
        reference: ("the same store on one stream", "aether"),
        measure: Measure::Throughput,
        target: Target::Report,
        target_text: "reported",
    },
    ProbeRow {
        operation:
            "durable appends, 8 writers, a store and NATS connection per writer, steady state",
        mode: "durable",
        writers: 8,
        aether: "aether_connection_per_writer",
        reference: (
            "PostgreSQL events table, `synchronous_commit=on`, a connection per writer",
            "postgres",
        ),
        measure: Measure::Throughput,
        target: Target::Report,
        target_text: "reported",
    },
    ProbeRow {
        operation: "durable appends, 8 writers, steady state, next to the store's floor",
        mode: "durable",
        writers: 8,
        aether: "aether",
        reference: (
            "raw JetStream publish + ack, same header and check, one connection",
            "nats_raw",
        ),
        measure: Measure::Throughput,
        target: Target::Report,
        target_text: "reported",
    },
    ProbeRow {
        operation: "durable append, one writer, steady state (latency: p50 per round)",
        mode: "durable",
        writers: 1,
        aether: "aether",
        reference: (
            "PostgreSQL events table, `synchronous_commit=on`",
            "postgres",
        ),
        measure: Measure::MedianLatency,
        target: Target::TimeAtMost(1.2),
        target_text: "≤ 1.2×",
    },
    ProbeRow {
        operation: "relaxed appends, 8 writers on 8 actors, steady state (interleaved rounds)",
        mode: "relaxed",
        writers: 8,
        aether: "aether",
        reference: (
            "PostgreSQL events table, `synchronous_commit=off`, a connection per writer",
            "postgres",
        ),
        measure: Measure::Throughput,
        target: Target::ThroughputAtLeast(1.0),
        target_text: "≥ 1.0× throughput",
    },
    ProbeRow {
        operation: "relaxed append, one writer, steady state (latency: p50 per round)",
        mode: "relaxed",
        writers: 1,
        aether: "aether",
        reference: (
            "PostgreSQL events table, `synchronous_commit=off`",
            "postgres",
        ),
        measure: Measure::MedianLatency,
        target: Target::Report,
        target_text: "reported",
    },
];

/// One criterion result: the median in ns with its confidence interval, and the throughput
/// elements per iteration.
#[derive(Clone, Copy)]
struct Median {
    ns: f64,
    low: f64,
    high: f64,
    elements: Option<f64>,
}

fn read(dir: &Path, group: &str, id: &str) -> Option<Median> {
    let base = dir.join(group).join(id).join("new");
    let est: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("estimates.json")).ok()?).ok()?;
    let median = &est["median"];
    let ns = median["point_estimate"].as_f64()?;
    let low = median["confidence_interval"]["lower_bound"]
        .as_f64()
        .unwrap_or(ns);
    let high = median["confidence_interval"]["upper_bound"]
        .as_f64()
        .unwrap_or(ns);
    let bench: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("benchmark.json")).ok()?).ok()?;
    let elements = bench["throughput"]["Elements"].as_f64();
    Some(Median {
        ns,
        low,
        high,
        elements,
    })
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

fn fmt_us(us: f64) -> String {
    fmt_ns(us * 1_000.0)
}

/// An integer with thin groups of three digits (`9 790`).
fn fmt_count(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The verdict of a judged row from its time ratios (Aether ÷ reference), each a range
/// (`lo`, `hi`): "yes" when every range meets the target, "**no**" when none reaches it,
/// "unclear" when the ranges straddle it (`what` says which ranges, with their verb).
fn verdict(target: Target, ranges: &[(f64, f64)], what: &str) -> String {
    if !target.judged() {
        return "—".into();
    }
    let all_in = ranges
        .iter()
        .filter(|(_, hi)| target.meets_ratio(*hi))
        .count();
    let any_in = ranges
        .iter()
        .filter(|(lo, _)| target.meets_ratio(*lo))
        .count();
    if all_in == ranges.len() {
        "yes".into()
    } else if any_in == 0 {
        "**no**".into()
    } else {
        format!("unclear: {what} the target")
    }
}

fn fmt_ratio(target: Target, x: f64) -> String {
    match target {
        Target::SpeedupAtLeast(_) => format!("{:.2}× ({:.1}× faster)", x, 1.0 / x),
        Target::ThroughputAtLeast(_) => format!("{:.2}× ({:.2}× throughput)", x, 1.0 / x),
        _ => format!("{x:.2}×"),
    }
}

/// One line of the main table.
struct Line {
    cells: [String; 7],
    /// For a carried row: whether the file being replaced had already carried it.
    carried_before: bool,
}

impl Line {
    fn render(&self) -> String {
        format!("| {} |", self.cells.join(" | "))
    }
}

/// The table, sections and run description of the file being replaced.
#[derive(Default)]
struct Previous {
    rows: HashMap<(String, String), [String; 7]>,
    server: Option<String>,
    machine: Option<String>,
    /// Where that file's own carried rows came from.
    earlier: Option<String>,
    /// The run description above the table (the `- ` lines), as written.
    header: Vec<String>,
    memory: Option<String>,
    probe: Option<String>,
}

const EARLIER_PREFIX: &str = "- rows marked *not rerun* keep the figures of an earlier run (";

const PROBE_HEADING: &str = "## PostgreSQL peer, steady state (interleaved rounds)";

/// The hand-written notes carried below the tables, in page order (files in `benches/notes`).
const NOTES: &[&str] = &["rows.md", "soak.md", "postgres.md", "scale.md"];

/// A note's text without its first line when that is an HTML comment (the line that says
/// where the note is carried), which has no place on the page.
fn note_body(text: &str) -> &str {
    match text.split_once('\n') {
        Some((first, rest)) if first.trim_start().starts_with("<!--") => rest,
        _ => text,
    }
}

fn previous(path: &Path) -> Previous {
    let mut p = Previous::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return p;
    };
    let mut in_table = false;
    let mut seen_table = false;
    for line in text.lines() {
        if line.starts_with("| operation | Aether (median)") {
            in_table = true;
            seen_table = true;
            continue;
        }
        if !seen_table && line.starts_with("- ") {
            p.header.push(line.to_string());
        }
        if in_table {
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            if line.starts_with("|---") {
                continue;
            }
            let cells: Vec<String> = line
                .trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect();
            if let Ok(cells) = <[String; 7]>::try_from(cells) {
                p.rows
                    .insert((cells[0].clone(), cells[2].clone()), cells.clone());
            }
        } else if let Some(s) = line.strip_prefix("- nats-server: ") {
            p.server.get_or_insert_with(|| s.to_string());
        } else if let Some(s) = line.strip_prefix("- machine: ") {
            p.machine.get_or_insert_with(|| s.to_string());
        } else if let Some(s) = line.strip_prefix(EARLIER_PREFIX) {
            p.earlier
                .get_or_insert_with(|| s.strip_suffix(')').unwrap_or(s).to_string());
        }
    }
    p.memory = section(&text, "## Memory").map(|m| table_only(&m));
    p.probe = section(&text, PROBE_HEADING);
    p
}

/// The text of a generated section, from its heading to the next one of the same level.
fn section(text: &str, heading: &str) -> Option<String> {
    let start = text.find(&format!("\n{heading}\n"))? + 1;
    let rest = &text[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .map_or(text.len(), |i| start + heading.len() + i);
    Some(text[start..end].trim_end().to_string())
}

/// A section's heading, any line before its table, and the table, without what follows.
fn table_only(section: &str) -> String {
    let mut out = Vec::new();
    let mut seen_table = false;
    for line in section.lines() {
        if line.starts_with('|') {
            seen_table = true;
        } else if seen_table {
            break;
        }
        out.push(line);
    }
    out.join("\n").trim_end().to_string()
}

/// A row carried over from the file being replaced, its verdict marked.
fn carried(prev: &Previous, key: (&str, &str), row_target: Target, changed: bool) -> Option<Line> {
    let old = prev.rows.get(&(key.0.to_string(), key.1.to_string()))?;
    let mut cells = old.clone();
    let old_met = cells[6]
        .split(" (not rerun")
        .next()
        .unwrap_or("")
        .to_string();
    let was_changed = cells[6].contains("comparison changed");
    let carried_before = cells[6].contains("not rerun");
    cells[6] = if changed || was_changed {
        "not rerun since the comparison changed".into()
    } else if !row_target.judged() {
        "— (not rerun)".into()
    } else {
        format!("{old_met} (not rerun)")
    };
    if matches!(row_target, Target::Replaces) {
        cells[4] = "—".into();
    }
    Some(Line {
        cells,
        carried_before,
    })
}

/// A row of the file being replaced exactly as it stands (`--keep-rows`), found under its
/// labels or, renamed, under its earlier ones. A row whose comparison changed is not kept:
/// [`carried`] marks it.
fn kept(prev: &Previous, r: &Row) -> Option<Line> {
    let ref_label = r.reference.map_or("—", |x| x.0);
    let key = |op: &str, reference: &str| (op.to_string(), reference.to_string());
    let cells = match (prev.rows.get(&key(r.operation, ref_label)), r.earlier) {
        (Some(cells), _) => cells.clone(),
        (None, Earlier::Renamed(op, reference)) => {
            let mut cells = prev.rows.get(&key(op, reference))?.clone();
            cells[0] = r.operation.to_string();
            cells[2] = ref_label.to_string();
            cells[5] = r.target_text.to_string();
            cells
        }
        _ => return None,
    };
    Some(Line {
        carried_before: cells[6].contains("not rerun"),
        cells,
    })
}

/// The line of a criterion row, if its results are there.
fn criterion_line(dir: &Path, r: &Row) -> Option<Line> {
    let orders: Vec<(&str, String, Option<String>)> = if r.orders.is_empty() {
        vec![(
            "",
            r.aether.to_string(),
            r.reference.map(|x| x.1.to_string()),
        )]
    } else {
        r.orders
            .iter()
            .map(|(label, suffix)| {
                (
                    *label,
                    format!("{}/{suffix}", r.aether),
                    r.reference.map(|x| format!("{}/{suffix}", x.1)),
                )
            })
            .collect()
    };
    let mut aether_texts = Vec::new();
    let mut ref_texts = Vec::new();
    let mut ratio_texts = Vec::new();
    let mut ratios = Vec::new();
    let mut absolute_met = true;
    for (label, a_id, ref_id) in &orders {
        let a = read(dir, r.group, a_id)?;
        let suffix = if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        };
        aether_texts.push(match r.target {
            Target::PerElementNs(_) => {
                let per = a.ns / a.elements.unwrap_or(1.0);
                format!("{} ({:.2} M/s){suffix}", fmt_ns(per), 1_000.0 / per)
            }
            _ => format!("{}{suffix}", fmt_ns(a.ns)),
        });
        match r.target {
            Target::AbsoluteNs(ns) => absolute_met &= a.ns <= ns,
            Target::PerElementNs(ns) => absolute_met &= a.ns / a.elements.unwrap_or(1.0) <= ns,
            _ => {}
        }
        if let Some(ref_id) = ref_id {
            let b = read(dir, r.group, ref_id)?;
            ref_texts.push(format!("{}{suffix}", fmt_ns(b.ns)));
            let x = a.ns / b.ns;
            // The ratio's range from the two medians' confidence intervals.
            let (lo, hi) = (a.low / b.high, a.high / b.low);
            ratios.push((lo.min(x), hi.max(x)));
            if !matches!(r.target, Target::Replaces) {
                let range = if r.target.judged() && (hi - lo) >= 0.005 {
                    format!(" [{lo:.2}–{hi:.2}]")
                } else {
                    String::new()
                };
                // A reported row over a batch of elements also gives the throughput ratio.
                let ratio = match (r.target, a.elements) {
                    (Target::Report, Some(n)) if n > 1.0 => {
                        fmt_ratio(Target::ThroughputAtLeast(1.0), x)
                    }
                    _ => fmt_ratio(r.target, x),
                };
                ratio_texts.push(format!("{ratio}{range}{suffix}"));
            }
        }
    }
    let met = match r.target {
        Target::AbsoluteNs(_) | Target::PerElementNs(_) => {
            if absolute_met { "yes" } else { "**no**" }.to_string()
        }
        Target::Report | Target::Replaces => "—".into(),
        _ => verdict(
            r.target,
            &ratios,
            if orders.len() > 1 {
                "the orders' ratios straddle"
            } else {
                "the ratio's confidence range straddles"
            },
        ),
    };
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "—".to_string()
        } else {
            v.join("; ")
        }
    };
    Some(Line {
        carried_before: false,
        cells: [
            r.operation.to_string(),
            join(aether_texts),
            r.reference.map_or("—", |x| x.0).to_string(),
            join(ref_texts),
            join(ratio_texts),
            r.target_text.to_string(),
            met,
        ],
    })
}

/// A side of a probe scenario: per round, saves/s and p50 latency; pooled p50 and p99.
struct ProbeSide {
    rates: Vec<f64>,
    p50s: Vec<f64>,
    p50: f64,
    p99: f64,
}

fn probe_side(peer: &Value, mode: &str, writers: u64, id: &str) -> Option<ProbeSide> {
    let scenario = peer["scenarios"]
        .as_array()?
        .iter()
        .find(|s| s["mode"] == mode && s["writers"].as_u64() == Some(writers))?;
    let side = scenario["sides"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == id)?;
    let rounds = side["rounds"].as_array()?;
    let mut by_round: Vec<&Value> = rounds.iter().collect();
    by_round.sort_by_key(|r| r["round"].as_u64());
    Some(ProbeSide {
        rates: by_round
            .iter()
            .filter_map(|r| r["saves_per_s"].as_f64())
            .collect(),
        p50s: by_round
            .iter()
            .filter_map(|r| r["p50_us"].as_f64())
            .collect(),
        p50: side["p50_us"].as_f64()?,
        p99: side["p99_us"].as_f64()?,
    })
}

fn probe_line(peer: &Value, r: &ProbeRow) -> Option<Line> {
    let a = probe_side(peer, r.mode, r.writers, r.aether)?;
    let b = probe_side(peer, r.mode, r.writers, r.reference.1)?;
    // Time ratios (Aether ÷ reference) of the same round of the two sides.
    let ratios: Vec<f64> = match r.measure {
        Measure::Throughput => a.rates.iter().zip(&b.rates).map(|(x, y)| y / x).collect(),
        Measure::MedianLatency => a.p50s.iter().zip(&b.p50s).map(|(x, y)| x / y).collect(),
    };
    if ratios.is_empty() {
        return None;
    }
    let describe = |s: &ProbeSide| {
        let (lo, hi) = min_max(&s.rates);
        match r.measure {
            Measure::Throughput => format!(
                "{} saves/s ({}–{}); p50 {}, p99 {}",
                fmt_count(median(&s.rates)),
                fmt_count(lo),
                fmt_count(hi),
                fmt_us(s.p50),
                fmt_us(s.p99)
            ),
            Measure::MedianLatency => {
                let (l, h) = min_max(&s.p50s);
                format!(
                    "p50 {} ({}–{}), p99 {}; {} saves/s",
                    fmt_us(median(&s.p50s)),
                    fmt_us(l),
                    fmt_us(h),
                    fmt_us(s.p99),
                    fmt_count(median(&s.rates))
                )
            }
        }
    };
    let (lo, hi) = min_max(&ratios);
    let x = median(&ratios);
    let ratio = match r.measure {
        Measure::Throughput => format!(
            "{:.2}× throughput (rounds {:.2}–{:.2}×)",
            1.0 / x,
            1.0 / hi,
            1.0 / lo
        ),
        Measure::MedianLatency => format!("{x:.2}× (rounds {lo:.2}–{hi:.2}×)"),
    };
    Some(Line {
        carried_before: false,
        cells: [
            r.operation.to_string(),
            describe(&a),
            r.reference.0.to_string(),
            describe(&b),
            ratio,
            r.target_text.to_string(),
            {
                let pairs: Vec<(f64, f64)> = ratios.iter().map(|x| (*x, *x)).collect();
                let met = pairs
                    .iter()
                    .filter(|(x, _)| r.target.meets_ratio(*x))
                    .count();
                match verdict(r.target, &pairs, "") {
                    v if v.starts_with("unclear") => format!(
                        "unclear: {met} of {} round pairs within the target",
                        pairs.len()
                    ),
                    v => v,
                }
            },
        ],
    })
}

/// The steady-state section, from the probe's JSON.
fn probe_section(peer: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{PROBE_HEADING}\n");
    let _ = writeln!(
        md,
        "Written from `peer-throughput` (`{PEER}`, run by `scripts/bench`). Each side writes \
         for {} s at a time (a round); the sides take turns, the first one rotating every \
         round, {} rounds each after a short warm-up round; a writer appends to its own actor, \
         one save at a time; {}-byte payloads. nats-server {}, {}; machine: {}. The ratios in \
         the table above pair each round of one side with the same round of the other (both \
         within one turn of all sides).\n",
        peer["round_seconds"].as_f64().unwrap_or(0.0),
        peer["rounds"].as_u64().unwrap_or(0),
        peer["payload_bytes"].as_u64().unwrap_or(0),
        peer["nats_server"].as_str().unwrap_or("?"),
        peer["postgres"].as_str().unwrap_or("?"),
        peer["machine"].as_str().unwrap_or("?"),
    );
    for s in peer["scenarios"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "### {}, {} writer{} (load average {} before, {} after)\n",
            s["mode"].as_str().unwrap_or("?"),
            s["writers"],
            if s["writers"].as_u64() == Some(1) {
                ""
            } else {
                "s"
            },
            s["load_before"].as_str().unwrap_or("?"),
            s["load_after"].as_str().unwrap_or("?"),
        );
        let _ = writeln!(
            md,
            "| side | what it does | saves/s per round | median (min–max) | p50 | p99 |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for side in s["sides"].as_array().into_iter().flatten() {
            let mut rounds: Vec<&Value> = side["rounds"].as_array().into_iter().flatten().collect();
            rounds.sort_by_key(|r| r["round"].as_u64());
            let rates: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r["saves_per_s"].as_f64())
                .collect();
            let (lo, hi) = min_max(&rates);
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} ({}–{}) | {} | {} |",
                side["id"].as_str().unwrap_or("?"),
                side["what"].as_str().unwrap_or(""),
                rates
                    .iter()
                    .map(|x| fmt_count(*x))
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt_count(median(&rates)),
                fmt_count(lo),
                fmt_count(hi),
                fmt_us(side["p50_us"].as_f64().unwrap_or(0.0)),
                fmt_us(side["p99_us"].as_f64().unwrap_or(0.0)),
            );
        }
        let wal: Vec<String> = s["sides"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|side| {
                let x = side["wal_syncs_per_insert"].as_f64()?;
                Some(format!("`{}` {x:.2}", side["id"].as_str().unwrap_or("?")))
            })
            .collect();
        if !wal.is_empty() {
            let _ = writeln!(
                md,
                "\nPostgreSQL WAL syncs per insert (`pg_stat_wal`): {}.",
                wal.join(", ")
            );
        }
        let _ = writeln!(md);
    }
    md.trim_end().to_string()
}

/// A row from the timer-lateness run (`reaction-lateness`): how late timers' commands are
/// decided, with a number of timers pending. No ratio: lateness is measured against the due
/// time, and the reference column gives the server's share (its schedule firing).
struct LatenessRow {
    operation: &'static str,
    pending: u64,
    /// The target on the p99 in ms, if the row is judged.
    p99_ms: Option<f64>,
    target_text: &'static str,
}

const LATENESS_ROWS: &[LatenessRow] = &[
    LatenessRow {
        operation: "timer lateness, 1 000 pending (1 000 timers due 2–4 s ahead per round): the timer's command decided − due",
        pending: 1_000,
        p99_ms: Some(100.0),
        target_text: "p99 ≤ 100 ms",
    },
    LatenessRow {
        operation: "timer lateness, 100 000 pending (the same 1 000 per round, 99 000 more due an hour or two ahead)",
        pending: 100_000,
        p99_ms: None,
        target_text: "reported",
    },
];

const LATENESS_REFERENCE: &str = "the server's share: the fired message's stored time − due";

fn fmt_ms(ms: f64) -> String {
    fmt_ns(ms * 1_000_000.0)
}

/// The line of a lateness row, if the run's results hold its scenario.
fn lateness_line(run: &Value, r: &LatenessRow) -> Option<Line> {
    let s = run["scenarios"]
        .as_array()?
        .iter()
        .find(|s| s["pending"].as_u64() == Some(r.pending))?;
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    let rounds: Vec<f64> = s["round_p99_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let (lo, hi) = min_max(&rounds);
    let p99 = f("p99_ms");
    let met = match r.p99_ms {
        Some(t) if p99 <= t => "yes".to_string(),
        Some(_) => "**no**".to_string(),
        None => "—".to_string(),
    };
    Some(Line {
        carried_before: false,
        cells: [
            r.operation.to_string(),
            format!(
                "p50 {}, p99 {} (max {}; rounds' p99 {}–{}; {} timers in {} rounds)",
                fmt_ms(f("p50_ms")),
                fmt_ms(p99),
                fmt_ms(f("max_ms")),
                fmt_ms(lo),
                fmt_ms(hi),
                fmt_count(f("timers")),
                s["rounds"].as_u64().unwrap_or(0),
            ),
            LATENESS_REFERENCE.to_string(),
            format!(
                "p50 {}, p99 {} (server)",
                fmt_ms(f("server_p50_ms")),
                fmt_ms(f("server_p99_ms"))
            ),
            "—".to_string(),
            r.target_text.to_string(),
            met,
        ],
    })
}

fn main() {
    let mut positional = Vec::new();
    let mut peer_path = None;
    let mut keep_rows = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--peer" {
            peer_path = args.next();
        } else if a == "--keep-rows" {
            keep_rows = true;
        } else {
            positional.push(a);
        }
    }
    if positional.len() < 2 {
        eprintln!(
            "usage: bench-report <criterion dir> <output.md> [footprint.json] [--peer peer.json] \
             [--keep-rows]"
        );
        std::process::exit(2);
    }
    let dir = PathBuf::from(&positional[0]);
    let out = PathBuf::from(&positional[1]);
    let server = std::env::var("AETHER_BENCH_SERVER").unwrap_or_else(|_| "unknown".into());
    let machine = std::env::var("AETHER_BENCH_MACHINE").unwrap_or_else(|_| "unknown".into());
    let load = std::env::var("AETHER_BENCH_LOAD")
        .ok()
        .filter(|s| !s.is_empty());
    let prev = previous(&out);
    let peer: Option<Value> = peer_path.as_ref().and_then(|p| {
        let v = std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if v.is_none() {
            eprintln!("no steady-state results in {p}; keeping the previous ones");
        }
        v
    });

    let mut lines = Vec::new();
    // Whether rows are carried from the run that wrote the file being replaced, or from the
    // runs that file had already carried them from.
    let (mut from_prev_run, mut from_earlier) = (false, false);
    let mut missing = Vec::new();
    for r in ROWS {
        let ref_label = r.reference.map_or("—", |x| x.0);
        if let Some(line) = criterion_line(&dir, r) {
            lines.push(line);
            continue;
        }
        let kept_line = if keep_rows { kept(&prev, r) } else { None };
        let found = kept_line
            .or_else(|| carried(&prev, (r.operation, ref_label), r.target, false))
            .or_else(|| match r.earlier {
                Earlier::Renamed(op, reference) => carried(&prev, (op, reference), r.target, false)
                    .map(|mut l| {
                        l.cells[0] = r.operation.to_string();
                        l.cells[2] = ref_label.to_string();
                        l.cells[5] = r.target_text.to_string();
                        l
                    }),
                Earlier::Changed(op, reference) => carried(&prev, (op, reference), r.target, true)
                    .map(|mut l| {
                        l.cells[0] = r.operation.to_string();
                        l.cells[2] = ref_label.to_string();
                        l.cells[5] = r.target_text.to_string();
                        l
                    }),
                Earlier::Same | Earlier::New => None,
            });
        match found {
            Some(mut line) => {
                line.cells[5] = r.target_text.to_string();
                from_earlier |= line.carried_before;
                from_prev_run |= !line.carried_before;
                lines.push(line);
            }
            None => missing.push(format!("{} (`{}`)", r.operation, r.group)),
        }
    }
    for r in PROBE_ROWS {
        let key = (r.operation.to_string(), r.reference.0.to_string());
        let kept_line = match prev.rows.get(&key) {
            Some(cells) if keep_rows => Some(Line {
                carried_before: cells[6].contains("not rerun"),
                cells: cells.clone(),
            }),
            _ => None,
        };
        match peer.as_ref().and_then(|p| probe_line(p, r)) {
            Some(line) => lines.push(line),
            None => match kept_line
                .or_else(|| carried(&prev, (r.operation, r.reference.0), r.target, false))
            {
                Some(line) => {
                    from_earlier |= line.carried_before;
                    from_prev_run |= !line.carried_before;
                    lines.push(line);
                }
                None if peer.is_some() => missing.push(format!(
                    "{} (side `{}` not in the probe's run)",
                    r.operation, r.aether
                )),
                None => missing.push(format!("{} (`peer-throughput`)", r.operation)),
            },
        }
    }

    // The timer-lateness run writes its results beside the criterion directory.
    let lateness: Option<Value> = dir
        .parent()
        .map(|p| p.join("reaction-lateness.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok());
    for r in LATENESS_ROWS {
        let key = (r.operation.to_string(), LATENESS_REFERENCE.to_string());
        let kept_line = match prev.rows.get(&key) {
            Some(cells) if keep_rows => Some(Line {
                carried_before: cells[6].contains("not rerun"),
                cells: cells.clone(),
            }),
            _ => None,
        };
        let target = if r.p99_ms.is_some() {
            Target::AbsoluteNs(0.0)
        } else {
            Target::Report
        };
        match lateness.as_ref().and_then(|v| lateness_line(v, r)) {
            Some(line) => lines.push(line),
            None => match kept_line
                .or_else(|| carried(&prev, (r.operation, LATENESS_REFERENCE), target, false))
            {
                Some(line) => {
                    from_earlier |= line.carried_before;
                    from_prev_run |= !line.carried_before;
                    lines.push(line);
                }
                None => missing.push(format!("{} (`reaction-lateness`)", r.operation)),
            },
        }
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Each Aether operation is measured next to its floor (the raw NATS call it wraps) or its \
         peer, doing the same work, in the same run. Criterion rows: medians; ratio = Aether's \
         time / the reference's time (below 1 is faster), with the range the two medians' \
         confidence intervals allow in brackets. Steady-state rows: the sides take turns in \
         rounds of a few seconds, and the ratio is the median over pairs of rounds from the \
         same turn, with their range. A verdict is given only where both sides do the same \
         work; \"unclear\" where the spread straddles the target. Written by `scripts/bench` \
         from real runs.\n"
    );
    // With --keep-rows, the rows kept as they stand still belong to the runs the description
    // above the table names, so it stays too.
    let keep_header = keep_rows && !prev.header.is_empty();
    if keep_header {
        for line in &prev.header {
            let _ = writeln!(md, "{line}");
        }
    } else {
        let _ = writeln!(md, "- nats-server: {server}");
        let _ = writeln!(md, "- machine: {machine}");
        if let Some(load) = &load {
            let _ = writeln!(md, "- load average during this run: {load}");
        }
    }
    if (from_prev_run || from_earlier) && !keep_header {
        let prev_run = format!(
            "nats-server: {}; machine: {}",
            prev.server.as_deref().unwrap_or("unknown"),
            prev.machine.as_deref().unwrap_or("unknown")
        );
        let runs = match (from_prev_run, from_earlier, &prev.earlier) {
            (true, true, Some(earlier)) => format!("{prev_run}; and before that: {earlier}"),
            (false, true, Some(earlier)) => earlier.clone(),
            _ => prev_run,
        };
        let _ = writeln!(md, "{EARLIER_PREFIX}{runs})");
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| operation | Aether (median) | reference | reference (median) | ratio | target | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for l in &lines {
        let _ = writeln!(md, "{}", l.render());
    }

    let footprint = positional
        .get(2)
        .and_then(|fp| std::fs::read_to_string(fp).ok())
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    match footprint {
        Some(v) => {
            let _ = writeln!(md, "\n## Memory\n");
            let _ = writeln!(md, "| measure | value | target | met |");
            let _ = writeln!(md, "|---|---|---|---|");
            for r in v.as_array().into_iter().flatten() {
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
        None => {
            if let Some(text) = &prev.memory {
                let note = "(not rerun in this run: the figures of the earlier run)";
                let _ = writeln!(md);
                if text.contains(note) {
                    md.push_str(text);
                } else {
                    let _ = write!(
                        md,
                        "{}",
                        text.replacen("## Memory\n", &format!("## Memory\n\n{note}\n"), 1)
                    );
                }
                let _ = writeln!(md);
            }
        }
    }

    match &peer {
        Some(p) => {
            let _ = writeln!(md, "\n{}", probe_section(p));
        }
        None => {
            if let Some(text) = &prev.probe {
                let _ = writeln!(md, "\n{text}");
            }
        }
    }

    // The notes on the rows, and the figures of other runs (the soak, the PostgreSQL peer's
    // method and earlier runs, the scale run), are written by hand in benches/notes and exist
    // only on this page. A missing one is an error: the page would silently lose a section.
    let notes = Path::new(env!("CARGO_MANIFEST_DIR")).join("notes");
    for note in NOTES {
        let path = notes.join(note);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                std::process::exit(1);
            }
        };
        let _ = writeln!(md);
        md.push_str(note_body(&text).trim_end());
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\n## Reproduce\n");
    let _ = writeln!(
        md,
        "`scripts/bench` runs everything and rewrites this file; `scripts/bench --bench <name>` \
         runs one group, and `scripts/bench --report-only` rewrites it from the results on disk \
         (rows whose results are missing keep their earlier figures, marked; with \
         `--keep-rows` they stay as they are, for carrying an edited note into the page). The \
         notes on this page are written in `benches/notes/`. One group at a time:\n"
    );
    let mut cmds: Vec<&str> = ROWS.iter().map(|r| r.reproduce).collect();
    cmds.push(PEER);
    cmds.push(LATENESS);
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
        let _ = writeln!(
            md,
            "\nNot measured yet (no results in this run, no earlier figures): {}",
            missing.join(", ")
        );
    }
    if let Err(e) = std::fs::write(&out, md) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}
