use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::{Error as StoreError, Event, Transaction};

use super::*;

mod recorded;

fn ms(t: u64) -> Duration {
    Duration::from_millis(t)
}

/// A history built by hand with exact times, for planting violations.
#[derive(Default)]
struct Plan {
    ops: Vec<Op>,
}

impl Plan {
    fn op(
        &mut self,
        client: u64,
        operation: Operation,
        at: (u64, Option<u64>),
        outcome: Outcome,
    ) -> &mut Self {
        self.ops.push(Op {
            index: self.ops.len(),
            client: ClientId(client),
            operation,
            invoked: ms(at.0),
            completed: at.1.map(ms),
            outcome,
        });
        self
    }

    fn append(
        &mut self,
        client: u64,
        actor: &str,
        first: u64,
        ids: &[&str],
        at: (u64, u64),
        outcome: Outcome,
    ) -> &mut Self {
        let op = Operation::Append(Append::new(actor, first, ids.iter().copied()));
        self.op(client, op, (at.0, Some(at.1)), outcome)
    }

    fn read(&mut self, client: u64, actor: &str, at: (u64, u64), version: u64) -> &mut Self {
        let op = Operation::ReadVersion {
            actor: actor.into(),
        };
        self.op(client, op, (at.0, Some(at.1)), Outcome::Version(version))
    }

    fn replay(
        &mut self,
        client: u64,
        actor: &str,
        from_version: u64,
        at: (u64, u64),
        events: &[(u64, &str)],
    ) -> &mut Self {
        let op = Operation::Replay {
            actor: actor.into(),
            from_version,
        };
        let events = events.iter().map(|(v, id)| (*v, id.to_string())).collect();
        self.op(client, op, (at.0, Some(at.1)), Outcome::Events(events))
    }

    fn check(&self, final_state: &FinalState) -> Result<CheckReport, Violation> {
        check(&self.ops, final_state, &CheckOptions::default())
    }

    fn violation(&self, final_state: &FinalState) -> Violation {
        match self.check(final_state) {
            Ok(report) => panic!("expected a violation, the check passed: {report}"),
            Err(v) => v,
        }
    }
}

fn stored(actor: &str, events: &[(u64, &str)]) -> FinalState {
    FinalState::new().with_actor(actor, events.iter().copied())
}

#[test]
fn catches_a_lost_write() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(1, "a", 2, &["e2"], (20, 30), Outcome::Ok);
    let v = plan.violation(&stored("a", &[(1, "e1")]));
    assert_eq!(v.rule, Rule::LostWrite);
    assert_eq!(v.actor, "a");
    assert_eq!(v.ops.len(), 1);
    assert_eq!(v.ops[0].index, 1);
    // An actor missing from the final state has no events.
    let v = plan.violation(&FinalState::new());
    assert_eq!(v.rule, Rule::LostWrite);
}

#[test]
fn catches_an_event_stored_twice() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Unknown)
        .append(1, "a", 2, &["e2"], (20, 30), Outcome::Unknown);
    plan.check(&stored("a", &[(1, "e1"), (2, "e2")])).unwrap();
    let v = plan.violation(&stored("a", &[(1, "e1"), (2, "e1")]));
    assert_eq!(v.rule, Rule::Duplicate);
    assert!(v.detail.contains("e1 is stored 2 times"), "{v}");
    assert_eq!(v.ops[0].index, 0);
    // The same event under two actors is a duplicate too.
    let both = stored("a", &[(1, "e1")]).with_actor("b", [(1, "e1")]);
    assert_eq!(plan.violation(&both).rule, Rule::Duplicate);
}

#[test]
fn catches_two_acknowledged_appends_at_one_version() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(2, "a", 1, &["e2"], (5, 15), Outcome::Ok);
    let v = plan.violation(&stored("a", &[(1, "e1")]));
    assert_eq!(v.rule, Rule::ConflictingAcks);
    assert_eq!(
        v.ops.iter().map(|o| o.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let (_, all) = check_all(
        &plan.ops,
        &stored("a", &[(1, "e1")]),
        &CheckOptions::default(),
    );
    let rules: Vec<Rule> = all.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec![Rule::ConflictingAcks, Rule::LostWrite]);
}

#[test]
fn a_retry_of_the_same_event_may_be_acknowledged_twice() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Unknown)
        .append(1, "a", 1, &["e1"], (20, 30), Outcome::Ok)
        .append(1, "a", 1, &["e1"], (40, 50), Outcome::Ok)
        // A retry rejected by a conflict (its first try got in) leaves the event present.
        .append(1, "a", 1, &["e1"], (60, 70), Outcome::Conflict);
    plan.check(&stored("a", &[(1, "e1")])).unwrap();
}

#[test]
fn catches_a_failed_write_that_is_stored() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(2, "a", 1, &["e2"], (0, 10), Outcome::Conflict)
        .append(
            2,
            "a",
            2,
            &["e3"],
            (20, 30),
            Outcome::Error("invalid".into()),
        );
    plan.check(&stored("a", &[(1, "e1")])).unwrap();
    let v = plan.violation(&stored("a", &[(1, "e1"), (2, "e3")]));
    assert_eq!(v.rule, Rule::FailedWritePresent);
    assert_eq!(v.ops[0].index, 2);
}

#[test]
fn catches_a_phantom_event() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok);
    let v = plan.violation(&stored("a", &[(1, "e1"), (2, "zz")]));
    assert_eq!(v.rule, Rule::Phantom);
    assert!(v.detail.contains("never attempted"), "{v}");
    // An attempted event stored at another version than attempted.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Unknown);
    let v = plan.violation(&stored("a", &[(3, "e1")]));
    assert_eq!(v.rule, Rule::Phantom);
    assert_eq!(v.ops[0].index, 0);
}

#[test]
fn catches_versions_that_do_not_increase() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Unknown);
    let v = plan.violation(&stored("a", &[(2, "e2"), (1, "e1")]));
    assert_eq!(v.rule, Rule::FinalNotIncreasing);
}

#[test]
fn catches_a_stale_read() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .read(2, "a", (20, 30), 0);
    let final_state = stored("a", &[(1, "e1")]);
    let v = plan.violation(&final_state);
    assert_eq!(v.rule, Rule::StaleRead);
    assert_eq!(
        v.ops.iter().map(|o| o.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    // Reads documented as possibly stale pass without the option.
    let lenient = CheckOptions {
        linearizable_reads: false,
        ..CheckOptions::default()
    };
    check(&plan.ops, &final_state, &lenient).unwrap();

    // A read concurrent with the append may see either state.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .read(2, "a", (5, 30), 0)
        .read(3, "a", (5, 30), 1);
    plan.check(&final_state).unwrap();

    // A read older than a read that completed before it began, by another client.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
        .read(2, "a", (10, 20), 1)
        .read(3, "a", (30, 40), 0);
    let v = plan.violation(&final_state);
    assert_eq!(v.rule, Rule::StaleRead);
    assert!(v.detail.contains("was read before"), "{v}");

    // A replay that misses an acknowledged append.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(1, "a", 2, &["e2"], (20, 30), Outcome::Ok)
        .replay(2, "a", 1, (40, 50), &[(1, "e1")]);
    let v = plan.violation(&stored("a", &[(1, "e1"), (2, "e2")]));
    assert_eq!(v.rule, Rule::StaleRead);
}

#[test]
fn catches_reads_of_one_client_going_backwards() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
        .append(1, "a", 2, &["e2"], (0, 100), Outcome::Unknown)
        .read(2, "a", (10, 20), 2)
        .read(2, "a", (30, 40), 1);
    let final_state = stored("a", &[(1, "e1"), (2, "e2")]);
    let v = plan.violation(&final_state);
    assert_eq!(v.rule, Rule::MonotonicReads);
    assert!(v.detail.contains("c2 saw version 2, then at most 1"), "{v}");
    // Two clients may each see a different state of a concurrent write...
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
        .append(1, "a", 2, &["e2"], (0, 100), Outcome::Unknown)
        .read(2, "a", (10, 40), 2)
        .read(3, "a", (30, 50), 1);
    plan.check(&final_state).unwrap();
    // ... and with stale reads allowed, only one client's own order is checked.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 100), Outcome::Unknown)
        .append(1, "a", 2, &["e2"], (0, 100), Outcome::Unknown)
        .read(2, "a", (10, 20), 2)
        .read(3, "a", (30, 40), 1);
    let lenient = CheckOptions {
        linearizable_reads: false,
        ..CheckOptions::default()
    };
    check(&plan.ops, &final_state, &lenient).unwrap();
}

#[test]
fn catches_a_read_of_a_version_never_attempted() {
    let final_state = stored("a", &[(1, "e1"), (2, "e2")]);
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(1, "a", 2, &["e2"], (20, 30), Outcome::Ok)
        .read(2, "a", (40, 50), 5);
    assert_eq!(plan.violation(&final_state).rule, Rule::ReadUnattempted);

    // Above 0 when nothing was attempted.
    let mut plan = Plan::default();
    plan.read(2, "b", (0, 10), 1);
    let v = plan.violation(&FinalState::new());
    assert_eq!(v.rule, Rule::ReadUnattempted);
    assert_eq!(v.actor, "b");

    // A version only a later write attempted.
    let mut plan = Plan::default();
    plan.read(2, "a", (0, 10), 1)
        .append(1, "a", 1, &["e1"], (20, 30), Outcome::Ok);
    assert_eq!(
        plan.violation(&stored("a", &[(1, "e1")])).rule,
        Rule::ReadUnattempted
    );

    // A version only a conflicting write attempted.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Conflict)
        .read(2, "a", (5, 20), 1);
    assert_eq!(
        plan.violation(&FinalState::new()).rule,
        Rule::ReadUnattempted
    );
}

#[test]
fn catches_a_read_of_a_version_lost_later() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(1, "a", 2, &["e2"], (20, 100), Outcome::Unknown)
        .read(2, "a", (30, 40), 2);
    plan.check(&stored("a", &[(1, "e1"), (2, "e2")])).unwrap();
    let v = plan.violation(&stored("a", &[(1, "e1")]));
    assert_eq!(v.rule, Rule::ReadOfLostVersion);
}

#[test]
fn catches_a_replay_that_is_not_a_prefix() {
    let final_state = stored("a", &[(1, "e1"), (2, "e2")]);
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Ok)
        .replay(2, "a", 1, (20, 30), &[(1, "e1"), (2, "e2")])
        .replay(2, "a", 2, (20, 30), &[(2, "e2")])
        .replay(2, "a", 3, (20, 30), &[]);
    plan.check(&final_state).unwrap();

    for wrong in [
        &[(1, "e1"), (2, "zz")][..],
        &[(2, "e2")][..],
        &[(1, "e1"), (2, "e2"), (3, "e3")][..],
    ] {
        let mut plan = Plan::default();
        plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Ok)
            .replay(2, "a", 1, (20, 30), wrong);
        let v = plan.violation(&final_state);
        assert_eq!(v.rule, Rule::ReplayNotPrefix, "{wrong:?}: {v}");
    }
}

#[test]
fn catches_a_partial_transaction() {
    let tx = Operation::Transaction(vec![
        Append::new("a", 1, ["t1"]),
        Append::new("b", 1, ["t2"]),
    ]);
    let whole = stored("a", &[(1, "t1")]).with_actor("b", [(1, "t2")]);
    let half = stored("a", &[(1, "t1")]);
    for outcome in [Outcome::Ok, Outcome::Unknown] {
        let mut plan = Plan::default();
        plan.op(1, tx.clone(), (0, Some(10)), outcome.clone());
        plan.check(&whole).unwrap();
        let v = plan.violation(&half);
        assert_eq!(v.rule, Rule::PartialWrite, "{outcome:?}");
        assert!(v.detail.contains("missing \"b\" v1 t2"), "{v}");
    }
    // Unknown and absent entirely is fine; failed and present is not.
    let mut plan = Plan::default();
    plan.op(1, tx.clone(), (0, Some(10)), Outcome::Unknown);
    plan.check(&FinalState::new()).unwrap();
    let mut plan = Plan::default();
    plan.op(1, tx, (0, Some(10)), Outcome::Conflict);
    assert_eq!(plan.violation(&whole).rule, Rule::FailedWritePresent);
    // A batch of one actor is all or nothing too.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1", "e2"], (0, 10), Outcome::Unknown);
    assert_eq!(
        plan.violation(&stored("a", &[(1, "e1")])).rule,
        Rule::PartialWrite
    );
}

#[test]
fn errors_that_write_nothing_are_definite_failures() {
    let cross = StoreError::CrossPartition(aether_core::CrossPartitionError {
        transaction_id: "t".into(),
        actors: vec![("a".into(), 0), ("b".into(), 1)],
    });
    assert!(matches!(Outcome::of_error(&cross), Outcome::Error(_)));
    assert!(matches!(
        Outcome::of_error(&StoreError::invalid("bad")),
        Outcome::Error(_)
    ));
    let lost = StoreError::unavailable("publish", "timed out");
    assert_eq!(Outcome::of_error(&lost), Outcome::Unknown);
}
