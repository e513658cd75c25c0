//! Transactions across actor types (`aether_actor::Transact`) on the JetStream store: eight
//! writers, each on its own NATS connection with its own hosts, move money between customers
//! and shows' tills; the total is conserved and every acknowledged transaction is whole (one
//! event on each of its two actors). Atomic batches need nats-server 2.12+; on older servers
//! (Debian's 2.9) a commit is refused with the typed `Unsupported` error and nothing is
//! written.

use std::sync::Arc;

use aether_actor::{
    Actor, ActorClient, ActorHost, CommandError, CommandMeta, DomainEvent, RetryPolicy,
    RuntimeConfig, Transact, Transacted,
};
use aether_core::{ActorKey, Error, EventStore, SnapshotStore, METADATA_MESSAGE_ID};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::{find_debian_nats_server, NatsServer, DEBIAN_NATS_SERVER_ENV, INSTALL_HINT};
use serde::{Deserialize, Serialize};

const WRITERS: usize = 8;
const PER_WRITER: usize = 15;
const SHOWS: usize = 2;
const CUSTOMERS: usize = 3;
const FUNDS: i64 = 600;
const AMOUNT: i64 = 30;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Till {
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TillEvent {
    Paid { cents: i64 },
    Refunded { cents: i64 },
}

impl DomainEvent for TillEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Paid { .. } => "Paid",
            Self::Refunded { .. } => "Refunded",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Wallet {
    cents: i64,
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
#[error("only {cents} cents")]
struct Short {
    cents: i64,
}

struct Shows;

impl Actor for Shows {
    type State = Till;
    type Command = ();
    type Event = TillEvent;
    type Reply = i64;
    type Error = Short;
    const TYPE: &'static str = "show";

    async fn decide(&self, _: &str, _: &Till, _: &()) -> Result<Vec<TillEvent>, Short> {
        Ok(Vec::new())
    }

    fn apply(s: &mut Till, e: &TillEvent) {
        match *e {
            TillEvent::Paid { cents } => s.cents += cents,
            TillEvent::Refunded { cents } => s.cents -= cents,
        }
    }

    fn reply(s: &Till, _: &(), _: &[TillEvent]) -> i64 {
        s.cents
    }
}

struct Customers;

impl Actor for Customers {
    type State = Wallet;
    type Command = i64;
    type Event = WalletEvent;
    type Reply = i64;
    type Error = Short;
    const TYPE: &'static str = "customer";

    async fn decide(&self, _: &str, _: &Wallet, cents: &i64) -> Result<Vec<WalletEvent>, Short> {
        Ok(vec![WalletEvent::Funded { cents: *cents }])
    }

    fn apply(s: &mut Wallet, e: &WalletEvent) {
        match *e {
            WalletEvent::Funded { cents } => s.cents += cents,
            WalletEvent::Charged { cents } => s.cents -= cents,
        }
    }

    fn reply(s: &Wallet, _: &i64, _: &[WalletEvent]) -> i64 {
        s.cents
    }
}

type Hosts = (ActorHost<Shows>, ActorHost<Customers>);

async fn hosts(url: &str, namespace: &str) -> (Arc<JetStreamEventStore>, Hosts) {
    let client = async_nats::connect(url).await.expect("connects");
    let store = Arc::new(
        JetStreamEventStore::new(client, JetStreamConfig::default().namespace(namespace))
            .await
            .expect("store opens"),
    );
    let config = RuntimeConfig::default().retry(
        RetryPolicy::default()
            .max_retries(200)
            .initial_backoff(std::time::Duration::from_millis(1)),
    );
    let dynamic = Arc::clone(&store) as Arc<dyn SnapshotStore>;
    let hosts = (
        ActorHost::new(Shows, Arc::clone(&dynamic), config),
        ActorHost::new(Customers, dynamic, config),
    );
    (store, hosts)
}

/// Moves [`AMOUNT`] from the customer to the show's till (`pay`) or back; refused when the
/// payer is short.
async fn move_money(
    (shows, customers): &Hosts,
    command_id: &str,
    show: &str,
    customer: &str,
    pay: bool,
) -> Result<Transacted<()>, CommandError<aether_actor::Rejection>> {
    let mut tx = Transact::new(CommandMeta::new().command_id(command_id));
    let show = tx.actor(shows, show);
    let customer = tx.actor(customers, customer);
    tx.run(move |d| {
        if pay {
            let cents = d.state(&customer).cents;
            if cents < AMOUNT {
                return Err(customer.reject(Short { cents }));
            }
            d.emit(&customer, [WalletEvent::Charged { cents: AMOUNT }]);
            d.emit(&show, [TillEvent::Paid { cents: AMOUNT }]);
        } else {
            let cents = d.state(&show).cents;
            if cents < AMOUNT {
                return Err(show.reject(Short { cents }));
            }
            d.emit(&show, [TillEvent::Refunded { cents: AMOUNT }]);
            d.emit(&customer, [WalletEvent::Funded { cents: AMOUNT }]);
        }
        Ok(())
    })
    .await
}

/// The typed refusal of a server without atomic batches: nothing written.
async fn assert_unsupported(url: &str) {
    let (store, hosts) = hosts(url, "across-old").await;
    match move_money(&hosts, "t-1", "s-0", "c-0", false).await {
        Err(CommandError::Rejected(_)) => {}
        other => panic!("an empty till refuses first: {other:?}"),
    }
    hosts.1.send("c-0", FUNDS).await.unwrap();
    match move_money(&hosts, "t-2", "s-0", "c-0", true).await {
        Err(CommandError::Infrastructure(e @ Error::Unsupported { .. })) => {
            assert!(e.to_string().contains("2.12"), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let show = store
        .latest_version_of(ActorKey::new("show", "s-0"))
        .await
        .unwrap();
    let customer = store
        .latest_version_of(ActorKey::new("customer", "c-0"))
        .await
        .unwrap();
    assert_eq!((show, customer), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_on_their_own_connections_move_money_across_two_types_atomically() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    if !server.version().at_least(2, 12) {
        assert_unsupported(&url).await;
        return;
    }
    let (store, setup) = hosts(&url, "across").await;
    for c in 0..CUSTOMERS {
        setup.1.send(&format!("c-{c}"), FUNDS).await.unwrap();
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let (_store, hosts) = hosts(&url, "across").await;
            let mut acknowledged = Vec::new();
            for k in 0..PER_WRITER {
                let id = format!("w{w}-k{k}");
                let show = format!("s-{}", (w + k) % SHOWS);
                let customer = format!("c-{}", (w * 7 + k) % CUSTOMERS);
                match move_money(&hosts, &id, &show, &customer, (w + k) % 2 == 0).await {
                    Ok(Transacted::Committed(())) => acknowledged.push(id),
                    Ok(Transacted::AlreadyApplied) => panic!("{id} was never sent before"),
                    Err(CommandError::Rejected(_)) => {}
                    Err(e) => panic!("{id}: {e:?}"),
                }
            }
            (
                acknowledged,
                hosts.0.stats().conflicts + hosts.1.stats().conflicts,
            )
        }));
    }
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    for w in writers {
        let (acked, met) = w.await.unwrap();
        acknowledged.extend(acked);
        conflicts += met;
    }

    let mut total = 0;
    let mut stored = Vec::new();
    for s in 0..SHOWS {
        let id = format!("s-{s}");
        total += setup.0.load_state(&id).await.unwrap().0.cents;
        stored.extend(
            store
                .events_of(ActorKey::new("show", &id), 1)
                .await
                .unwrap(),
        );
    }
    for c in 0..CUSTOMERS {
        let id = format!("c-{c}");
        total += setup.1.load_state(&id).await.unwrap().0.cents;
        stored.extend(
            store
                .events_of(ActorKey::new("customer", &id), 1)
                .await
                .unwrap(),
        );
    }
    assert_eq!(total, FUNDS * CUSTOMERS as i64);
    assert!(!acknowledged.is_empty());
    for id in &acknowledged {
        let types: Vec<Option<&str>> = stored
            .iter()
            .filter(|e| e.metadata_value(METADATA_MESSAGE_ID) == Some(id.as_str()))
            .map(|e| e.actor_type.as_deref())
            .collect();
        assert_eq!(types.len(), 2, "{id}: {types:?}");
        assert!(types.contains(&Some("show")) && types.contains(&Some("customer")));
    }
    // Nothing but acknowledged transactions (and the funding) was written.
    let with_ids = stored
        .iter()
        .filter(|e| e.metadata_value(METADATA_MESSAGE_ID).is_some())
        .count();
    assert_eq!(with_ids, acknowledged.len() * 2);
    eprintln!(
        "{} of {} transactions committed, {conflicts} conflicts decided again",
        acknowledged.len(),
        WRITERS * PER_WRITER
    );
}

/// Debian's nats-server 2.9: a commit is refused with `Unsupported`. `scripts/test` installs
/// it; without it this test fails saying how to install it, rather than passing untried.
#[tokio::test]
async fn a_server_before_2_12_refuses_a_transaction_across_types_as_unsupported() {
    let binary = find_debian_nats_server()
        .unwrap_or_else(|| panic!("this test needs Debian's nats-server 2.9: {INSTALL_HINT}"));
    let server = NatsServer::builder().binary(binary).start().unwrap();
    assert!(
        !server.version().at_least(2, 12),
        "{} supports atomic batches: point {DEBIAN_NATS_SERVER_ENV} at a server before 2.12",
        server.binary().display()
    );
    assert_unsupported(&server.url()).await;
}
