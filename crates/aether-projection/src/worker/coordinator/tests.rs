//! The coordinator's decisions, on paused time.

use super::*;

fn beat(worker: &str, revision: u64) -> WorkerHeartbeat {
    WorkerHeartbeat {
        worker: worker.to_string(),
        revision,
    }
}

fn lease(partition: u32, owner: Option<&str>, revision: u64) -> PartitionLease {
    PartitionLease {
        partition,
        owner: owner.map(str::to_string),
        revision,
    }
}

fn claims(actions: &[Action]) -> BTreeSet<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Claim { partition, .. } => Some(*partition),
            _ => None,
        })
        .collect()
}

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(start_paused = true)]
async fn a_lone_worker_claims_every_free_partition() {
    let mut core = Coordinator::new("a", 4, TIMEOUT);
    let actions = core.plan(Instant::now(), &[beat("a", 1)], &[], &BTreeMap::new());
    assert_eq!(claims(&actions), BTreeSet::from([0, 1, 2, 3]));
    assert!(actions
        .iter()
        .all(|a| matches!(a, Action::Claim { expected: 0, .. })));
}

#[tokio::test(start_paused = true)]
async fn every_worker_computes_the_same_balanced_assignment() {
    let live: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let tables: Vec<Vec<Option<String>>> = live
        .iter()
        .map(|me| Coordinator::new(me.clone(), 8, TIMEOUT).assignment(&live))
        .collect();
    assert!(tables.windows(2).all(|w| w[0] == w[1]));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for owner in tables[0].iter().flatten() {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    assert_eq!(counts.values().sum::<usize>(), 8);
    assert!(counts.values().all(|&c| c == 2 || c == 3), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_held_partition_is_renewed_while_assigned_and_released_when_not() {
    let mut core = Coordinator::new("a", 2, TIMEOUT);
    let held = BTreeMap::from([(0, 5), (1, 6)]);
    let leases = [lease(0, Some("a"), 5), lease(1, Some("a"), 6)];
    let alone = core.plan(Instant::now(), &[beat("a", 1)], &leases, &held);
    assert_eq!(
        alone,
        vec![
            Action::Renew {
                partition: 0,
                revision: 5
            },
            Action::Renew {
                partition: 1,
                revision: 6
            }
        ]
    );
    // A second worker joins: one partition goes to it, so "a" gives it up.
    let joined = core.plan(
        Instant::now(),
        &[beat("a", 2), beat("b", 1)],
        &leases,
        &held,
    );
    let released: Vec<u32> = joined
        .iter()
        .filter_map(|a| match a {
            Action::Release { partition, .. } => Some(*partition),
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), 1, "{joined:?}");
    let b_table = Coordinator::new("b", 2, TIMEOUT).assignment(&["a".into(), "b".into()]);
    assert_eq!(b_table[released[0] as usize].as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_partition_held_by_a_live_worker_is_waited_for_and_an_expired_one_is_taken() {
    // "b" sees partition 0 assigned to it but held by "a".
    let live = ["a".to_string(), "b".to_string()];
    let mut core = Coordinator::new("b", 2, TIMEOUT);
    let p = (0..2u32)
        .find(|p| core.assignment(&live)[*p as usize].as_deref() == Some("b"))
        .unwrap();
    let leases = [lease(p, Some("a"), 10)];
    let held = BTreeMap::new();
    let first = core.plan(
        Instant::now(),
        &[beat("a", 1), beat("b", 1)],
        &leases,
        &held,
    );
    assert!(
        !claims(&first).contains(&p),
        "claimed a held partition: {first:?}"
    );
    // "a" keeps beating but stops renewing the lease: still not expired before the timeout...
    tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
    let before = core.plan(
        Instant::now(),
        &[beat("a", 2), beat("b", 2)],
        &leases,
        &held,
    );
    assert!(!claims(&before).contains(&p));
    // ...taken once unchanged for the whole timeout.
    tokio::time::advance(Duration::from_millis(1)).await;
    let after = core.plan(
        Instant::now(),
        &[beat("a", 3), beat("b", 3)],
        &leases,
        &held,
    );
    assert!(after.contains(&Action::Claim {
        partition: p,
        expected: 10
    }));
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_heartbeat_stops_is_dropped_from_the_assignment() {
    let mut core = Coordinator::new("a", 4, TIMEOUT);
    let both = core.live(&[beat("a", 1), beat("b", 1)], Instant::now());
    assert_eq!(both, vec!["a".to_string(), "b".to_string()]);
    tokio::time::advance(TIMEOUT).await;
    // "b"'s revision has not moved for the timeout; "a" is always live to itself.
    let alone = core.live(&[beat("a", 1), beat("b", 1)], Instant::now());
    assert_eq!(alone, vec!["a".to_string()]);
    // A new heartbeat brings it back.
    let back = core.live(&[beat("a", 1), beat("b", 2)], Instant::now());
    assert_eq!(back.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lease_left_by_an_earlier_run_of_the_same_worker_is_taken_at_once() {
    let mut core = Coordinator::new("a", 1, TIMEOUT);
    let actions = core.plan(
        Instant::now(),
        &[beat("a", 1)],
        &[lease(0, Some("a"), 3)],
        &BTreeMap::new(),
    );
    assert_eq!(
        actions,
        vec![Action::Claim {
            partition: 0,
            expected: 3
        }]
    );
}
