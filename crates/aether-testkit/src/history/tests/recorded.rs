//! Histories that are correct, recorded from threads and a store model, and how operations and
//! violations read.

use super::*;

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
    // Every thread reads before any writes, each round: with four threads on three actors two
    // always meet, so conflicts happen however the threads are scheduled (on a loaded machine
    // one thread could otherwise run all its rounds alone).
    let round = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            let round = Arc::clone(&round);
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
                    round.wait();
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
