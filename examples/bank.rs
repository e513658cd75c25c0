//! A typed bank account actor, the one the `quickstart`, `cluster` and `projection` examples
//! run: accounts are opened, take deposits and withdrawals, and refuse what they cannot do
//! with a typed [`BankError`].
//!
//! The same [`Bank`] runs embedded ([`aether_actor::ActorHost`] over any store) and on a
//! cluster node (`aether_cluster::Actors::new(store).with(Bank)`), and its events are read
//! back as [`BankEvent`]s through an [`aether_actor::EventCodec`] by projections.
//!
//! ```
//! use std::sync::Arc;
//!
//! use aether_actor::{ActorClient, ActorHost, CommandError, RuntimeConfig};
//! use aether_examples::bank::{Bank, BankCommand, BankError};
//! use aether_store::InMemoryEventStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bank = ActorHost::new(Bank, Arc::new(InMemoryEventStore::new()), RuntimeConfig::default());
//! bank.send("acc-1", BankCommand::Open { owner: "Ada".into() }).await?;
//! let account = bank.send("acc-1", BankCommand::Deposit { amount: 100 }).await?;
//! assert_eq!(account.balance, 100);
//! match bank.send("acc-1", BankCommand::Withdraw { amount: 500 }).await {
//!     Err(CommandError::Rejected(BankError::InsufficientFunds { balance, asked })) => {
//!         assert_eq!((balance, asked), (100, 500));
//!     }
//!     other => panic!("expected a rejection, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

use aether_actor::{Actor, DomainEvent};
use serde::{Deserialize, Serialize};

/// An account's state, derived from its events and nothing else. It is also the reply to
/// every command: the account as the command left it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Who opened it; `None` until it is opened.
    pub owner: Option<String>,
    /// The balance, in the currency's smallest unit.
    pub balance: i64,
}

impl Account {
    /// Whether the account has been opened.
    pub fn is_open(&self) -> bool {
        self.owner.is_some()
    }
}

/// What can be asked of an account. It crosses the wire between cluster nodes as itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankCommand {
    /// Opens the account for `owner`.
    Open {
        /// The account holder.
        owner: String,
    },
    /// Adds `amount` (positive) to the balance.
    Deposit {
        /// How much.
        amount: i64,
    },
    /// Takes `amount` (positive, at most the balance) from the balance.
    Withdraw {
        /// How much.
        amount: i64,
    },
    /// Changes nothing; the reply is the account.
    Balance,
}

/// What happened to an account: the events stored in its history. The variant names are the
/// stored event types, so they must not change (rename with `#[serde(rename = "...")]` or an
/// upcaster instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankEvent {
    /// The account was opened.
    AccountOpened {
        /// The account holder.
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
            Self::AccountOpened { .. } => "AccountOpened",
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// Why an account refused a command. Nothing was written; the sender gets this value, typed,
/// from whichever node owns the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BankError {
    /// Deposits, withdrawals and balance enquiries need an open account.
    #[error("the account is not open")]
    NotOpen,
    /// An account is opened once.
    #[error("the account is already open (owner {owner:?})")]
    AlreadyOpen {
        /// The current holder.
        owner: String,
    },
    /// An account needs a holder.
    #[error("the owner must not be empty")]
    NoOwner,
    /// Amounts are positive.
    #[error("the amount must be positive, not {amount}")]
    InvalidAmount {
        /// The amount asked for.
        amount: i64,
    },
    /// A withdrawal beyond the balance.
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds {
        /// The balance now.
        balance: i64,
        /// The amount asked for.
        asked: i64,
    },
    /// A deposit the balance cannot hold.
    #[error("a deposit of {amount} would overflow the balance {balance}")]
    BalanceOverflow {
        /// The balance now.
        balance: i64,
        /// The amount asked for.
        amount: i64,
    },
}

/// The bank account actor type (`"bank"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bank;

impl Actor for Bank {
    type State = Account;
    type Command = BankCommand;
    type Event = BankEvent;
    type Reply = Account;
    type Error = BankError;
    const TYPE: &'static str = "bank";

    async fn decide(
        &self,
        _actor_id: &str,
        state: &Account,
        command: &BankCommand,
    ) -> Result<Vec<BankEvent>, BankError> {
        if let BankCommand::Open { owner } = command {
            return match &state.owner {
                Some(current) => Err(BankError::AlreadyOpen {
                    owner: current.clone(),
                }),
                None if owner.trim().is_empty() => Err(BankError::NoOwner),
                None => Ok(vec![BankEvent::AccountOpened {
                    owner: owner.clone(),
                }]),
            };
        }
        if !state.is_open() {
            return Err(BankError::NotOpen);
        }
        match *command {
            BankCommand::Open { .. } | BankCommand::Balance => Ok(Vec::new()),
            BankCommand::Deposit { amount } | BankCommand::Withdraw { amount } if amount <= 0 => {
                Err(BankError::InvalidAmount { amount })
            }
            BankCommand::Deposit { amount } => match state.balance.checked_add(amount) {
                Some(_) => Ok(vec![BankEvent::Deposited { amount }]),
                None => Err(BankError::BalanceOverflow {
                    balance: state.balance,
                    amount,
                }),
            },
            BankCommand::Withdraw { amount } if amount > state.balance => {
                Err(BankError::InsufficientFunds {
                    balance: state.balance,
                    asked: amount,
                })
            }
            BankCommand::Withdraw { amount } => Ok(vec![BankEvent::Withdrawn { amount }]),
        }
    }

    fn apply(state: &mut Account, event: &BankEvent) {
        // `decide` never records a movement the balance cannot hold, so saturation is never
        // reached by this actor's own history; it only keeps a hand-edited history from
        // panicking the fold.
        match event {
            BankEvent::AccountOpened { owner } => state.owner = Some(owner.clone()),
            BankEvent::Deposited { amount } => {
                state.balance = state.balance.saturating_add(*amount)
            }
            BankEvent::Withdrawn { amount } => {
                state.balance = state.balance.saturating_sub(*amount)
            }
        }
    }

    fn reply(state: &Account, _command: &BankCommand, _events: &[BankEvent]) -> Account {
        state.clone()
    }
}

#[cfg(test)]
mod tests {
    use aether_actor::testing::{check_replay, ActorTest};
    use proptest::prelude::*;

    use super::*;

    fn opened() -> BankEvent {
        BankEvent::AccountOpened {
            owner: "Ada".into(),
        }
    }

    fn account(balance: i64) -> Account {
        Account {
            owner: Some("Ada".into()),
            balance,
        }
    }

    #[tokio::test]
    async fn opening_records_the_owner() {
        ActorTest::new(Bank)
            .when(BankCommand::Open {
                owner: "Ada".into(),
            })
            .await
            .then_expect_events(&[opened()])
            .then_expect_reply(&account(0));
    }

    #[tokio::test]
    async fn an_account_is_opened_once_and_by_someone() {
        ActorTest::new(Bank)
            .given([opened()])
            .when(BankCommand::Open {
                owner: "Bob".into(),
            })
            .await
            .then_expect_rejection(&BankError::AlreadyOpen {
                owner: "Ada".into(),
            });
        ActorTest::new(Bank)
            .when(BankCommand::Open { owner: " ".into() })
            .await
            .then_expect_rejection(&BankError::NoOwner);
    }

    #[tokio::test]
    async fn nothing_happens_to_an_account_that_is_not_open() {
        for command in [
            BankCommand::Deposit { amount: 10 },
            BankCommand::Withdraw { amount: 10 },
            BankCommand::Balance,
        ] {
            ActorTest::new(Bank)
                .when(command)
                .await
                .then_expect_rejection(&BankError::NotOpen);
        }
    }

    #[tokio::test]
    async fn deposits_and_withdrawals_move_the_balance() {
        ActorTest::new(Bank)
            .given([opened(), BankEvent::Deposited { amount: 100 }])
            .when(BankCommand::Deposit { amount: 25 })
            .await
            .then_expect_events(&[BankEvent::Deposited { amount: 25 }])
            .then_expect_reply(&account(125));
        ActorTest::new(Bank)
            .given([opened(), BankEvent::Deposited { amount: 100 }])
            .when(BankCommand::Withdraw { amount: 100 })
            .await
            .then_expect_events(&[BankEvent::Withdrawn { amount: 100 }])
            .then_expect_reply(&account(0));
    }

    #[tokio::test]
    async fn a_withdrawal_beyond_the_balance_is_refused_with_the_balance() {
        ActorTest::new(Bank)
            .given([
                opened(),
                BankEvent::Deposited { amount: 100 },
                BankEvent::Withdrawn { amount: 30 },
            ])
            .when(BankCommand::Withdraw { amount: 71 })
            .await
            .then_expect_rejection(&BankError::InsufficientFunds {
                balance: 70,
                asked: 71,
            });
    }

    #[tokio::test]
    async fn amounts_must_be_positive_and_fit_the_balance() {
        for amount in [0, -5, i64::MIN] {
            ActorTest::new(Bank)
                .given([opened()])
                .when(BankCommand::Deposit { amount })
                .await
                .then_expect_rejection(&BankError::InvalidAmount { amount });
            ActorTest::new(Bank)
                .given([opened()])
                .when(BankCommand::Withdraw { amount })
                .await
                .then_expect_rejection(&BankError::InvalidAmount { amount });
        }
        ActorTest::new(Bank)
            .given([opened(), BankEvent::Deposited { amount: i64::MAX }])
            .when(BankCommand::Deposit { amount: 1 })
            .await
            .then_expect_rejection(&BankError::BalanceOverflow {
                balance: i64::MAX,
                amount: 1,
            });
    }

    #[tokio::test]
    async fn a_balance_enquiry_writes_nothing() {
        ActorTest::new(Bank)
            .given([opened(), BankEvent::Deposited { amount: 40 }])
            .when(BankCommand::Balance)
            .await
            .then_expect_events(&[])
            .then_expect_reply(&account(40));
    }

    fn command() -> impl Strategy<Value = BankCommand> {
        // Small amounts most of the time, so that withdrawals often succeed; extremes
        // sometimes, so that the refusals are exercised too.
        let amount = prop_oneof![
            8 => -10i64..1_000,
            1 => any::<i64>(),
            1 => Just(i64::MAX),
        ];
        prop_oneof![
            1 => prop_oneof![Just("Ada".to_string()), Just(String::new())]
                .prop_map(|owner| BankCommand::Open { owner }),
            4 => amount.clone().prop_map(|amount| BankCommand::Deposit { amount }),
            4 => amount.prop_map(|amount| BankCommand::Withdraw { amount }),
            1 => Just(BankCommand::Balance),
        ]
    }

    proptest! {
        /// Whatever the commands, the live state equals the state replayed from the stored
        /// events (and survives a snapshot), and the balance never goes below zero.
        #[test]
        fn live_state_matches_replay_and_never_goes_negative(
            commands in proptest::collection::vec(command(), 0..60),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let report = runtime
                .block_on(check_replay(&Bank, commands.clone()))
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(report.accepted + report.rejected, commands.len());

            let mut state = Account::default();
            for command in &commands {
                if let Ok(events) = runtime.block_on(Bank.decide("a", &state, command)) {
                    for event in &events {
                        Bank::apply(&mut state, event);
                    }
                }
                prop_assert!(state.balance >= 0, "balance {} after {:?}", state.balance, command);
            }
        }
    }
}
