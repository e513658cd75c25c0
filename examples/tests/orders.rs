//! Orders that must be paid in time (`aether_examples::booking::order`), on a real
//! nats-server with the JetStream store, the cluster, the reactor and the order process:
//! - an order paid in time sells its seats; an unpaid one releases them when its timer fires;
//!   a payment after that is given back;
//! - a `booking-node` process killed with SIGKILL as its orders' timers fire: every timer
//!   fires, once (those it held unacknowledged through the survivors), and every hold is
//!   released once.
//!
//! Before 2.12 (no message schedules) placing an order is refused, typed, and writes nothing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aether_actor::CommandError;
use aether_core::{ActorKey, EventStore, ReactionError};
use aether_examples::booking::node::{BookingNode, NodeTimings};
use aether_examples::booking::order::{self, Order, OrderCommand};

use aether_examples::booking::{Customer, CustomerCommand, Show, ShowCommand};
use aether_testkit::NatsServer;

const WAIT: Duration = Duration::from_secs(60);

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn event_types(node: &BookingNode, actor_type: &str, id: &str) -> Vec<String> {
    node.store
        .events_of(ActorKey::new(actor_type, id), 1)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

fn place(show: &str, customer: &str, seats: u32, pay_within_secs: u32) -> OrderCommand {
    OrderCommand::Place {
        show: show.into(),
        customer: customer.into(),
        seats,
        amount: 30 * i64::from(seats),
        pay_within_secs,
    }
}

/// Before 2.12: placing an order sets its timer, so it is refused and nothing is written.
async fn assert_refused_without_timers(node: &BookingNode) {
    let refused = node
        .node
        .send::<Order>("o-old", place("hamlet", "ada", 1, 60))
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Reaction(
                ReactionError::TimersUnavailable { .. }
            ))
        ),
        "{refused:?}"
    );
    assert!(event_types(node, "order", "o-old").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_sell_their_seats_unpaid_ones_release_them_and_late_payments_are_refunded() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let app = BookingNode::start(client, "orders", "n1", NodeTimings::default())
        .await
        .expect("the node starts");
    app.node
        .wait_for_members(&["n1"], WAIT)
        .await
        .expect("the cluster forms");
    if !server.version().at_least(2, 12) {
        assert_refused_without_timers(&app).await;
        return app.shutdown().await.expect("stops");
    }
    let node = &app.node;
    node.send::<Show>("hamlet", ShowCommand::Create { seats: 10 })
        .await
        .expect("created");
    node.send::<Customer>("ada", CustomerCommand::Fund { amount: 1_000 })
        .await
        .expect("funded");
    let paid = node
        .send::<Order>("paid", place("hamlet", "ada", 2, 600))
        .await
        .expect("placed");
    node.send::<Order>("unpaid", place("hamlet", "ada", 3, 1))
        .await
        .expect("placed");
    // The holds take the seats.
    eventually("both holds", || async {
        let show = event_types(&app, "show", "hamlet").await;
        show.iter().filter(|t| *t == "Held").count() == 2
    })
    .await;
    // Paying the first order completes it: the hold becomes sold seats.
    node.send::<Customer>("ada", order::pay("paid", &paid))
        .await
        .expect("paid");
    eventually("the unpaid order to expire", || async {
        event_types(&app, "order", "unpaid")
            .await
            .contains(&"Expired".to_string())
    })
    .await;
    eventually("the paid order to complete", || async {
        event_types(&app, "order", "paid")
            .await
            .contains(&"Completed".to_string())
    })
    .await;
    eventually("the seats to settle", || async {
        node.send::<Show>("hamlet", ShowCommand::Seating)
            .await
            .is_ok_and(|s| s.holds.is_empty() && s.free == 8)
    })
    .await;
    // A payment after the order expired is given back.
    let late = CustomerCommand::PayOrder {
        order: "unpaid".into(),
        show: "hamlet".into(),
        amount: 90,
    };
    node.send::<Customer>("ada", late).await.expect("paid late");
    eventually("the refund", || async {
        event_types(&app, "customer", "ada").await.len() == 4
    })
    .await;
    let ada = node
        .send::<Customer>("ada", CustomerCommand::Balance)
        .await
        .expect("balance");
    assert_eq!(
        ada.balance,
        1_000 - 60,
        "only the paid order is charged in the end"
    );
    assert_eq!(
        event_types(&app, "order", "unpaid").await,
        ["Placed", "Expired", "Refunded"]
    );
    assert_eq!(
        event_types(&app, "order", "paid").await,
        ["Placed", "Completed"]
    );
    app.shutdown().await.expect("stops");
}

/// A `booking-node` process, killed (SIGKILL) when dropped so a failing test leaves none.
struct Process(Child);

impl Process {
    fn start(url: &str, namespace: &str, id: &str) -> Self {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_booking-node"));
        Self(
            Command::new(binary)
                .args([url, namespace, id])
                .stdout(Stdio::null())
                .spawn()
                .expect("the node starts"),
        )
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_its_timers_to_the_others_and_each_fires_once() {
    let server = NatsServer::start().expect("nats-server");
    let namespace = "crash";
    let mut victim = Process::start(&server.url(), namespace, "victim");
    let _other = Process::start(&server.url(), namespace, "other");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let app = BookingNode::start(client, namespace, "here", NodeTimings::default())
        .await
        .expect("the node starts");
    app.node
        .wait_for_members(&["victim", "other", "here"], WAIT)
        .await
        .expect("the cluster forms");
    if !server.version().at_least(2, 12) {
        assert_refused_without_timers(&app).await;
        return app.shutdown().await.expect("stops");
    }
    let node = &app.node;
    node.send::<Show>("hamlet", ShowCommand::Create { seats: 1_000 })
        .await
        .expect("created");
    // Orders owned by the node about to die, due in 2 s.
    let orders: Vec<String> = (0..)
        .map(|i| format!("o-{i}"))
        .filter(|id| node.owner_of(id).as_deref() == Some("victim"))
        .take(20)
        .collect();
    for id in &orders {
        node.send::<Order>(id, place("hamlet", "ada", 1, 2))
            .await
            .expect("placed");
    }
    eventually("every hold", || async {
        node.send::<Show>("hamlet", ShowCommand::Seating)
            .await
            .is_ok_and(|s| s.holds.len() == orders.len())
    })
    .await;
    // Killed as its timers fire: the first expiry shows the victim's dispatcher at work, and
    // the fired timers it holds unacknowledged go to the others after the ack wait.
    eventually("the first expiry", || async {
        for id in &orders {
            if event_types(&app, "order", id)
                .await
                .contains(&"Expired".to_string())
            {
                return true;
            }
        }
        false
    })
    .await;
    victim.kill();

    eventually("every order to expire", || async {
        for id in &orders {
            if !event_types(&app, "order", id)
                .await
                .contains(&"Expired".to_string())
            {
                return false;
            }
        }
        true
    })
    .await;
    eventually("every hold to be released", || async {
        node.send::<Show>("hamlet", ShowCommand::Seating)
            .await
            .is_ok_and(|s| s.holds.is_empty())
    })
    .await;
    for id in &orders {
        assert_eq!(
            event_types(&app, "order", id).await,
            ["Placed", "Expired"],
            "{id}"
        );
    }
    let show = event_types(&app, "show", "hamlet").await;
    let released = show.iter().filter(|t| *t == "HoldReleased").count();
    assert_eq!(released, orders.len(), "{show:?}");
    let seating = node
        .send::<Show>("hamlet", ShowCommand::Seating)
        .await
        .expect("seating");
    assert_eq!(seating.free, 1_000);
    app.shutdown().await.expect("stops");
}
