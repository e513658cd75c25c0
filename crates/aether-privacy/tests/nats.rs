//! Crypto-shredding against a real `nats-server`: personal fields are ciphertext in the event
//! stream, readable through a private store, and erased for every reader once their subject's
//! key is deleted (replay, snapshots taken before, a projection rebuilt from scratch, another
//! process); the key's stored bytes are overwritten on the server's disk, and an erasure cut
//! short is finished by the next.
#![cfg(feature = "nats")]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_actor::{
    Actor, ActorClient, ActorHost, DomainEvent, EventCodec, RuntimeConfig, SnapshotPolicy,
};
use aether_core::{ActorKey, BoxError, Error, Event, EventLog, EventStore, SnapshotStore};
use aether_nats::{BucketConfig, CasOutcome, Connection, KvBucket};
use aether_privacy::{
    Erasure, KeyState, KeyStore, KeyStoreConfig, NatsKeyStore, Personal, PrivateStore,
};
use aether_projection::{
    Handler, InMemoryProjectionStore, Projected, Projection, ProjectionConfig,
};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Member {
    name: Option<Personal<String>>,
    email: Option<Personal<String>>,
    plan: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum MemberCommand {
    Join {
        person: String,
        name: String,
        email: String,
    },
    Rename {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum MemberEvent {
    Joined {
        name: Personal<String>,
        email: Personal<String>,
        plan: String,
    },
    Renamed {
        name: Personal<String>,
    },
}

impl DomainEvent for MemberEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Joined { .. } => "Joined",
            Self::Renamed { .. } => "Renamed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("not a member")]
struct NotAMember;

struct Members;

impl Actor for Members {
    type State = Member;
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Reply = ();
    type Error = NotAMember;
    const TYPE: &'static str = "member";

    async fn decide(
        &self,
        _id: &str,
        state: &Member,
        command: &MemberCommand,
    ) -> Result<Vec<MemberEvent>, NotAMember> {
        Ok(match command {
            MemberCommand::Join {
                person,
                name,
                email,
            } => vec![MemberEvent::Joined {
                name: Personal::new(person.clone(), name.clone()),
                email: Personal::new(person.clone(), email.clone()),
                plan: "pro".into(),
            }],
            MemberCommand::Rename { name } => {
                let person = state.name.as_ref().ok_or(NotAMember)?.subject().to_owned();
                vec![MemberEvent::Renamed {
                    name: Personal::new(person, name.clone()),
                }]
            }
        })
    }

    fn apply(state: &mut Member, event: &MemberEvent) {
        match event {
            MemberEvent::Joined { name, email, plan } => {
                state.name = Some(name.clone());
                state.email = Some(email.clone());
                state.plan = plan.clone();
            }
            MemberEvent::Renamed { name } => state.name = Some(name.clone()),
        }
    }

    fn reply(_: &Member, _: &MemberCommand, _: &[MemberEvent]) {}
}

/// A read model: every name each member was seen with, `None` for an erased one.
#[derive(Default)]
struct Names(Mutex<Vec<(String, Option<String>)>>);

#[async_trait::async_trait]
impl Handler<MemberEvent> for Names {
    async fn handle(&self, e: &Projected<MemberEvent>) -> Result<(), BoxError> {
        let name = match &e.event {
            MemberEvent::Joined { name, .. } | MemberEvent::Renamed { name } => name,
        };
        self.0
            .lock()
            .map_err(|_| "poisoned")?
            .push((e.actor_id.clone(), name.get().cloned()));
        Ok(())
    }
}

fn start() -> NatsServer {
    NatsServer::start().expect("start nats-server")
}

async fn connect(server: &NatsServer) -> Connection {
    Connection::connect(&server.url(), Default::default())
        .await
        .expect("connect")
}

async fn keys(server: &NatsServer) -> Arc<NatsKeyStore> {
    Arc::new(
        NatsKeyStore::open(
            &connect(server).await,
            KeyStoreConfig::default().namespace("gdpr"),
        )
        .await
        .expect("open the key store"),
    )
}

async fn events(server: &NatsServer) -> Arc<JetStreamEventStore> {
    Arc::new(
        JetStreamEventStore::new(
            connect(server).await.client().clone(),
            JetStreamConfig::default().namespace("gdpr"),
        )
        .await
        .expect("open the event store"),
    )
}

fn host(store: Arc<dyn SnapshotStore>) -> ActorHost<Members> {
    ActorHost::new(
        Members,
        store,
        RuntimeConfig::default().snapshot(SnapshotPolicy::every(2)),
    )
}

/// Every message of the event stream, raw, as the server keeps it.
async fn raw_messages(server: &NatsServer, stream: &str) -> Vec<Vec<u8>> {
    let context = connect(server).await.jetstream();
    let stream = context.get_stream(stream).await.expect("the stream");
    let last = stream.cached_info().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m.payload.to_vec());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn names_of(events: &[Event]) -> Vec<Option<String>> {
    events
        .iter()
        .map(|e| {
            serde_json::from_value::<Personal<String>>(e.data["name"].clone())
                .expect("a personal name")
                .into_inner()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_are_ciphertext_in_the_stream_and_erased_for_every_reader() {
    let server = start();
    let keys = keys(&server).await;
    let inner = events(&server).await;
    let store = Arc::new(PrivateStore::new(inner.clone(), keys.clone()));
    let members = host(store.clone());
    for (id, person, name, email) in [
        ("m-1", "p-1", "Ada Lovelace", "ada@example.org"),
        ("m-2", "p-2", "Grace Hopper", "grace@example.org"),
    ] {
        let join = MemberCommand::Join {
            person: person.into(),
            name: name.into(),
            email: email.into(),
        };
        members.send(id, join).await.expect("join");
    }
    let rename = MemberCommand::Rename {
        name: "Augusta Ada King".into(),
    };
    members.send("m-1", rename).await.expect("rename");
    let m1 = ActorKey::new("member", "m-1");
    let snapshot = inner.latest_snapshot_of(m1).await.unwrap();
    assert_eq!(
        snapshot.map(|s| s.version),
        Some(2),
        "m-1 was snapshotted with its personal state"
    );

    // The stream holds ciphertext only: no name or address, in events or in the snapshot.
    let raw = raw_messages(&server, "gdpr_AETHER_EVENTS").await;
    assert!(raw.len() >= 4, "{} messages", raw.len());
    for secret in ["Ada", "Augusta", "ada@example", "Grace", "grace@"] {
        assert!(
            raw.iter().all(|m| !contains(m, secret.as_bytes())),
            "{secret:?} is readable in the stream"
        );
    }
    assert!(raw.iter().any(|m| contains(m, b"aes256gcm")));

    // Through the private store it reads back.
    assert_eq!(
        names_of(&store.events_of(m1, 1).await.unwrap()),
        [Some("Ada Lovelace".into()), Some("Augusta Ada King".into())]
    );
    let (state, _) = members.load_state("m-1").await.unwrap();
    assert_eq!(
        state.email.and_then(Personal::into_inner).as_deref(),
        Some("ada@example.org")
    );

    // Erase p-1.
    assert_eq!(keys.erase("p-1").await.unwrap(), Erasure::Erased);
    assert_eq!(keys.erase("p-1").await.unwrap(), Erasure::AlreadyErased);

    // Replay sees it erased; m-2 is untouched.
    assert_eq!(
        names_of(&store.events_of(m1, 1).await.unwrap()),
        [None, None]
    );
    assert_eq!(
        names_of(
            &store
                .events_of(ActorKey::new("member", "m-2"), 1)
                .await
                .unwrap()
        ),
        [Some("Grace Hopper".into())]
    );
    // An actor rebuilt from the snapshot taken before the erasure gets the erased value.
    let rebuilt = host(store.clone());
    let (state, version) = rebuilt.load_state("m-1").await.unwrap();
    assert_eq!(version, 2);
    assert!(state.name.as_ref().is_some_and(Personal::is_erased));
    assert!(state.email.as_ref().is_some_and(Personal::is_erased));
    assert_eq!(state.plan, "pro", "what is not personal stays");
    let snapshot = store.latest_snapshot_of(m1).await.unwrap().expect("kept");
    assert_eq!(snapshot.version, 2);
    let from_snapshot: Member = serde_json::from_value(snapshot.state.into()).unwrap();
    assert!(from_snapshot.name.is_some_and(|n| n.is_erased()));

    // Another process, with its own key store, sees the erasure too.
    let elsewhere = Arc::new(PrivateStore::new(
        events(&server).await,
        self::keys(&server).await,
    ));
    assert_eq!(
        names_of(&elsewhere.events_of(m1, 1).await.unwrap()),
        [None, None]
    );

    // A projection rebuilt from scratch over the log sees the same.
    let names = Arc::new(Names::default());
    let projection = Projection::new(
        "names",
        elsewhere.clone() as Arc<dyn EventLog>,
        Arc::new(InMemoryProjectionStore::new()),
        names.clone(),
        EventCodec::<MemberEvent>::default(),
        ProjectionConfig::default(),
    )
    .unwrap();
    let report = projection.catch_up().await.unwrap();
    assert_eq!((report.handled, report.parked), (3, 0));
    let mut seen = names.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("m-1".to_string(), None),
            ("m-1".to_string(), None),
            ("m-2".to_string(), Some("Grace Hopper".to_string())),
        ]
    );

    // Nothing personal is written for an erased subject, and nothing else changes.
    let err = rebuilt
        .send(
            "m-1",
            MemberCommand::Rename {
                name: "again".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("erased"), "{err:?}");
    assert_eq!(inner.latest_version_of(m1).await.unwrap(), 2);

    // The raw store refuses personal data in clear: a forgotten wrapper cannot leak it.
    let clear = Event::new("Joined", "m-3", 1).with_field(
        "name",
        serde_json::to_value(Personal::new("p-3", "Clear Text")).unwrap(),
    );
    assert!(matches!(
        inner.save_event(&clear).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        inner.get_latest_version("m-3").await.unwrap(),
        0,
        "nothing was written"
    );
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push(bytes);
        }
    }
    out
}

/// Waits until `key`'s bytes are (or are no longer) in the server's store directory: the
/// server writes its blocks in the background.
async fn key_on_disk(server: &NatsServer, key: &[u8], present: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = files_under(&server.store_dir())
            .iter()
            .any(|f| contains(f, key));
        if found == present {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the key is {} the server's disk",
            if present { "never on" } else { "still on" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_overwrites_the_key_on_disk_and_finishes_an_interrupted_one() {
    let server = start();
    let keys = keys(&server).await;
    let key = keys.key_for("p-9").await.unwrap();
    let key_bytes = key.as_bytes().to_vec();
    key_on_disk(&server, &key_bytes, true).await;

    // An erasure cut short after its tombstone, before its wipe (as a kill -9 leaves it):
    // the tombstone written by hand, in the bucket's own record format.
    let connection = connect(&server).await;
    let bucket = KvBucket::open_existing(&connection, "AETHER_KEYS_gdpr")
        .await
        .unwrap()
        .expect("the bucket");
    let record = format!(
        "s.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("p-9")
    );
    let revision = bucket.read(&record).await.unwrap().revision();
    let written = bucket
        .compare_and_set(&record, format!("erased:{revision}").into(), revision)
        .await
        .unwrap();
    assert!(matches!(written, CasOutcome::Written(_)));
    // Readers already see it erased; the key's bytes are still stored.
    let fresh = self::keys(&server).await;
    assert_eq!(fresh.lookup("p-9").await.unwrap(), KeyState::Erased);
    key_on_disk(&server, &key_bytes, true).await;

    // Erasing again finishes the job: the server overwrites the stored key.
    assert_eq!(fresh.erase("p-9").await.unwrap(), Erasure::AlreadyErased);
    key_on_disk(&server, &key_bytes, false).await;

    // A whole erasure does both at once.
    let other = keys.key_for("p-10").await.unwrap().as_bytes().to_vec();
    key_on_disk(&server, &other, true).await;
    assert_eq!(keys.erase("p-10").await.unwrap(), Erasure::Erased);
    key_on_disk(&server, &other, false).await;
    assert_eq!(
        self::keys(&server).await.lookup("p-10").await.unwrap(),
        KeyState::Erased
    );

    // Unknown and malformed subjects are typed errors that write nothing.
    assert!(matches!(
        keys.erase("nobody").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(keys.lookup("nobody").await.unwrap(), KeyState::Unknown);
    assert!(matches!(keys.erase("").await, Err(Error::InvalidInput(_))));
    assert!(matches!(
        keys.key_for("a\u{7}b").await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_cannot_erase_is_refused() {
    let server = start();
    let connection = connect(&server).await;
    // An ordinary bucket: deletes denied, one value per key.
    KvBucket::open_with(
        &connection,
        "AETHER_KEYS_plain",
        &BucketConfig::new("by hand"),
    )
    .await
    .unwrap();
    let err = NatsKeyStore::open(&connection, KeyStoreConfig::default().namespace("plain"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("cannot erase")),
        "{err:?}"
    );
    assert!(matches!(
        NatsKeyStore::open(&connection, KeyStoreConfig::default().namespace("a.b")).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(
        NatsKeyStore::open_existing(&connection, KeyStoreConfig::default())
            .await
            .unwrap()
            .is_none()
    );
}
