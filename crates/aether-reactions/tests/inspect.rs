//! The read-only view of the timers against a real nats-server: timers set through
//! `JetStreamTimers`, then counted, listed by due time and filtered by the server; messages
//! that are not timers counted as unreadable; fired timers counted until a dispatcher's
//! consumer acknowledges them. Before 2.12 (no message schedules) there is no timers stream
//! and the view says so.

use std::time::{Duration, Instant};

use aether_core::{ActorKey, Error, StorageKind, TimerRecord};
use aether_nats::subject::encode_actor_id;
use aether_reactions::{
    JetStreamTimers, PendingFilter, PendingTimer, PendingTimers, TimersConfig, TimersView,
};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::AckKind;
use chrono::{DateTime, Utc};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(60);

fn config() -> TimersConfig {
    TimersConfig {
        storage: StorageKind::Memory,
        ..TimersConfig::default()
    }
}

fn at(from_now: chrono::Duration) -> DateTime<Utc> {
    let t = Utc::now() + from_now;
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a time")
}

fn record(name: &str, due: DateTime<Utc>) -> TimerRecord {
    TimerRecord {
        name: name.into(),
        due,
        command: serde_json::json!({ "Expire": null }),
    }
}

async fn pending(view: &TimersView, filter: PendingFilter) -> PendingTimers {
    view.pending(&filter).await.expect("pending timers")
}

/// Polls `view` until `done` holds for what it reads.
async fn eventually(
    view: &TimersView,
    what: &str,
    done: impl Fn(&PendingTimers) -> bool,
) -> PendingTimers {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = pending(view, PendingFilter::default()).await;
        if done(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_timers_are_counted_listed_by_due_and_filtered_and_fired_ones_counted_until_acknowledged(
) {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);

    // Nothing set yet: the view does not create the stream, it says it is missing.
    let missing = TimersView::open(js.clone(), config()).await.unwrap_err();
    assert!(
        matches!(&missing, Error::NotFound(m) if m.contains("AETHER_TIMERS")),
        "{missing:?}"
    );
    assert!(aether_nats::backend::get_stream(&js, "AETHER_TIMERS")
        .await
        .unwrap()
        .is_none());

    if !server.version().at_least(2, 12) {
        // No message schedules: no timers, and the view's error says why.
        let refused = JetStreamTimers::open(js.clone(), config())
            .await
            .unwrap_err();
        assert!(matches!(refused, Error::Unsupported { .. }), "{refused:?}");
        assert!(missing.to_string().contains("2.12"), "{missing}");
        return;
    }

    let timers = JetStreamTimers::open(js.clone(), config())
        .await
        .expect("timers stream");
    let view = TimersView::open(js.clone(), config()).await.expect("view");

    // A hundred and fifty holds due in reverse order of their ids (more than one read's
    // batch), five payments, a second timer of one hold, and a hold whose id holds subject
    // and terminal characters.
    let mut expected: Vec<PendingTimer> = Vec::new();
    let mut set = |ty: &'static str, id: String, name: &'static str, due| {
        expected.push(PendingTimer {
            actor_type: ty.into(),
            actor_id: id.clone(),
            name: name.into(),
            due,
        });
        let timers = timers.clone();
        async move {
            timers
                .set(ActorKey::new(ty, &id), &record(name, due))
                .await
                .expect("set");
        }
    };
    for i in 0..150 {
        set(
            "hold",
            format!("h-{i}"),
            "expire",
            at(chrono::Duration::minutes(180 - i)),
        )
        .await;
    }
    for i in 0..5 {
        set(
            "payment",
            format!("p-{i}"),
            "retry",
            at(chrono::Duration::hours(2 + i)),
        )
        .await;
    }
    set(
        "hold",
        "h-3".into(),
        "remind",
        at(chrono::Duration::hours(3)),
    )
    .await;
    let hostile = "h.>*\u{1b}]0;owned\u{7}";
    set(
        "hold",
        hostile.into(),
        "expire",
        at(chrono::Duration::hours(4)),
    )
    .await;
    expected.sort();
    let count = expected.len() as u64;

    let all = pending(
        &view,
        PendingFilter {
            limit: 1000,
            ..PendingFilter::default()
        },
    )
    .await;
    assert_eq!(all.total, count);
    assert_eq!(all.next, expected);
    let first = pending(&view, PendingFilter::default()).await;
    assert_eq!(first.total, count);
    assert_eq!(first.next, expected[..50]);
    assert_eq!((all.unreadable, all.fired_awaiting_delivery), (0, 0));

    // The earliest five only, all counted.
    let five = pending(
        &view,
        PendingFilter {
            limit: 5,
            ..PendingFilter::default()
        },
    )
    .await;
    assert_eq!(five.total, count);
    assert_eq!(five.next, expected[..5]);
    let none = pending(
        &view,
        PendingFilter {
            limit: 0,
            ..PendingFilter::default()
        },
    )
    .await;
    assert_eq!((none.total, none.next.len()), (count, 0));

    // By actor type, by actor of a type, by actor id of any type.
    let payments = pending(
        &view,
        PendingFilter {
            actor_type: Some("payment".into()),
            ..PendingFilter::default()
        },
    )
    .await;
    assert_eq!(payments.total, 5);
    assert!(payments.next.iter().all(|t| t.actor_type == "payment"));
    let h3 = pending(
        &view,
        PendingFilter {
            actor_type: Some("hold".into()),
            actor_id: Some("h-3".into()),
            ..PendingFilter::default()
        },
    )
    .await;
    let names: Vec<&str> = h3.next.iter().map(|t| t.name.as_str()).collect();
    assert_eq!((h3.total, names), (2, vec!["expire", "remind"]));
    let by_id = pending(
        &view,
        PendingFilter {
            actor_id: Some(hostile.into()),
            ..PendingFilter::default()
        },
    )
    .await;
    assert_eq!(by_id.total, 1);
    assert_eq!(by_id.next[0].actor_id, hostile);
    let bad = view
        .pending(&PendingFilter {
            actor_type: Some("hold.>".into()),
            ..PendingFilter::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::InvalidInput(_)), "{bad:?}");

    // Messages on the schedule subjects that are not timers: counted apart, never listed.
    let token = encode_actor_id("x-1");
    for (subject, payload) in [
        (
            format!("aether.timers.set.hold.{token}.expire"),
            "not json".to_string(),
        ),
        (
            format!("aether.timers.set.hold.{token}.other"),
            // Another actor's timer, on this actor's subject.
            serde_json::json!({"actorType": "hold", "actorId": "h-1", "name": "other",
                               "due": "2030-01-01T00:00:00Z", "command": null})
            .to_string(),
        ),
        (
            "aether.timers.set.hold.not-base64=.expire".to_string(),
            "{}".to_string(),
        ),
    ] {
        js.publish(subject, payload.into())
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    let with_junk = pending(&view, PendingFilter::default()).await;
    assert_eq!((with_junk.total, with_junk.unreadable), (count, 3));
    assert_eq!(with_junk.next, expected[..50]);

    // A timer due now fires: its schedule leaves the pending ones, and the fired message is
    // counted while no dispatcher has run (no consumer: every fired message counts).
    timers
        .set(
            ActorKey::new("hold", "soon"),
            &record("expire", at(chrono::Duration::milliseconds(500))),
        )
        .await
        .expect("set");
    // The server stores the fired message before it removes the schedule, so a read in
    // between sees both; the schedule must be gone soon after.
    let fired = eventually(&view, "the timer to fire and leave the pending ones", |p| {
        p.fired_awaiting_delivery == 1 && p.total == count
    })
    .await;
    assert!(fired.next.iter().all(|t| t.actor_id != "soon"));

    // The dispatchers' consumer takes it: counted until acknowledged, then not, although the
    // fired message stays in the stream.
    let stream = js.get_stream("AETHER_TIMERS").await.expect("stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("aether-timers".into()),
            filter_subject: "aether.timers.due.>".into(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let message = batch.next().await.expect("one").expect("fired message");
    assert_eq!(
        pending(&view, PendingFilter::default())
            .await
            .fired_awaiting_delivery,
        1,
        "delivered, not acknowledged"
    );
    message
        .double_ack_with(AckKind::Ack)
        .await
        .expect("acknowledged");
    let delivered = pending(&view, PendingFilter::default()).await;
    assert_eq!(delivered.fired_awaiting_delivery, 0, "{delivered:?}");
    assert_eq!(delivered.total, count);

    // Reading left no consumer behind but the dispatchers'.
    let names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    assert_eq!(names, ["aether-timers"]);
}
