//! A read model of the bookings in SQLite: the shows' free seats, the customers' balances and
//! every reservation, kept by ONE [`Projection`] over both actor types ([`Show`] and
//! [`Customer`]), each event decoded by the type that wrote it ([`ActorEvents`]), exactly once.
//!
//! As in [`crate::read_model`], every event is applied in one SQLite transaction together with
//! its position in the store's global order, and the projection resumes from that position
//! ([`SinkPosition::Kept`]). A reservation's two events (the show's `Reserved`, the
//! customer's `Charged`) were committed together, so they sit next to each other in the log;
//! the read model applies them one after the other.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use aether_actor::{EventCodec, Upcasters};
use aether_core::{BoxError, EventLog, LogPosition, Result};
use aether_projection::{
    ActorEvents, Handler, Projected, Projection, ProjectionConfig, ProjectionStore, SinkPosition,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use crate::booking::{BookingEvent, Customer, CustomerEvent, Show, ShowEvent};

/// A show as the read model has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowRow {
    /// The show's id.
    pub show: String,
    /// Its seats.
    pub seats: u32,
    /// The seats not reserved.
    pub free: u32,
}

/// A customer as the read model has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRow {
    /// The customer's id.
    pub customer: String,
    /// The wallet's balance.
    pub balance: i64,
}

/// A reservation as the read model has it, one per show `Reserved` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    /// The show.
    pub show: String,
    /// The show's version the reservation was recorded at: with the show, the reservation's
    /// identity.
    pub version: u64,
    /// Who for.
    pub customer: String,
    /// How many seats.
    pub seats: u32,
    /// What the customer paid (0: complimentary).
    pub amount: i64,
}

/// The booking read model in a SQLite database, with the projection's position in the same
/// database. Each show and customer row also records the version of the last event applied
/// to it, and an event at or below it is ignored, so even a redelivery changes nothing.
#[derive(Debug)]
pub struct SqlBookings {
    db: Mutex<Connection>,
}

impl SqlBookings {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Self::with(crate::sql_position::open_file(path)?)
    }

    /// A database in memory.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn in_memory() -> rusqlite::Result<Self> {
        Self::with(Connection::open_in_memory()?)
    }

    fn with(db: Connection) -> rusqlite::Result<Self> {
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS shows (
                 show TEXT PRIMARY KEY,
                 seats INTEGER NOT NULL DEFAULT 0,
                 free INTEGER NOT NULL DEFAULT 0,
                 version INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS customers (
                 customer TEXT PRIMARY KEY,
                 balance INTEGER NOT NULL DEFAULT 0,
                 version INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS reservations (
                 show TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 customer TEXT NOT NULL,
                 seats INTEGER NOT NULL,
                 amount INTEGER NOT NULL,
                 PRIMARY KEY (show, version)
             );",
        )?;
        db.execute_batch(crate::sql_position::CHECKPOINT_TABLE)?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every show with its seats, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn shows(&self) -> rusqlite::Result<Vec<ShowRow>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT show, seats, free FROM shows ORDER BY show")?;
        let rows = stmt.query_map([], |r| {
            Ok(ShowRow {
                show: r.get(0)?,
                seats: r.get(1)?,
                free: r.get(2)?,
            })
        })?;
        rows.collect()
    }

    /// Every customer with their balance, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn customers(&self) -> rusqlite::Result<Vec<CustomerRow>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT customer, balance FROM customers ORDER BY customer")?;
        let rows = stmt.query_map([], |r| {
            Ok(CustomerRow {
                customer: r.get(0)?,
                balance: r.get(1)?,
            })
        })?;
        rows.collect()
    }

    /// Every reservation, by show and version.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reservations(&self) -> rusqlite::Result<Vec<ReservationRow>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT show, version, customer, seats, amount FROM reservations
             ORDER BY show, version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ReservationRow {
                show: r.get(0)?,
                version: r.get(1)?,
                customer: r.get(2)?,
                seats: r.get(3)?,
                amount: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// The position of the last event applied under `projection` (see
    /// [`Projected::projection`]).
    ///
    /// # Errors
    /// SQLite errors, or a stored position out of range.
    pub fn checkpoint(&self, projection: &str) -> Result<Option<LogPosition>, BoxError> {
        crate::sql_position::read_position(&self.db(), projection)
    }
}

/// Applies a show's event, unless the show's row is at its version already.
fn apply_show(
    tx: &rusqlite::Transaction<'_>,
    show: &str,
    version: i64,
    event: &ShowEvent,
) -> Result<(), BoxError> {
    let applied: Option<i64> = tx
        .query_row(
            "SELECT version FROM shows WHERE show = ?1",
            params![show],
            |r| r.get(0),
        )
        .optional()?;
    if applied.is_some_and(|v| v >= version) {
        return Ok(());
    }
    match event {
        ShowEvent::Created { seats } => {
            tx.execute(
                "INSERT INTO shows (show, seats, free, version) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT(show) DO UPDATE SET seats = excluded.seats, free = excluded.free,
                     version = excluded.version",
                params![show, seats, version],
            )?;
        }
        ShowEvent::Reserved {
            customer,
            seats,
            amount,
        } => {
            tx.execute(
                "UPDATE shows SET free = free - ?2, version = ?3 WHERE show = ?1",
                params![show, seats, version],
            )?;
            tx.execute(
                "INSERT INTO reservations (show, version, customer, seats, amount)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![show, version, customer, seats, amount],
            )?;
        }
        ShowEvent::Released { seats } | ShowEvent::HoldReleased { seats, .. } => {
            tx.execute(
                "UPDATE shows SET free = free + ?2, version = ?3 WHERE show = ?1",
                params![show, seats, version],
            )?;
        }
        ShowEvent::Held { seats, .. } => {
            tx.execute(
                "UPDATE shows SET free = free - ?2, version = ?3 WHERE show = ?1",
                params![show, seats, version],
            )?;
        }
        ShowEvent::HoldConfirmed { .. } => {
            tx.execute(
                "UPDATE shows SET version = ?2 WHERE show = ?1",
                params![show, version],
            )?;
        }
    }
    Ok(())
}

/// Applies a customer's event, unless the customer's row is at its version already.
fn apply_customer(
    tx: &rusqlite::Transaction<'_>,
    customer: &str,
    version: i64,
    event: &CustomerEvent,
) -> Result<(), BoxError> {
    let delta = match *event {
        CustomerEvent::Funded { amount } => amount,
        CustomerEvent::Charged { amount, .. } => amount.checked_neg().ok_or("amount overflows")?,
    };
    tx.execute(
        "INSERT INTO customers (customer, balance, version) VALUES (?1, ?2, ?3)
         ON CONFLICT(customer) DO UPDATE SET balance = balance + excluded.balance,
             version = excluded.version
         WHERE customers.version < excluded.version",
        params![customer, delta, version],
    )?;
    Ok(())
}

#[async_trait]
impl Handler<BookingEvent> for SqlBookings {
    async fn handle(&self, e: &Projected<BookingEvent>) -> Result<(), BoxError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let version = i64::try_from(e.version)?;
        // Decoded by the actor type that wrote it: a show's events come as `Show(..)`.
        match &e.event {
            BookingEvent::Show(event) => apply_show(&tx, &e.actor_id, version, event)?,
            BookingEvent::Customer(event) => apply_customer(&tx, &e.actor_id, version, event)?,
        }
        // The position goes in the same transaction: both are stored, or neither.
        crate::sql_position::write_position(&tx, e.projection.as_ref(), e.position)?;
        tx.commit()?;
        Ok(())
    }

    async fn position(&self, projection: &str) -> Result<SinkPosition, BoxError> {
        Ok(SinkPosition::Kept(self.checkpoint(projection)?))
    }
}

/// The projection named `name` that keeps `sink` from the events of both booking types in
/// `log`, each decoded by its actor type ([`ActorEvents`]): it reads only `show` and
/// `customer` actors. `state` keeps its parked events (the sink keeps its position).
///
/// # Errors
/// [`aether_core::Error::InvalidInput`] for a bad name or configuration.
pub fn booking_projection(
    name: &str,
    log: Arc<dyn EventLog>,
    state: Arc<dyn ProjectionStore>,
    sink: Arc<SqlBookings>,
    config: ProjectionConfig,
) -> Result<Projection<BookingEvent>> {
    Projection::new(
        name,
        log,
        state,
        sink,
        // Not used: decoding goes by type.
        EventCodec::<BookingEvent>::new(Upcasters::new()),
        config,
    )?
    .decode_by_type(
        ActorEvents::new()
            .actor::<Show>(BookingEvent::Show)
            .actor::<Customer>(BookingEvent::Customer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use aether_actor::{ActorClient, ActorHost, CommandMeta, RuntimeConfig};
    use aether_projection::InMemoryProjectionStore;
    use aether_store::InMemoryEventStore;

    use crate::booking::{reserve_and_charge, CustomerCommand, ShowCommand};

    #[tokio::test]
    async fn bookings_and_checkpoint_survive_a_restart_and_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bookings.db");
        let store = Arc::new(InMemoryEventStore::new());
        let shows = ActorHost::new(Show, store.clone(), RuntimeConfig::default());
        let customers = ActorHost::new(Customer, store.clone(), RuntimeConfig::default());
        shows
            .send("s", ShowCommand::Create { seats: 5 })
            .await
            .unwrap();
        customers
            .send("c", CustomerCommand::Fund { amount: 100 })
            .await
            .unwrap();
        let run = |sink: Arc<SqlBookings>| {
            booking_projection(
                "bookings",
                store.clone(),
                Arc::new(InMemoryProjectionStore::new()),
                sink,
                ProjectionConfig::default(),
            )
            .unwrap()
        };
        {
            let sink = Arc::new(SqlBookings::open(&path).unwrap());
            assert_eq!(run(sink.clone()).catch_up().await.unwrap().handled, 2);
        }
        reserve_and_charge(&shows, &customers, "s", "c", 2, 10, CommandMeta::new())
            .await
            .unwrap();
        // Reopened with a fresh projection store: it resumes from the database's position.
        let sink = Arc::new(SqlBookings::open(&path).unwrap());
        assert_eq!(run(sink.clone()).catch_up().await.unwrap().handled, 2);
        assert_eq!(
            sink.shows().unwrap(),
            [ShowRow {
                show: "s".into(),
                seats: 5,
                free: 3
            }]
        );
        assert_eq!(
            sink.customers().unwrap(),
            [CustomerRow {
                customer: "c".into(),
                balance: 80
            }]
        );
        assert_eq!(
            sink.reservations().unwrap(),
            [ReservationRow {
                show: "s".into(),
                version: 2,
                customer: "c".into(),
                seats: 2,
                amount: 20
            }]
        );
        assert_eq!(
            sink.checkpoint("bookings").unwrap(),
            Some(LogPosition::new(4, 0))
        );
    }
}
