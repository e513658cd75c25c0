//! Disaster recovery to a second NATS system: a standby server in its own JetStream domain,
//! joined to the primary's by a leafnode connection, mirrors a partitioned store's streams
//! while writers write. The primary is killed with SIGKILL mid-write; the standby reports what
//! it holds, is promoted (nats-server 2.12+), and a store opened on it carries on: every
//! actor's history there is a prefix of what the primary acknowledged, the acknowledged writes
//! beyond it (the recovery point) are counted, and the next saves pass or conflict exactly.
//! Before 2.12 the promotion is refused with `Unsupported`.
#![cfg(feature = "nats")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::{Error, Event, EventStore};
use aether_store::mirror::{create_mirrors, mirror_status, promote_mirrors, PromoteOptions};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::{free_port, NatsServer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WRITERS: usize = 4;
const ACTORS_PER_WRITER: usize = 5;
/// Longest a step may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// What each writer wrote: per actor, the ids of acknowledged saves by version, and the
/// version of a save left without an answer (the actor is then left alone).
#[derive(Debug, Default)]
struct Written {
    acked: BTreeMap<String, Vec<String>>,
    unknown: BTreeMap<String, (u64, String)>,
}

fn config() -> JetStreamConfig {
    JetStreamConfig::default()
        .namespace("dr")
        .partitions(2)
        .request_timeout(Duration::from_secs(1))
}

async fn client(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(server.url())
        .await
        .unwrap()
}

/// Saves versions 1, 2, ... of its actors in turn until stopped, or until every actor has a
/// save without an answer.
async fn write(
    store: Arc<JetStreamEventStore>,
    actors: Vec<String>,
    stop: CancellationToken,
    written: Arc<Mutex<Written>>,
) {
    let mut version = 1;
    while !stop.is_cancelled() {
        let mut any = false;
        for actor in &actors {
            // Stopped: only the save under way when the primary died is waited for.
            if stop.is_cancelled() {
                return;
            }
            if written.lock().unwrap().unknown.contains_key(actor) {
                continue;
            }
            any = true;
            let event = Event::new("Deposited", actor.as_str(), version).with_field("amount", 1);
            let outcome = store.save_event(&event).await;
            let mut w = written.lock().unwrap();
            match outcome {
                Ok(()) => w.acked.entry(actor.clone()).or_default().push(event.id),
                Err(e) => {
                    assert!(e.is_retryable(), "{actor} v{version}: {e:?}");
                    w.unknown.insert(actor.clone(), (version, event.id));
                }
            }
        }
        if !any {
            return;
        }
        version += 1;
    }
}

/// Waits until the standby's mirrors hold at least `messages` in all, and returns the largest
/// lag the mirrors reported meanwhile (summed over the streams): the messages they knew the
/// primary had and they did not.
async fn wait_for_mirrored(standby: &async_nats::Client, messages: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut widest = 0;
    loop {
        let held: u64 = match mirror_status(standby, &config(), None).await {
            Ok(s) => {
                widest = widest.max(s.iter().map(|m| m.lag).sum());
                s.iter().map(|m| m.messages).sum()
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                0
            }
        };
        if held >= messages {
            return widest;
        }
        assert!(
            Instant::now() < deadline,
            "the mirrors hold {held} messages, not {messages}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_in_another_domain_takes_over_with_a_prefix_of_every_history() {
    let started = Instant::now();
    let leaf_port = free_port().unwrap();
    let mut primary = NatsServer::builder()
        .sync_always(true)
        .jetstream_domain("primary")
        .leafnode_listen(leaf_port)
        .start()
        .unwrap();
    let standby_server = NatsServer::builder()
        .sync_always(true)
        .jetstream_domain("standby")
        .leafnode_remote(leaf_port)
        .start()
        .unwrap();
    let store = Arc::new(
        JetStreamEventStore::new(client(&primary).await, config())
            .await
            .unwrap(),
    );
    let standby = client(&standby_server).await;

    // The mirrors, once the leafnode connection carries the primary's API.
    let deadline = Instant::now() + WAIT;
    let created = loop {
        match create_mirrors(&standby, &config(), "primary").await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "the primary is not reachable yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no mirrors after {WAIT:?}: {e:?}"),
        }
    };
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|m| m.mirroring));
    // Again: kept as they are.
    create_mirrors(&standby, &config(), "primary")
        .await
        .unwrap();
    // A store cannot write to a mirror.
    let refused = JetStreamEventStore::new(standby.clone(), config()).await;
    assert!(
        matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("mirror")),
        "{:?}",
        refused.err()
    );

    let stop = CancellationToken::new();
    let written = Arc::new(Mutex::new(Written::default()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let actors = (0..ACTORS_PER_WRITER)
            .map(|a| format!("acc-{w}-{a}"))
            .collect();
        writers.push(tokio::spawn(write(
            store.clone(),
            actors,
            stop.clone(),
            written.clone(),
        )));
    }
    let widest_lag = wait_for_mirrored(&standby, 300).await;

    // While the primary answers, promotion is refused.
    let early = promote_mirrors(&standby, &config(), &PromoteOptions::checking("primary")).await;
    if primary.version().at_least(2, 12) {
        assert!(
            matches!(&early, Err(Error::InvalidInput(m)) if m.contains("still answers")),
            "{early:?}"
        );
    }
    let before = mirror_status(&standby, &config(), Some("primary"))
        .await
        .unwrap();
    assert!(
        before.iter().all(|m| m.primary_last_sequence.is_some()),
        "{before:?}"
    );

    // The primary dies mid-write.
    primary.kill().unwrap();
    let killed_at = Instant::now();
    stop.cancel();
    for w in writers {
        w.await.unwrap();
    }
    let after = mirror_status(&standby, &config(), Some("primary"))
        .await
        .unwrap();
    assert!(
        after
            .iter()
            .all(|m| m.mirroring && m.primary_last_sequence.is_none()),
        "{after:?}"
    );

    let promoted = promote_mirrors(&standby, &config(), &PromoteOptions::checking("primary")).await;
    if !standby_server.version().at_least(2, 12) {
        assert!(
            matches!(promoted, Err(Error::Unsupported { .. })),
            "{promoted:?}"
        );
        return;
    }
    let promoted = promoted.unwrap();
    assert!(promoted.iter().all(|m| !m.mirroring), "{promoted:?}");
    // Again: nothing left to do.
    promote_mirrors(&standby, &config(), &PromoteOptions::default())
        .await
        .unwrap();

    // The standby carries on: each history is a prefix of what the primary acknowledged.
    let store = JetStreamEventStore::new(standby.clone(), config())
        .await
        .unwrap();
    let written = Arc::try_unwrap(written).unwrap().into_inner().unwrap();
    let (mut kept, mut lost, mut in_doubt_kept) = (0usize, 0usize, 0usize);
    for w in 0..WRITERS {
        for a in 0..ACTORS_PER_WRITER {
            let actor = format!("acc-{w}-{a}");
            let acked = written.acked.get(&actor).cloned().unwrap_or_default();
            let unknown = written.unknown.get(&actor);
            let held = store.get_events(&actor, 0).await.unwrap();
            let versions: Vec<u64> = held.iter().map(|e| e.version).collect();
            assert_eq!(
                versions,
                (1..=held.len() as u64).collect::<Vec<_>>(),
                "{actor}"
            );
            for (i, e) in held.iter().enumerate() {
                match acked.get(i) {
                    Some(id) => assert_eq!(&e.id, id, "{actor} v{}", e.version),
                    None => {
                        // Beyond the acknowledged saves: only the one left without an answer.
                        let (v, id) = unknown.expect("an event nobody wrote");
                        assert_eq!((e.version, &e.id), (*v, id), "{actor}");
                        in_doubt_kept += 1;
                    }
                }
            }
            let acked_held = held.len().min(acked.len());
            kept += acked_held;
            lost += acked.len() - acked_held;
            // The next save continues the history; a stale one is a conflict.
            let next = held.len() as u64 + 1;
            store
                .save_event(&Event::new("Deposited", actor.as_str(), next))
                .await
                .unwrap();
            let stale = store
                .save_event(&Event::new("Deposited", actor.as_str(), next))
                .await
                .unwrap_err();
            assert!(stale.is_version_conflict(), "{stale:?}");
        }
    }
    assert!(kept > 0);
    let lag: u64 = after.iter().map(|m| m.lag).sum();
    eprintln!(
        "standby took over: {kept} acknowledged saves kept, {lost} lost (the recovery point; \
         the mirrors reported a lag of {lag} at the end and at most {widest_lag} while \
         writing), {in_doubt_kept} unanswered kept; promoted {:?} after the \
         kill; {:?} in all",
        killed_at.elapsed(),
        started.elapsed()
    );
}
