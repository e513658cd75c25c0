//! The shared test model: bank accounts. Commands decide events, events fold into the account,
//! so a test that needs an application on top of a store or a runtime uses this one instead of
//! writing its own.
//!
//! It speaks `aether-core` types only; a runtime adapts it in a few lines (for example an
//! `aether-cluster` `RuntimeModel` whose `handle` calls [`Bank::decide`] and turns each
//! [`BankEvent`] into a new event of [`BankEvent::event_type`] with [`BankEvent::data`], and
//! whose `apply` calls [`Account::apply`]).
//!
//! ```
//! use aether_testkit::bank::{Account, Bank, BankCommand};
//!
//! let mut account = Account::default();
//! let mut version = 0;
//! for command in [
//!     BankCommand::Open { owner: "Ada".into() },
//!     BankCommand::Deposit(100),
//!     BankCommand::Withdraw(30),
//! ] {
//!     for event in Bank.decide("acc-1", &account, &command).expect("accepted") {
//!         version += 1;
//!         account.apply(&event.to_event("acc-1", version));
//!     }
//! }
//! assert_eq!((account.balance, account.deposits), (70, 1));
//! assert!(Bank.decide("acc-1", &account, &BankCommand::Withdraw(71)).is_err());
//! ```

use aether_core::{Error, Event, EventData, Result};
use serde_json::Value;

/// An account's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// Whether the account was opened.
    pub open: bool,
    /// The owner's name.
    pub owner: String,
    /// The balance.
    pub balance: i64,
    /// How many deposits were made.
    pub deposits: u64,
}

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankCommand {
    /// Opens the account; refused when it is open already.
    Open {
        /// The owner's name.
        owner: String,
    },
    /// Adds money; refused before the account is open.
    Deposit(i64),
    /// Takes money out; refused beyond the balance or before the account is open.
    Withdraw(i64),
    /// Reads the balance; decides no event.
    Balance,
}

/// What happened to an account: the typed form of its stored events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankEvent {
    /// `AccountOpened` with field `owner`.
    Opened {
        /// The owner's name.
        owner: String,
    },
    /// `Deposited` with field `amount`.
    Deposited {
        /// The amount added.
        amount: i64,
    },
    /// `Withdrawn` with field `amount`.
    Withdrawn {
        /// The amount taken out.
        amount: i64,
    },
}

impl BankEvent {
    /// The stored event type: `AccountOpened`, `Deposited` or `Withdrawn`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "AccountOpened",
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }

    /// The stored payload: `owner` or `amount`.
    pub fn data(&self) -> EventData {
        let mut data = EventData::new();
        match self {
            Self::Opened { owner } => data.insert("owner".into(), Value::from(owner.as_str())),
            Self::Deposited { amount } | Self::Withdrawn { amount } => {
                data.insert("amount".into(), Value::from(*amount))
            }
        };
        data
    }

    /// The event as stored for `actor_id` at `version`.
    pub fn to_event(&self, actor_id: &str, version: u64) -> Event {
        Event::new(self.event_type(), actor_id, version).with_data(self.data())
    }

    /// The typed form of a stored event; `None` for an event this model does not know.
    pub fn from_event(event: &Event) -> Option<Self> {
        let amount = || event.data.get("amount").and_then(Value::as_i64);
        match event.event_type.as_str() {
            "AccountOpened" => Some(Self::Opened {
                owner: event
                    .data
                    .get("owner")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            }),
            "Deposited" => amount().map(|amount| Self::Deposited { amount }),
            "Withdrawn" => amount().map(|amount| Self::Withdrawn { amount }),
            _ => None,
        }
    }
}

impl Account {
    /// Folds one stored event into the account; events the model does not know change nothing.
    pub fn apply(&mut self, event: &Event) {
        match BankEvent::from_event(event) {
            Some(BankEvent::Opened { owner }) => {
                self.open = true;
                self.owner = owner;
            }
            Some(BankEvent::Deposited { amount }) => {
                self.balance += amount;
                self.deposits += 1;
            }
            Some(BankEvent::Withdrawn { amount }) => self.balance -= amount,
            None => {}
        }
    }

    /// The account a history leaves.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut account = Self::default();
        for event in events {
            account.apply(event);
        }
        account
    }
}

/// The account model: decides which events a command causes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bank;

impl Bank {
    /// The name a runtime registers the model under.
    pub const NAME: &'static str = "bank";

    /// The events `command` causes on `account`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the command is refused: opening an open account, moving
    /// money on an account that is not open, withdrawing more than the balance.
    pub fn decide(
        &self,
        actor_id: &str,
        account: &Account,
        command: &BankCommand,
    ) -> Result<Vec<BankEvent>> {
        Ok(match command {
            BankCommand::Open { .. } if account.open => {
                return Err(Error::invalid(format!("{actor_id} is already open")))
            }
            BankCommand::Open { owner } => vec![BankEvent::Opened {
                owner: owner.clone(),
            }],
            BankCommand::Balance => Vec::new(),
            _ if !account.open => return Err(Error::invalid(format!("{actor_id} is not open"))),
            BankCommand::Deposit(amount) => vec![BankEvent::Deposited { amount: *amount }],
            BankCommand::Withdraw(amount) if *amount > account.balance => {
                return Err(Error::invalid(format!(
                    "insufficient funds in {actor_id}: balance {}, asked {amount}",
                    account.balance
                )))
            }
            BankCommand::Withdraw(amount) => vec![BankEvent::Withdrawn { amount: *amount }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_fold() {
        let events = [
            BankEvent::Opened {
                owner: "Ada".into(),
            },
            BankEvent::Deposited { amount: 50 },
            BankEvent::Withdrawn { amount: 20 },
        ];
        let stored: Vec<Event> = events
            .iter()
            .zip(1..)
            .map(|(e, v)| e.to_event("a", v))
            .collect();
        for (e, s) in events.iter().zip(&stored) {
            assert_eq!(BankEvent::from_event(s).as_ref(), Some(e));
        }
        let account = Account::replay(&stored);
        assert_eq!(
            account,
            Account {
                open: true,
                owner: "Ada".into(),
                balance: 30,
                deposits: 1
            }
        );
        assert_eq!(BankEvent::from_event(&Event::new("Other", "a", 4)), None);
    }

    #[test]
    fn refusals_are_invalid_input() {
        let closed = Account::default();
        let refused = |a: &Account, c: BankCommand| {
            matches!(Bank.decide("a", a, &c), Err(Error::InvalidInput(_)))
        };
        assert!(refused(&closed, BankCommand::Deposit(1)));
        assert!(Bank
            .decide("a", &closed, &BankCommand::Balance)
            .is_ok_and(|e| e.is_empty()));
        let open = Account {
            open: true,
            balance: 5,
            ..Account::default()
        };
        assert!(refused(&open, BankCommand::Open { owner: "x".into() }));
        assert!(refused(&open, BankCommand::Withdraw(6)));
        assert_eq!(
            Bank.decide("a", &open, &BankCommand::Withdraw(5)).ok(),
            Some(vec![BankEvent::Withdrawn { amount: 5 }])
        );
    }
}
