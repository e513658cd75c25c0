//! A history of event-store operations recorded by concurrent clients, and a checker that
//! holds it against what the store holds at the end.
//!
//! Fault tests (partitions, crashes, pauses) cannot predict which writes survive; they can
//! only say which answers were wrong. So every client records each operation twice: when it
//! is invoked and when it completes, with its outcome: acknowledged, conflict, unknown (a
//! timeout, a lost connection: it may or may not have taken effect) or a definite error (it
//! did not take effect). At the end the test reads every actor's stored history and
//! [`check`] verifies, per actor:
//!
//! - every acknowledged append is stored, at its versions ([`Rule::LostWrite`]);
//! - no event id is stored twice ([`Rule::Duplicate`]), and the stored versions increase
//!   ([`Rule::FinalNotIncreasing`]);
//! - no two acknowledged appends claim one version with different events
//!   ([`Rule::ConflictingAcks`]);
//! - an append with an unknown outcome is stored at most once, whole or not at all, and a batch
//!   or transaction is stored whole or not at all ([`Rule::PartialWrite`]);
//! - an append that failed with a conflict or a definite error is absent
//!   ([`Rule::FailedWritePresent`]), and nothing is stored that no one attempted
//!   ([`Rule::Phantom`]);
//! - a read of the latest version returns a version some append that had not failed was
//!   attempting by then ([`Rule::ReadUnattempted`]) and that is still stored at the end
//!   ([`Rule::ReadOfLostVersion`]);
//! - one client's reads never go backwards ([`Rule::MonotonicReads`]);
//! - with [`CheckOptions::linearizable_reads`], a read or replay reflects every append
//!   acknowledged, and every read answered, before it began ([`Rule::StaleRead`]);
//! - every replay is a prefix of the final history ([`Rule::ReplayNotPrefix`]).
//!
//! Time is [`std::time::Instant`], taken under the recorder's lock, so operations of one
//! client and "completed before invoked" comparisons between clients are exact. Recording
//! never holds the lock across an `.await`: invoking and completing are plain method calls.
//! An operation whose completion is never recorded (its task was cancelled) counts as
//! unknown and as never completed.
//!
//! Every write to the actors checked must be recorded, setup included: an event no recorded
//! operation attempted is a [`Rule::Phantom`].
//!
//! # Example
//! ```
//! use aether_testkit::history::{CheckOptions, FinalState, History, Rule};
//!
//! let history = History::new();
//! let alice = history.recorder();
//! let bob = history.recorder();
//!
//! // Alice appends at version 1 and is acknowledged; Bob loses the race for version 1.
//! let a = alice.append("account-1", 1, ["e1"]);
//! let b = bob.append("account-1", 1, ["e2"]);
//! a.ok();
//! b.conflict();
//! // Bob's next try times out: it may or may not have been stored.
//! bob.append("account-1", 2, ["e3"]).unknown();
//! // Alice reads the latest version, then replays the actor.
//! alice.read_version("account-1").ok(2);
//! alice.replay("account-1", 1).ok([(1, "e1"), (2, "e3")]);
//!
//! // What the store holds at the end (read with `get_events(actor, 1)`).
//! let stored = FinalState::new().with_actor("account-1", [(1, "e1"), (2, "e3")]);
//! let report = history.check(&stored, &CheckOptions::default())?;
//! assert_eq!(report.acknowledged, 1);
//! println!("{report}");
//!
//! // Had the store lost Alice's acknowledged write, the checker would say so.
//! let lost = FinalState::new().with_actor("account-1", [(2, "e3")]);
//! let violation = history.check(&lost, &CheckOptions::default()).unwrap_err();
//! assert_eq!(violation.rule, Rule::LostWrite);
//! println!("{violation}");
//! # Ok::<(), aether_testkit::history::Violation>(())
//! ```

mod check;
mod ops;
mod record;
mod report;
#[cfg(test)]
mod tests;

pub use check::*;
pub use ops::*;
pub use record::*;
pub use report::*;
