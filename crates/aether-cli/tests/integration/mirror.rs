//! `aether mirror` against two real nats-servers in their own JetStream domains, joined by a
//! leafnode connection: the standby mirrors a partitioned store, reports what it holds, refuses
//! to be promoted while the primary answers, and, once the primary is killed, is promoted and
//! read with `aether events`. Bad input is refused in one line.

use std::process::Output;
use std::time::Duration;

use aether_core::{Event, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::{free_port, NatsServer};
use tokio::time::Instant;

use crate::nats::{aether, assert_one_line_error, stdout};

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_is_created_watched_and_promoted_from_the_command_line() {
    let leaf = free_port().unwrap();
    let mut primary = NatsServer::builder()
        .jetstream_domain("primary")
        .leafnode_listen(leaf)
        .start()
        .unwrap();
    let standby = NatsServer::builder()
        .jetstream_domain("standby")
        .leafnode_remote(leaf)
        .start()
        .unwrap();
    let config = JetStreamConfig::default().namespace("orders").partitions(2);
    let store = JetStreamEventStore::new(
        async_nats::connect(primary.url()).await.unwrap(),
        config.clone(),
    )
    .await
    .unwrap();
    for a in 0..6 {
        let id = format!("acc-{a}");
        store
            .save_event(&Event::new("Opened", id.as_str(), 1))
            .await
            .unwrap();
    }
    let url = standby.url();
    let common = ["--namespace", "orders", "--nats", url.as_str()];
    let with = |head: &[&'static str]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(common.iter().map(|s| s.to_string()))
            .collect()
    };
    let run_with = |head: &'static [&'static str]| {
        let args = with(head);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&refs).await
        }
    };

    // Bad input: refused in one line, nothing created.
    let out = run_with(&["mirror", "create", "--from-domain", "no such domain"]).await;
    assert_one_line_error(&out, "JetStream domain");

    // Created once the leafnode connection carries the primary's API.
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let out = run_with(&["mirror", "create", "--from-domain", "primary"]).await;
        if out.status.success() {
            break stdout(&out);
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(created.lines().count(), 2, "{created}");
    assert!(created.contains("orders_AETHER_EVENTS_P0"), "{created}");

    // Every message mirrored.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_with(&["mirror", "status", "--from-domain", "primary"]).await;
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        let held: u64 = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum();
        if held == 6 {
            assert!(text.contains("yes"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let promote = &["mirror", "promote", "--from-domain", "primary"];
    if !standby.version().at_least(2, 12) {
        let out = run_with(promote).await;
        assert_one_line_error(&out, "2.12");
        return;
    }
    // While the primary answers, promotion is refused.
    let out = run_with(promote).await;
    assert_one_line_error(&out, "still answers");

    primary.kill().unwrap();
    let out = run_with(promote).await;
    assert!(out.status.success(), "{out:?}");
    let promoted = stdout(&out);
    assert_eq!(promoted.lines().count(), 2, "{promoted}");
    assert!(
        promoted.contains("promoted orders_AETHER_EVENTS_P1"),
        "{promoted}"
    );
    // Again: nothing left to do, said per stream.
    let out = run_with(promote).await;
    assert!(stdout(&out).contains("already promoted"), "{out:?}");

    // The standby is the store's home now.
    let out = run_with(&["events", "acc-3", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("Opened"), "{out:?}");
}
