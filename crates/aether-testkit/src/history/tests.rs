use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::{Error as StoreError, Event, Transaction};

use super::*;

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
fn passes_a_correct_concurrent_history_with_unknown_outcomes() {
    // Three clients racing on one actor; two unknown outcomes, one stored and one not.
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["x1"], (0, 10), Outcome::Ok)
        .append(2, "a", 1, &["y1"], (2, 12), Outcome::Conflict)
        .read(3, "a", (5, 8), 0)
        .append(2, "a", 2, &["y2"], (15, 40), Outcome::Unknown) // stored
        .append(1, "a", 2, &["x2"], (16, 30), Outcome::Unknown) // not stored
        .read(3, "a", (20, 25), 2)
        .append(1, "a", 3, &["x3", "x4"], (35, 50), Outcome::Ok)
        .replay(3, "a", 1, (45, 60), &[(1, "x1"), (2, "y2")])
        .read(3, "a", (61, 70), 4)
        .op(
            2,
            Operation::Transaction(vec![
                Append::new("a", 5, ["t1"]),
                Append::new("b", 1, ["t2"]),
            ]),
            (62, None), // never completed, and not stored
            Outcome::Unknown,
        )
        .op(
            1,
            Operation::ReadVersion { actor: "b".into() },
            (63, Some(64)),
            Outcome::Unknown,
        );
    let final_state = stored("a", &[(1, "x1"), (2, "y2"), (3, "x3"), (4, "x4")]);
    let report = plan.check(&final_state).unwrap();
    assert_eq!(
        report,
        CheckReport {
            operations: 11,
            acknowledged: 2,
            unknown: 3,
            unknown_stored: 1,
            conflicts: 1,
            errors: 0,
            reads: 4,
            unanswered_reads: 1,
            actors: 2,
            stored_events: 4,
        }
    );
    assert_eq!(
        report.to_string(),
        "11 operations: 2 acknowledged, 3 unknown (1 stored), 1 conflicts, 0 errors, \
         4 reads (1 unanswered); 4 events stored for 2 actors"
    );
}

/// A store model under one lock (so its reads are linearizable) that sometimes stores a
/// write and loses the answer, and sometimes drops the write and answers nothing.
#[test]
fn passes_a_recorded_history_from_threads() {
    type Store = Mutex<BTreeMap<String, Vec<(u64, String)>>>;
    let store: Arc<Store> = Arc::default();
    let history = History::new();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            let rec = history.recorder();
            std::thread::spawn(move || {
                let mut seed = t * 7919 + 1;
                let mut random = move |n: u64| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) % n
                };
                for k in 0..200 {
                    let actor = format!("actor-{}", random(3));
                    let read = rec.read_version(actor.clone());
                    let latest = {
                        let s = store.lock().unwrap();
                        s.get(&actor).and_then(|e| e.last()).map_or(0, |e| e.0)
                    };
                    read.ok(latest);
                    let ids = [format!("{t}-{k}-a"), format!("{t}-{k}-b")];
                    let n = 1 + random(2) as usize;
                    let pending = rec.append(actor.clone(), latest + 1, ids[..n].iter().cloned());
                    let fate = random(10);
                    let stored = {
                        let mut s = store.lock().unwrap();
                        let events = s.entry(actor.clone()).or_default();
                        let current = events.last().map_or(0, |e| e.0);
                        if current != latest {
                            None
                        } else if fate == 0 {
                            Some(false) // dropped on the way
                        } else {
                            for (i, id) in ids[..n].iter().enumerate() {
                                events.push((latest + 1 + i as u64, id.clone()));
                            }
                            Some(true)
                        }
                    };
                    match (stored, fate) {
                        (None, _) => pending.conflict(),
                        (Some(false), _) | (Some(true), 1) => pending.unknown(),
                        (Some(true), _) => pending.ok(),
                    }
                    if random(5) == 0 {
                        let replay = rec.replay(actor.clone(), 1 + random(3));
                        let events: Vec<(u64, String)> = {
                            let s = store.lock().unwrap();
                            s.get(&actor).cloned().unwrap_or_default()
                        };
                        let from = match &replay.history.ops()[replay.index].operation {
                            Operation::Replay { from_version, .. } => *from_version,
                            _ => unreachable!(),
                        };
                        replay.ok(events.into_iter().filter(|(v, _)| *v >= from));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut final_state = FinalState::new();
    for actor in history.actors() {
        let events = store
            .lock()
            .unwrap()
            .get(&actor)
            .cloned()
            .unwrap_or_default();
        final_state.insert(actor, events);
    }
    let report = history
        .check(&final_state, &CheckOptions::default())
        .unwrap();
    assert!(report.acknowledged > 0 && report.conflicts > 0, "{report}");
    assert!(report.unknown_stored > 0, "{report}");
    assert!(report.unknown > report.unknown_stored, "{report}");

    // The same history with one acknowledged event removed is caught.
    let ops = history.ops();
    let victim = ops
        .iter()
        .find(|op| op.outcome == Outcome::Ok && op.operation.is_write())
        .unwrap();
    let Operation::Append(a) = &victim.operation else {
        unreachable!()
    };
    let mut damaged = final_state.clone();
    let kept: Vec<(u64, String)> = final_state
        .actor(&a.actor)
        .iter()
        .filter(|e| !a.events.contains(e))
        .cloned()
        .collect();
    damaged.insert(a.actor.clone(), kept);
    let (_, violations) = history.check_all(&damaged, &CheckOptions::default());
    assert!(violations.iter().any(|v| v.rule == Rule::LostWrite));
}

#[test]
fn records_store_calls_and_their_errors() {
    let history = History::new();
    let rec = history.recorder();
    let events = vec![
        Event::new("Opened", "acc", 1),
        Event::new("Deposited", "acc", 2),
    ];
    rec.append_events(&events).finish(&Ok(()));
    let conflict: aether_core::Result<()> = Err(StoreError::version_conflict("acc", 3, 2));
    rec.append_events(&[Event::new("X", "acc", 3)])
        .finish(&conflict);
    let invalid: aether_core::Result<()> = Err(StoreError::invalid("empty type"));
    rec.append_events(&[Event::new("", "acc", 3)])
        .finish(&invalid);
    let down: aether_core::Result<()> = Err(StoreError::unavailable(
        "publishing",
        std::io::Error::other("timed out"),
    ));
    let tx = Transaction::new()
        .append("acc", 2, vec![Event::new("Withdrawn", "acc", 3)])
        .append("other", 0, vec![Event::new("Deposited", "other", 1)]);
    rec.commit(&tx).finish(&down);
    rec.read_version("acc").finish(&Ok(2));
    rec.replay("acc", 1).finish(&Ok(events.clone()));
    rec.read_version("acc").finish(&Err(StoreError::unavailable(
        "reading",
        std::io::Error::other("timed out"),
    )));

    let ops = history.ops();
    let outcomes: Vec<&Outcome> = ops.iter().map(|o| &o.outcome).collect();
    assert_eq!(outcomes[0], &Outcome::Ok);
    assert_eq!(outcomes[1], &Outcome::Conflict);
    assert!(matches!(outcomes[2], Outcome::Error(e) if e.contains("empty type")));
    assert_eq!(outcomes[3], &Outcome::Unknown);
    assert_eq!(outcomes[4], &Outcome::Version(2));
    assert!(matches!(outcomes[5], Outcome::Events(e) if e.len() == 2));
    assert_eq!(outcomes[6], &Outcome::Unknown);
    assert!(matches!(&ops[3].operation, Operation::Transaction(a) if a.len() == 2));
    assert_eq!(
        history.actors(),
        vec!["acc".to_string(), "other".to_string()]
    );
    assert!(ops.iter().all(|o| o.client == rec.client()));
    assert!(ops.windows(2).all(|w| w[0].invoked <= w[1].invoked));

    let mut final_state = FinalState::new();
    final_state.insert_events(&events);
    let report = history
        .check(&final_state, &CheckOptions::default())
        .unwrap();
    assert_eq!((report.acknowledged, report.unknown), (1, 1));
    assert_eq!((report.conflicts, report.errors), (1, 1));
    assert_eq!((report.reads, report.unanswered_reads), (2, 1));
}

#[test]
fn a_pending_operation_that_is_dropped_stays_unknown() {
    let history = History::new();
    let rec = history.recorder();
    drop(rec.append("a", 1, ["e1"]));
    let ops = history.ops();
    assert_eq!(ops[0].outcome, Outcome::Unknown);
    assert_eq!(ops[0].completed, None);
    history
        .check(&stored("a", &[(1, "e1")]), &CheckOptions::default())
        .unwrap();
    history
        .check(&FinalState::new(), &CheckOptions::default())
        .unwrap();
}

#[test]
fn a_violation_reads_well() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .append(2, "a", 1, &["e2"], (5, 15), Outcome::Ok);
    let text = plan.violation(&stored("a", &[(1, "e1")])).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "conflicting-acks (two acknowledged appends never share a version):"
    );
    assert_eq!(
        lines[1],
        "  actor \"a\": version 1 acknowledged as e1 and as e2"
    );
    assert_eq!(lines[2], "  #0 c1 append \"a\" [v1 e1] at 0ns..10ms: ok");
    assert_eq!(lines[3], "  #1 c2 append \"a\" [v1 e2] at 5ms..15ms: ok");
    assert_eq!(lines.len(), 4);
}

#[test]
fn ops_round_trip_through_json() {
    let mut plan = Plan::default();
    plan.append(1, "a", 1, &["e1"], (0, 10), Outcome::Ok)
        .replay(2, "a", 1, (20, 30), &[(1, "e1")]);
    let json = serde_json::to_string(&plan.ops).unwrap();
    let back: Vec<Op> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan.ops);
}
