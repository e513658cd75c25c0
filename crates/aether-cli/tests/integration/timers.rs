//! `aether timers` against a real nats-server: timers set through `JetStreamTimers`, listed
//! by due time with the reactor's backlog from the projections' bucket, filtered, escaped; a
//! missing timers stream is one line (before 2.12, saying schedules need 2.12).

use std::process::Output;

use aether_core::{ActorKey, Event, EventStore, LogPosition, StorageKind, TimerRecord};
use aether_projection::{NatsProjectionStore, ParkedEvent, ProjectionStore};
use aether_reactions::{JetStreamTimers, TimersConfig};
use aether_testkit::NatsServer;
use chrono::{DateTime, Utc};

use crate::nats::{aether, assert_one_line_error, stdout};

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

fn at(from_now: chrono::Duration) -> DateTime<Utc> {
    let t = Utc::now() + from_now;
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a time")
}

/// Data rows of the timers table: (type, id, name).
fn rows(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .skip_while(|l| !l.starts_with("DUE"))
        .skip(1)
        .take_while(|l| l.starts_with("20"))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells[1].into(), cells[2].into(), cells[3].into())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_are_listed_by_due_time_with_the_reactors_backlog_and_escaped() {
    let server = NatsServer::start().unwrap();
    let url = server.url();

    let missing = run(&["timers", "--nats", &url]).await;
    assert_one_line_error(&missing, "timers stream AETHER_TIMERS does not exist");
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    if !server.version().at_least(2, 12) {
        // No message schedules, so no timers: the error says so.
        assert_one_line_error(&missing, "2.12");
        return;
    }

    let timers = JetStreamTimers::open(
        js.clone(),
        TimersConfig {
            storage: StorageKind::Memory,
            ..TimersConfig::default()
        },
    )
    .await
    .unwrap();
    let hostile = "h\u{1b}]0;owned\u{7}\u{9b}2J\u{202e}";
    for (ty, id, due) in [
        ("hold", "h-1", at(chrono::Duration::hours(1))),
        ("hold", hostile, at(chrono::Duration::hours(2))),
        ("payment", "p-1", at(chrono::Duration::minutes(30))),
    ] {
        let record = TimerRecord {
            name: "expire".into(),
            due,
            command: serde_json::json!("Expire"),
        };
        timers.set(ActorKey::new(ty, id), &record).await.unwrap();
    }
    // Not a timer: counted as unreadable.
    js.publish(
        format!(
            "aether.timers.set.hold.{}.expire",
            aether_nats::subject::encode_actor_id("junk")
        ),
        "\u{1b}]0;junk\u{7}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // The reactor's partitions: one behind the head by two messages, one with a parked event.
    let store = crate::nats::store(&url, "tim").await;
    for v in 1..=3 {
        store
            .save_event(&Event::new("Noted", "acc-1", v))
            .await
            .unwrap();
    }
    let state = NatsProjectionStore::open(
        client,
        aether_projection::DEFAULT_PROJECTION_BUCKET,
        StorageKind::Memory,
    )
    .await
    .unwrap();
    state
        .save_checkpoint("aether-reactor.p0", LogPosition::new(1, 0))
        .await
        .unwrap();
    state
        .save_checkpoint("aether-reactor.p1", LogPosition::new(3, 0))
        .await
        .unwrap();
    state
        .park(
            "aether-reactor.p1",
            &ParkedEvent {
                position: LogPosition::new(2, 0),
                event: Event::new("Noted", "acc-1", 2),
                error: "target unavailable".into(),
                attempts: 21,
            },
        )
        .await
        .unwrap();

    let out = run(&["timers", "--namespace", "tim", "--nats", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(
            !text.contains(bad),
            "{bad:?} reached the terminal: {text:?}"
        );
    }
    assert_eq!(
        rows(&text),
        [
            ("payment".into(), "p-1".into(), "expire".into()),
            ("hold".into(), "h-1".into(), "expire".into()),
            (
                "hold".into(),
                "h\\x1b]0;owned\\x07\\u{9b}2J\\u{202e}".into(),
                "expire".into()
            ),
        ],
        "{text}"
    );
    assert!(text.contains("in 29m") || text.contains("in 30m"), "{text}");
    assert!(
        text.contains("3 pending, 0 fired awaiting delivery, 1 unreadable"),
        "{text}"
    );
    assert!(
        text.contains("reactor aether-reactor: 2 partition(s), lag at most 2, 1 parked"),
        "{text}"
    );
    let partitions: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("aether-reactor.p"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        partitions,
        [
            vec!["aether-reactor.p0", "1.0", "2", "0"],
            vec!["aether-reactor.p1", "3.0", "0", "1"]
        ],
        "{text}"
    );

    // One actor type, the earliest one only.
    let out = run(&[
        "timers",
        "--actor-type",
        "hold",
        "--limit",
        "1",
        "--nats",
        &url,
    ])
    .await;
    let text = stdout(&out);
    assert_eq!(
        rows(&text),
        [("hold".into(), "h-1".into(), "expire".into())],
        "{text}"
    );
    assert!(text.contains("2 pending (1 due first shown)"), "{text}");
    // Without the event stream of its namespace, the lag is not known.
    assert!(text.contains("lag at most unknown"), "{text}");

    // One actor, of any type.
    let out = run(&["timers", "--actor", "p-1", "--nats", &url]).await;
    let text = stdout(&out);
    assert_eq!(
        rows(&text),
        [("payment".into(), "p-1".into(), "expire".into())],
        "{text}"
    );

    // Bad filters: one line each, before or without reading anything.
    let out = run(&["timers", "--actor-type", "a.>", "--nats", &url]).await;
    assert_one_line_error(&out, "actor type");
    let out = run(&["timers", "--limit", "5000", "--nats", &url]).await;
    assert_one_line_error(&out, "5000");
    let out = run(&["timers", "--stream", "NOPE", "--nats", &url]).await;
    assert_one_line_error(&out, "timers stream NOPE does not exist");
}
