//! The test model every cluster integration test runs: bank accounts that take deposits and
//! withdrawals (refused beyond the balance) and answer with their balance and deposit count.

use aether_cluster::{NewEvent, RuntimeMessage, RuntimeModel};
use aether_core::{Error, Event, Result};
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

impl RuntimeMessage for Command {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Reply {
    pub(crate) balance: i64,
    pub(crate) deposits: u64,
}

pub(crate) struct Bank;

impl RuntimeModel for Bank {
    type State = Account;
    type Message = Command;
    type Reply = Reply;

    fn name(&self) -> &str {
        "bank"
    }

    fn handle(&self, _: &str, state: &Account, message: &Command) -> Result<Vec<NewEvent>> {
        match message {
            Command::Deposit { amount } => Ok(vec![
                NewEvent::new("Deposited").with_field("amount", *amount)
            ]),
            Command::Withdraw { amount } if *amount > state.balance => {
                Err(Error::invalid("insufficient funds"))
            }
            Command::Withdraw { amount } => Ok(vec![
                NewEvent::new("Withdrawn").with_field("amount", *amount)
            ]),
            Command::Balance => Ok(Vec::new()),
        }
    }

    fn apply(&self, state: &mut Account, event: &Event) {
        let amount = event
            .data
            .get("amount")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        match event.event_type.as_str() {
            "Deposited" => {
                state.balance += amount;
                state.deposits += 1;
            }
            "Withdrawn" => state.balance -= amount,
            _ => {}
        }
    }

    fn reply(&self, state: &Account, _: &Command) -> Reply {
        Reply {
            balance: state.balance,
            deposits: state.deposits,
        }
    }
}
