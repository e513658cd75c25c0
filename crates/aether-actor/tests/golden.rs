//! Golden files of what the actor runtime stores for a typed actor (`tests/golden/<release>/`):
//!
//! - `events.jsonl`: the stored events of one actor, one per line, as `Event::to_json_bytes`
//!   writes them: the typed event's variant as the event type and its fields as the payload,
//!   the schema version, the command's id, correlation and causation ids and the kept reply in
//!   the metadata.
//! - `snapshot.json`: the snapshot the runtime took of the typed state (with the state's
//!   schema version and the ids of the latest commands).
//!
//! The rule: a released golden file is never edited. A change to what the runtime stores adds
//! a new release directory next to the old ones, and every old directory must keep being read
//! back to the same typed events and state (and keep its commands recognised as applied), so
//! that a rolling upgrade rebuilds actors the previous release wrote. The current release's
//! files (the crate's `major.minor`) must also be exactly what the current runtime writes,
//! once the event ids and timestamps (random and the clock's) are replaced by fixed ones. The
//! expected values are written out below, not produced by the encoder under test; every
//! release's files hold the same fixture (should a later release's differ, make the
//! expectations depend on the release).
//!
//! `AETHER_BLESS_GOLDEN=1` rewrites the current release's files from what the runtime
//! writes; older directories are never written. Without it, the test never writes.

use std::sync::Arc;

use aether_actor::{
    Actor, ActorHost, CommandMeta, DomainEvent, Envelope, EventCodec, Handled, RuntimeConfig,
    SnapshotPolicy,
};
use aether_core::{ActorKey, Event, EventStore, Snapshot, SnapshotStore};
use aether_store::InMemoryEventStore;
use aether_testkit::golden::GoldenFiles;
use serde::{Deserialize, Serialize};

const EVENTS_FILE: &str = "events.jsonl";
const SNAPSHOT_FILE: &str = "snapshot.json";
const ACTOR_ID: &str = "ledger-1";

fn golden() -> GoldenFiles {
    GoldenFiles::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION"))
}

// The actor of the fixture.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[domain_event(schema_version = 3)]
enum LedgerEvent {
    Opened {
        owner: String,
    },
    #[serde(rename = "MoneyIn")]
    Deposited {
        amount: i64,
        note: Option<String>,
    },
    Frozen,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Ledger {
    owner: String,
    balance: i64,
    frozen: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LedgerCommand {
    Open(String),
    Deposit(i64),
    Freeze,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("refused")]
struct Refused;

struct LedgerActor;

impl Actor for LedgerActor {
    type State = Ledger;
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Reply = i64;
    type Error = Refused;
    const TYPE: &'static str = "ledger";
    const STATE_VERSION: u32 = 2;

    async fn decide(
        &self,
        _: &str,
        _: &Ledger,
        command: &LedgerCommand,
    ) -> Result<Vec<LedgerEvent>, Refused> {
        Ok(match command {
            LedgerCommand::Open(owner) => vec![LedgerEvent::Opened {
                owner: owner.clone(),
            }],
            LedgerCommand::Deposit(amount) => vec![LedgerEvent::Deposited {
                amount: *amount,
                note: (*amount > 100).then(|| "large".to_string()),
            }],
            LedgerCommand::Freeze => vec![LedgerEvent::Frozen],
        })
    }

    fn apply(state: &mut Ledger, event: &LedgerEvent) {
        match event {
            LedgerEvent::Opened { owner } => state.owner = owner.clone(),
            LedgerEvent::Deposited { amount, .. } => state.balance += amount,
            LedgerEvent::Frozen => state.frozen = true,
        }
    }

    fn reply(state: &Ledger, _: &LedgerCommand, _: &[LedgerEvent]) -> i64 {
        state.balance
    }
}

/// The commands of the fixture, with their ids; a snapshot is taken after the third.
fn commands() -> Vec<(LedgerCommand, CommandMeta)> {
    let meta = |id: &str| CommandMeta {
        command_id: Some(id.into()),
        correlation_id: Some("corr-1".into()),
        causation_id: Some(format!("cause-of-{id}")),
        user_id: Some("u-7".into()),
        ..CommandMeta::default()
    };
    vec![
        (LedgerCommand::Open("Ada".into()), meta("cmd-1")),
        (LedgerCommand::Deposit(250), meta("cmd-2")),
        (LedgerCommand::Deposit(-100), meta("cmd-3")),
        (LedgerCommand::Freeze, meta("cmd-4")),
    ]
}

/// The typed events and state the files must read back to, written out by hand.
fn expected_events() -> Vec<LedgerEvent> {
    vec![
        LedgerEvent::Opened {
            owner: "Ada".into(),
        },
        LedgerEvent::Deposited {
            amount: 250,
            note: Some("large".into()),
        },
        LedgerEvent::Deposited {
            amount: -100,
            note: None,
        },
        LedgerEvent::Frozen,
    ]
}

fn expected_state() -> Ledger {
    Ledger {
        owner: "Ada".into(),
        balance: 150,
        frozen: true,
    }
}

/// The state in the snapshot, after the third event.
fn expected_snapshot_state() -> Ledger {
    Ledger {
        owner: "Ada".into(),
        balance: 150,
        frozen: false,
    }
}

fn config() -> RuntimeConfig {
    RuntimeConfig::default().snapshot(SnapshotPolicy::every(3))
}

/// Replaces what is random or the clock's in a stored event or snapshot with fixed values.
fn fixed_time() -> chrono::DateTime<chrono::Utc> {
    "2026-01-02T03:04:05.123456789Z".parse().expect("time")
}

#[tokio::test]
async fn golden_current_release_is_what_the_runtime_stores() {
    let store = Arc::new(InMemoryEventStore::new());
    let host = ActorHost::new(LedgerActor, store.clone(), config());
    for (command, meta) in commands() {
        host.dispatch(ACTOR_ID, Envelope::new(command).with_meta(meta))
            .await
            .expect("handled");
    }
    let key = ActorKey::new("ledger", ACTOR_ID);
    let mut events = Vec::new();
    for (i, mut e) in store
        .events_of(key, 0)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        e.id = format!("00000000-0000-4000-8000-{:012}", i + 1);
        e.timestamp = fixed_time();
        events.extend(e.to_json_bytes().unwrap());
        events.push(b'\n');
    }
    let mut snapshot = store
        .latest_snapshot_of(key)
        .await
        .unwrap()
        .expect("a snapshot after the third event");
    snapshot.timestamp = fixed_time();
    let snapshot = snapshot.to_json_bytes().unwrap();

    let golden = golden();
    golden.pin(EVENTS_FILE, &events);
    golden.pin(SNAPSHOT_FILE, &snapshot);
}

#[tokio::test]
async fn golden_every_release_reads_back() {
    let golden = golden();
    for release in golden.releases() {
        let events: Vec<Event> = golden
            .read(&release, EVENTS_FILE)
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Event::from_json_bytes(l).expect("a stored event"))
            .collect();
        let snapshot =
            Snapshot::from_json_bytes(&golden.read(&release, SNAPSHOT_FILE)).expect("snapshot");

        // Each event decodes to its typed value.
        let codec = EventCodec::<LedgerEvent>::default();
        let typed: Vec<LedgerEvent> = events
            .iter()
            .map(|e| codec.decode_for("ledger", e).expect("decodes"))
            .collect();
        assert_eq!(typed, expected_events(), "{release}/{EVENTS_FILE}");
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1, 2, 3, 4],
            "{release}"
        );

        // The snapshot's state decodes, in the version the actor expects.
        assert_eq!(snapshot.version, 3, "{release}/{SNAPSHOT_FILE}");
        assert_eq!(snapshot.schema_version, Some(LedgerActor::STATE_VERSION));
        assert_eq!(
            serde_json::from_value::<Ledger>(serde_json::Value::Object(snapshot.state.clone()))
                .expect("state"),
            expected_snapshot_state(),
            "{release}/{SNAPSHOT_FILE}"
        );

        // A runtime over the stored events and snapshot rebuilds the actor.
        let store = Arc::new(InMemoryEventStore::new());
        store
            .save_events(ACTOR_ID, &events)
            .await
            .expect("stored events");
        store.save_snapshot(&snapshot).await.expect("snapshot");
        let host = ActorHost::new(LedgerActor, store.clone(), config());
        let (state, version) = host.load_state(ACTOR_ID).await.expect("loads");
        assert_eq!((state, version), (expected_state(), 4), "{release}");
        // And recognises the commands it recorded: before the snapshot (from its command
        // ids) and after it (from the events' metadata).
        for (command, meta) in commands().into_iter().skip(1) {
            let id = meta.command_id.clone();
            let outcome = host
                .dispatch(ACTOR_ID, Envelope::new(command).with_meta(meta))
                .await
                .expect("handled");
            assert!(
                matches!(
                    outcome,
                    Handled::AlreadyApplied { version: 4, .. } | Handled::Reply { version: 4, .. }
                ),
                "{release}: {id:?} applied again: {outcome:?}"
            );
        }
        assert_eq!(
            store
                .latest_version_of(ActorKey::new("ledger", ACTOR_ID))
                .await
                .unwrap(),
            4,
            "{release}: nothing written again"
        );
    }
}
