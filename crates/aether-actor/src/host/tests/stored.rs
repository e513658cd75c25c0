//! What is stored: bytes per event, events of another type, events that do not fit,
//! snapshots of another state version.

use super::stock;
use super::*;

/// An actor whose state (and reply) is as large as a test asks: a list of names.
struct Guests;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GuestList {
    names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum GuestEvent {
    Invited { name: String },
}

impl DomainEvent for GuestEvent {
    fn event_type(&self) -> &'static str {
        "Invited"
    }
}

impl Actor for Guests {
    type State = GuestList;
    type Command = String;
    type Event = GuestEvent;
    /// The whole state, as many applications reply.
    type Reply = GuestList;
    type Error = StockError;
    const TYPE: &'static str = "guests";

    async fn decide(
        &self,
        _: &str,
        _: &GuestList,
        name: &String,
    ) -> Result<Vec<GuestEvent>, StockError> {
        Ok(vec![GuestEvent::Invited { name: name.clone() }])
    }

    fn apply(state: &mut GuestList, event: &GuestEvent) {
        let GuestEvent::Invited { name } = event;
        state.names.push(name.clone());
    }

    fn reply(state: &GuestList, _: &String, _: &[GuestEvent]) -> GuestList {
        state.clone()
    }
}

/// The bytes of the stored form of each event of guest list `actor_id`, past the first `skip`.
async fn stored_sizes(s: &InMemoryEventStore, actor_id: &str, skip: usize) -> Vec<usize> {
    s.events_of(ActorKey::new("guests", actor_id), 1)
        .await
        .unwrap()
        .iter()
        .skip(skip)
        .map(|e| {
            let mut e = e.clone();
            // Ids and timestamps differ between runs in their digits only; fix them.
            e.id = "id".into();
            e.timestamp = Default::default();
            serde_json::to_vec(&e).unwrap().len()
        })
        .collect()
}

#[tokio::test]
async fn the_bytes_stored_per_event_do_not_depend_on_the_state_or_the_reply() {
    let s = store();
    let h = ActorHost::new(
        Guests,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    // Two actors with ids of one length: one grows a 900 KB state from one large name; another stays tiny. Both then take
    // the same twenty commands with ids of the same length.
    h.send("large", "x".repeat(900 * 1024)).await.unwrap();
    h.send("small", "x".to_string()).await.unwrap();
    for i in 0..20 {
        for actor in ["large", "small"] {
            let env =
                Envelope::new(format!("guest-{i:02}")).with_id(format!("cmd-{actor:>5}-{i:02}"));
            let state = h.send_envelope(actor, env).await.unwrap();
            assert_eq!(state.names.len(), i + 2);
        }
    }
    let large = stored_sizes(&s, "large", 1).await;
    let small = stored_sizes(&s, "small", 1).await;
    assert_eq!(large.len(), 20);
    assert_eq!(
        large, small,
        "stored bytes per event differ with the state's size"
    );
    assert!(large.iter().all(|&n| n < 512), "{large:?}");
    // A retry on the same activation gets its first reply when it was small enough to keep;
    // a 900 KB reply is not kept, so its retry is answered as already applied. Neither is
    // applied again.
    let retry =
        |actor: &str| Envelope::new("guest-00".to_string()).with_id(format!("cmd-{actor:>5}-00"));
    let small_again = h.dispatch("small", retry("small")).await;
    assert!(
        matches!(&small_again, Ok(Handled::Reply { reply, version: 21 }) if reply.names.len() == 2),
        "{small_again:?}"
    );
    let large_again = h.dispatch("large", retry("large")).await;
    assert!(
        matches!(&large_again, Ok(Handled::AlreadyApplied { reply, version: 21 }) if reply.names.len() == 21),
        "{large_again:?}"
    );
    // A new activation (a restart, a new owner) knows the ids from the events alone.
    let fresh = ActorHost::new(
        Guests,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    for actor in ["large", "small"] {
        let again = fresh.dispatch(actor, retry(actor)).await;
        assert!(
            matches!(&again, Ok(Handled::AlreadyApplied { reply, version: 21 }) if reply.names.len() == 21),
            "{again:?}"
        );
        assert_eq!(
            s.latest_version_of(ActorKey::new("guests", actor))
                .await
                .unwrap(),
            21
        );
    }
}

#[tokio::test]
async fn two_types_with_one_id_are_two_actors_and_another_types_history_is_a_typed_error() {
    let s = store();
    let shop = host(&s, RuntimeConfig::default());
    shop.send("shared-id", StockCommand::Restock(1))
        .await
        .unwrap();
    let guests = ActorHost::new(
        Guests,
        Arc::clone(&s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    // Another type's actor with the same id is another actor: it starts empty.
    let list = guests.send("shared-id", "ada".to_string()).await.unwrap();
    assert_eq!(list.names, ["ada"]);
    assert_eq!(
        s.latest_version_of(ActorKey::new("guests", "shared-id"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.latest_version_of(stock("shared-id")).await.unwrap(), 1);
    // Where types share a history (a stream written before actor types, read with a declared
    // legacy type), an event written by another type's runtime is a typed error, not a
    // decoding one.
    s.save_event(
        &Event::new("Restocked", "old-id", 1)
            .with_actor_type("guests")
            .with_field("n", 1)
            .with_metadata(METADATA_ACTOR_TYPE, "stock"),
    )
    .await
    .unwrap();
    match guests.send("old-id", "ada".to_string()).await {
        Err(CommandError::WrongType(e)) => {
            assert_eq!(
                (e.actor_id.as_str(), e.expected.as_str(), e.found.as_str()),
                ("old-id", "guests", "stock")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        guests.load_state("old-id").await,
        Err(LoadError::WrongType(_))
    ));
    // Without the writer's type (an event written otherwise), an unknown event type hints
    // at the same cause.
    s.save_event(
        &Event::new("Restocked", "bare", 1)
            .with_actor_type("guests")
            .with_field("n", 1),
    )
    .await
    .unwrap();
    match guests.send("bare", "ada".to_string()).await {
        Err(CommandError::Decode(e)) => {
            assert!(e.reason.contains("another actor type's events"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_event_that_does_not_fit_is_a_decoding_error_from_handling_and_replay() {
    let s = store();
    s.save_event(
        &Event::new("Restocked", "sku", 1)
            .with_actor_type("stock")
            .with_field("n", 2),
    )
    .await
    .unwrap();
    s.save_event(
        &Event::new("Restocked", "sku", 2)
            .with_actor_type("stock")
            .with_field("n", "two"),
    )
    .await
    .unwrap();
    let h = host(&s, RuntimeConfig::default());
    match h.send("sku", StockCommand::Get).await {
        Err(CommandError::Decode(e)) => {
            assert_eq!((e.actor_id.as_str(), e.version), ("sku", 2));
            assert_eq!(e.event_type, "Restocked");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.stats().decode_errors, 1);
    assert!(matches!(
        h.load_state("sku").await,
        Err(LoadError::Decode(_))
    ));
    let replayed = crate::replay::<Shop>(s.as_ref(), h.codec(), "sku").await;
    assert!(matches!(replayed, Err(LoadError::Decode(e)) if e.version == 2));
    // Nothing was written past the bad event.
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 2);
}

#[tokio::test]
async fn a_snapshot_of_another_state_version_is_ignored_and_the_actor_rebuilt() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default().snapshot(SnapshotPolicy::every(2)),
    );
    for _ in 0..3 {
        h.send("sku", StockCommand::Restock(1)).await.unwrap();
    }
    let snap = s.latest_snapshot_of(stock("sku")).await.unwrap().unwrap();
    assert_eq!((snap.version, snap.schema_version), (2, Some(1)));
    assert_eq!(h.stats().snapshots_saved, 1);
    // Snapshots of an older state schema (or from before schema versions), even newer ones
    // with a state that no longer fits, are skipped.
    let bogus = serde_json::json!({"available": "lots"});
    s.save_snapshot(
        &Snapshot::new("sku", 3, bogus.as_object().cloned().unwrap()).with_actor_type("stock"),
    )
    .await
    .unwrap();
    let fresh = host(&s, RuntimeConfig::default());
    assert_eq!(
        fresh.load_state("sku").await.unwrap(),
        (Stock { available: 3 }, 3)
    );
    assert_eq!(fresh.send("sku", StockCommand::Get).await.unwrap(), 3);
    assert_eq!(fresh.stats().snapshots_ignored, 2);
    let mismatched = Snapshot::new("sku", 3, bogus.as_object().cloned().unwrap())
        .with_actor_type("stock")
        .with_schema_version(1);
    s.save_snapshot(&mismatched).await.unwrap();
    let fresh = host(&s, RuntimeConfig::default());
    assert_eq!(fresh.send("sku", StockCommand::Get).await.unwrap(), 3);
}

/// A store that records the versions its event reads start from.
struct ReadsFrom {
    inner: Arc<InMemoryEventStore>,
    from: std::sync::Mutex<Vec<u64>>,
}

impl ReadsFrom {
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.from.lock().unwrap())
    }
}

#[async_trait]
impl EventStore for ReadsFrom {
    async fn save_event(&self, event: &Event) -> CoreResult<()> {
        self.inner.save_event(event).await
    }
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> CoreResult<()> {
        self.inner.save_events(actor_id, events).await
    }
    async fn events_of(&self, actor: ActorKey<'_>, from: u64) -> CoreResult<Vec<Event>> {
        self.from.lock().unwrap().push(from);
        self.inner.events_of(actor, from).await
    }
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> CoreResult<u64> {
        self.inner.latest_version_of(actor).await
    }
}

#[async_trait]
impl SnapshotStore for ReadsFrom {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> CoreResult<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> CoreResult<Option<Snapshot>> {
        self.inner.latest_snapshot_of(actor).await
    }
}

#[tokio::test]
async fn a_snapshot_keeps_the_latest_command_ids_so_a_rebuild_reads_only_what_follows_it() {
    let s = store();
    let h = host(
        &s,
        RuntimeConfig::default().snapshot(SnapshotPolicy::every(40)),
    );
    // 40 commands with ids, a read without events between them: the snapshot at 40 keeps the
    // ids of the 32 latest commands that stored events, oldest first.
    for i in 0..40 {
        h.dispatch("sku", with_id(StockCommand::Restock(1), &format!("c-{i}")))
            .await
            .unwrap();
        h.dispatch("sku", with_id(StockCommand::Get, &format!("read-{i}")))
            .await
            .unwrap();
    }
    let snap = s.latest_snapshot_of(stock("sku")).await.unwrap().unwrap();
    assert_eq!(snap.version, 40);
    let expected: Vec<String> = (8..40).map(|i| format!("c-{i}")).collect();
    assert_eq!(snap.command_ids.as_ref(), Some(&expected));
    h.send("sku", StockCommand::Restock(1)).await.unwrap();

    // A new activation reads the events after the snapshot only, and still knows a command
    // applied before it: its retry is not applied again.
    let reads = Arc::new(ReadsFrom {
        inner: Arc::clone(&s),
        from: Default::default(),
    });
    let fresh = ActorHost::new(
        Shop,
        Arc::clone(&reads) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    assert_eq!(
        fresh
            .dispatch("sku", with_id(StockCommand::Restock(1), "c-10"))
            .await
            .ok(),
        Some(Handled::AlreadyApplied {
            reply: 41,
            version: 41
        })
    );
    assert_eq!(reads.take(), [41]);
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 41);

    // A snapshot of an earlier release kept no ids: the rebuild reads 32 events before it for
    // theirs, and still knows the same commands.
    let mut earlier = snap.clone();
    earlier.command_ids = None;
    earlier.version = 41;
    earlier.state = serde_json::json!({"available": 41})
        .as_object()
        .cloned()
        .unwrap();
    s.save_snapshot(&earlier).await.unwrap();
    let fresh = ActorHost::new(
        Shop,
        Arc::clone(&reads) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    assert!(matches!(
        fresh
            .dispatch("sku", with_id(StockCommand::Restock(1), "c-39"))
            .await,
        Ok(Handled::AlreadyApplied { version: 41, .. })
    ));
    assert_eq!(reads.take(), [10]);
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 41);
}
