//! Decisions over actors of two types (a show's seats and till, a customer's wallet),
//! committed all or nothing.

use std::sync::atomic::AtomicU32;

use aether_core::Transaction;

use super::*;
use crate::{Participant, Rejection, Transact, Transacted};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Show {
    free: u32,
    till: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ShowCommand {
    Open(u32),
    Get,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ShowEvent {
    Opened { seats: u32 },
    Reserved { seats: u32, cents: i64 },
    Refunded { cents: i64 },
}

impl DomainEvent for ShowEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "Opened",
            Self::Reserved { .. } => "Reserved",
            Self::Refunded { .. } => "Refunded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum ShowError {
    #[error("sold out: {free} seats left")]
    SoldOut { free: u32 },
    #[error("the till holds {till}")]
    TillShort { till: i64 },
}

struct Shows;

impl Actor for Shows {
    type State = Show;
    type Command = ShowCommand;
    type Event = ShowEvent;
    type Reply = Show;
    type Error = ShowError;
    const TYPE: &'static str = "show";

    async fn decide(
        &self,
        _: &str,
        _: &Show,
        c: &ShowCommand,
    ) -> Result<Vec<ShowEvent>, ShowError> {
        Ok(match *c {
            ShowCommand::Open(seats) => vec![ShowEvent::Opened { seats }],
            ShowCommand::Get => vec![],
        })
    }

    fn apply(s: &mut Show, e: &ShowEvent) {
        match *e {
            ShowEvent::Opened { seats } => s.free += seats,
            ShowEvent::Reserved { seats, cents } => {
                s.free -= seats;
                s.till += cents;
            }
            ShowEvent::Refunded { cents } => s.till -= cents,
        }
    }

    fn reply(s: &Show, _: &ShowCommand, _: &[ShowEvent]) -> Show {
        s.clone()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Wallet {
    cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum WalletCommand {
    Fund(i64),
    Get,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum WalletEvent {
    Funded { cents: i64 },
    Charged { cents: i64 },
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Funded { .. } => "Funded",
            Self::Charged { .. } => "Charged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum WalletError {
    #[error("insufficient funds: {cents}")]
    Broke { cents: i64 },
}

struct Customers;

impl Actor for Customers {
    type State = Wallet;
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Reply = i64;
    type Error = WalletError;
    const TYPE: &'static str = "customer";

    async fn decide(
        &self,
        _: &str,
        _: &Wallet,
        c: &WalletCommand,
    ) -> Result<Vec<WalletEvent>, WalletError> {
        Ok(match *c {
            WalletCommand::Fund(cents) => vec![WalletEvent::Funded { cents }],
            WalletCommand::Get => vec![],
        })
    }

    fn apply(s: &mut Wallet, e: &WalletEvent) {
        match *e {
            WalletEvent::Funded { cents } => s.cents += cents,
            WalletEvent::Charged { cents } => s.cents -= cents,
        }
    }

    fn reply(s: &Wallet, _: &WalletCommand, _: &[WalletEvent]) -> i64 {
        s.cents
    }
}

fn hosts(
    store: Arc<dyn SnapshotStore>,
    config: RuntimeConfig,
) -> (ActorHost<Shows>, ActorHost<Customers>) {
    (
        ActorHost::new(Shows, Arc::clone(&store), config),
        ActorHost::new(Customers, store, config),
    )
}

/// Reserves `seats` at `price` each on the show and charges the customer: both or neither.
fn reserve(
    show: &Participant<Shows>,
    customer: &Participant<Customers>,
    seats: u32,
    price: i64,
) -> impl FnMut(&mut crate::Decide<'_>) -> Result<i64, Rejection> + Send {
    let (show, customer) = (show.clone(), customer.clone());
    move |d| {
        let free = d.state(&show).free;
        if free < seats {
            return Err(show.reject(ShowError::SoldOut { free }));
        }
        let cost = i64::from(seats) * price;
        let cents = d.state(&customer).cents;
        if cents < cost {
            return Err(customer.reject(WalletError::Broke { cents }));
        }
        d.emit(&show, [ShowEvent::Reserved { seats, cents: cost }]);
        d.emit(&customer, [WalletEvent::Charged { cents: cost }]);
        Ok(cents - cost)
    }
}

#[tokio::test]
async fn reserve_and_charge_commits_both_or_neither() {
    let s = store();
    let (shows, customers) = hosts(s.clone(), RuntimeConfig::default());
    shows.send("s-1", ShowCommand::Open(10)).await.unwrap();
    customers
        .send("c-1", WalletCommand::Fund(500))
        .await
        .unwrap();
    assert!(shows.is_active("s-1") && customers.is_active("c-1"));

    let meta = CommandMeta::new().command_id("order-1").user_id("ada");
    let mut tx = Transact::new(meta);
    let show = tx.actor(&shows, "s-1");
    let customer = tx.actor(&customers, "c-1");
    assert_eq!(
        tx.keys(),
        [
            ActorKey::new("show", "s-1"),
            ActorKey::new("customer", "c-1")
        ]
    );
    let left = tx.run(reserve(&show, &customer, 2, 100)).await.unwrap();
    assert_eq!(left, Transacted::Committed(300));

    // Both changed, and the local activations were passivated so they see it.
    let seen = shows.send("s-1", ShowCommand::Get).await.unwrap();
    assert_eq!((seen.free, seen.till), (8, 200));
    assert_eq!(
        customers.send("c-1", WalletCommand::Get).await.unwrap(),
        300
    );
    for key in [
        ActorKey::new("show", "s-1"),
        ActorKey::new("customer", "c-1"),
    ] {
        let events = s.events_of(key, 2).await.unwrap();
        assert_eq!(events.len(), 1, "{key}");
        assert_eq!(events[0].actor_key(), key);
        assert_eq!(
            events[0].metadata_value(METADATA_MESSAGE_ID),
            Some("order-1")
        );
        assert_eq!(events[0].metadata_value(METADATA_USER_ID), Some("ada"));
    }

    // Neither: the customer cannot pay for 5 seats, so the show keeps them too.
    let mut tx = Transact::new(CommandMeta::new());
    let show = tx.actor(&shows, "s-1");
    let customer = tx.actor(&customers, "c-1");
    assert!(tx.run(reserve(&show, &customer, 5, 100)).await.is_err());
    assert_eq!(
        s.latest_version_of(ActorKey::new("show", "s-1"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.latest_version_of(ActorKey::new("customer", "c-1"))
            .await
            .unwrap(),
        2
    );

    // A decision that changes nothing writes nothing.
    let mut tx = Transact::new(CommandMeta::new());
    let show = tx.actor(&shows, "s-1");
    let free = tx.run(move |d| Ok(d.state(&show).free)).await.unwrap();
    assert_eq!(free.into_reply(), Some(8));
}

#[tokio::test]
async fn a_rejection_comes_back_typed_and_names_its_actor() {
    let s = store();
    let (shows, customers) = hosts(s.clone(), RuntimeConfig::default());
    shows.send("s-1", ShowCommand::Open(1)).await.unwrap();
    customers
        .send("c-1", WalletCommand::Fund(50))
        .await
        .unwrap();

    // The show refuses.
    let mut tx = Transact::new(CommandMeta::new());
    let show = tx.actor(&shows, "s-1");
    let customer = tx.actor(&customers, "c-1");
    match tx.run(reserve(&show, &customer, 2, 10)).await {
        Err(CommandError::Rejected(r)) => {
            assert_eq!(r.of(&show), Some(&ShowError::SoldOut { free: 1 }));
            assert_eq!(r.of(&customer), None);
            assert!(r.is_from(&show) && !r.is_from(&customer));
            assert_eq!(r.key(), ActorKey::new("show", "s-1"));
            assert_eq!(r.to_string(), "show/s-1 refused: sold out: 1 seats left");
            assert_eq!(
                r.downcast::<ShowError>().ok(),
                Some(ShowError::SoldOut { free: 1 })
            );
        }
        other => panic!("{other:?}"),
    }
    // The customer refuses.
    let mut tx = Transact::new(CommandMeta::new());
    let show = tx.actor(&shows, "s-1");
    let customer = tx.actor(&customers, "c-1");
    match tx.run(reserve(&show, &customer, 1, 80)).await {
        Err(CommandError::Rejected(r)) => {
            assert_eq!(r.of(&customer), Some(&WalletError::Broke { cents: 50 }));
            assert_eq!(r.of(&show), None);
            assert_eq!(r.key(), ActorKey::new("customer", "c-1"));
            assert!(r.downcast_ref::<ShowError>().is_none());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (shows.stats().rejections, customers.stats().rejections),
        (1, 1)
    );
    assert_eq!(
        s.latest_version_of(ActorKey::new("show", "s-1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.latest_version_of(ActorKey::new("customer", "c-1"))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn bad_shapes_are_invalid_input() {
    let s = store();
    let (shows, customers) = hosts(s.clone(), RuntimeConfig::default());
    let invalid = |r: Result<Transacted<()>, CommandError<Rejection>>| {
        matches!(r, Err(CommandError::Infrastructure(Error::InvalidInput(_))))
    };
    assert!(invalid(
        Transact::new(CommandMeta::new()).run(|_| Ok(())).await
    ));
    // One actor twice; but one id under two types is two actors.
    let mut tx = Transact::new(CommandMeta::new());
    tx.actor(&shows, "x");
    tx.actor(&shows, "x");
    assert!(invalid(tx.run(|_| Ok(())).await));
    let mut tx = Transact::new(CommandMeta::new());
    tx.actor(&shows, "x");
    tx.actor(&customers, "x");
    assert!(!invalid(tx.run(|_| Ok(())).await));
    // An empty id, hosts over two stores.
    let mut tx = Transact::new(CommandMeta::new());
    tx.actor(&shows, "");
    assert!(invalid(tx.run(|_| Ok(())).await));
    let (_, elsewhere) = hosts(store(), RuntimeConfig::default());
    let mut tx = Transact::new(CommandMeta::new());
    tx.actor(&shows, "s-1");
    tx.actor(&elsewhere, "c-1");
    assert!(invalid(tx.run(|_| Ok(())).await));
    // A handle of another transaction: its events and its rejection are refused.
    let mut other = Transact::new(CommandMeta::new());
    let foreign = other.actor(&shows, "s-1");
    let mut tx = Transact::new(CommandMeta::new());
    tx.actor(&shows, "s-1");
    let f = foreign.clone();
    assert!(invalid(
        tx.run(move |d| {
            d.emit(&f, [ShowEvent::Opened { seats: 1 }]);
            Ok(())
        })
        .await
    ));
    let mut tx = Transact::new(CommandMeta::new());
    tx.actor(&shows, "s-1");
    assert!(invalid(
        tx.run(move |_| Err(foreign.reject(ShowError::SoldOut { free: 0 })))
            .await
    ));
    assert_eq!(
        s.latest_version_of(ActorKey::new("show", "s-1"))
            .await
            .unwrap(),
        0
    );
}

/// A store where another writer funds `customer/c-1` just before each of the first
/// `interferences` commits, and other tasks run between reads and commits.
struct Interferes {
    inner: InMemoryEventStore,
    interferences: AtomicU32,
}

#[async_trait]
impl EventStore for Interferes {
    async fn save_event(&self, event: &Event) -> CoreResult<()> {
        self.inner.save_event(event).await
    }
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> CoreResult<()> {
        self.inner.save_events(actor_id, events).await
    }
    async fn events_of(&self, actor: ActorKey<'_>, from: u64) -> CoreResult<Vec<Event>> {
        // Other tasks run between a read and the commit, as they would over a network.
        tokio::task::yield_now().await;
        self.inner.events_of(actor, from).await
    }
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> CoreResult<u64> {
        self.inner.latest_version_of(actor).await
    }
    async fn commit(&self, transaction: &Transaction) -> CoreResult<()> {
        tokio::task::yield_now().await;
        let left = self.interferences.load(Ordering::SeqCst);
        if left > 0 {
            self.interferences.store(left - 1, Ordering::SeqCst);
            let key = ActorKey::new("customer", "c-1");
            let v = self.inner.latest_version_of(key).await?;
            let funded = Event::new("Funded", "c-1", v + 1)
                .with_actor_type("customer")
                .with_field("cents", 1000);
            self.inner.save_event(&funded).await?;
        }
        self.inner.commit(transaction).await
    }
}

#[async_trait]
impl SnapshotStore for Interferes {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> CoreResult<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> CoreResult<Option<Snapshot>> {
        self.inner.latest_snapshot_of(actor).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_conflict_is_decided_again_on_the_new_states() {
    let s = Arc::new(Interferes {
        inner: InMemoryEventStore::new(),
        interferences: AtomicU32::new(0),
    });
    let (shows, customers) = hosts(
        s.clone(),
        RuntimeConfig::default().retry(RetryPolicy::default().max_retries(2)),
    );
    shows.send("s-1", ShowCommand::Open(10)).await.unwrap();
    customers
        .send("c-1", WalletCommand::Fund(100))
        .await
        .unwrap();
    s.interferences.store(1, Ordering::SeqCst);

    let mut tx = Transact::new(CommandMeta::new().command_id("order-2"));
    let show = tx.actor(&shows, "s-1");
    let customer = tx.actor(&customers, "c-1");
    let mut seen = Vec::new();
    let (sh, cu) = (show.clone(), customer.clone());
    let mut decide = reserve(&show, &customer, 1, 100);
    let left = tx
        .run(|d| {
            seen.push((d.version(&sh), d.version(&cu), d.state(&cu).cents));
            decide(d)
        })
        .await
        .unwrap();
    // Decided on 100 cents, refused by the store (the customer was funded meanwhile), decided
    // again on 1100.
    assert_eq!(seen, [(1, 1, 100), (1, 2, 1100)]);
    assert_eq!(left, Transacted::Committed(1000));
    assert_eq!(customers.stats().conflicts, 1);
    assert_eq!(shows.stats().conflicts, 0);
    assert_eq!(
        customers.send("c-1", WalletCommand::Get).await.unwrap(),
        1000
    );

    // Conflicts beyond the policy are their own error; nothing is written.
    s.interferences.store(10, Ordering::SeqCst);
    let mut tx = Transact::new(CommandMeta::new());
    let show = tx.actor(&shows, "s-1");
    let customer = tx.actor(&customers, "c-1");
    match tx.run(reserve(&show, &customer, 1, 1)).await {
        Err(CommandError::Conflict {
            actor_id, attempts, ..
        }) => assert_eq!((actor_id.as_str(), attempts), ("c-1", 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(customers.stats().conflicts_exhausted, 1);
    assert_eq!(
        s.latest_version_of(ActorKey::new("show", "s-1"))
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn a_command_id_makes_a_retry_apply_once() {
    let s = store();
    let (shows, customers) = hosts(s.clone(), RuntimeConfig::default());
    shows.send("s-1", ShowCommand::Open(10)).await.unwrap();
    customers
        .send("c-1", WalletCommand::Fund(500))
        .await
        .unwrap();
    for round in 0..2 {
        // The same command, sent again (its first answer lost): applied once.
        let mut tx = Transact::new(CommandMeta::new().command_id("order-3"));
        let show = tx.actor(&shows, "s-1");
        let customer = tx.actor(&customers, "c-1");
        let outcome = tx.run(reserve(&show, &customer, 3, 100)).await.unwrap();
        assert_eq!(outcome.is_already_applied(), round == 1, "{outcome:?}");
    }
    // Also by other hosts (another process) that never saw it.
    let (shows2, customers2) = hosts(s.clone(), RuntimeConfig::default());
    let mut tx = Transact::new(CommandMeta::new().command_id("order-3"));
    let show = tx.actor(&shows2, "s-1");
    let customer = tx.actor(&customers2, "c-1");
    assert_eq!(
        tx.run(reserve(&show, &customer, 3, 100)).await.unwrap(),
        Transacted::AlreadyApplied
    );
    assert_eq!(
        customers.send("c-1", WalletCommand::Get).await.unwrap(),
        200
    );
    assert_eq!(shows.send("s-1", ShowCommand::Get).await.unwrap().free, 7);
    assert_eq!(
        shows.stats().deduplicated + customers.stats().deduplicated,
        1
    );
    // The transaction id is the command id.
    let events = s
        .events_of(ActorKey::new("customer", "c-1"), 2)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_moving_money_across_two_types_conserve_the_total() {
    let s = Arc::new(Interferes {
        inner: InMemoryEventStore::new(),
        interferences: AtomicU32::new(0),
    });
    let (shows, customers) = hosts(
        s.clone(),
        RuntimeConfig::default().retry(RetryPolicy::default().max_retries(100)),
    );
    for i in 0..2 {
        shows
            .send(&format!("s-{i}"), ShowCommand::Open(1000))
            .await
            .unwrap();
    }
    for i in 0..3 {
        customers
            .send(&format!("c-{i}"), WalletCommand::Fund(1000))
            .await
            .unwrap();
    }
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let (shows, customers) = (shows.clone(), customers.clone());
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut acknowledged = Vec::new();
            for k in 0..25usize {
                let id = format!("w{w}-k{k}");
                let mut tx = Transact::new(CommandMeta::new().command_id(id.clone()));
                let show = tx.actor(&shows, format!("s-{}", (w + k) % 2));
                let customer = tx.actor(&customers, format!("c-{}", (w * 7 + k) % 3));
                let pay = (w + k) % 2 == 0;
                let outcome = tx
                    .run(move |d| {
                        if pay {
                            reserve(&show, &customer, 1, 30)(d)
                        } else {
                            let till = d.state(&show).till;
                            if till < 30 {
                                return Err(show.reject(ShowError::TillShort { till }));
                            }
                            d.emit(&show, [ShowEvent::Refunded { cents: 30 }]);
                            d.emit(&customer, [WalletEvent::Funded { cents: 30 }]);
                            Ok(0)
                        }
                    })
                    .await;
                match outcome {
                    Ok(Transacted::Committed(_)) => acknowledged.push(id),
                    Err(CommandError::Rejected(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let mut total = 0;
    let mut stored = Vec::new();
    for i in 0..2 {
        let id = format!("s-{i}");
        total += shows.load_state(&id).await.unwrap().0.till;
        stored.extend(s.events_of(ActorKey::new("show", &id), 1).await.unwrap());
    }
    for i in 0..3 {
        let id = format!("c-{i}");
        total += customers.load_state(&id).await.unwrap().0.cents;
        stored.extend(
            s.events_of(ActorKey::new("customer", &id), 1)
                .await
                .unwrap(),
        );
    }
    assert_eq!(total, 3000);
    // Every acknowledged transaction is whole: one event on the show, one on the customer;
    // nothing else carries a transaction's id.
    assert!(!acknowledged.is_empty());
    for id in &acknowledged {
        let mine: Vec<_> = stored
            .iter()
            .filter(|e| e.metadata_value(METADATA_MESSAGE_ID) == Some(id.as_str()))
            .map(|e| e.actor_type.clone())
            .collect();
        assert_eq!(mine.len(), 2, "{id}: {mine:?}");
        assert!(mine.contains(&Some("show".into())) && mine.contains(&Some("customer".into())));
    }
    let with_ids = stored
        .iter()
        .filter(|e| e.metadata_value(METADATA_MESSAGE_ID).is_some())
        .count();
    assert_eq!(with_ids, acknowledged.len() * 2);
    let conflicts = shows.stats().conflicts + customers.stats().conflicts;
    assert!(conflicts > 0, "eight writers on five actors must have met");
}
