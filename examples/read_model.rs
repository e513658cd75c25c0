//! A read model in SQLite: account balances projected from the [`Bank`] actor's events by an
//! [`aether_projection::Projection`], exactly once.
//!
//! Every event is applied in one SQLite transaction together with its position in the store's
//! global order (the `checkpoint` table, a row per [`Projected::projection`]: the projection,
//! or each partition of a partitioned one). The projection resumes from that position
//! ([`SinkPosition::Kept`]), so after a crash (of the process, or of SQLite halfway through a
//! write) each event has been applied once or not at all, never twice.

use std::path::Path;
use std::sync::Mutex;

use aether_core::{BoxError, LogPosition};
use aether_projection::{Handler, Projected, SinkPosition};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

#[cfg(doc)]
use crate::bank::Bank;
use crate::bank::BankEvent;

/// Account balances in a SQLite database, with the projection's position in the same
/// database.
///
/// Each account row also records the version of the last event applied to it, so a
/// redelivered event is ignored: with [`at_least_once`](Self::at_least_once) the sink keeps no
/// position and relies on that alone (the projection's store keeps the checkpoint).
#[derive(Debug)]
pub struct SqlBalances {
    db: Mutex<Connection>,
    keep_position: bool,
}

impl SqlBalances {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Self::with(crate::sql_position::open_file(path)?)
    }

    /// A database in memory (for tests).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn in_memory() -> rusqlite::Result<Self> {
        Self::with(Connection::open_in_memory()?)
    }

    /// The same read model without its own position: the projection's store keeps the
    /// checkpoint, delivery is at least once, and redeliveries are ignored by version.
    #[must_use]
    pub fn at_least_once(mut self) -> Self {
        self.keep_position = false;
        self
    }

    fn with(db: Connection) -> rusqlite::Result<Self> {
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS accounts (
                 account TEXT PRIMARY KEY,
                 owner TEXT NOT NULL DEFAULT '',
                 balance INTEGER NOT NULL DEFAULT 0,
                 version INTEGER NOT NULL DEFAULT 0
             );",
        )?;
        db.execute_batch(crate::sql_position::CHECKPOINT_TABLE)?;
        Ok(Self {
            db: Mutex::new(db),
            keep_position: true,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every account with its owner and balance, by account id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn balances(&self) -> rusqlite::Result<Vec<(String, String, i64)>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT account, owner, balance FROM accounts ORDER BY account")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
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

#[async_trait]
impl Handler<BankEvent> for SqlBalances {
    async fn handle(&self, e: &Projected<BankEvent>) -> Result<(), BoxError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let version = i64::try_from(e.version)?;
        let applied: Option<i64> = tx
            .query_row(
                "SELECT version FROM accounts WHERE account = ?1",
                params![e.actor_id],
                |r| r.get(0),
            )
            .optional()?;
        // An event at or below the account's version was applied already: a redelivery.
        let fresh = applied.is_none_or(|v| v < version);
        match &e.event {
            _ if !fresh => {}
            BankEvent::AccountOpened { owner } => {
                tx.execute(
                    "INSERT INTO accounts (account, owner, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT(account) DO UPDATE SET owner = excluded.owner,
                         version = excluded.version",
                    params![e.actor_id, owner, version],
                )?;
            }
            BankEvent::Deposited { amount } | BankEvent::Withdrawn { amount } => {
                let delta = match e.event {
                    BankEvent::Withdrawn { .. } => {
                        amount.checked_neg().ok_or("amount overflows")?
                    }
                    _ => *amount,
                };
                tx.execute(
                    "INSERT INTO accounts (account, balance, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT(account) DO UPDATE SET balance = balance + excluded.balance,
                         version = excluded.version",
                    params![e.actor_id, delta, version],
                )?;
            }
        }
        if !self.keep_position {
            tx.commit()?;
            return Ok(());
        }
        // The position goes in the same transaction: both are stored, or neither.
        crate::sql_position::write_position(&tx, e.projection.as_ref(), e.position)?;
        tx.commit()?;
        Ok(())
    }

    async fn position(&self, projection: &str) -> Result<SinkPosition, BoxError> {
        if !self.keep_position {
            return Ok(SinkPosition::NotKept);
        }
        Ok(SinkPosition::Kept(self.checkpoint(projection)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use aether_actor::{ActorClient, ActorHost, EventCodec, RuntimeConfig};
    use aether_core::{Event, EventStore};
    use aether_projection::{InMemoryProjectionStore, Projection, ProjectionConfig};
    use aether_store::InMemoryEventStore;

    use crate::bank::{Bank, BankCommand};

    fn projection(
        store: Arc<InMemoryEventStore>,
        sink: Arc<SqlBalances>,
        state: Arc<InMemoryProjectionStore>,
    ) -> Projection<BankEvent> {
        Projection::new(
            "balances",
            store,
            state,
            sink,
            EventCodec::new(<Bank as aether_actor::Actor>::upcasters()),
            ProjectionConfig::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn balances_and_checkpoint_are_written_together_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("balances.db");
        let store = Arc::new(InMemoryEventStore::new());
        let bank = ActorHost::new(Bank, store.clone(), RuntimeConfig::default());
        bank.send(
            "acc",
            BankCommand::Open {
                owner: "Ada".into(),
            },
        )
        .await
        .unwrap();
        bank.send("acc", BankCommand::Deposit { amount: 100 })
            .await
            .unwrap();
        let state = Arc::new(InMemoryProjectionStore::new());
        {
            let sink = Arc::new(SqlBalances::open(&path).unwrap());
            assert_eq!(
                projection(store.clone(), sink.clone(), state.clone())
                    .catch_up()
                    .await
                    .unwrap()
                    .handled,
                2
            );
            assert_eq!(
                sink.balances().unwrap(),
                [("acc".into(), "Ada".into(), 100)]
            );
        }
        bank.send("acc", BankCommand::Withdraw { amount: 30 })
            .await
            .unwrap();
        // Reopened: it resumes after the position in the database, so nothing is applied
        // twice, even with a fresh projection store.
        let sink = Arc::new(SqlBalances::open(&path).unwrap());
        let p = projection(
            store.clone(),
            sink.clone(),
            Arc::new(InMemoryProjectionStore::new()),
        );
        assert_eq!(p.catch_up().await.unwrap().handled, 1);
        assert_eq!(sink.balances().unwrap(), [("acc".into(), "Ada".into(), 70)]);
        assert_eq!(
            sink.checkpoint("balances").unwrap(),
            Some(LogPosition::new(3, 0))
        );
    }

    #[tokio::test]
    async fn an_event_that_does_not_decode_is_parked_and_changes_nothing() {
        let store = Arc::new(InMemoryEventStore::new());
        store
            .save_event(&Event::new("Deposited", "acc", 1).with_field("amount", "lots"))
            .await
            .unwrap();
        let sink = Arc::new(SqlBalances::in_memory().unwrap());
        let state = Arc::new(InMemoryProjectionStore::new());
        let p = projection(store, sink.clone(), state);
        let report = p.catch_up().await.unwrap();
        assert_eq!((report.handled, report.parked), (0, 1));
        assert!(sink.balances().unwrap().is_empty());
        assert_eq!(p.parked().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn at_least_once_it_keeps_no_position_and_ignores_a_redelivery_by_version() {
        let sink = SqlBalances::in_memory().unwrap().at_least_once();
        assert_eq!(
            sink.position("balances").await.unwrap(),
            SinkPosition::NotKept
        );
        let deposit = |version: u64, amount: i64| Projected {
            projection: "balances".into(),
            position: LogPosition::new(version, 0),
            actor_type: None,
            actor_id: "acc".to_string(),
            version,
            event_id: format!("e{version}"),
            timestamp: chrono::Utc::now(),
            metadata: Default::default(),
            event: BankEvent::Deposited { amount },
        };
        sink.handle(&deposit(1, 10)).await.unwrap();
        sink.handle(&deposit(2, 5)).await.unwrap();
        // Handed over again after a crash: ignored.
        sink.handle(&deposit(1, 10)).await.unwrap();
        sink.handle(&deposit(2, 5)).await.unwrap();
        sink.handle(&deposit(3, 1)).await.unwrap();
        assert_eq!(
            sink.balances().unwrap(),
            vec![("acc".to_string(), String::new(), 16)]
        );
        assert_eq!(sink.checkpoint("balances").unwrap(), None);
    }
}
