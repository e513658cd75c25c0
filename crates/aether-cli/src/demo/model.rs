//! The demo's actor model, bank accounts, and the store wrapper that counts what the stores
//! saw: the parts of the demo that are plain logic, testable without a cluster.

use aether_core::ActorKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aether_actor::{Actor, DomainEvent};
use aether_core::{Error, Event, EventStore, Result, Snapshot, SnapshotStore, Transaction};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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

/// What happened to an account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum BankEvent {
    /// The account was opened.
    #[serde(rename = "AccountOpened")]
    Opened {
        /// The owner's name.
        owner: String,
    },
    /// Money came in.
    Deposited {
        /// How much.
        amount: i64,
    },
    /// Money went out.
    Withdrawn {
        /// How much.
        amount: i64,
    },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "AccountOpened",
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// Why an account refused a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// `Open` on an open account.
    #[error("the account is already open")]
    AlreadyOpen,
    /// Money moved on an account that is not open.
    #[error("the account is not open")]
    NotOpen,
    /// A withdrawal beyond the balance.
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds {
        /// The balance.
        balance: i64,
        /// The amount asked for.
        asked: i64,
    },
}

/// Bank accounts as an actor: commands decide events, events change the balance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bank;

impl Actor for Bank {
    type State = Account;
    type Command = BankCommand;
    type Event = BankEvent;
    type Reply = i64;
    type Error = BankError;
    const TYPE: &'static str = "bank";

    async fn decide(
        &self,
        _: &str,
        s: &Account,
        c: &BankCommand,
    ) -> std::result::Result<Vec<BankEvent>, BankError> {
        Ok(match c {
            BankCommand::Open { .. } if s.open => return Err(BankError::AlreadyOpen),
            BankCommand::Open { owner } => vec![BankEvent::Opened {
                owner: owner.clone(),
            }],
            BankCommand::Balance => Vec::new(),
            _ if !s.open => return Err(BankError::NotOpen),
            BankCommand::Deposit(n) => vec![BankEvent::Deposited { amount: *n }],
            BankCommand::Withdraw(n) if *n > s.balance => {
                return Err(BankError::InsufficientFunds {
                    balance: s.balance,
                    asked: *n,
                })
            }
            BankCommand::Withdraw(n) => vec![BankEvent::Withdrawn { amount: *n }],
        })
    }

    fn apply(s: &mut Account, e: &BankEvent) {
        match e {
            BankEvent::Opened { owner } => {
                s.open = true;
                s.owner = owner.clone();
            }
            BankEvent::Deposited { amount } => s.balance += amount,
            BankEvent::Withdrawn { amount } => s.balance -= amount,
        }
    }

    fn reply(s: &Account, _: &BankCommand, _: &[BankEvent]) -> i64 {
        s.balance
    }
}

/// A transfer of `amount` between two accounts (`accounts[0]` pays `accounts[1]`): one
/// decision over both, committed as one transaction. Returns the payer's balance after.
///
/// # Errors
/// The rejection: either account not open, or the payer's balance short of `amount`.
pub fn transfer_decision(accounts: &[Account], amount: i64) -> aether_actor::Decision<Bank, i64> {
    let [from, to] = accounts else {
        return Err(BankError::NotOpen);
    };
    if !from.open || !to.open {
        return Err(BankError::NotOpen);
    }
    if amount > from.balance {
        return Err(BankError::InsufficientFunds {
            balance: from.balance,
            asked: amount,
        });
    }
    Ok((
        vec![
            vec![BankEvent::Withdrawn { amount }],
            vec![BankEvent::Deposited { amount }],
        ],
        from.balance - amount,
    ))
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
    async fn events_of(&self, actor: ActorKey<'_>, from_version: u64) -> Result<Vec<Event>> {
        self.inner.events_of(actor, from_version).await
    }
    async fn latest_version_of(&self, actor: ActorKey<'_>) -> Result<u64> {
        self.inner.latest_version_of(actor).await
    }
    async fn commit(&self, transaction: &Transaction) -> Result<()> {
        let r = self.inner.commit(transaction).await;
        match &r {
            Ok(()) => {
                self.counters
                    .events_written
                    .fetch_add(transaction.event_count() as u64, Ordering::Relaxed);
            }
            Err(Error::TransactionConflict(_)) => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        r
    }
}

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for CountingStore<S> {
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn latest_snapshot_of(&self, actor: ActorKey<'_>) -> Result<Option<Snapshot>> {
        self.inner.latest_snapshot_of(actor).await
    }

    async fn snapshot_and_events_of(
        &self,
        actor: ActorKey<'_>,
        start: &aether_core::ReplayStart,
    ) -> Result<aether_core::SnapshotAndEvents> {
        self.inner.snapshot_and_events_of(actor, start).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_actor::testing::{check_replay, ActorTest};
    use proptest::prelude::*;

    fn opened() -> BankEvent {
        BankEvent::Opened {
            owner: "Ada".into(),
        }
    }

    #[tokio::test]
    async fn scripts_end_at_their_expected_balance() {
        for i in 0..50 {
            let (commands, expected) = script(i);
            let mut test = ActorTest::new(Bank).given([opened()]);
            let mut history = vec![opened()];
            for c in commands {
                let then = test.when(c).await;
                history.extend(then.events().expect("accepted").iter().cloned());
                test = ActorTest::new(Bank).given(history.clone());
            }
            let balance = ActorTest::new(Bank)
                .given(history)
                .when(BankCommand::Balance)
                .await
                .reply()
                .copied();
            assert_eq!(balance, Some(expected), "account {i}");
        }
    }

    #[tokio::test]
    async fn refusals_are_typed() {
        ActorTest::new(Bank)
            .when(BankCommand::Deposit(1))
            .await
            .then_expect_rejection(&BankError::NotOpen);
        ActorTest::new(Bank)
            .given([opened()])
            .when(BankCommand::Open { owner: "x".into() })
            .await
            .then_expect_rejection(&BankError::AlreadyOpen);
        ActorTest::new(Bank)
            .given([opened(), BankEvent::Deposited { amount: 5 }])
            .when(BankCommand::Withdraw(6))
            .await
            .then_expect_rejection(&BankError::InsufficientFunds {
                balance: 5,
                asked: 6,
            });
        ActorTest::new(Bank)
            .given([opened(), BankEvent::Deposited { amount: 5 }])
            .when(BankCommand::Withdraw(5))
            .await
            .then_expect_events(&[BankEvent::Withdrawn { amount: 5 }])
            .then_expect_reply(&0);
    }

    #[test]
    fn transfers_move_money_or_are_refused() {
        let open = |balance| Account {
            open: true,
            owner: "x".into(),
            balance,
        };
        let (events, left) = transfer_decision(&[open(10), open(0)], 4).unwrap();
        assert_eq!(left, 6);
        assert_eq!(
            events,
            [
                vec![BankEvent::Withdrawn { amount: 4 }],
                vec![BankEvent::Deposited { amount: 4 }]
            ]
        );
        assert_eq!(
            transfer_decision(&[open(3), open(0)], 4).unwrap_err(),
            BankError::InsufficientFunds {
                balance: 3,
                asked: 4
            }
        );
        assert_eq!(
            transfer_decision(&[open(3), Account::default()], 1).unwrap_err(),
            BankError::NotOpen
        );
    }

    #[test]
    fn events_keep_their_stored_names() {
        let codec = aether_actor::EventCodec::<BankEvent>::default();
        assert_eq!(codec.encode(&opened()).unwrap().event_type, "AccountOpened");
    }

    fn command() -> impl Strategy<Value = BankCommand> {
        prop_oneof![
            "[a-z]{0,8}".prop_map(|owner| BankCommand::Open { owner }),
            (-5i64..500).prop_map(BankCommand::Deposit),
            (-5i64..500).prop_map(BankCommand::Withdraw),
            Just(BankCommand::Balance),
        ]
    }

    proptest! {
        #[test]
        fn live_handling_and_replay_agree(commands in proptest::collection::vec(command(), 0..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let report = rt.block_on(check_replay(&Bank, commands));
            prop_assert!(report.is_ok(), "{report:?}");
        }
    }
}
