//! A process manager against a real nats-server, with embedded hosts over one in-memory store:
//! a checkout that reserves stock when an order is placed, completes when it is paid, and
//! releases the stock (its compensation) when the payment times out.
//!
//! - A crash between recording a step and sending its command (the step is recorded while no
//!   reactor runs): the command is sent once the reactor runs, and applied exactly once by its
//!   target, even when the reactor then reads the whole log again from the start.
//! - A payment that never comes: the timeout fires and the compensation runs, once; a paid
//!   order completes and its timeout never fires.
//! - Before 2.12 the process cannot set its timeout: the step is refused, typed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_actor::{
    Actor, ActorClient, ActorHost, CommandError, DomainEvent, Effect, RuntimeConfig, Timer,
};
use aether_core::{ActorKey, EventStore, ReactionError};
use aether_projection::{ActorEvents, InMemoryProjectionStore, Projected, WorkerConfig};
use aether_reactions::{Process, ProcessRouter, Reactor, ReactorConfig, Targets, TimersConfig};
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("refused")]
struct Refused;

// ---- orders and stock: the actors the process hears and acts on ----

#[derive(Debug, Clone, Serialize, Deserialize)]
enum OrderCommand {
    Place { pay_within_ms: u64 },
    Pay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    Placed { deadline: DateTime<Utc> },
    Paid,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "Placed",
            Self::Paid => "Paid",
        }
    }
}

struct Orders;

impl Actor for Orders {
    type State = ();
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Reply = ();
    type Error = Refused;
    const TYPE: &'static str = "order";

    async fn decide(&self, _: &str, _: &(), c: &OrderCommand) -> Result<Vec<OrderEvent>, Refused> {
        Ok(match c {
            OrderCommand::Place { pay_within_ms } => {
                let deadline = Utc::now() + chrono::Duration::milliseconds(*pay_within_ms as i64);
                let deadline =
                    DateTime::from_timestamp_millis(deadline.timestamp_millis()).ok_or(Refused)?;
                vec![OrderEvent::Placed { deadline }]
            }
            OrderCommand::Pay => vec![OrderEvent::Paid],
        })
    }

    fn apply(_: &mut (), _: &OrderEvent) {}

    fn reply(_: &(), _: &OrderCommand, _: &[OrderEvent]) {}
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stock {
    reserved: u32,
    released: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum StockCommand {
    Reserve { order: String },
    Release { order: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum StockEvent {
    Reserved { order: String },
    Released { order: String },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Reserved { .. } => "Reserved",
            Self::Released { .. } => "Released",
        }
    }
}

struct Stocks;

impl Actor for Stocks {
    type State = Stock;
    type Command = StockCommand;
    type Event = StockEvent;
    type Reply = ();
    type Error = Refused;
    const TYPE: &'static str = "stock";

    async fn decide(
        &self,
        _: &str,
        _: &Stock,
        c: &StockCommand,
    ) -> Result<Vec<StockEvent>, Refused> {
        Ok(match c {
            StockCommand::Reserve { order } => vec![StockEvent::Reserved {
                order: order.clone(),
            }],
            StockCommand::Release { order } => vec![StockEvent::Released {
                order: order.clone(),
            }],
        })
    }

    fn apply(s: &mut Stock, e: &StockEvent) {
        match e {
            StockEvent::Reserved { .. } => s.reserved += 1,
            StockEvent::Released { .. } => s.released += 1,
        }
    }

    fn reply(_: &Stock, _: &StockCommand, _: &[StockEvent]) {}
}

// ---- the process ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Heard {
    Order(OrderEvent),
}

impl DomainEvent for Heard {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Order(e) => e.event_type(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkout {
    deadline: Option<DateTime<Utc>>,
    done: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Step {
    Start { deadline: DateTime<Utc> },
    Paid,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CheckoutEvent {
    Started { deadline: DateTime<Utc> },
    Completed,
    Cancelled,
}

impl DomainEvent for CheckoutEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Started { .. } => "Started",
            Self::Completed => "Completed",
            Self::Cancelled => "Cancelled",
        }
    }
}

struct Checkouts;

impl Actor for Checkouts {
    type State = Checkout;
    type Command = Step;
    type Event = CheckoutEvent;
    type Reply = ();
    type Error = Refused;
    const TYPE: &'static str = "checkout";

    async fn decide(&self, _: &str, s: &Checkout, c: &Step) -> Result<Vec<CheckoutEvent>, Refused> {
        Ok(match c {
            Step::Start { deadline } if s.deadline.is_none() => {
                vec![CheckoutEvent::Started {
                    deadline: *deadline,
                }]
            }
            Step::Paid if !s.done => vec![CheckoutEvent::Completed],
            Step::TimedOut if !s.done => vec![CheckoutEvent::Cancelled],
            _ => vec![],
        })
    }

    fn apply(s: &mut Checkout, e: &CheckoutEvent) {
        match e {
            CheckoutEvent::Started { deadline } => s.deadline = Some(*deadline),
            CheckoutEvent::Completed | CheckoutEvent::Cancelled => s.done = true,
        }
    }

    fn reply(_: &Checkout, _: &Step, _: &[CheckoutEvent]) {}

    fn timers(_: &str, s: &Checkout) -> Vec<Timer<Step>> {
        match (s.deadline, s.done) {
            (Some(at), false) => vec![Timer::at("payment-timeout", at, Step::TimedOut)],
            _ => Vec::new(),
        }
    }

    fn effects(id: &str, e: &CheckoutEvent) -> Vec<Effect> {
        let order = id.to_string();
        match e {
            CheckoutEvent::Started { .. } => {
                vec![Effect::send::<Stocks>(
                    "sku-1",
                    &StockCommand::Reserve { order },
                )]
            }
            // The compensation.
            CheckoutEvent::Cancelled => {
                vec![Effect::send::<Stocks>(
                    "sku-1",
                    &StockCommand::Release { order },
                )]
            }
            CheckoutEvent::Completed => Vec::new(),
        }
    }
}

impl Process for Checkouts {
    type Input = Heard;

    fn sources() -> ActorEvents<Heard> {
        ActorEvents::new().actor::<Orders>(Heard::Order)
    }

    fn route(e: &Projected<Heard>) -> Option<(String, Step)> {
        let step = match &e.event {
            Heard::Order(OrderEvent::Placed { deadline }) => Step::Start {
                deadline: *deadline,
            },
            Heard::Order(OrderEvent::Paid) => Step::Paid,
        };
        Some((e.actor_id.clone(), step))
    }
}

// ---- the application ----

struct App {
    store: Arc<InMemoryEventStore>,
    orders: ActorHost<Orders>,
    checkouts: ActorHost<Checkouts>,
    reactor: Arc<Reactor>,
    targets: Targets,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<aether_core::Result<()>>>,
}

fn reactor_config() -> ReactorConfig {
    let mut c = ReactorConfig::new("w1");
    c.worker_config = WorkerConfig {
        partitions: 2,
        heartbeat: Duration::from_millis(200),
        lease_timeout: Duration::from_secs(2),
    };
    c
}

impl App {
    async fn new(server: &NatsServer) -> Self {
        let store = Arc::new(InMemoryEventStore::new());
        let config = RuntimeConfig::default;
        let orders = ActorHost::new(Orders, store.clone(), config());
        let stocks = ActorHost::new(Stocks, store.clone(), config());
        let checkouts = ActorHost::new(Checkouts, store.clone(), config());
        let targets = Targets::new()
            .host(orders.clone())
            .host(stocks)
            .host(checkouts.clone());
        let client = async_nats::connect(server.url()).await.expect("connect");
        let reactor = Reactor::new(targets.clone())
            .with_timers_on(async_nats::jetstream::new(client), TimersConfig::default())
            .await
            .expect("timers open or are unsupported");
        // The runtimes know what the reactor carries out before it runs.
        reactor.attach();
        Self {
            store,
            orders,
            checkouts,
            reactor: Arc::new(reactor),
            targets,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    fn start_router(&mut self) {
        let router = Arc::new(ProcessRouter::<Checkouts>::new(&self.targets).expect("routes"));
        self.tasks.push(tokio::spawn(router.run(
            self.store.clone(),
            Arc::new(InMemoryProjectionStore::new()),
            reactor_config(),
            self.shutdown.clone(),
        )));
    }

    /// Starts the reactor with checkpoints of its own: a fresh store reads the log again from
    /// the start.
    fn start_reactor(&mut self, checkpoints: Arc<InMemoryProjectionStore>) -> CancellationToken {
        let stop = self.shutdown.child_token();
        self.tasks.push(tokio::spawn(Arc::clone(&self.reactor).run(
            self.store.clone(),
            checkpoints,
            reactor_config(),
            stop.clone(),
        )));
        stop
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    async fn events(&self, actor_type: &str, id: &str) -> Vec<String> {
        self.store
            .events_of(ActorKey::new(actor_type, id), 1)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

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

/// Before 2.12: the process's first step sets its timeout, so it is refused, typed, and
/// nothing is written.
async fn assert_refused_without_timers(app: &App) {
    let refused = app
        .checkouts
        .send(
            "o-old",
            Step::Start {
                deadline: Utc::now() + chrono::Duration::minutes(1),
            },
        )
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
    assert!(app.events("checkout", "o-old").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_recorded_before_a_crash_sends_its_command_once_on_recovery() {
    let server = NatsServer::start().expect("nats-server");
    let mut app = App::new(&server).await;
    if !server.version().at_least(2, 12) {
        assert_refused_without_timers(&app).await;
        return app.stop().await;
    }
    // The router runs, the reactor does not: the step is recorded, its command not sent
    // (what a crash right after recording the step leaves).
    app.start_router();
    app.orders
        .send(
            "o-1",
            OrderCommand::Place {
                pay_within_ms: 600_000,
            },
        )
        .await
        .expect("placed");
    eventually("the process to record its first step", || async {
        app.events("checkout", "o-1").await == ["Started"]
    })
    .await;
    assert!(
        app.events("stock", "sku-1").await.is_empty(),
        "not sent yet"
    );

    // Recovery: the reactor runs and sends it.
    let first = app.start_reactor(Arc::new(InMemoryProjectionStore::new()));
    eventually("the reservation", || async {
        app.events("stock", "sku-1").await == ["Reserved"]
    })
    .await;
    first.cancel();
    // Another reactor that reads everything again sends it again, with the same id: the
    // stock absorbs it.
    app.start_reactor(Arc::new(InMemoryProjectionStore::new()));
    // A later step proves the second reactor has read past the first one.
    app.orders
        .send(
            "o-2",
            OrderCommand::Place {
                pay_within_ms: 600_000,
            },
        )
        .await
        .expect("placed");
    eventually("the second reservation", || async {
        app.events("stock", "sku-1").await.len() >= 2
    })
    .await;
    assert_eq!(app.events("stock", "sku-1").await, ["Reserved", "Reserved"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_is_compensated_after_its_timeout_and_a_paid_one_completes() {
    let server = NatsServer::start().expect("nats-server");
    let mut app = App::new(&server).await;
    if !server.version().at_least(2, 12) {
        assert_refused_without_timers(&app).await;
        return app.stop().await;
    }
    app.start_router();
    app.start_reactor(Arc::new(InMemoryProjectionStore::new()));
    app.orders
        .send(
            "unpaid",
            OrderCommand::Place {
                pay_within_ms: 1_500,
            },
        )
        .await
        .expect("placed");
    // Paid long before its timeout, even on a loaded machine.
    app.orders
        .send(
            "paid",
            OrderCommand::Place {
                pay_within_ms: 600_000,
            },
        )
        .await
        .expect("placed");
    eventually("the paid order's process to start", || async {
        app.events("checkout", "paid").await == ["Started"]
    })
    .await;
    app.orders
        .send("paid", OrderCommand::Pay)
        .await
        .expect("paid");

    eventually("the compensation", || async {
        app.events("stock", "sku-1")
            .await
            .contains(&"Released".to_string())
    })
    .await;
    assert_eq!(
        app.events("checkout", "unpaid").await,
        ["Started", "Cancelled"]
    );
    // The paid order completed; its timeout was cancelled with it.
    assert_eq!(
        app.events("checkout", "paid").await,
        ["Started", "Completed"]
    );
    let stock = app
        .store
        .events_of(ActorKey::new("stock", "sku-1"), 1)
        .await
        .expect("events");
    let released: Vec<_> = stock
        .iter()
        .filter(|e| e.event_type == "Released")
        .map(|e| e.data.get("order").cloned())
        .collect();
    assert_eq!(released, [Some(serde_json::json!("unpaid"))]);
    assert_eq!(stock.len(), 3, "two reservations and one release");
    app.stop().await;
}
