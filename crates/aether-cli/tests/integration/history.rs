//! `aether history compact|remove-retired` against a real nats-server: a dry run counts and
//! writes nothing; a compaction prints one line per actor, the actors refused are named each
//! in a line and fail the command after the others are done, and `events` still reads every
//! version across the cut; a stream that is not compactable is refused whole; a retired
//! actor's history is removed only with `--yes`, after its grace period; bad input fails
//! before connecting.

use std::process::Output;

use aether_core::{ActorKey, Event, EventStore, Snapshot, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde_json::json;

use crate::nats::{aether, assert_one_line_error, stdout};

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

/// `aether <args> --namespace <ns> --nats <url>`.
async fn history(url: &str, namespace: &str, args: &[&str]) -> Output {
    let args = args
        .iter()
        .copied()
        .chain(["--namespace", namespace, "--nats", url])
        .map(String::from)
        .collect();
    run(args).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn open(url: &str, config: JetStreamConfig) -> JetStreamEventStore {
    let client = async_nats::connect(url).await.unwrap();
    JetStreamEventStore::new(client, config).await.unwrap()
}

fn compactable(namespace: &str) -> JetStreamConfig {
    JetStreamConfig::default()
        .namespace(namespace)
        .compactable(true)
}

/// Events 1 to `to` of `id` (typed when `actor_type` is given), one message each.
async fn write(store: &JetStreamEventStore, actor_type: Option<&str>, id: &str, to: u64) {
    for v in 1..=to {
        let event = Event::new("Moved", id, v).with_field("n", v);
        let event = match actor_type {
            Some(t) => event.with_actor_type(t),
            None => event,
        };
        store.save_event(&event).await.unwrap();
    }
}

async fn snapshot(store: &JetStreamEventStore, actor_type: Option<&str>, id: &str, version: u64) {
    let state = json!({ "at": version }).as_object().cloned().unwrap();
    let mut s = Snapshot::new(id, version, state);
    s.actor_type = actor_type.map(String::from);
    store.save_snapshot(&s).await.unwrap();
}

async fn messages(store: &JetStreamEventStore) -> u64 {
    store.stream_info().await.unwrap().state.messages
}

/// The versions `aether events` prints for an actor, from `from`.
async fn versions(url: &str, namespace: &str, actor: ActorKey<'_>, from: u64) -> Vec<u64> {
    let from = from.to_string();
    let mut args = vec!["events", actor.actor_id, "--json", "--from", &from];
    if let Some(t) = actor.actor_type {
        args.extend(["--type", t]);
    }
    let out = history(url, namespace, &args).await;
    assert!(out.status.success(), "{out:?}");
    stdout(&out)
        .lines()
        .map(|l| {
            let e: Event = serde_json::from_str(l).unwrap();
            assert_eq!(e.actor_id, actor.actor_id);
            e.version
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_compact_archives_old_events_and_events_still_reads_every_version() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let ns = "hist";
    let store = open(&url, compactable(ns)).await;
    let account = Some("account");
    // a-1: 10 events, snapshots at 3 and 6; a-2: no snapshot; a-3: snapshot at its last.
    write(&store, account, "a-1", 10).await;
    snapshot(&store, account, "a-1", 3).await;
    snapshot(&store, account, "a-1", 6).await;
    write(&store, account, "a-2", 3).await;
    write(&store, account, "a-3", 4).await;
    snapshot(&store, account, "a-3", 4).await;
    let total = messages(&store).await;

    // A dry run counts, writes nothing.
    let out = history(
        &url,
        ns,
        &[
            "history",
            "compact",
            "a-1",
            "--type",
            "account",
            "--dry-run",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "would compact account/a-1: history would start at snapshot version 6; would archive \
         5 events, remove 5 messages and any older snapshots\n"
    );
    assert_eq!(messages(&store).await, total);

    // Three actors: the one without a snapshot is named and fails the command, after the
    // one behind it is done.
    let out = history(
        &url,
        ns,
        &[
            "history", "compact", "a-1", "a-2", "a-3", "--type", "account",
        ],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "compacted account/a-1: history starts at snapshot version 6; 5 events archived, 5 \
         messages removed, 1 old snapshot removed\n\
         compacted account/a-3: history starts at snapshot version 4; 3 events archived, 3 \
         messages removed, 0 old snapshots removed\n"
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("error: cannot compact account/a-2: ")
            && lines[0].contains("no snapshot"),
        "{err}"
    );
    assert_eq!(lines[1], "error: 1 of 3 actors not compacted: account/a-2");
    assert_eq!(messages(&store).await, total - 5 - 1 - 3);

    // `events` reads across the cut: from the start, from inside the archive, from the cut.
    let a1 = ActorKey::new("account", "a-1");
    assert_eq!(
        versions(&url, ns, a1, 1).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(&url, ns, a1, 4).await,
        (4..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(&url, ns, a1, 7).await,
        (7..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(&url, ns, ActorKey::new("account", "a-3"), 1).await,
        (1..=4).collect::<Vec<_>>()
    );
    // The table too.
    let out = history(&url, ns, &["events", "a-1", "--type", "account"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).matches("Moved").count(), 10, "{out:?}");

    // Again: nothing left to do, one line still.
    let out = history(
        &url,
        ns,
        &["history", "compact", "a-1", "--type", "account"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "nothing to compact for account/a-1: its history starts at snapshot version 6 already\n"
    );
    // One actor refused: its one line is the command's error.
    let out = history(
        &url,
        ns,
        &["history", "compact", "a-2", "--type", "account"],
    )
    .await;
    assert_one_line_error(&out, "cannot compact account/a-2: ");
    assert_one_line_error(&out, "no snapshot");
    assert!(stdout(&out).is_empty(), "{out:?}");
    // An actor of another type with that id is another actor.
    let out = history(
        &url,
        ns,
        &["history", "compact", "a-1", "--type", "customer"],
    )
    .await;
    assert_one_line_error(&out, "customer/a-1");

    // Untyped actors without --type.
    write(&store, None, "u-1", 4).await;
    snapshot(&store, None, "u-1", 2).await;
    let out = history(&url, ns, &["history", "compact", "u-1"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "compacted u-1: history starts at snapshot version 2; 1 event archived, 1 message \
         removed, 0 old snapshots removed\n"
    );
    assert_eq!(
        versions(&url, ns, ActorKey::untyped("u-1"), 1).await,
        vec![1, 2, 3, 4]
    );
    // What the application's store reads is whole too.
    assert_eq!(store.events_of(a1, 1).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_refuses_a_stream_that_is_not_compactable_and_a_missing_store() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let store = open(&url, JetStreamConfig::default().namespace("plain")).await;
    write(&store, Some("account"), "a-1", 3).await;
    snapshot(&store, Some("account"), "a-1", 2).await;
    store
        .save_event(&Event::retirement("account", "a-1", 4))
        .await
        .unwrap();
    let total = messages(&store).await;
    for args in [
        vec!["history", "compact", "a-1", "--type", "account"],
        vec!["history", "compact", "a-1", "a-2", "--type", "account"],
        vec![
            "history",
            "compact",
            "a-1",
            "--type",
            "account",
            "--dry-run",
        ],
        vec![
            "history",
            "remove-retired",
            "a-1",
            "--type",
            "account",
            "--grace",
            "0s",
            "--yes",
        ],
    ] {
        let out = history(&url, "plain", &args).await;
        // Refused whole, before any actor: one line.
        assert_one_line_error(&out, "stream plain_AETHER_EVENTS cannot be");
        assert_one_line_error(&out, "not compactable");
        assert!(stdout(&out).is_empty(), "{out:?}");
    }
    assert_eq!(messages(&store).await, total);
    // No archive was made.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    assert!(js.get_stream("plain_AETHER_EVENTS_ARCHIVE").await.is_err());
    // A namespace without a store.
    let out = history(
        &url,
        "nobody",
        &["history", "compact", "a-1", "--type", "account"],
    )
    .await;
    assert_one_line_error(&out, "not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_remove_retired_asks_for_yes_and_waits_for_the_grace_period() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let ns = "gone";
    let store = open(&url, compactable(ns)).await;
    let account = Some("account");
    // r-1: 5 events, a snapshot, retired at 6; live-1: not retired.
    write(&store, account, "r-1", 5).await;
    snapshot(&store, account, "r-1", 3).await;
    store
        .save_event(&Event::retirement("account", "r-1", 6))
        .await
        .unwrap();
    write(&store, account, "live-1", 3).await;
    let total = messages(&store).await;
    let remove = |extra: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = ["history", "remove-retired", "r-1", "--type", "account"]
                .into_iter()
                .chain(extra.iter().copied())
                .collect();
            history(&url, ns, &args).await
        }
    };

    // Without --yes: refused, saying what it would do; nothing written.
    let out = remove(&["--grace", "30d"]).await;
    assert_one_line_error(&out, "account/r-1 cannot be undone");
    assert_one_line_error(&out, "retired more than 30d ago");
    assert_one_line_error(&out, "Pass --yes");
    assert!(stdout(&out).is_empty(), "{out:?}");
    assert_eq!(messages(&store).await, total);
    // A dry run counts and writes nothing, --yes or not.
    for extra in [
        &["--grace", "0s", "--dry-run"][..],
        &["--grace", "0s", "--dry-run", "--yes"][..],
    ] {
        let out = remove(extra).await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            stdout(&out),
            "would remove the history of retired account/r-1: 5 messages before its final \
             event (version 6), and its snapshots\n"
        );
    }
    assert_eq!(messages(&store).await, total);
    // Within the grace period: refused.
    let out = remove(&["--grace", "1h", "--yes"]).await;
    assert_one_line_error(&out, "cannot remove the history of account/r-1: ");
    assert_one_line_error(&out, "within the grace period");
    assert_eq!(messages(&store).await, total);
    // Not retired: refused.
    let out = history(
        &url,
        ns,
        &[
            "history",
            "remove-retired",
            "live-1",
            "--type",
            "account",
            "--grace",
            "0s",
            "--yes",
        ],
    )
    .await;
    assert_one_line_error(&out, "account/live-1");
    assert_one_line_error(&out, "not retired");
    assert_eq!(messages(&store).await, total);

    // Removed: the final event stays, so the actor stays retired at its version.
    let out = remove(&["--grace", "0s", "--yes"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "removed the history of retired account/r-1: 5 messages before its final event \
         (version 6) removed, 1 snapshot removed\n"
    );
    assert_eq!(messages(&store).await, total - 5 - 1);
    let r1 = ActorKey::new("account", "r-1");
    let left = store.events_of(r1, 1).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].is_retirement() && left[0].version == 6);
    assert_eq!(store.latest_version_of(r1).await.unwrap(), 6);
    assert!(store.latest_snapshot_of(r1).await.unwrap().is_none());
    assert_eq!(versions(&url, ns, r1, 1).await, vec![6]);
    // Again: nothing to remove.
    let out = remove(&["--grace", "0s", "--yes"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "nothing to remove for retired account/r-1: only its final event (version 6) is left\n"
    );
    // The live actor was left alone.
    assert_eq!(
        versions(&url, ns, ActorKey::new("account", "live-1"), 1).await,
        vec![1, 2, 3]
    );
}

#[test]
fn history_bad_input_fails_before_connecting() {
    // Nothing listens there: a command that connected would say it could not.
    let nowhere = "nats://127.0.0.1:1";
    for (args, says) in [
        (
            vec!["compact", "", "--type", "account"],
            "must not be empty",
        ),
        (vec!["compact", "a-1", ""], "must not be empty"),
        (vec!["compact", ""], "must not be empty"),
        (vec!["compact", "a-1", "--type", "no such"], "actor type"),
        (vec!["compact", "a-1", "--type", ""], "actor type"),
        (
            vec![
                "remove-retired",
                "a-1",
                "--type",
                "account",
                "--grace",
                "3x",
            ],
            "is no duration",
        ),
        (
            vec![
                "remove-retired",
                "a-1",
                "--type",
                "account",
                "--grace",
                "12",
            ],
            "is no duration",
        ),
        (
            vec!["remove-retired", "a-1", "--type", "account", "--grace", ""],
            "is no duration",
        ),
        (
            vec!["remove-retired", "a-1", "--type", "account", "--grace=-1h"],
            "is no duration",
        ),
        (
            vec!["remove-retired", "a-1", "--type", "account"],
            "--grace",
        ),
        (
            vec!["remove-retired", "", "--grace", "0s", "--yes"],
            "must not be empty",
        ),
        (
            vec!["remove-retired", "a-1", "--type", "a/b", "--grace", "0s"],
            "actor type",
        ),
        (
            vec![
                "remove-retired",
                "a-1",
                "--type",
                "account",
                "--grace",
                "1d",
            ],
            "Pass --yes",
        ),
        (vec!["compact", "--type", "account"], "ID"),
    ] {
        let out = aether()
            .arg("history")
            .args(&args)
            .args(["--nats", nowhere])
            .output()
            .unwrap();
        assert_one_line_error(&out, says);
        let err = stderr(&out);
        assert!(!err.contains("connect"), "{args:?} connected: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {out:?}");
    }
}
