//! `aether actors retire` against a real nats-server: refused without `--yes`, for a malformed
//! or unknown actor and for one retired already, each in one line with nothing written; with
//! `--yes`, the final event is appended, `events` shows it, and an actor host on the same
//! store refuses the actor's commands from then on.

use std::process::Output;
use std::sync::Arc;

use aether_actor::{Actor, ActorClient, ActorHost, CommandError, DomainEvent, RuntimeConfig};
use aether_core::{ActorKey, EventStore, SnapshotStore, METADATA_USER_ID};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};

use crate::nats::{aether, assert_one_line_error, stdout};

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Opened {
    Opened { by: String },
}

impl DomainEvent for Opened {
    fn event_type(&self) -> &'static str {
        "Opened"
    }
}

/// A refusal this actor never gives.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

struct Account;

impl Actor for Account {
    type State = u64;
    type Command = ();
    type Event = Opened;
    type Reply = u64;
    type Error = Never;
    const TYPE: &'static str = "account";

    async fn decide(&self, _: &str, _: &u64, _: &()) -> Result<Vec<Opened>, Self::Error> {
        Ok(vec![Opened::Opened { by: "test".into() }])
    }

    fn apply(state: &mut u64, _: &Opened) {
        *state += 1;
    }

    fn reply(state: &u64, _: &(), _: &[Opened]) -> u64 {
        *state
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_retired_from_the_command_line_refuses_its_commands() {
    let server = NatsServer::start().unwrap();
    let store = Arc::new(
        JetStreamEventStore::new(
            async_nats::connect(server.url()).await.unwrap(),
            JetStreamConfig::default().namespace("life"),
        )
        .await
        .unwrap(),
    );
    let host = ActorHost::new(
        Account,
        Arc::clone(&store) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    host.send("acc-1", ()).await.unwrap();
    host.send("acc-1", ()).await.unwrap();
    let url = server.url();
    let key = ActorKey::new("account", "acc-1");
    let args = |extra: &[&'static str]| -> Vec<String> {
        ["actors", "retire", "acc-1", "--type", "account"]
            .iter()
            .chain(extra.iter())
            .map(|s| s.to_string())
            .chain(["--namespace", "life", "--nats", url.as_str()].map(String::from))
            .collect()
    };
    let run_args = |a: Vec<String>| async move {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs).await
    };

    // Without --yes: refused, nothing written.
    assert_one_line_error(&run_args(args(&[])).await, "pass --yes");
    assert_eq!(store.latest_version_of(key).await.unwrap(), 2);
    // A malformed type and an unknown actor.
    let out = run(&[
        "actors",
        "retire",
        "acc-1",
        "--type",
        "no such",
        "--yes",
        "--namespace",
        "life",
        "--nats",
        &url,
    ])
    .await;
    assert!(!out.status.success());
    let out = run(&[
        "actors",
        "retire",
        "nobody",
        "--type",
        "account",
        "--yes",
        "--namespace",
        "life",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(&out, "has no events");

    // Retired.
    let out = run_args(args(&["--yes", "--by", "ops"])).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "retired account/acc-1 at version 3");
    let last = store.events_of(key, 3).await.unwrap();
    assert!(last[0].is_retirement());
    assert_eq!(last[0].metadata_value(METADATA_USER_ID), Some("ops"));
    // Again: refused, nothing written.
    assert_one_line_error(&run_args(args(&["--yes"])).await, "retired already");
    assert_eq!(store.latest_version_of(key).await.unwrap(), 3);
    // Tools show it.
    let out = run(&[
        "events",
        "acc-1",
        "--type",
        "account",
        "--namespace",
        "life",
        "--nats",
        &url,
    ])
    .await;
    assert!(stdout(&out).contains("aether.Retired"), "{out:?}");
    // And the dashboard.
    let stop = tokio_util::sync::CancellationToken::new();
    let config = aether_cli::ui::DashboardConfig {
        stream: aether_cli::events::StreamArgs {
            namespace: Some("life".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let addr = crate::ui::dashboard(&url, config, &stop).await;
    for (path, retired) in [
        ("/api/actors/acc-1?type=account", serde_json::json!(3)),
        (
            "/api/actors/acc-1?type=account&limit=1",
            serde_json::json!(3),
        ),
        (
            "/api/actors/nobody-else?type=account",
            serde_json::Value::Null,
        ),
    ] {
        let (status, _, body) = crate::ui::get(addr, path, &[]).await;
        if retired.is_null() {
            assert_eq!(status, 404, "{body}");
            continue;
        }
        assert_eq!(status, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(view["retired"], retired, "{path}: {body}");
    }
    stop.cancel();
    // The host's activation notices at its next write; a new one refuses at once.
    match host.send("acc-1", ()).await {
        Err(CommandError::Retired(r)) => assert_eq!(r.version, 3),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        host.send("acc-1", ()).await,
        Err(CommandError::Retired(_))
    ));
    assert_eq!(store.latest_version_of(key).await.unwrap(), 3);
}
