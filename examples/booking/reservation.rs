//! A reservation across the two types: the decision over a show and a customer
//! ([`decide_reservation`]), the typed outcome it comes to ([`Reservation`]), and the
//! transaction that runs it on two hosts ([`reserve_and_charge`]).

use aether_actor::{
    ActorHost, CommandError, CommandMeta, Decide, Participant, Rejection, Transact, Transacted,
};
use aether_core::Error;

use super::{Customer, CustomerError, Show, ShowError};

/// What [`reserve_and_charge`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The seats are reserved and the customer charged, in one transaction.
    Reserved {
        /// The seats reserved.
        seats: u32,
        /// What the customer paid.
        amount: i64,
        /// The show's free seats after.
        free: u32,
        /// The customer's balance after.
        balance: i64,
    },
    /// The command id was committed before (a retry whose first answer was lost): nothing
    /// was reserved or charged again.
    AlreadyApplied,
    /// The show has fewer free seats than asked for. Nothing was written.
    SoldOut {
        /// The free seats.
        free: u32,
        /// The seats asked for.
        asked: u32,
    },
    /// The customer cannot pay. Nothing was written.
    InsufficientFunds {
        /// The customer's balance.
        balance: i64,
        /// The total asked.
        asked: i64,
    },
}

/// A refusal of [`reserve_and_charge`] that is not one of the [`Reservation`] outcomes: the
/// request itself was wrong (no such show, no seats, a price that is not positive).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// The show refused.
    #[error("show: {0}")]
    Show(ShowError),
    /// The customer refused.
    #[error("customer: {0}")]
    Customer(CustomerError),
}

/// The decision of a reservation, over a transaction's two participants: `seats` at `show`
/// for `customer` at `price` each, reserved and charged, or refused by whichever cannot. It
/// only reads, so it may run again on a conflict; it runs as well in a cluster's transaction
/// (`aether_cluster::ClusterNode::transaction`) as in a [`Transact`].
///
/// # Errors
/// The refusing participant's [`Rejection`]: a [`ShowError`] from the show, a
/// [`CustomerError`] from the customer (the total `seats * price` not fitting an `i64` is
/// [`CustomerError::InvalidAmount`] with the price).
pub fn decide_reservation(
    d: &mut Decide<'_>,
    show: &Participant<Show>,
    customer: &Participant<Customer>,
    seats: u32,
    price: i64,
) -> Result<Reservation, Rejection> {
    let amount = price
        .checked_mul(i64::from(seats))
        .ok_or_else(|| customer.reject(CustomerError::InvalidAmount { amount: price }))?;
    let seating = d.state(show);
    let reserved = seating
        .reserve(customer.id(), seats, amount)
        .map_err(|e| show.reject(e))?;
    let wallet = d.state(customer);
    let charged = wallet
        .charge(show.id(), amount)
        .map_err(|e| customer.reject(e))?;
    let outcome = Reservation::Reserved {
        seats,
        amount,
        free: seating.free - seats,
        balance: wallet.balance - amount,
    };
    d.emit(show, [reserved]);
    d.emit(customer, [charged]);
    Ok(outcome)
}

/// Reserves `seats` at show `show_id` for customer `customer_id` and charges the customer
/// `price` per seat, in one transaction across the two actor types: both are written or
/// neither is. `meta` is stamped on both events; with a command id, a retry is applied once
/// ([`Reservation::AlreadyApplied`]).
///
/// Both hosts must run over the same store. After the commit this process's activations of
/// the two actors reload at their next command; on a cluster, run [`decide_reservation`] in
/// `ClusterNode::transaction` instead, which tells the owners elsewhere.
///
/// # Errors
/// - [`CommandError::Rejected`] with a [`BookingError`] for a request that cannot be
///   served: the show does not exist, no seats, a price that is not positive.
/// - The other [`CommandError`]s as [`Transact::run`] gives them: conflicts beyond the retry
///   policy, histories that do not decode, store failures (including
///   [`Error::Unsupported`] from a nats-server older than 2.12).
pub async fn reserve_and_charge(
    shows: &ActorHost<Show>,
    customers: &ActorHost<Customer>,
    show_id: &str,
    customer_id: &str,
    seats: u32,
    price: i64,
    meta: CommandMeta,
) -> Result<Reservation, CommandError<BookingError>> {
    let mut tx = Transact::new(meta);
    let show = tx.actor(shows, show_id);
    let customer = tx.actor(customers, customer_id);
    let result = tx
        .run(|d| decide_reservation(d, &show, &customer, seats, price))
        .await;
    reservation_outcome(result, &show, &customer)
}

/// The [`Reservation`] a transaction of [`decide_reservation`] came to: a sold-out show and a
/// customer short of money become outcomes, other refusals a [`BookingError`], and the
/// transaction's other errors pass through. [`reserve_and_charge`] answers with it; on a
/// cluster, hand it the result of `ClusterTransact::run` and the two handles.
///
/// # Errors
/// As [`reserve_and_charge`].
pub fn reservation_outcome(
    result: Result<Transacted<Reservation>, CommandError<Rejection>>,
    show: &Participant<Show>,
    customer: &Participant<Customer>,
) -> Result<Reservation, CommandError<BookingError>> {
    match result {
        Ok(Transacted::Committed(reservation)) => Ok(reservation),
        Ok(Transacted::AlreadyApplied) => Ok(Reservation::AlreadyApplied),
        Err(CommandError::Rejected(rejection)) => {
            if let Some(refusal) = rejection.of(show) {
                return match refusal {
                    &ShowError::SoldOut { free, asked } => Ok(Reservation::SoldOut { free, asked }),
                    other => Err(CommandError::Rejected(BookingError::Show(other.clone()))),
                };
            }
            match rejection.of(customer) {
                Some(&CustomerError::InsufficientFunds { balance, asked }) => {
                    Ok(Reservation::InsufficientFunds { balance, asked })
                }
                Some(other) => Err(CommandError::Rejected(BookingError::Customer(
                    other.clone(),
                ))),
                // Every refusal comes through one of the two handles.
                None => Err(Error::invalid(format!("unexpected refusal: {rejection}")).into()),
            }
        }
        Err(CommandError::Conflict {
            actor_id,
            attempts,
            last,
        }) => Err(CommandError::Conflict {
            actor_id,
            attempts,
            last,
        }),
        Err(CommandError::Decode(e)) => Err(CommandError::Decode(e)),
        Err(CommandError::WrongType(e)) => Err(CommandError::WrongType(e)),
        Err(CommandError::Reaction(e)) => Err(CommandError::Reaction(e)),
        Err(CommandError::Retired(e)) => Err(CommandError::Retired(e)),
        Err(CommandError::Infrastructure(e)) => Err(CommandError::Infrastructure(e)),
    }
}
