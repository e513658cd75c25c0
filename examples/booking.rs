//! Booking seats: two actor types, a [`Show`] (its seats) and a [`Customer`] (a wallet), and
//! a reservation that changes both at once ([`reserve_and_charge`]): the show's seats are
//! reserved and the customer is charged in one transaction across the two types
//! ([`aether_actor::Transact`]), so either both happen or neither does.
//!
//! A refusal says which actor refused and why, typed: a show short of seats answers
//! [`Reservation::SoldOut`], a customer short of money [`Reservation::InsufficientFunds`], and
//! nothing is written either way. The `booking` example runs it, and
//! [`crate::booking_read_model`] keeps a SQLite read model of both types from one projection.
//!
//! ```
//! use std::sync::Arc;
//!
//! use aether_actor::{ActorClient, ActorHost, CommandMeta, RuntimeConfig};
//! use aether_examples::booking::{
//!     reserve_and_charge, Customer, CustomerCommand, Reservation, Show, ShowCommand,
//! };
//! use aether_store::InMemoryEventStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(InMemoryEventStore::new());
//! let shows = ActorHost::new(Show, store.clone(), RuntimeConfig::default());
//! let customers = ActorHost::new(Customer, store, RuntimeConfig::default());
//! shows.send("hamlet", ShowCommand::Create { seats: 3 }).await?;
//! customers.send("ada", CustomerCommand::Fund { amount: 100 }).await?;
//!
//! // Two seats at 30 each: the show and the wallet change together.
//! let booked =
//!     reserve_and_charge(&shows, &customers, "hamlet", "ada", 2, 30, CommandMeta::new()).await?;
//! assert!(matches!(booked, Reservation::Reserved { free: 1, balance: 40, .. }));
//! // Two more: one seat is left, so the show refuses and the customer is not charged.
//! let refused =
//!     reserve_and_charge(&shows, &customers, "hamlet", "ada", 2, 30, CommandMeta::new()).await?;
//! assert_eq!(refused, Reservation::SoldOut { free: 1, asked: 2 });
//! assert_eq!(customers.send("ada", CustomerCommand::Balance).await?.balance, 40);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use aether_actor::{Actor, DomainEvent};
use serde::{Deserialize, Serialize};

pub mod node;
pub mod order;
mod reservation;

pub use reservation::{
    decide_reservation, reservation_outcome, reserve_and_charge, BookingError, Reservation,
};

/// A show's seating, derived from its events; also the reply to every show command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seating {
    /// How many seats the show has; 0 until it is created.
    pub seats: u32,
    /// How many of them are not reserved.
    pub free: u32,
    /// Seats held for orders awaiting payment ([`order`]), by order; they are not free.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holds: BTreeMap<String, u32>,
}

impl Seating {
    /// Whether the show has been created.
    pub fn is_created(&self) -> bool {
        self.seats > 0
    }

    /// The event that reserves `seats` for `customer`, who pays `amount` for them, or why
    /// the show refuses. Both the show's own `Reserve` command and [`reserve_and_charge`]
    /// decide with it.
    ///
    /// # Errors
    /// [`ShowError::NotCreated`], [`ShowError::NoSeats`] for 0 seats, and
    /// [`ShowError::SoldOut`] when fewer than `seats` are free.
    pub fn reserve(&self, customer: &str, seats: u32, amount: i64) -> Result<ShowEvent, ShowError> {
        if !self.is_created() {
            return Err(ShowError::NotCreated);
        }
        if seats == 0 {
            return Err(ShowError::NoSeats);
        }
        if seats > self.free {
            return Err(ShowError::SoldOut {
                free: self.free,
                asked: seats,
            });
        }
        Ok(ShowEvent::Reserved {
            customer: customer.to_string(),
            seats,
            amount,
        })
    }
}

/// What can be asked of a show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShowCommand {
    /// Creates the show with `seats` seats, all free.
    Create {
        /// How many seats (at least one).
        seats: u32,
    },
    /// Reserves `seats` for `customer` without charging anything (a complimentary
    /// reservation); a paid one goes through [`reserve_and_charge`].
    Reserve {
        /// Who for.
        customer: String,
        /// How many seats.
        seats: u32,
    },
    /// Frees `seats` reserved seats.
    Release {
        /// How many seats.
        seats: u32,
    },
    /// Holds `seats` for `order` until it is paid or expires (idempotent per order).
    Hold {
        /// The order.
        order: String,
        /// How many seats.
        seats: u32,
    },
    /// Frees the seats held for `order` (nothing when none are held).
    ReleaseHold {
        /// The order.
        order: String,
    },
    /// Turns the seats held for `order` into sold seats (nothing when none are held).
    ConfirmHold {
        /// The order.
        order: String,
    },
    /// Changes nothing; the reply is the seating.
    Seating,
}

/// What happened to a show. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum ShowEvent {
    /// The show was created with `seats` free seats.
    Created {
        /// How many seats.
        seats: u32,
    },
    /// Seats were reserved.
    Reserved {
        /// Who for.
        customer: String,
        /// How many seats.
        seats: u32,
        /// What the customer was charged for them (0 for a complimentary reservation).
        amount: i64,
    },
    /// Reserved seats were freed.
    Released {
        /// How many seats.
        seats: u32,
    },
    /// Seats were held for an order.
    Held {
        /// The order.
        order: String,
        /// How many seats.
        seats: u32,
    },
    /// An order's held seats were freed (it was not paid in time).
    HoldReleased {
        /// The order.
        order: String,
        /// How many seats.
        seats: u32,
    },
    /// An order's held seats were sold (it was paid).
    HoldConfirmed {
        /// The order.
        order: String,
    },
}

/// Why a show refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ShowError {
    /// Reservations and releases need a created show.
    #[error("the show does not exist")]
    NotCreated,
    /// A show is created once.
    #[error("the show exists already ({seats} seats)")]
    AlreadyCreated {
        /// Its seats.
        seats: u32,
    },
    /// A show, a reservation or a release needs at least one seat.
    #[error("at least one seat is needed")]
    NoSeats,
    /// Fewer seats are free than asked for.
    #[error("sold out: {free} free, {asked} asked")]
    SoldOut {
        /// The free seats.
        free: u32,
        /// The seats asked for.
        asked: u32,
    },
    /// More seats released than are reserved.
    #[error("only {reserved} seats are reserved, {asked} released")]
    NotReserved {
        /// The reserved seats.
        reserved: u32,
        /// The seats released.
        asked: u32,
    },
}

/// The show actor type (`"show"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Show;

impl Actor for Show {
    type State = Seating;
    type Command = ShowCommand;
    type Event = ShowEvent;
    type Reply = Seating;
    type Error = ShowError;
    const TYPE: &'static str = "show";

    async fn decide(
        &self,
        _show: &str,
        state: &Seating,
        command: &ShowCommand,
    ) -> Result<Vec<ShowEvent>, ShowError> {
        match command {
            ShowCommand::Create { .. } if state.is_created() => {
                Err(ShowError::AlreadyCreated { seats: state.seats })
            }
            ShowCommand::Create { seats: 0 } => Err(ShowError::NoSeats),
            &ShowCommand::Create { seats } => Ok(vec![ShowEvent::Created { seats }]),
            ShowCommand::Reserve { customer, seats } => {
                Ok(vec![state.reserve(customer, *seats, 0)?])
            }
            _ if !state.is_created() => Err(ShowError::NotCreated),
            ShowCommand::Release { seats: 0 } => Err(ShowError::NoSeats),
            &ShowCommand::Release { seats } => {
                let reserved = state.seats.saturating_sub(state.free);
                if seats > reserved {
                    return Err(ShowError::NotReserved {
                        reserved,
                        asked: seats,
                    });
                }
                Ok(vec![ShowEvent::Released { seats }])
            }
            ShowCommand::Hold { order, .. } if state.holds.contains_key(order) => Ok(Vec::new()),
            ShowCommand::Hold { order, seats } => {
                state.reserve(order, *seats, 0)?;
                Ok(vec![ShowEvent::Held {
                    order: order.clone(),
                    seats: *seats,
                }])
            }
            ShowCommand::ReleaseHold { order } => Ok(state
                .holds
                .get(order)
                .map(|&seats| ShowEvent::HoldReleased {
                    order: order.clone(),
                    seats,
                })
                .into_iter()
                .collect()),
            ShowCommand::ConfirmHold { order } => Ok(state
                .holds
                .contains_key(order)
                .then(|| ShowEvent::HoldConfirmed {
                    order: order.clone(),
                })
                .into_iter()
                .collect()),
            ShowCommand::Seating => Ok(Vec::new()),
        }
    }

    fn apply(state: &mut Seating, event: &ShowEvent) {
        // `decide` keeps `free` within `0..=seats`; saturation only keeps a hand-edited
        // history from panicking the fold.
        match event {
            ShowEvent::Created { seats } => {
                state.seats = *seats;
                state.free = *seats;
            }
            ShowEvent::Reserved { seats, .. } => state.free = state.free.saturating_sub(*seats),
            ShowEvent::Released { seats } => {
                state.free = state.free.saturating_add(*seats).min(state.seats)
            }
            ShowEvent::Held { order, seats } => {
                state.free = state.free.saturating_sub(*seats);
                state.holds.insert(order.clone(), *seats);
            }
            ShowEvent::HoldReleased { order, seats } => {
                state.free = state.free.saturating_add(*seats).min(state.seats);
                state.holds.remove(order);
            }
            ShowEvent::HoldConfirmed { order } => {
                state.holds.remove(order);
            }
        }
    }

    fn reply(state: &Seating, _command: &ShowCommand, _events: &[ShowEvent]) -> Seating {
        state.clone()
    }
}

/// A customer's wallet, derived from its events; also the reply to every customer command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// The balance, in the currency's smallest unit.
    pub balance: i64,
}

impl Wallet {
    /// The event that charges `amount` for seats at `show`, or why the customer refuses.
    /// Both the customer's own `Charge` command and [`reserve_and_charge`] decide with it.
    ///
    /// # Errors
    /// [`CustomerError::InvalidAmount`] for an amount that is not positive, and
    /// [`CustomerError::InsufficientFunds`] beyond the balance.
    pub fn charge(&self, show: &str, amount: i64) -> Result<CustomerEvent, CustomerError> {
        if amount <= 0 {
            return Err(CustomerError::InvalidAmount { amount });
        }
        if amount > self.balance {
            return Err(CustomerError::InsufficientFunds {
                balance: self.balance,
                asked: amount,
            });
        }
        Ok(CustomerEvent::Charged {
            show: show.to_string(),
            amount,
            order: None,
        })
    }
}

/// What can be asked of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerCommand {
    /// Adds `amount` (positive) to the wallet.
    Fund {
        /// How much.
        amount: i64,
    },
    /// Takes `amount` (positive, at most the balance) for seats at `show`.
    Charge {
        /// The show paid for.
        show: String,
        /// How much.
        amount: i64,
    },
    /// Pays `amount` for the order `order` of seats at `show` (the order process hears it).
    PayOrder {
        /// The order paid.
        order: String,
        /// The show paid for.
        show: String,
        /// How much.
        amount: i64,
    },
    /// Changes nothing; the reply is the wallet.
    Balance,
}

/// What happened to a customer's wallet. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum CustomerEvent {
    /// Money came in.
    Funded {
        /// How much.
        amount: i64,
    },
    /// Money went to a show.
    Charged {
        /// The show paid for.
        show: String,
        /// How much.
        amount: i64,
        /// The order paid, for a payment of an [`order`] (absent in
        /// events stored before orders existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<String>,
    },
}

/// Why a customer refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CustomerError {
    /// Amounts are positive (and a reservation's total fits the balance's type).
    #[error("the amount must be positive, not {amount}")]
    InvalidAmount {
        /// The amount asked for (a reservation's price per seat when the total overflows).
        amount: i64,
    },
    /// A charge beyond the balance.
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds {
        /// The balance now.
        balance: i64,
        /// The amount asked for.
        asked: i64,
    },
    /// A deposit the balance cannot hold.
    #[error("funding {amount} would overflow the balance {balance}")]
    BalanceOverflow {
        /// The balance now.
        balance: i64,
        /// The amount asked for.
        amount: i64,
    },
}

/// The customer actor type (`"customer"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Customer;

impl Actor for Customer {
    type State = Wallet;
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Reply = Wallet;
    type Error = CustomerError;
    const TYPE: &'static str = "customer";

    async fn decide(
        &self,
        _customer: &str,
        state: &Wallet,
        command: &CustomerCommand,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        match command {
            &CustomerCommand::Fund { amount } if amount <= 0 => {
                Err(CustomerError::InvalidAmount { amount })
            }
            &CustomerCommand::Fund { amount } => match state.balance.checked_add(amount) {
                Some(_) => Ok(vec![CustomerEvent::Funded { amount }]),
                None => Err(CustomerError::BalanceOverflow {
                    balance: state.balance,
                    amount,
                }),
            },
            CustomerCommand::Charge { show, amount } => Ok(vec![state.charge(show, *amount)?]),
            CustomerCommand::PayOrder {
                order,
                show,
                amount,
            } => match state.charge(show, *amount)? {
                CustomerEvent::Charged { show, amount, .. } => Ok(vec![CustomerEvent::Charged {
                    show,
                    amount,
                    order: Some(order.clone()),
                }]),
                other => Ok(vec![other]),
            },
            CustomerCommand::Balance => Ok(Vec::new()),
        }
    }

    fn apply(state: &mut Wallet, event: &CustomerEvent) {
        match event {
            CustomerEvent::Funded { amount } => {
                state.balance = state.balance.saturating_add(*amount)
            }
            CustomerEvent::Charged { amount, .. } => {
                state.balance = state.balance.saturating_sub(*amount)
            }
        }
    }

    fn reply(state: &Wallet, _command: &CustomerCommand, _events: &[CustomerEvent]) -> Wallet {
        state.clone()
    }
}

/// Every booking event, by the actor type that wrote it: what the read model's projection
/// decodes into ([`aether_projection::ActorEvents`]). Never stored itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum BookingEvent {
    /// An event of a show.
    Show(ShowEvent),
    /// An event of a customer.
    Customer(CustomerEvent),
}

#[cfg(test)]
mod tests {
    use aether_actor::testing::ActorTest;

    use super::*;

    fn reserved(customer: &str, seats: u32, amount: i64) -> ShowEvent {
        ShowEvent::Reserved {
            customer: customer.into(),
            seats,
            amount,
        }
    }

    #[tokio::test]
    async fn a_show_is_created_once_with_seats() {
        ActorTest::new(Show)
            .when(ShowCommand::Create { seats: 0 })
            .await
            .then_expect_rejection(&ShowError::NoSeats);
        ActorTest::new(Show)
            .given([ShowEvent::Created { seats: 4 }])
            .when(ShowCommand::Create { seats: 9 })
            .await
            .then_expect_rejection(&ShowError::AlreadyCreated { seats: 4 });
    }

    #[tokio::test]
    async fn seats_are_reserved_while_free_and_released_while_reserved() {
        ActorTest::new(Show)
            .given([ShowEvent::Created { seats: 4 }, reserved("ada", 3, 0)])
            .when(ShowCommand::Reserve {
                customer: "bob".into(),
                seats: 2,
            })
            .await
            .then_expect_rejection(&ShowError::SoldOut { free: 1, asked: 2 });
        ActorTest::new(Show)
            .given([ShowEvent::Created { seats: 4 }, reserved("ada", 3, 0)])
            .when(ShowCommand::Release { seats: 2 })
            .await
            .then_expect_events(&[ShowEvent::Released { seats: 2 }])
            .then_expect_reply(&Seating {
                seats: 4,
                free: 3,
                ..Seating::default()
            });
        ActorTest::new(Show)
            .given([ShowEvent::Created { seats: 4 }, reserved("ada", 1, 0)])
            .when(ShowCommand::Release { seats: 2 })
            .await
            .then_expect_rejection(&ShowError::NotReserved {
                reserved: 1,
                asked: 2,
            });
        ActorTest::new(Show)
            .when(ShowCommand::Release { seats: 1 })
            .await
            .then_expect_rejection(&ShowError::NotCreated);
    }

    #[tokio::test]
    async fn a_wallet_is_charged_within_its_balance() {
        ActorTest::new(Customer)
            .given([CustomerEvent::Funded { amount: 50 }])
            .when(CustomerCommand::Charge {
                show: "s".into(),
                amount: 60,
            })
            .await
            .then_expect_rejection(&CustomerError::InsufficientFunds {
                balance: 50,
                asked: 60,
            });
        ActorTest::new(Customer)
            .given([CustomerEvent::Funded { amount: 50 }])
            .when(CustomerCommand::Charge {
                show: "s".into(),
                amount: 50,
            })
            .await
            .then_expect_reply(&Wallet { balance: 0 });
        ActorTest::new(Customer)
            .when(CustomerCommand::Fund { amount: 0 })
            .await
            .then_expect_rejection(&CustomerError::InvalidAmount { amount: 0 });
    }
}
