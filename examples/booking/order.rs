//! Orders that must be paid in time: a process manager ([`aether_reactions::Process`]) over
//! the show and the customer.
//!
//! 1. `Place` records the order; its effect holds the seats on the show
//!    ([`ShowCommand::Hold`]), and its timer (`payment`) is due when the time to pay runs out.
//! 2. The customer pays ([`CustomerCommand::PayOrder`]); the order hears the customer's
//!    `Charged` event (routed by its order id) and completes: the hold becomes sold seats
//!    ([`ShowCommand::ConfirmHold`]) and the timer is cancelled with it.
//! 3. Not paid in time, the timer fires: the order expires and releases the hold
//!    ([`ShowCommand::ReleaseHold`]), the compensation.
//! 4. Paid after it expired: the money is given back ([`CustomerCommand::Fund`]), the
//!    compensation of a late payment.
//!
//! Every command the order sends is an effect of one of its events, delivered after the event
//! is stored with an id derived from it, so each happens once however often it is delivered.
//! Timers need nats-server 2.12 or later; on an older server placing an order is refused with
//! `ReactionError::TimersUnavailable` and nothing is written.
//!
//! ```
//! use aether_actor::testing::ActorTest;
//! use aether_examples::booking::order::{Order, OrderCommand, OrderEvent};
//! use chrono::{TimeZone, Utc};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let deadline = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
//! ActorTest::new(Order)
//!     .given([OrderEvent::Placed {
//!         show: "hamlet".into(),
//!         customer: "ada".into(),
//!         seats: 2,
//!         amount: 60,
//!         deadline,
//!     }])
//!     .when(OrderCommand::Expire)
//!     .await
//!     .then_expect_events(&[OrderEvent::Expired { show: "hamlet".into() }]);
//! # }
//! ```

use aether_actor::{Actor, DomainEvent, Effect, Timer};
use aether_projection::{ActorEvents, Projected};
use aether_reactions::Process;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Customer, CustomerCommand, CustomerEvent, Show, ShowCommand};

/// Where an order stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Not placed yet.
    #[default]
    New,
    /// Placed; its seats are held until it is paid or its time runs out.
    AwaitingPayment,
    /// Paid in time: the seats are sold.
    Completed,
    /// Not paid in time: the seats were released.
    Expired,
}

/// An order, derived from its events; also the reply to every order command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// Where it stands.
    pub status: Status,
    /// The show.
    pub show: String,
    /// The customer.
    pub customer: String,
    /// The seats.
    pub seats: u32,
    /// What it costs.
    pub amount: i64,
    /// When the time to pay runs out.
    pub deadline: Option<DateTime<Utc>>,
    /// Money paid after it expired and given back.
    pub refunded: i64,
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Places the order: `seats` at `show` for `customer`, costing `amount`, to be paid
    /// within `pay_within_secs`.
    Place {
        /// The show.
        show: String,
        /// The customer.
        customer: String,
        /// How many seats.
        seats: u32,
        /// What it costs (positive).
        amount: i64,
        /// Seconds to pay in.
        pay_within_secs: u32,
    },
    /// The customer paid `amount` (routed from the customer's `Charged` event).
    Paid {
        /// How much.
        amount: i64,
    },
    /// The time to pay ran out (sent by the order's `payment` timer).
    Expire,
}

/// What happened to an order. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum OrderEvent {
    /// The order was placed.
    Placed {
        /// The show.
        show: String,
        /// The customer.
        customer: String,
        /// How many seats.
        seats: u32,
        /// What it costs.
        amount: i64,
        /// When the time to pay runs out.
        deadline: DateTime<Utc>,
    },
    /// Paid in time.
    Completed {
        /// The show whose held seats are now sold.
        show: String,
    },
    /// Not paid in time.
    Expired {
        /// The show whose held seats are released.
        show: String,
    },
    /// Paid after it expired; given back.
    Refunded {
        /// Who is paid back.
        customer: String,
        /// How much.
        amount: i64,
    },
}

/// Why an order refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OrderError {
    /// An order is placed once.
    #[error("the order is placed already")]
    AlreadyPlaced,
    /// At least one seat, a positive amount and some time to pay.
    #[error("an order needs seats, a positive amount and time to pay")]
    Invalid,
}

/// The order actor type (`"order"`), a process manager over shows and customers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Order;

impl Actor for Order {
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Reply = OrderState;
    type Error = OrderError;
    const TYPE: &'static str = "order";

    async fn decide(
        &self,
        _order: &str,
        state: &OrderState,
        command: &OrderCommand,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        Ok(match command {
            OrderCommand::Place { .. } if state.status != Status::New => {
                return Err(OrderError::AlreadyPlaced)
            }
            OrderCommand::Place {
                show,
                customer,
                seats,
                amount,
                pay_within_secs,
            } => {
                if *seats == 0 || *amount <= 0 || *pay_within_secs == 0 {
                    return Err(OrderError::Invalid);
                }
                // The deadline is decided here, from the clock, and kept in the event: the
                // timer is derived from it on every rebuild.
                let deadline = Utc::now() + chrono::Duration::seconds(i64::from(*pay_within_secs));
                vec![OrderEvent::Placed {
                    show: show.clone(),
                    customer: customer.clone(),
                    seats: *seats,
                    amount: *amount,
                    deadline,
                }]
            }
            // Events carry what their effects need: an effect is a function of its event.
            OrderCommand::Paid { .. } if state.status == Status::AwaitingPayment => {
                vec![OrderEvent::Completed {
                    show: state.show.clone(),
                }]
            }
            OrderCommand::Paid { amount } if state.status == Status::Expired => {
                vec![OrderEvent::Refunded {
                    customer: state.customer.clone(),
                    amount: *amount,
                }]
            }
            OrderCommand::Expire if state.status == Status::AwaitingPayment => {
                vec![OrderEvent::Expired {
                    show: state.show.clone(),
                }]
            }
            // A payment for an order never placed, or anything after completion: nothing.
            OrderCommand::Paid { .. } | OrderCommand::Expire => Vec::new(),
        })
    }

    fn apply(state: &mut OrderState, event: &OrderEvent) {
        match event {
            OrderEvent::Placed {
                show,
                customer,
                seats,
                amount,
                deadline,
            } => {
                state.status = Status::AwaitingPayment;
                state.show = show.clone();
                state.customer = customer.clone();
                state.seats = *seats;
                state.amount = *amount;
                state.deadline = Some(*deadline);
            }
            OrderEvent::Completed { .. } => state.status = Status::Completed,
            OrderEvent::Expired { .. } => state.status = Status::Expired,
            OrderEvent::Refunded { amount, .. } => {
                state.refunded = state.refunded.saturating_add(*amount)
            }
        }
    }

    fn reply(state: &OrderState, _: &OrderCommand, _: &[OrderEvent]) -> OrderState {
        state.clone()
    }

    /// The payment timeout, pending while the order awaits payment.
    fn timers(_: &str, state: &OrderState) -> Vec<Timer<OrderCommand>> {
        match (state.status, state.deadline) {
            (Status::AwaitingPayment, Some(at)) => {
                vec![Timer::at("payment", at, OrderCommand::Expire)]
            }
            _ => Vec::new(),
        }
    }

    /// Holding, selling and releasing the seats, and giving back a late payment.
    fn effects(order: &str, event: &OrderEvent) -> Vec<Effect> {
        let order = order.to_string();
        match event {
            OrderEvent::Placed { show, seats, .. } => vec![Effect::send::<Show>(
                show.clone(),
                &ShowCommand::Hold {
                    order,
                    seats: *seats,
                },
            )],
            OrderEvent::Completed { show } => {
                vec![Effect::send::<Show>(
                    show.clone(),
                    &ShowCommand::ConfirmHold { order },
                )]
            }
            // The compensations.
            OrderEvent::Expired { show } => {
                vec![Effect::send::<Show>(
                    show.clone(),
                    &ShowCommand::ReleaseHold { order },
                )]
            }
            OrderEvent::Refunded { customer, amount } => vec![Effect::send::<Customer>(
                customer.clone(),
                &CustomerCommand::Fund { amount: *amount },
            )],
        }
    }
}

/// What an order hears: the customers' events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum OrderInput {
    /// An event of a customer.
    Customer(CustomerEvent),
}

impl Process for Order {
    type Input = OrderInput;

    fn sources() -> ActorEvents<OrderInput> {
        ActorEvents::new().actor::<Customer>(OrderInput::Customer)
    }

    /// A payment of an order becomes that order's `Paid`.
    fn route(event: &Projected<OrderInput>) -> Option<(String, OrderCommand)> {
        match &event.event {
            OrderInput::Customer(CustomerEvent::Charged {
                amount,
                order: Some(order),
                ..
            }) => Some((order.clone(), OrderCommand::Paid { amount: *amount })),
            OrderInput::Customer(_) => None,
        }
    }
}

/// The customer command that pays `order` (what an application sends when the customer pays).
pub fn pay(order: &str, state: &OrderState) -> CustomerCommand {
    CustomerCommand::PayOrder {
        order: order.to_string(),
        show: state.show.clone(),
        amount: state.amount,
    }
}
