//! The test model every cluster integration test runs: bank accounts that take deposits and
//! withdrawals (refused beyond the balance) and answer with their balance and deposit count.

use aether_actor::{Actor, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Account {
    pub(crate) balance: i64,
    pub(crate) deposits: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum Command {
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
    Balance,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum Moved {
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Reply {
    pub(crate) balance: i64,
    pub(crate) deposits: u64,
}

pub(crate) struct Bank;

impl Actor for Bank {
    type State = Account;
    type Command = Command;
    type Event = Moved;
    type Reply = Reply;
    type Error = Refused;
    const TYPE: &'static str = "bank";

    async fn decide(
        &self,
        _: &str,
        state: &Account,
        command: &Command,
    ) -> Result<Vec<Moved>, Refused> {
        Ok(match *command {
            Command::Deposit { amount } => vec![Moved::Deposited { amount }],
            Command::Withdraw { amount } if amount > state.balance => {
                return Err(Refused::InsufficientFunds {
                    balance: state.balance,
                    asked: amount,
                })
            }
            Command::Withdraw { amount } => vec![Moved::Withdrawn { amount }],
            Command::Balance => Vec::new(),
        })
    }

    fn apply(state: &mut Account, event: &Moved) {
        match event {
            Moved::Deposited { amount } => {
                state.balance += amount;
                state.deposits += 1;
            }
            Moved::Withdrawn { amount } => state.balance -= amount,
        }
    }

    fn reply(state: &Account, _: &Command, _: &[Moved]) -> Reply {
        Reply {
            balance: state.balance,
            deposits: state.deposits,
        }
    }
}
