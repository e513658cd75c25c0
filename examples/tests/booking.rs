//! The booking example end to end: reservations that reserve seats and charge a customer in
//! one transaction across two actor types (both written or neither), typed refusals, and the
//! SQLite read model of one projection over both types matching the actors after a run with
//! refusals, on the in-memory store and on a real nats-server (2.12+: atomic batches).

use std::sync::Arc;
use std::time::Duration;

use aether_actor::{ActorClient, ActorHost, CommandError, CommandMeta, RetryPolicy, RuntimeConfig};
use aether_core::{ActorKey, EventLog, EventStore, SnapshotStore};
use aether_examples::booking::{
    reserve_and_charge, BookingError, Customer, CustomerCommand, CustomerError, Reservation, Show,
    ShowCommand, ShowError,
};
use aether_examples::booking_read_model::{
    booking_projection, CustomerRow, ReservationRow, ShowRow, SqlBookings,
};
use aether_projection::{InMemoryProjectionStore, Projection, ProjectionConfig};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Booking {
    store: Arc<dyn SnapshotStore>,
    shows: ActorHost<Show>,
    customers: ActorHost<Customer>,
}

impl Booking {
    fn over(store: Arc<dyn SnapshotStore>) -> Self {
        // Racing reservations retry their conflicts; give them room.
        let config = RuntimeConfig::default().retry(RetryPolicy::default().max_retries(30));
        Self {
            shows: ActorHost::new(Show, store.clone(), config),
            customers: ActorHost::new(Customer, store.clone(), config),
            store,
        }
    }

    fn memory() -> (Self, Arc<dyn EventLog>) {
        let store = Arc::new(InMemoryEventStore::new());
        (Self::over(store.clone()), store)
    }

    async fn reserve(
        &self,
        show: &str,
        customer: &str,
        seats: u32,
        price: i64,
    ) -> Result<Reservation, CommandError<BookingError>> {
        reserve_and_charge(
            &self.shows,
            &self.customers,
            show,
            customer,
            seats,
            price,
            CommandMeta::new(),
        )
        .await
    }

    async fn versions(&self, show: &str, customer: &str) -> (u64, u64) {
        (
            self.store
                .latest_version_of(ActorKey::new("show", show))
                .await
                .unwrap(),
            self.store
                .latest_version_of(ActorKey::new("customer", customer))
                .await
                .unwrap(),
        )
    }

    async fn free(&self, show: &str) -> u32 {
        self.shows
            .send(show, ShowCommand::Seating)
            .await
            .unwrap()
            .free
    }

    async fn balance(&self, customer: &str) -> i64 {
        self.customers
            .send(customer, CustomerCommand::Balance)
            .await
            .unwrap()
            .balance
    }

    /// A run with every kind of step: shows and wallets set up, reservations, both refusals,
    /// a complimentary reservation and a release. Returns the shows and customers it used.
    async fn script(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let create = |seats| ShowCommand::Create { seats };
        let fund = |amount| CustomerCommand::Fund { amount };
        self.shows.send("hamlet", create(4)).await.unwrap();
        self.shows.send("lear", create(2)).await.unwrap();
        self.customers.send("ada", fund(200)).await.unwrap();
        self.customers.send("bob", fund(50)).await.unwrap();
        self.customers.send("cy", fund(10)).await.unwrap();
        assert!(matches!(
            self.reserve("hamlet", "ada", 3, 40).await.unwrap(),
            Reservation::Reserved {
                free: 1,
                balance: 80,
                ..
            }
        ));
        assert_eq!(
            self.reserve("hamlet", "bob", 2, 20).await.unwrap(),
            Reservation::SoldOut { free: 1, asked: 2 }
        );
        assert_eq!(
            self.reserve("lear", "cy", 1, 25).await.unwrap(),
            Reservation::InsufficientFunds {
                balance: 10,
                asked: 25
            }
        );
        assert!(matches!(
            self.reserve("lear", "bob", 2, 25).await.unwrap(),
            Reservation::Reserved {
                free: 0,
                balance: 0,
                ..
            }
        ));
        self.shows
            .send("lear", ShowCommand::Release { seats: 1 })
            .await
            .unwrap();
        self.shows
            .send(
                "hamlet",
                ShowCommand::Reserve {
                    customer: "cy".into(),
                    seats: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            self.reserve("hamlet", "ada", 1, 10).await.unwrap(),
            Reservation::SoldOut { free: 0, asked: 1 }
        );
        (vec!["hamlet", "lear"], vec!["ada", "bob", "cy"])
    }

    /// Where the read model differs from the actors, if anywhere.
    async fn mismatch(
        &self,
        sink: &SqlBookings,
        shows: &[&str],
        customers: &[&str],
    ) -> Option<String> {
        let mut want_shows = Vec::new();
        for &show in shows {
            let seating = self.shows.send(show, ShowCommand::Seating).await.unwrap();
            want_shows.push(ShowRow {
                show: show.into(),
                seats: seating.seats,
                free: seating.free,
            });
        }
        let mut want_customers = Vec::new();
        for &customer in customers {
            want_customers.push(CustomerRow {
                customer: customer.into(),
                balance: self.balance(customer).await,
            });
        }
        let (got_shows, got_customers) = (sink.shows().unwrap(), sink.customers().unwrap());
        (got_shows != want_shows || got_customers != want_customers).then(|| {
            format!(
                "read model {got_shows:?} {got_customers:?}, actors {want_shows:?} \
                 {want_customers:?}"
            )
        })
    }
}

fn projection(
    log: Arc<dyn EventLog>,
    sink: Arc<SqlBookings>,
) -> Projection<aether_examples::booking::BookingEvent> {
    booking_projection(
        "bookings",
        log,
        Arc::new(InMemoryProjectionStore::new()),
        sink,
        ProjectionConfig {
            poll_interval: Duration::from_millis(10),
            ..ProjectionConfig::default()
        },
    )
    .unwrap()
}

/// The reservations the script leaves, by show and version.
fn scripted_reservations() -> Vec<ReservationRow> {
    let row = |show: &str, version, customer: &str, seats, amount| ReservationRow {
        show: show.into(),
        version,
        customer: customer.into(),
        seats,
        amount,
    };
    vec![
        row("hamlet", 2, "ada", 3, 120),
        row("hamlet", 3, "cy", 1, 0),
        row("lear", 2, "bob", 2, 50),
    ]
}

#[tokio::test]
async fn reserve_and_charge_writes_both_actors_or_neither() {
    let (booking, _) = Booking::memory();
    booking
        .shows
        .send("s", ShowCommand::Create { seats: 2 })
        .await
        .unwrap();
    booking
        .customers
        .send("c", CustomerCommand::Fund { amount: 100 })
        .await
        .unwrap();
    assert_eq!(booking.versions("s", "c").await, (1, 1));

    let order = CommandMeta::new().command_id("order-1");
    let reserved = reserve_and_charge(
        &booking.shows,
        &booking.customers,
        "s",
        "c",
        1,
        30,
        order.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        reserved,
        Reservation::Reserved {
            seats: 1,
            amount: 30,
            free: 1,
            balance: 70
        }
    );
    // Both: one event on each.
    assert_eq!(booking.versions("s", "c").await, (2, 2));
    assert_eq!(
        (booking.free("s").await, booking.balance("c").await),
        (1, 70)
    );

    // A retry of the same order is applied once.
    let again = reserve_and_charge(&booking.shows, &booking.customers, "s", "c", 1, 30, order)
        .await
        .unwrap();
    assert_eq!(again, Reservation::AlreadyApplied);
    assert_eq!(booking.versions("s", "c").await, (2, 2));

    // Neither: the show refuses (sold out), or the customer does (funds), or the request is
    // wrong; no event anywhere.
    for (seats, price) in [(2, 1), (1, 71), (0, 10), (1, 0), (1, i64::MAX)] {
        let outcome = booking.reserve("s", "c", seats, price).await;
        assert!(
            !matches!(outcome, Ok(Reservation::Reserved { .. })),
            "{seats} at {price}: {outcome:?}"
        );
        assert_eq!(
            booking.versions("s", "c").await,
            (2, 2),
            "{seats} at {price}"
        );
    }
    assert_eq!(
        (booking.free("s").await, booking.balance("c").await),
        (1, 70)
    );
}

#[tokio::test]
async fn refusals_are_typed_and_say_who_refused() {
    let (booking, _) = Booking::memory();
    booking
        .shows
        .send("s", ShowCommand::Create { seats: 2 })
        .await
        .unwrap();
    booking
        .customers
        .send("c", CustomerCommand::Fund { amount: 50 })
        .await
        .unwrap();
    assert_eq!(
        booking.reserve("s", "c", 3, 10).await.unwrap(),
        Reservation::SoldOut { free: 2, asked: 3 }
    );
    assert_eq!(
        booking.reserve("s", "c", 2, 30).await.unwrap(),
        Reservation::InsufficientFunds {
            balance: 50,
            asked: 60
        }
    );
    let refusal = |r: Result<Reservation, CommandError<BookingError>>| match r {
        Err(CommandError::Rejected(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refusal(booking.reserve("nope", "c", 1, 10).await),
        BookingError::Show(ShowError::NotCreated)
    );
    assert_eq!(
        refusal(booking.reserve("s", "c", 0, 10).await),
        BookingError::Show(ShowError::NoSeats)
    );
    assert_eq!(
        refusal(booking.reserve("s", "c", 1, -5).await),
        BookingError::Customer(CustomerError::InvalidAmount { amount: -5 })
    );
    assert_eq!(
        refusal(booking.reserve("s", "c", 2, i64::MAX).await),
        BookingError::Customer(CustomerError::InvalidAmount { amount: i64::MAX })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_reservations_never_oversell_nor_charge_without_a_seat() {
    const CUSTOMERS: usize = 8;
    const SEATS: u32 = 5;
    let (booking, _) = Booking::memory();
    let booking = Arc::new(booking);
    booking
        .shows
        .send("s", ShowCommand::Create { seats: SEATS })
        .await
        .unwrap();
    for i in 0..CUSTOMERS {
        booking
            .customers
            .send(&format!("c{i}"), CustomerCommand::Fund { amount: 10 })
            .await
            .unwrap();
    }
    let racers: Vec<_> = (0..CUSTOMERS)
        .map(|i| {
            let booking = booking.clone();
            tokio::spawn(async move { booking.reserve("s", &format!("c{i}"), 1, 10).await })
        })
        .collect();
    let mut reserved = 0;
    for racer in racers {
        match racer.await.unwrap().unwrap() {
            Reservation::Reserved { .. } => reserved += 1,
            Reservation::SoldOut { free: 0, asked: 1 } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reserved, SEATS);
    assert_eq!(booking.free("s").await, 0);
    let mut charged = 0;
    for i in 0..CUSTOMERS {
        charged += u32::from(booking.balance(&format!("c{i}")).await == 0);
    }
    assert_eq!(charged, SEATS, "one charge per seat, no charge without one");
}

#[tokio::test]
async fn the_read_model_matches_the_actors_after_a_run_with_refusals() {
    let (booking, log) = Booking::memory();
    let (shows, customers) = booking.script().await;
    let sink = Arc::new(SqlBookings::in_memory().unwrap());
    let p = projection(log.clone(), sink.clone());
    let report = p.catch_up().await.unwrap();
    // 2 shows + 3 fundings + 2 reservations of two events + a release + a complimentary one.
    assert_eq!((report.handled, report.parked), (11, 0), "{report:?}");
    assert_eq!(booking.mismatch(&sink, &shows, &customers).await, None);
    assert_eq!(sink.reservations().unwrap(), scripted_reservations());
    // Caught up again, nothing is applied twice.
    assert_eq!(p.catch_up().await.unwrap().handled, 0);
    assert_eq!(booking.mismatch(&sink, &shows, &customers).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_run_on_a_nats_server_fills_the_same_read_model() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let version = client.server_info().version;
    let store = Arc::new(
        JetStreamEventStore::new(client, JetStreamConfig::default())
            .await
            .unwrap(),
    );
    let booking = Booking::over(store.clone());
    if !server.version().at_least(2, 12) {
        // No atomic batches before 2.12: the reservation is refused, typed, and writes nothing.
        booking
            .shows
            .send("hamlet", ShowCommand::Create { seats: 4 })
            .await
            .unwrap();
        booking
            .customers
            .send("ada", CustomerCommand::Fund { amount: 200 })
            .await
            .unwrap();
        match booking.reserve("hamlet", "ada", 3, 40).await {
            Err(CommandError::Infrastructure(aether_core::Error::Unsupported { .. })) => {}
            other => panic!("server {version}: expected Unsupported, got {other:?}"),
        }
        assert_eq!(booking.free("hamlet").await, 4);
        assert_eq!(booking.balance("ada").await, 200);
        return;
    }
    // The projection follows live while the run happens.
    let sink = Arc::new(SqlBookings::in_memory().unwrap());
    let p = Arc::new(projection(store.clone(), sink.clone()));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { p.run(stop).await }
    });
    let (shows, customers) = booking.script().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mismatch = booking.mismatch(&sink, &shows, &customers).await;
        if mismatch.is_none() && sink.reservations().unwrap() == scripted_reservations() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server {version}: {mismatch:?}, {:?}",
            sink.reservations()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    let status = p.status();
    assert_eq!((status.handled, status.parked), (11, 0), "{status:?}");
    assert!(
        sink.checkpoint("bookings").unwrap().is_some(),
        "the position is kept in SQLite"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_decision_runs_in_a_cluster_transaction() {
    use aether_cluster::{Actors, ClusterConfig, ClusterNode, LocalNetwork};
    use aether_examples::booking::{decide_reservation, reservation_outcome};

    let network = LocalNetwork::new();
    let store = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let config = ClusterConfig::default().cluster_name("booking").node_id(id);
        let actors = Actors::new(store.clone()).with(Show).with(Customer);
        nodes.push(
            ClusterNode::start_local(&network, config, actors)
                .await
                .unwrap(),
        );
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b"], Duration::from_secs(20))
            .await
            .unwrap();
    }
    nodes[0]
        .send::<Show>("s", ShowCommand::Create { seats: 2 })
        .await
        .unwrap();
    nodes[1]
        .send::<Customer>("c", CustomerCommand::Fund { amount: 100 })
        .await
        .unwrap();
    let reserve = |node: &ClusterNode, seats: u32| {
        let mut tx = node.transaction(CommandMeta::new());
        let show = tx.actor::<Show>("s").unwrap();
        let customer = tx.actor::<Customer>("c").unwrap();
        async move {
            let result = tx
                .run(|d| decide_reservation(d, &show, &customer, seats, 30))
                .await;
            reservation_outcome(result, &show, &customer)
        }
    };
    assert_eq!(
        reserve(&nodes[0], 2).await.unwrap(),
        Reservation::Reserved {
            seats: 2,
            amount: 60,
            free: 0,
            balance: 40
        }
    );
    assert_eq!(
        reserve(&nodes[1], 1).await.unwrap(),
        Reservation::SoldOut { free: 0, asked: 1 }
    );
    // The owners were told to reload: both see the commit, from either node.
    let seating = nodes[1]
        .send::<Show>("s", ShowCommand::Seating)
        .await
        .unwrap();
    let wallet = nodes[0]
        .send::<Customer>("c", CustomerCommand::Balance)
        .await
        .unwrap();
    assert_eq!((seating.free, wallet.balance), (0, 40));
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
