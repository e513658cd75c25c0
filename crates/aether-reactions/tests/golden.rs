//! Golden files of what reactions persist (`tests/golden/<release>/`):
//!
//! - `01-timer-schedule.msg`: a timer as `JetStreamTimers::set` stores it in the timers stream
//!   (a message schedule): the subject on the first line, the `Nats-Schedule*` headers
//!   (`Name: value`, sorted by name), an empty line, and the payload's exact bytes. The server
//!   copies the payload to the `due` subject when the timer fires, and dispatchers decode it
//!   there.
//! - `reactions.json`: the `reactions` metadata value an event records its timer changes and
//!   effects in (read by the reactor from the event store, whatever release wrote it).
//! - `ids.txt`: the deterministic command ids of a timer's fire, an effect and a process
//!   step. They are stored (in actors' idempotency records and snapshots), so an id computed
//!   by a new release for the same timer or effect must equal the old one: these are checked
//!   against the current code for every release.
//!
//! The rule: a released golden file is never edited. A change to a persisted format adds a
//! new release directory next to the old ones, and every old directory must keep reading back
//! to the same values, so that a rolling upgrade carries out what the previous release
//! recorded. The current release's files (the crate's `major.minor`) must also be exactly what
//! the current code writes. The expected values are written out below, not produced by the
//! encoder under test; every release's files hold the same fixture (should a later release's
//! differ, make the expectations depend on the release).
//!
//! `AETHER_BLESS_GOLDEN=1` rewrites the current release's files from what the code writes;
//! older directories are never written. Without it, the test never writes.

use aether_core::{
    effect_id, timer_command_id, ActorKey, EffectRecord, Event, Reactions, StorageKind, TimerOp,
    TimerRecord, METADATA_REACTIONS,
};
use aether_reactions::{
    routed_command_id, JetStreamTimers, PendingFilter, PendingTimer, TimersConfig, TimersView,
};
use aether_testkit::golden::{GoldenFiles, GoldenMessage};
use aether_testkit::NatsServer;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const TIMER_FILE: &str = "01-timer-schedule.msg";
const REACTIONS_FILE: &str = "reactions.json";
const IDS_FILE: &str = "ids.txt";

fn golden() -> GoldenFiles {
    GoldenFiles::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION"))
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("a time")
}

// The fixture, written out by hand.

const OWNER_TYPE: &str = "order";
const OWNER_ID: &str = "order 1/ü";

/// Far in the future, so that the schedule never fires while a test runs.
fn timer() -> TimerRecord {
    TimerRecord {
        name: "expire-hold".into(),
        due: at("2099-01-02T03:04:05.678Z"),
        command: json!({"Expire": {"reason": "timeout", "attempt": 1}}),
    }
}

fn reactions() -> Reactions {
    Reactions {
        timers: vec![
            TimerOp::Set(TimerRecord {
                name: "remind".into(),
                due: at("2026-01-02T03:04:05.250Z"),
                command: json!("Remind"),
            }),
            TimerOp::Cancel {
                name: "expire-hold".into(),
            },
        ],
        effects: vec![
            EffectRecord::Command {
                actor_type: "payment".into(),
                actor_id: "pay-9".into(),
                command: json!({"Capture": {"amount": 12.5}}),
            },
            EffectRecord::Publish {
                subject: "shop.emails".into(),
                payload: json!({"to": "ada@example.com", "template": "receipt"}),
            },
        ],
    }
}

/// The ids, as `kind value` lines.
fn ids_now() -> String {
    let owner = ActorKey::new(OWNER_TYPE, OWNER_ID);
    let t = timer();
    format!(
        "timer {}\ntimer-record {}\neffect {}\nrouted {}\n",
        timer_command_id(&t.name, t.due),
        t.command_id(),
        effect_id(owner, 7, 1),
        routed_command_id(owner, 7),
    )
}

fn config() -> TimersConfig {
    TimersConfig {
        storage: StorageKind::Memory,
        ..TimersConfig::default()
    }
}

/// On a server without message schedules (before 2.12) timers are refused, typed: checks
/// that, and says the test ends there.
async fn refused_before_2_12(server: &NatsServer, js: &async_nats::jetstream::Context) -> bool {
    if server.version().at_least(2, 12) {
        return false;
    }
    match JetStreamTimers::open(js.clone(), config()).await {
        Err(aether_core::Error::Unsupported { .. }) => true,
        other => panic!("timers on a server before 2.12: {:?}", other.err()),
    }
}

#[tokio::test]
async fn golden_timer_schedule_is_what_timers_write() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    if refused_before_2_12(&server, &js).await {
        return;
    }
    let timers = JetStreamTimers::open(js.clone(), config()).await.unwrap();
    timers
        .set(ActorKey::new(OWNER_TYPE, OWNER_ID), &timer())
        .await
        .unwrap();
    let stream = js.get_stream(&config().stream).await.unwrap();
    let stored = stream.get_raw_message(1).await.unwrap();
    // Only the schedule's headers: the others are the server's bookkeeping.
    let written = GoldenMessage {
        subject: stored.subject.to_string(),
        headers: stored
            .headers
            .iter()
            .filter(|(n, _)| AsRef::<str>::as_ref(*n).starts_with("Nats-Schedule"))
            .map(|(n, v)| {
                (
                    AsRef::<str>::as_ref(n).to_string(),
                    v.iter().map(|v| v.as_str().to_string()).collect(),
                )
            })
            .collect(),
        payload: stored.payload.to_vec(),
    };
    golden().pin(TIMER_FILE, &written.render());
}

#[tokio::test]
async fn golden_timer_schedules_of_every_release_read_back() {
    let golden = golden();
    for release in golden.releases() {
        let server = NatsServer::start().expect("nats-server");
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        if refused_before_2_12(&server, &js).await {
            return;
        }
        // The timers create their stream; the golden schedule goes in raw.
        drop(JetStreamTimers::open(js.clone(), config()).await.unwrap());
        let m = golden.read_message(&release, TIMER_FILE);
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in &m.headers {
            for value in values {
                headers.append(name.as_str(), value.as_str());
            }
        }
        js.publish_with_headers(m.subject.clone(), headers, m.payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let view = TimersView::open(js.clone(), config()).await.unwrap();
        let pending = view.pending(&PendingFilter::default()).await.unwrap();
        let t = timer();
        assert_eq!(
            (pending.total, pending.unreadable, pending.next),
            (
                1,
                0,
                vec![PendingTimer {
                    actor_type: OWNER_TYPE.into(),
                    actor_id: OWNER_ID.into(),
                    name: t.name.clone(),
                    due: t.due,
                }]
            ),
            "{release}/{TIMER_FILE}"
        );
        // What the dispatcher decodes when the server delivers the payload on the due
        // subject, field by field.
        let payload: Value = serde_json::from_slice(&m.payload).expect("json");
        assert_eq!(
            payload,
            json!({
                "actorType": OWNER_TYPE,
                "actorId": OWNER_ID,
                "name": "expire-hold",
                "due": "2099-01-02T03:04:05.678Z",
                "command": {"Expire": {"reason": "timeout", "attempt": 1}},
            }),
            "{release}/{TIMER_FILE}"
        );
        assert!(
            m.header("Nats-Schedule-Target")
                .is_some_and(|t| t.starts_with("aether.timers.due.order.")),
            "{release}/{TIMER_FILE}: {:?}",
            m.headers
        );
    }
}

#[test]
fn golden_reactions_metadata_is_what_events_record() {
    let mut event = Event::new("Held", OWNER_ID, 1);
    reactions().stamp(&mut event);
    let written = event
        .metadata
        .get(METADATA_REACTIONS)
        .expect("stamped")
        .clone();
    golden().pin(REACTIONS_FILE, written.as_bytes());
}

#[test]
fn golden_reactions_metadata_of_every_release_reads_back() {
    let files = golden();
    for release in files.releases() {
        let golden = String::from_utf8(files.read(&release, REACTIONS_FILE)).expect("utf-8");
        let mut event = Event::new("Held", OWNER_ID, 1);
        event.set_metadata(METADATA_REACTIONS, golden);
        assert_eq!(
            Reactions::of(&event).expect("readable"),
            Some(reactions()),
            "{release}/{REACTIONS_FILE}"
        );
    }
}

#[test]
fn golden_command_ids_stay_the_same() {
    let now = ids_now();
    let files = golden();
    files.bless(IDS_FILE, now.as_bytes());
    for release in files.releases() {
        let golden = String::from_utf8(files.read(&release, IDS_FILE)).expect("utf-8");
        assert_eq!(
            golden, now,
            "{release}/{IDS_FILE}: a stored command id is computed differently now, so a \
             timer or effect recorded by that release would be applied twice"
        );
    }
    // Spelled out, independently of the functions under test.
    assert_eq!(
        now,
        "timer timer:expire-hold@4071006245678\n\
         timer-record timer:expire-hold@4071006245678\n\
         effect effect:order/order 1/ü@7#1\n\
         routed routed:order/order 1/ü@7\n"
    );
}
