//! Projections that read only their actor types and, partitioned, only their own shards: the
//! server delivers what they read (counted at the JetStream store's page consumers), on the
//! in-memory store the same events are handled.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec};
use aether_core::{BoxError, Event, EventLog, EventStore};
use aether_projection::{
    Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig, ProjectionWorker,
    WorkerConfig,
};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Moved {
    Deposited { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// An event handled: its actor's type and id, and its version.
type Handled = (Option<String>, String, u64);

/// Every event handled, and how often.
#[derive(Default)]
struct Seen(Mutex<HashMap<Handled, u32>>);

#[async_trait::async_trait]
impl Handler<Moved> for Seen {
    async fn handle(&self, e: &Projected<Moved>) -> Result<(), BoxError> {
        *self
            .0
            .lock()
            .unwrap()
            .entry((e.actor_type.clone(), e.actor_id.clone(), e.version))
            .or_default() += 1;
        Ok(())
    }
}

impl Seen {
    fn types(&self) -> BTreeSet<Option<String>> {
        self.0.lock().unwrap().keys().map(|k| k.0.clone()).collect()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

const TYPES: [&str; 5] = ["show", "customer", "venue", "seat", "invoice"];
const ACTORS: usize = 8;
const VERSIONS: u64 = 5;

/// Five types, `ACTORS` actors each, `VERSIONS` events each, interleaved.
async fn fill(store: &dyn EventStore) -> usize {
    for v in 1..=VERSIONS {
        for a in 0..ACTORS {
            for t in TYPES {
                let e = Event::new("Deposited", format!("id-{a}"), v)
                    .with_actor_type(t)
                    .with_field("amount", 1);
                store.save_event(&e).await.unwrap();
            }
        }
    }
    TYPES.len() * ACTORS * VERSIONS as usize
}

fn config() -> ProjectionConfig {
    ProjectionConfig {
        page_size: 16,
        poll_interval: Duration::from_millis(5),
        ..ProjectionConfig::default()
    }
}

fn one_type(log: Arc<dyn EventLog>, sink: Arc<Seen>) -> Projection<Moved> {
    Projection::new(
        "shows",
        log,
        Arc::new(InMemoryProjectionStore::new()),
        sink,
        EventCodec::<Moved>::new(aether_actor::Upcasters::new()),
        config(),
    )
    .unwrap()
    .actor_types(["show"])
    .unwrap()
}

async fn jetstream(server: &NatsServer) -> Arc<JetStreamEventStore> {
    let client = async_nats::connect(server.url()).await.unwrap();
    Arc::new(
        JetStreamEventStore::new(client, JetStreamConfig::default())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_projection_of_one_type_in_five_gets_only_that_type() {
    // In memory: the default filtered read.
    let memory = Arc::new(InMemoryEventStore::new());
    let total = fill(memory.as_ref()).await;
    let sink = Arc::new(Seen::default());
    let p = one_type(memory.clone(), sink.clone());
    let report = p.catch_up().await.unwrap();
    assert_eq!(report.handled as usize, ACTORS * VERSIONS as usize);
    assert_eq!(sink.types(), BTreeSet::from([Some("show".to_string())]));
    // Its checkpoint reached the end of the log although the last events are another type's.
    let status = p.status();
    assert_eq!(status.lag, Some(0), "{status:?}");
    assert_eq!(total, 200);

    // On JetStream the server delivers that type's messages only.
    let server = NatsServer::start().unwrap();
    let store = jetstream(&server).await;
    fill(store.as_ref()).await;
    let sink = Arc::new(Seen::default());
    let p = one_type(store.clone(), sink.clone());
    let report = p.catch_up().await.unwrap();
    let wanted = ACTORS * VERSIONS as usize;
    assert_eq!(report.handled as usize, wanted);
    assert_eq!(sink.count(), wanted);
    assert_eq!(sink.types(), BTreeSet::from([Some("show".to_string())]));
    // Each page resumes at the message the last one ended with (a batch of several events
    // may continue past it), so a page reads one message again; nothing of another type.
    let read = store.log_messages_read() as usize;
    let pages = wanted.div_ceil(config().page_size);
    assert!(
        (wanted..=wanted + pages).contains(&read),
        "read {read} messages for {wanted} events of the type: other types were delivered"
    );
    assert_eq!(p.status().lag, Some(0), "{:?}", p.status());
    // Later writes of other types move the checkpoint on without being delivered.
    let before = store.log_messages_read();
    store
        .save_event(
            &Event::new("Deposited", "id-0", VERSIONS + 1)
                .with_actor_type("venue")
                .with_field("amount", 1),
        )
        .await
        .unwrap();
    let report = p.catch_up().await.unwrap();
    assert_eq!(report.handled, 0);
    assert!(store.log_messages_read() <= before + 1);
    assert_eq!(p.status().lag, Some(0), "{:?}", p.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_partitions_on_one_worker_read_their_type_once() {
    let server = NatsServer::start().unwrap();
    let store = jetstream(&server).await;
    fill(store.as_ref()).await;
    let wanted = ACTORS * VERSIONS as usize;
    let sink = Arc::new(Seen::default());
    let worker = ProjectionWorker::new(
        "shows",
        "w1",
        store.clone(),
        Arc::new(InMemoryProjectionStore::new()),
        sink.clone(),
        EventCodec::<Moved>::new(aether_actor::Upcasters::new()),
        config(),
        WorkerConfig {
            partitions: 8,
            ..WorkerConfig::default()
        },
    )
    .unwrap()
    .actor_types(["show"])
    .unwrap();
    let worker = Arc::new(worker);
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (worker, stop) = (worker.clone(), stop.clone());
        async move { worker.run(stop).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.count() < wanted {
        assert!(
            Instant::now() < deadline,
            "handled {} of {wanted}",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(sink.count(), wanted);
    assert!(sink.0.lock().unwrap().values().all(|&n| n == 1));
    assert_eq!(sink.types(), BTreeSet::from([Some("show".to_string())]));
    let read = store.log_messages_read() as usize;
    let version = store.context().client().server_info().version;
    let multi_filter = !version.starts_with("2.9.");
    if multi_filter {
        // Each partition asks for its own buckets of the type: the log is read once.
        assert_eq!(read, wanted, "server {version}");
    } else {
        // One filter subject per consumer: each partition reads the whole type (and a
        // message again per page it resumes at), but no other type.
        let pages = wanted.div_ceil(config().page_size);
        assert!(read <= 8 * (wanted + pages), "server {version}: {read}");
    }
}

mod by_type {
    use super::*;
    use aether_actor::{Actor, Upcasters};
    use aether_projection::ActorEvents;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, aether_actor::DomainEvent)]
    pub(crate) enum ShowEvent {
        Created { seats: u32 },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, aether_actor::DomainEvent)]
    pub(crate) enum CustomerEvent {
        Created { name: String },
        Charged { cents: i64 },
    }

    /// The projection's view of both types. Never stored.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, aether_actor::DomainEvent)]
    pub(crate) enum Booking {
        Show(ShowEvent),
        Customer(CustomerEvent),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
    #[error("never")]
    pub(crate) struct Never;

    pub(crate) struct Shows;
    pub(crate) struct Customers;

    impl Actor for Shows {
        type State = ();
        type Command = ();
        type Event = ShowEvent;
        type Reply = ();
        type Error = Never;
        const TYPE: &'static str = "show";
        async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<ShowEvent>, Never> {
            Ok(Vec::new())
        }
        fn apply(_: &mut (), _: &ShowEvent) {}
        fn reply(_: &(), _: &(), _: &[ShowEvent]) {}
    }

    impl Actor for Customers {
        type State = ();
        type Command = ();
        type Event = CustomerEvent;
        type Reply = ();
        type Error = Never;
        const TYPE: &'static str = "customer";
        async fn decide(&self, _: &str, _: &(), _: &()) -> Result<Vec<CustomerEvent>, Never> {
            Ok(Vec::new())
        }
        fn apply(_: &mut (), _: &CustomerEvent) {}
        fn reply(_: &(), _: &(), _: &[CustomerEvent]) {}
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<(Option<String>, Booking)>>);

    #[async_trait::async_trait]
    impl Handler<Booking> for Collect {
        async fn handle(&self, e: &Projected<Booking>) -> Result<(), BoxError> {
            self.0
                .lock()
                .unwrap()
                .push((e.actor_type.clone(), e.event.clone()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn two_types_with_an_event_of_one_name_decode_by_their_type() {
        let store = Arc::new(InMemoryEventStore::new());
        let saves = [
            Event::new("Created", "x", 1)
                .with_actor_type("show")
                .with_field("seats", 40),
            Event::new("Created", "x", 1)
                .with_actor_type("customer")
                .with_field("name", "Ada"),
            Event::new("Charged", "x", 2)
                .with_actor_type("customer")
                .with_field("cents", 300),
            Event::new("Created", "y", 1)
                .with_actor_type("venue")
                .with_field("whatever", true),
        ];
        for e in &saves {
            store.save_event(e).await.unwrap();
        }
        let sink = Arc::new(Collect::default());
        let p = Projection::new(
            "bookings",
            store.clone(),
            Arc::new(InMemoryProjectionStore::new()),
            sink.clone(),
            EventCodec::<Booking>::new(Upcasters::new()),
            config(),
        )
        .unwrap()
        .decode_by_type(
            ActorEvents::new()
                .actor::<Shows>(Booking::Show)
                .actor::<Customers>(Booking::Customer),
        )
        .unwrap();
        assert_eq!(p.types(), ["show", "customer"]);
        let report = p.catch_up().await.unwrap();
        assert_eq!((report.handled, report.parked), (3, 0), "{report:?}");
        assert_eq!(
            *sink.0.lock().unwrap(),
            [
                (
                    Some("show".to_string()),
                    Booking::Show(ShowEvent::Created { seats: 40 })
                ),
                (
                    Some("customer".to_string()),
                    Booking::Customer(CustomerEvent::Created { name: "Ada".into() })
                ),
                (
                    Some("customer".to_string()),
                    Booking::Customer(CustomerEvent::Charged { cents: 300 })
                ),
            ]
        );
        assert!(ActorEvents::<Booking>::new().types().is_empty());
    }

    /// Every partition of a worker decodes by type too (it once decoded with the plain codec
    /// and parked everything).
    #[tokio::test]
    async fn a_partitioned_worker_decodes_by_type_in_every_partition() {
        let store = Arc::new(InMemoryEventStore::new());
        for (i, actor_type) in ["show", "customer", "show", "customer"].iter().enumerate() {
            let e = match *actor_type {
                "show" => Event::new("Created", format!("a-{i}"), 1).with_field("seats", 40),
                _ => Event::new("Created", format!("a-{i}"), 1).with_field("name", "Ada"),
            };
            store
                .save_event(&e.with_actor_type(*actor_type))
                .await
                .unwrap();
        }
        let sink = Arc::new(Collect::default());
        let checkpoints = Arc::new(InMemoryProjectionStore::new());
        let worker = ProjectionWorker::new(
            "bookings",
            "w1",
            store.clone(),
            checkpoints.clone(),
            sink.clone(),
            EventCodec::<Booking>::new(Upcasters::new()),
            config(),
            WorkerConfig {
                partitions: 4,
                ..WorkerConfig::default()
            },
        )
        .unwrap()
        .decode_by_type(
            ActorEvents::new()
                .actor::<Shows>(Booking::Show)
                .actor::<Customers>(Booking::Customer),
        )
        .unwrap();
        let worker = Arc::new(worker);
        let stop = CancellationToken::new();
        let running = tokio::spawn({
            let (worker, stop) = (worker.clone(), stop.clone());
            async move { worker.run(stop).await }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.0.lock().unwrap().len() < 4 {
            assert!(Instant::now() < deadline, "{:?}", worker.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap().unwrap();
        let mut seen = sink.0.lock().unwrap().clone();
        seen.sort_by_key(|(t, _)| t.clone());
        assert_eq!(seen.len(), 4);
        assert!(seen[..2]
            .iter()
            .all(|(t, e)| t.as_deref() == Some("customer") && matches!(e, Booking::Customer(_))));
        assert!(seen[2..]
            .iter()
            .all(|(t, e)| t.as_deref() == Some("show") && matches!(e, Booking::Show(_))));
        for status in worker.status() {
            assert_eq!(status.parked, 0, "{status:?}");
        }
    }
}
