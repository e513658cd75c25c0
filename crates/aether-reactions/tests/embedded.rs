//! The reactor with embedded hosts over the in-memory store, no server: effects of events of
//! any schema version are delivered once, and an effect that cannot be carried out (no
//! publisher, or a forged record publishing to the server's API) is parked where operators see
//! it, never dropped or carried out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{Actor, ActorClient, ActorHost, DomainEvent, Effect, RuntimeConfig};
use aether_core::{ActorKey, EventStore};
use aether_projection::{InMemoryProjectionStore, ProjectionStore, WorkerConfig};
use aether_reactions::{Reactor, ReactorConfig, Targets};
use aether_store::InMemoryEventStore;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
struct Never;

/// Events in schema version 2: the reactor must not care.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Rung {
    Rang { to: String, publish: bool },
}

impl DomainEvent for Rung {
    fn event_type(&self) -> &'static str {
        "Rang"
    }

    fn schema_version(&self) -> u32 {
        2
    }
}

struct Bells;

impl Actor for Bells {
    type State = ();
    type Command = (String, bool);
    type Event = Rung;
    type Reply = ();
    type Error = Never;
    const TYPE: &'static str = "bell";

    async fn decide(&self, _: &str, _: &(), c: &(String, bool)) -> Result<Vec<Rung>, Never> {
        Ok(vec![Rung::Rang {
            to: c.0.clone(),
            publish: c.1,
        }])
    }

    fn apply(_: &mut (), _: &Rung) {}

    fn reply(_: &(), _: &(String, bool), _: &[Rung]) {}

    fn effects(_: &str, Rung::Rang { to, publish }: &Rung) -> Vec<Effect> {
        if *publish {
            vec![Effect::publish("bells.rang", to)]
        } else {
            vec![Effect::send::<Ears>(to.clone(), &())]
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Heard {
    Heard,
}

impl DomainEvent for Heard {
    fn event_type(&self) -> &'static str {
        "Heard"
    }
}

struct Ears;

impl Actor for Ears {
    type State = ();
    type Command = ();
    type Event = Heard;
    type Reply = ();
    type Error = Never;
    const TYPE: &'static str = "ear";

    async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<Heard>, Never> {
        Ok(vec![Heard::Heard])
    }

    fn apply(_: &mut (), _: &Heard) {}

    fn reply(_: &(), _: &(), _: &[Heard]) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_of_any_schema_version_are_delivered_once_and_undeliverable_ones_parked() {
    let store = Arc::new(InMemoryEventStore::new());
    let bells = ActorHost::new(Bells, store.clone(), RuntimeConfig::default());
    let ears = ActorHost::new(Ears, store.clone(), RuntimeConfig::default());
    // No publisher: a publish effect cannot be carried out.
    let reactor = Arc::new(Reactor::new(Targets::new().host(bells.clone()).host(ears)));
    reactor.attach();
    let checkpoints = Arc::new(InMemoryProjectionStore::new());
    let mut config = ReactorConfig::new("w1");
    config.worker_config = WorkerConfig {
        partitions: 2,
        heartbeat: Duration::from_millis(100),
        lease_timeout: Duration::from_secs(1),
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&reactor).run(
        store.clone(),
        checkpoints.clone(),
        config,
        stop.clone(),
    ));
    for i in 0..10 {
        bells
            .send(&format!("b-{i}"), (format!("e-{i}"), false))
            .await
            .expect("rang");
    }
    bells
        .send("b-publish", ("x".to_string(), true))
        .await
        .expect("rang");
    // Written by hand, past the decision's checks: a publish to the server's API. The reactor
    // checks again and parks it.
    let mut forged = aether_core::Event::new("Rang", "b-forged", 1)
        .with_actor_type("bell")
        .with_field("to", "x")
        .with_field("publish", true);
    forged.set_metadata(
        aether_core::METADATA_REACTIONS,
        r#"{"effects":[{"kind":"publish","subject":"$JS.API.STREAM.DELETE.EVENTS","payload":1}]}"#,
    );
    store.save_event(&forged).await.expect("saved");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut heard = 0;
        for i in 0..10 {
            heard += store
                .latest_version_of(ActorKey::new("ear", &format!("e-{i}")))
                .await
                .expect("reads");
        }
        let mut parked = Vec::new();
        for p in 0..2 {
            parked.extend(
                checkpoints
                    .parked(&format!("aether-reactor.p{p}"))
                    .await
                    .expect("parked"),
            );
        }
        if heard == 10 && parked.len() == 2 {
            parked.sort_by(|a, b| a.event.actor_id.cmp(&b.event.actor_id));
            assert_eq!(parked[0].event.actor_id, "b-forged");
            assert!(
                parked[0].error.contains("not a valid NATS subject"),
                "{:?}",
                parked[0]
            );
            assert_eq!(parked[1].event.actor_id, "b-publish");
            assert!(parked[1].error.contains("no publisher"), "{:?}", parked[1]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heard {heard} of 10, parked {parked:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running
        .await
        .expect("joins")
        .expect("the reactor stops cleanly");
    // Once each.
    for i in 0..10 {
        assert_eq!(
            store
                .latest_version_of(ActorKey::new("ear", &format!("e-{i}")))
                .await
                .expect("reads"),
            1
        );
    }
}
