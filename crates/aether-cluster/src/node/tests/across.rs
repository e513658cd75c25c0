//! Transactions across actor types on a cluster, and the refresh for applications that commit
//! directly: the owners of every actor involved reload, so no read answers from before.

use aether_actor::{Rejection, Transacted};
use aether_core::{ActorKey, Event, Transaction};

use super::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seats {
    free: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum SeatCmd {
    Open(u32),
    Free,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SeatEvent {
    Opened { seats: u32 },
    Reserved { seats: u32 },
}

impl DomainEvent for SeatEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "Opened",
            Self::Reserved { .. } => "Reserved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum SoldOut {
    #[error("sold out: {free} left")]
    SoldOut { free: u32 },
}

struct Shows;

impl Actor for Shows {
    type State = Seats;
    type Command = SeatCmd;
    type Event = SeatEvent;
    type Reply = u32;
    type Error = SoldOut;
    const TYPE: &'static str = "show";

    async fn decide(&self, _: &str, _: &Seats, c: &SeatCmd) -> Result<Vec<SeatEvent>, SoldOut> {
        Ok(match *c {
            SeatCmd::Open(seats) => vec![SeatEvent::Opened { seats }],
            SeatCmd::Free => vec![],
        })
    }

    fn apply(s: &mut Seats, e: &SeatEvent) {
        match *e {
            SeatEvent::Opened { seats } => s.free += seats,
            SeatEvent::Reserved { seats } => s.free -= seats,
        }
    }

    fn reply(s: &Seats, _: &SeatCmd, _: &[SeatEvent]) -> u32 {
        s.free
    }
}

async fn two_nodes() -> (Arc<InMemoryEventStore>, Vec<ClusterNode>) {
    let net = LocalNetwork::new();
    let store = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let actors = Actors::new(Arc::clone(&store) as _).with(Bank).with(Shows);
        nodes.push(
            ClusterNode::start_local(&net, config(id), actors)
                .await
                .expect("node starts"),
        );
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b"], WAIT)
            .await
            .expect("cluster forms");
    }
    (store, nodes)
}

/// Asks `read` until it answers `want` or the deadline passes; every other answer is stale
/// and counted. Returns how many were stale.
async fn stale_reads<F, Fut>(want: i64, mut read: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = Instant::now() + WAIT;
    let mut stale = 0;
    loop {
        if read().await == want {
            return stale;
        }
        stale += 1;
        assert!(Instant::now() < deadline, "never answered {want}");
        tokio::time::sleep(HEARTBEAT / 4).await;
    }
}

/// Reserves `seats` and pays 30 each from the account.
fn reserve(
    show: &aether_actor::Participant<Shows>,
    account: &aether_actor::Participant<Bank>,
    seats: u32,
) -> impl FnMut(&mut aether_actor::Decide<'_>) -> Result<i64, Rejection> + Send {
    let (show, account) = (show.clone(), account.clone());
    move |d| {
        let free = d.state(&show).free;
        if free < seats {
            return Err(show.reject(SoldOut::SoldOut { free }));
        }
        let cost = i64::from(seats) * 30;
        let balance = d.state(&account).balance;
        if balance < cost {
            return Err(account.reject(Refused::InsufficientFunds { balance }));
        }
        d.emit(&show, [SeatEvent::Reserved { seats }]);
        d.emit(&account, [Moved::Withdrawn { amount: cost }]);
        Ok(balance - cost)
    }
}

#[tokio::test(start_paused = true)]
async fn a_transaction_across_types_on_two_owners_leaves_no_stale_reads() {
    let (store, nodes) = two_nodes().await;
    // The account is owned by node a, the show by node b; the transaction runs on node a.
    let acct = actor_of(&nodes[0], "a", "acct");
    let show_id = actor_of(&nodes[0], "b", "show");
    nodes[1]
        .send::<Bank>(&acct, Cmd::Deposit(100))
        .await
        .unwrap();
    nodes[0]
        .send::<Shows>(&show_id, SeatCmd::Open(10))
        .await
        .unwrap();
    // Both owners hold activations with the state before.
    assert_eq!(
        nodes[0]
            .send::<Shows>(&show_id, SeatCmd::Free)
            .await
            .unwrap(),
        10
    );
    assert!(nodes[1].host::<Shows>().unwrap().is_active(&show_id));
    assert!(nodes[0].host::<Bank>().unwrap().is_active(&acct));

    let mut tx = nodes[0].transaction(CommandMeta::new().command_id("order-1"));
    let show = tx.actor::<Shows>(show_id.clone()).unwrap();
    let account = tx.actor::<Bank>(acct.clone()).unwrap();
    let left = tx.run(reserve(&show, &account, 2)).await.unwrap();
    assert_eq!(left, Transacted::Committed(40));
    // The remote owner dropped its activation before `run` returned.
    assert!(!nodes[1].host::<Shows>().unwrap().is_active(&show_id));

    // Read-only commands on both owners, from both nodes, see the committed state.
    let (show_id, acct) = (show_id.as_str(), acct.as_str());
    for n in &nodes {
        let stale = stale_reads(8, || async move {
            i64::from(n.send::<Shows>(show_id, SeatCmd::Free).await.unwrap())
        })
        .await;
        assert_eq!(stale, 0, "the show's owner answered from before the commit");
        let stale = stale_reads(40, || async move {
            n.send::<Bank>(acct, Cmd::Balance).await.unwrap()
        })
        .await;
        assert_eq!(
            stale, 0,
            "the account's owner answered from before the commit"
        );
    }

    // The same command again: applied once.
    let mut tx = nodes[1].transaction(CommandMeta::new().command_id("order-1"));
    let show = tx.actor::<Shows>(show_id).unwrap();
    let account = tx.actor::<Bank>(acct).unwrap();
    assert!(tx
        .run(reserve(&show, &account, 2))
        .await
        .unwrap()
        .is_already_applied());

    // A rejection names its actor and is typed; nothing is written.
    let mut tx = nodes[1].transaction(CommandMeta::new());
    let show = tx.actor::<Shows>(show_id).unwrap();
    let account = tx.actor::<Bank>(acct).unwrap();
    match tx.run(reserve(&show, &account, 2)).await {
        Err(CommandError::Rejected(r)) => {
            assert_eq!(
                r.of(&account),
                Some(&Refused::InsufficientFunds { balance: 40 })
            );
            assert_eq!(r.key(), ActorKey::new("bank", acct));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("show", show_id))
            .await
            .unwrap(),
        2
    );
    // A type the node does not host.
    let mut tx = nodes[0].transaction(CommandMeta::new());
    assert!(matches!(
        tx.actor::<Echo>("x"),
        Err(aether_core::Error::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn an_application_that_commits_directly_refreshes_the_owners() {
    let (store, nodes) = two_nodes().await;
    let acct = actor_of(&nodes[0], "a", "acct");
    let show_id = actor_of(&nodes[0], "b", "show");
    nodes[1]
        .send::<Bank>(&acct, Cmd::Deposit(100))
        .await
        .unwrap();
    nodes[0]
        .send::<Shows>(&show_id, SeatCmd::Open(10))
        .await
        .unwrap();

    // Committed next to the cluster, not through it.
    let txn = Transaction::new()
        .append(
            show_id.clone(),
            1,
            vec![Event::new("Reserved", show_id.clone(), 2)
                .with_actor_type("show")
                .with_field("seats", 3)],
        )
        .append(
            acct.clone(),
            1,
            vec![Event::new("Withdrawn", acct.clone(), 2)
                .with_actor_type("bank")
                .with_field("amount", 90)],
        );
    store.commit(&txn).await.unwrap();
    // Without a refresh, the owners answer reads from their activations.
    assert_eq!(
        nodes[1]
            .send::<Shows>(&show_id, SeatCmd::Free)
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        nodes[0].send::<Bank>(&acct, Cmd::Balance).await.unwrap(),
        100
    );

    // Asked from node b: the account's owner is node a.
    nodes[1]
        .refresh(&[
            ActorKey::new("show", &show_id),
            ActorKey::new("bank", &acct),
        ])
        .await
        .unwrap();
    let (show_id, acct) = (show_id.as_str(), acct.as_str());
    for n in &nodes {
        let stale = stale_reads(7, || async move {
            i64::from(n.send::<Shows>(show_id, SeatCmd::Free).await.unwrap())
        })
        .await;
        assert_eq!(stale, 0);
        let stale = stale_reads(10, || async move {
            n.send::<Bank>(acct, Cmd::Balance).await.unwrap()
        })
        .await;
        assert_eq!(stale, 0);
    }
    // An untyped actor cannot be routed to a host.
    assert!(matches!(
        nodes[0].refresh(&[ActorKey::untyped(acct)]).await,
        Err(aether_core::Error::InvalidInput(_))
    ));
    // A type no node hosts has nothing to reload.
    nodes[0]
        .refresh(&[ActorKey::new("nobody", show_id)])
        .await
        .unwrap();
}
