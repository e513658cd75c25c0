//! The demo's actor model, bank accounts, and the store wrapper that counts what the stores
//! saw: the parts of the demo that are plain logic, testable without a cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aether_cluster::{NewEvent, RuntimeMessage, RuntimeModel};
use aether_core::{Error, Event, EventStore, Result, Snapshot, SnapshotStore};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An account's state, rebuilt from its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Account {
    /// Whether `Open` was handled.
    pub open: bool,
    /// The owner's name.
    pub owner: String,
    /// The balance.
    pub balance: i64,
}

/// What can be asked of an account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum BankCommand {
    /// Opens the account.
    Open {
        /// The owner's name.
        owner: String,
    },
    /// Adds money.
    Deposit(i64),
    /// Takes money out; refused beyond the balance.
    Withdraw(i64),
    /// Reads the balance.
    Balance,
}

impl RuntimeMessage for BankCommand {}

/// Bank accounts as an actor model: commands decide events, events change the balance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bank;

impl RuntimeModel for Bank {
    type State = Account;
    type Message = BankCommand;
    type Reply = i64;

    fn name(&self) -> &str {
        "bank"
    }

    fn handle(&self, actor_id: &str, s: &Account, c: &BankCommand) -> Result<Vec<NewEvent>> {
        Ok(match c {
            BankCommand::Open { .. } if s.open => {
                return Err(Error::invalid(format!("{actor_id} is already open")))
            }
            BankCommand::Open { owner } => {
                vec![NewEvent::new("AccountOpened").with_field("owner", owner.clone())]
            }
            BankCommand::Balance => Vec::new(),
            _ if !s.open => return Err(Error::invalid(format!("{actor_id} is not open"))),
            BankCommand::Deposit(n) => vec![NewEvent::new("Deposited").with_field("amount", *n)],
            BankCommand::Withdraw(n) if *n > s.balance => {
                return Err(Error::invalid(format!(
                    "insufficient funds in {actor_id}: balance {}, asked {n}",
                    s.balance
                )))
            }
            BankCommand::Withdraw(n) => vec![NewEvent::new("Withdrawn").with_field("amount", *n)],
        })
    }

    fn apply(&self, s: &mut Account, e: &Event) {
        let amount = e.data.get("amount").and_then(Value::as_i64).unwrap_or(0);
        match e.event_type.as_str() {
            "AccountOpened" => {
                s.open = true;
                s.owner = e
                    .data
                    .get("owner")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
            }
            "Deposited" => s.balance += amount,
            "Withdrawn" => s.balance -= amount,
            _ => {}
        }
    }

    fn reply(&self, s: &Account, _: &BankCommand) -> i64 {
        s.balance
    }
}

/// The commands account `i` receives after `Open`, and the balance they leave.
pub fn script(i: u32) -> (Vec<BankCommand>, i64) {
    let first = 100 + i64::from(i % 7) * 10;
    let second = if i % 3 == 0 {
        BankCommand::Withdraw(30)
    } else {
        BankCommand::Deposit(5)
    };
    let third = 1 + i64::from(i % 11);
    let expected = first + if i % 3 == 0 { -30 } else { 5 } + third;
    (
        vec![
            BankCommand::Deposit(first),
            second,
            BankCommand::Deposit(third),
        ],
        expected,
    )
}

// ---- counting what the stores see ----

/// What the demo's stores did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events stored.
    pub events_written: AtomicU64,
    /// Saves refused with a version conflict (each one then retried by its writer).
    pub conflicts: AtomicU64,
}

/// A store that counts stored events and version conflicts on the way through.
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> CountingStore<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Self { inner, counters }
    }

    fn record(&self, result: &Result<()>, n: usize) {
        match result {
            Ok(()) => {
                self.counters
                    .events_written
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.is_version_conflict() => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for CountingStore<S> {
    async fn save_event(&self, event: &Event) -> Result<()> {
        let r = self.inner.save_event(event).await;
        self.record(&r, 1);
        r
    }
    async fn save_events(&self, actor_id: &str, events: &[Event]) -> Result<()> {
        let r = self.inner.save_events(actor_id, events).await;
        self.record(&r, events.len());
        r
    }
    async fn get_events(&self, actor_id: &str, from_version: u64) -> Result<Vec<Event>> {
        self.inner.get_events(actor_id, from_version).await
    }
    async fn get_latest_version(&self, actor_id: &str) -> Result<u64> {
        self.inner.get_latest_version(actor_id).await
    }
}

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for CountingStore<S> {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn get_latest_snapshot(&self, actor_id: &str) -> Result<Option<Snapshot>> {
        self.inner.get_latest_snapshot(actor_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_end_at_their_expected_balance() {
        for i in 0..50 {
            let (commands, expected) = script(i);
            let mut s = Account {
                open: true,
                ..Account::default()
            };
            for c in commands {
                for e in Bank.handle("a", &s, &c).unwrap() {
                    let ev = Event::new(e.event_type, "a", 1).with_data(e.data);
                    Bank.apply(&mut s, &ev);
                }
            }
            assert_eq!(s.balance, expected, "account {i}");
        }
        let closed = Account::default();
        assert!(Bank.handle("a", &closed, &BankCommand::Deposit(1)).is_err());
        assert!(Bank
            .handle(
                "a",
                &Account {
                    open: true,
                    ..closed
                },
                &BankCommand::Withdraw(1)
            )
            .is_err());
    }
}
