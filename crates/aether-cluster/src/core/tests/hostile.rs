//! Made-up heartbeats: floods, refusals and how they are counted.

use super::*;

/// Thousands of made-up heartbeats, valid-looking and not, each sent once or a few times in a
/// moment, for every node of `nodes`; returns the refusals each reported.
fn flood(nodes: &mut [&mut NodeCore], bucket: &mut Bucket, now: Instant) -> Vec<Vec<Refused>> {
    let mut refused = vec![Vec::new(); nodes.len()];
    for i in 0..2000u32 {
        let at = now + Duration::from_micros(u64::from(i) * 10);
        let mut fakes = vec![Heartbeat {
            node_id: format!("node-{i:05}"),
            incarnation: format!("{i}"),
            seq: 0,
            wire: None,
        }];
        if i % 4 == 0 {
            fakes.push(Heartbeat {
                node_id: format!("<img src=x onerror=alert({i})>"),
                incarnation: "x".into(),
                seq: 0,
                wire: None,
            });
        }
        if i % 10 == 0 {
            // The same id again at once: a duplicate within the burst.
            fakes.push(fakes[0].clone());
        }
        for (n, out) in nodes.iter_mut().zip(refused.iter_mut()) {
            for hb in &fakes {
                let (_, views, changes, r) =
                    drive_counting(n, bucket, Input::Heartbeat(hb.clone()), at);
                assert!(changes.is_empty() && views.is_empty(), "{changes:?}");
                out.extend(r);
            }
        }
    }
    // The counts kept back are reported by the next sweep.
    let end = now + Duration::from_millis(25);
    for (n, out) in nodes.iter_mut().zip(refused.iter_mut()) {
        out.extend(drive_counting(n, bucket, Input::Sweep, end).3);
    }
    refused
}

#[test]
fn a_burst_of_made_up_heartbeats_moves_no_shard_and_writes_no_table() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let before = a.view();
    assert_eq!(before.table.members, ["a", "b"]);
    assert_eq!(a.term(), Some(1), "a leads");
    let refused = flood(&mut [&mut a, &mut b], &mut bucket, now);
    // The cluster goes on beating; the made-up ids are never heard again.
    for _ in 0..30 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        for n in [&mut a, &mut b] {
            drive(n, &mut bucket, Input::Sweep, now + HB / 2);
        }
        assert_eq!(a.view(), before, "the table never changed");
        assert!(a.tracked() <= 64 && b.tracked() <= 64);
        now += HB;
    }
    assert_eq!(b.view(), before);
    assert_eq!(bucket.table.as_ref().map(|(r, _)| *r), Some(before.epoch));
    assert_eq!(
        (a.tracked(), b.tracked()),
        (1, 1),
        "only the real peer is left"
    );
    for r in &refused {
        let count = |reason| {
            r.iter()
                .filter(|(x, _, _)| *x == reason)
                .map(|(_, n, _)| n)
                .sum::<u64>()
        };
        assert_eq!(count(Refusal::Invalid), 500);
        // 63 fakes fit beside the real peer; the rest of the 2000 (and of the duplicates)
        // find the table full.
        assert!(
            count(Refusal::MemberLimit) >= 2000 - 63,
            "{}",
            count(Refusal::MemberLimit)
        );
        // One warning for the whole flood: the first refusal.
        let logs: Vec<&RefusalLog> = r.iter().filter_map(|(_, _, l)| l.as_ref()).collect();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0].sample, "<img src=x onerror=alert(0)>");
    }
}

#[test]
fn a_real_newcomer_joins_on_its_second_heartbeat_even_after_a_flood() {
    let mut bucket = Bucket::default();
    let (mut a, mut b) = (core("a"), core("b"));
    let mut now = Instant::now();
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    flood(&mut [&mut a, &mut b], &mut bucket, now);
    // The table is full of ids heard once: they are dropped two intervals later.
    for _ in 0..3 {
        round(&mut [&mut a, &mut b], &mut bucket, now);
        now += HB;
    }
    let mut c = core("c");
    let (rev, table) = bucket.table.clone().unwrap();
    c.start(rev, Some(table), now);
    round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
    assert_eq!(
        a.view().table.members,
        ["a", "b"],
        "not on its first heartbeat"
    );
    now += HB;
    round(&mut [&mut a, &mut b, &mut c], &mut bucket, now);
    let view = a.view();
    assert_eq!(view.table.members, ["a", "b", "c"]);
    assert!(!view.primaries_of("c").is_empty());
}

#[test]
fn refusals_are_counted_every_time_and_warned_about_once_per_ten_seconds() {
    let mut a = core("a");
    let t0 = Instant::now();
    let bad = Heartbeat {
        node_id: "x".repeat(10_000),
        incarnation: "1".into(),
        seq: 0,
        wire: None,
    };
    let refusals =
        |a: &mut NodeCore, input: Input, at| -> Vec<(Refusal, u64, Option<RefusalLog>)> {
            a.step(input, at)
                .into_iter()
                .filter_map(|action| match action {
                    Action::HeartbeatsRefused { reason, count, log } => Some((reason, count, log)),
                    _ => None,
                })
                .collect()
        };
    let first = refusals(&mut a, Input::Heartbeat(bad.clone()), t0);
    let [(Refusal::Invalid, 1, Some(log))] = &first[..] else {
        panic!("{first:?}")
    };
    assert_eq!(log.unlogged, 0);
    assert_eq!(log.sample.chars().count(), 65, "64 characters and a mark");
    for k in 1..=5 {
        let at = t0 + Duration::from_secs(k);
        let later = refusals(&mut a, Input::Heartbeat(bad.clone()), at);
        assert!(later.is_empty(), "kept for the sweep: {later:?}");
    }
    let swept = refusals(&mut a, Input::Sweep, t0 + Duration::from_secs(6));
    assert_eq!(swept, [(Refusal::Invalid, 5, None)]);
    assert!(refusals(&mut a, Input::Sweep, t0 + Duration::from_secs(7)).is_empty());
    let garbled = refusals(
        &mut a,
        Input::Undecodable("malformed cluster message".into()),
        t0 + Duration::from_secs(10),
    );
    let [(Refusal::Undecodable, 1, Some(log))] = &garbled[..] else {
        panic!("{garbled:?}")
    };
    assert_eq!(log.unlogged, 5);
    assert_eq!(log.sample, "malformed cluster message");
}
