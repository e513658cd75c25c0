use super::*;

/// Made-up time: `now()` stays put until `advance` moves it, as a paused clock does.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Self(Instant::now())
    }
    fn now(&self) -> Instant {
        self.0
    }
    fn advance(&mut self, by: Duration) {
        self.0 += by;
    }
}

#[test]
fn heartbeats_failure_and_return() {
    let mut clock = Clock::new();
    let mut m = Membership::new("me", Duration::from_secs(1));
    assert_eq!(m.alive(), ["me"]);
    let t0 = clock.now();
    assert_eq!(
        m.observe_heartbeat("b", "1", t0),
        Some(MembershipChange::Joined("b".into()))
    );
    assert_eq!(m.observe_heartbeat("b", "1", t0), None);
    assert_eq!(m.observe_heartbeat("me", "x", t0), None);
    clock.advance(Duration::from_millis(900));
    assert!(m.sweep(clock.now()).is_empty());
    clock.advance(Duration::from_millis(200));
    assert_eq!(m.sweep(clock.now()), [MembershipChange::Failed("b".into())]);
    assert!(m.sweep(clock.now()).is_empty(), "reported once");
    assert_eq!(m.alive(), ["me"]);
    assert!(!m.is_alive("b") && m.is_alive("me"));
    assert_eq!(m.member("b").unwrap().status, MemberStatus::Failed);
    // Heard from again: alive again.
    assert_eq!(
        m.observe_heartbeat("b", "1", clock.now()),
        Some(MembershipChange::Joined("b".into()))
    );
    assert_eq!(m.alive(), ["b", "me"]);
}

#[test]
fn clean_leave_and_late_heartbeats() {
    let clock = Clock::new();
    let mut m = Membership::new("me", Duration::from_secs(1));
    m.observe_heartbeat("b", "1", clock.now());
    assert_eq!(
        m.observe_leave("b", "1"),
        Some(MembershipChange::Left("b".into()))
    );
    assert_eq!(m.alive(), ["me"]);
    // A heartbeat sent before the leave but delivered after it does not resurrect.
    assert_eq!(m.observe_heartbeat("b", "1", clock.now()), None);
    // A restart (new incarnation) does.
    assert_eq!(
        m.observe_heartbeat("b", "2", clock.now()),
        Some(MembershipChange::Joined("b".into()))
    );
    // An old incarnation's leave is ignored.
    assert_eq!(m.observe_leave("b", "1"), None);
    assert!(m.observe_leave("ghost", "1").is_none());
}

#[test]
fn seeded_members_get_one_timeout_of_grace() {
    let mut clock = Clock::new();
    let mut m = Membership::new("me", Duration::from_secs(1));
    m.seed(["a", "b", "me"], clock.now());
    assert_eq!(m.alive(), ["a", "b", "me"]);
    clock.advance(Duration::from_millis(500));
    m.observe_heartbeat("a", "1", clock.now());
    clock.advance(Duration::from_millis(700));
    assert_eq!(m.sweep(clock.now()), [MembershipChange::Failed("b".into())]);
    assert_eq!(m.alive(), ["a", "me"]);
}
const HB: Duration = Duration::from_millis(100);

fn guarded(max_members: usize, joins_per_interval: u32) -> Membership {
    Membership::with_admission(
        "me",
        Duration::from_secs(1),
        Admission {
            max_members,
            joins_per_interval,
            heartbeat_interval: HB,
        },
    )
}

#[test]
fn ids_and_incarnations_that_break_the_naming_rule_are_refused_and_kept_nowhere() {
    let clock = Clock::new();
    let mut m = guarded(8, 4);
    let now = clock.now();
    let long = "x".repeat(65);
    for (node, inc) in [
        ("<img src=x>", "1"),
        ("a.b", "1"),
        ("", "1"),
        ("a*", "1"),
        (long.as_str(), "1"),
        ("ok", ""),
        ("ok", "in carnation"),
        ("ok", long.as_str()),
    ] {
        assert_eq!(
            m.admit_heartbeat(node, inc, now),
            Err(Refusal::Invalid),
            "{node:?} {inc:?}"
        );
    }
    assert_eq!(m.tracked(), 0);
    // A leave with a bad id changes nothing either.
    assert_eq!(m.observe_leave("<img>", "1"), None);
    // The view taken at its word keeps the old behaviour (the fuzz target's model).
    let mut open = Membership::new("me", Duration::from_secs(1));
    assert!(open.observe_heartbeat("a.b", "1", now).is_some());
}

#[test]
fn a_new_node_is_admitted_on_its_second_heartbeat_an_interval_later() {
    let clock = Clock::new();
    let mut m = guarded(8, 4);
    let t0 = clock.now();
    assert_eq!(m.admit_heartbeat("b", "1", t0), Ok(None));
    assert_eq!(m.alive(), ["me"], "not on its first heartbeat");
    // Heard again at once (a burst, or a duplicate): still waiting.
    assert_eq!(m.admit_heartbeat("b", "1", t0 + HB / 2), Ok(None));
    // The next heartbeat of a live node, a little early for jitter: admitted.
    assert_eq!(
        m.admit_heartbeat("b", "1", t0 + HB * 9 / 10),
        Ok(Some(MembershipChange::Joined("b".into())))
    );
    assert_eq!(m.alive(), ["b", "me"]);
    assert_eq!(m.admit_heartbeat("b", "1", t0 + HB * 2), Ok(None));
    // A restart within the failure timeout stays alive, under its new incarnation.
    assert_eq!(m.admit_heartbeat("b", "2", t0 + HB * 3), Ok(None));
    assert_eq!(m.member("b").map(|i| i.incarnation.as_str()), Some("2"));
    // A new incarnation restarts the wait of a node not admitted yet.
    assert_eq!(m.admit_heartbeat("c", "1", t0), Ok(None));
    assert_eq!(m.admit_heartbeat("c", "2", t0 + HB), Ok(None));
    assert_eq!(
        m.admit_heartbeat("c", "2", t0 + HB * 2),
        Ok(Some(MembershipChange::Joined("c".into())))
    );
}

#[test]
fn a_burst_of_made_up_ids_admits_nobody_fills_at_most_the_bound_and_expires() {
    let mut clock = Clock::new();
    let mut m = guarded(16, 4);
    m.seed(["live"], clock.now());
    let t0 = clock.now();
    let mut refused = BTreeMap::new();
    // Thousands of ids, each sent three times within a few milliseconds.
    for i in 0..3000 {
        for k in 0..3u32 {
            let at = t0 + Duration::from_micros(i) + Duration::from_millis(k.into());
            match m.admit_heartbeat(&format!("fake-{i}"), "x", at) {
                Ok(None) => {}
                Ok(Some(c)) => panic!("{c:?}"),
                Err(r) => *refused.entry(r).or_insert(0) += 1,
            }
        }
    }
    assert_eq!(m.alive(), ["live", "me"]);
    assert_eq!(m.tracked(), 16, "bounded");
    assert_eq!(
        refused.keys().copied().collect::<Vec<_>>(),
        [Refusal::MemberLimit]
    );
    // The live member keeps being heard; the others fall silent and are dropped.
    clock.advance(HB * 2);
    m.admit_heartbeat("live", "l", clock.now()).unwrap();
    assert!(m.expire_joining(clock.now()).is_empty(), "not yet");
    clock.advance(HB);
    let dropped = m.expire_joining(clock.now());
    assert_eq!(dropped.len(), 15);
    assert_eq!(m.tracked(), 1);
    assert!(m.sweep(clock.now()).is_empty());
    assert_eq!(m.alive(), ["live", "me"]);
    // A real newcomer finds room again.
    let t1 = clock.now();
    assert_eq!(m.admit_heartbeat("new", "1", t1), Ok(None));
    assert_eq!(
        m.admit_heartbeat("new", "1", t1 + HB),
        Ok(Some(MembershipChange::Joined("new".into())))
    );
}

#[test]
fn a_full_table_refuses_newcomers_but_never_its_members() {
    let clock = Clock::new();
    let mut m = guarded(2, 4);
    let t0 = clock.now();
    for n in ["a", "b"] {
        m.admit_heartbeat(n, "1", t0).unwrap();
        m.admit_heartbeat(n, "1", t0 + HB).unwrap();
    }
    assert_eq!(m.alive(), ["a", "b", "me"]);
    assert_eq!(
        m.admit_heartbeat("c", "1", t0 + HB),
        Err(Refusal::MemberLimit)
    );
    assert_eq!(m.admit_heartbeat("a", "1", t0 + HB * 2), Ok(None));
    // b leaves; its entry stays until it is forgotten, then c fits.
    m.observe_leave("b", "1");
    assert_eq!(
        m.admit_heartbeat("c", "1", t0 + HB * 2),
        Err(Refusal::MemberLimit)
    );
    let later = t0 + Duration::from_secs(3);
    m.admit_heartbeat("a", "1", later).unwrap();
    m.sweep(later);
    assert!(m.member("b").is_none(), "forgotten");
    assert_eq!(m.admit_heartbeat("c", "1", later), Ok(None));
}

#[test]
fn joins_beyond_the_rate_wait_for_the_next_interval() {
    let clock = Clock::new();
    let mut m = guarded(64, 2);
    let t0 = clock.now();
    let ids: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    for id in &ids {
        m.admit_heartbeat(id, "1", t0).unwrap();
    }
    let mut t = t0 + HB;
    let mut joined_per_round = Vec::new();
    while m.alive().len() < 6 {
        let mut joined = 0;
        for id in &ids {
            match m.admit_heartbeat(id, "1", t) {
                Ok(Some(_)) => joined += 1,
                Ok(None) => {}
                Err(r) => assert_eq!(r, Refusal::JoinRate),
            }
        }
        joined_per_round.push(joined);
        t += HB;
    }
    assert_eq!(joined_per_round, [2, 2, 1]);
}

#[test]
fn a_failed_member_is_admitted_again_like_a_newcomer_and_a_leave_cancels_a_wait() {
    let mut clock = Clock::new();
    let mut m = guarded(8, 4);
    m.seed(["b"], clock.now());
    clock.advance(Duration::from_millis(1100));
    assert_eq!(m.sweep(clock.now()), [MembershipChange::Failed("b".into())]);
    let t = clock.now();
    assert_eq!(m.admit_heartbeat("b", "2", t), Ok(None));
    assert_eq!(m.tracked(), 1, "one entry, waiting");
    assert_eq!(
        m.admit_heartbeat("b", "2", t + HB),
        Ok(Some(MembershipChange::Joined("b".into())))
    );
    // A node that leaves before it is admitted is dropped without a change.
    m.admit_heartbeat("c", "1", t).unwrap();
    assert_eq!(m.observe_leave("c", "1"), None);
    assert_eq!(m.tracked(), 1);
}
