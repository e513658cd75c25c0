//! Timers and effects as the runtime records them: on the decision's events, checked before
//! anything is written, and a fired timer's command dropped once its timer is gone.

use std::sync::Arc;

use aether_core::{
    ActorKey, EffectRecord, EventStore, ReactionError, Reactions, TimerFire, TimerOp,
    MAX_TIMERS_PER_ACTOR,
};
use aether_store::InMemoryEventStore;
use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Actor, ActorClient, ActorHost, CommandError, CommandMeta, DomainEvent, Effect, Envelope,
    Handled, ReactionSupport, RuntimeConfig, Timer,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hold {
    /// When the hold expires, if it is held.
    expires: Option<DateTime<Utc>>,
    /// Extra timers, to test the limits.
    extra: Vec<(String, DateTime<Utc>)>,
    released: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum HoldCommand {
    Place {
        expires: DateTime<Utc>,
    },
    Pay,
    Expire,
    /// Declares `n` more timers named `name-<i>`, due at `at`.
    Many {
        name: String,
        n: usize,
        at: DateTime<Utc>,
    },
    /// An event sending `effects` effects to `target`, or a publish to `subject`.
    Notify {
        target: String,
        effects: usize,
        subject: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum HoldEvent {
    Placed {
        expires: DateTime<Utc>,
    },
    Paid,
    Expired,
    Many {
        name: String,
        n: usize,
        at: DateTime<Utc>,
    },
    Notified {
        target: String,
        effects: usize,
        subject: Option<String>,
    },
}

impl DomainEvent for HoldEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "Placed",
            Self::Paid => "Paid",
            Self::Expired => "Expired",
            Self::Many { .. } => "Many",
            Self::Notified { .. } => "Notified",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("not held")]
struct NotHeld;

struct Holds;

impl Actor for Holds {
    type State = Hold;
    type Command = HoldCommand;
    type Event = HoldEvent;
    type Reply = u32;
    type Error = NotHeld;
    const TYPE: &'static str = "hold";

    async fn decide(&self, _: &str, s: &Hold, c: &HoldCommand) -> Result<Vec<HoldEvent>, NotHeld> {
        Ok(match c.clone() {
            HoldCommand::Place { expires } => vec![HoldEvent::Placed { expires }],
            HoldCommand::Pay if s.expires.is_some() => vec![HoldEvent::Paid],
            HoldCommand::Pay => return Err(NotHeld),
            HoldCommand::Expire if s.expires.is_some() => vec![HoldEvent::Expired],
            HoldCommand::Expire => vec![],
            HoldCommand::Many { name, n, at } => vec![HoldEvent::Many { name, n, at }],
            HoldCommand::Notify {
                target,
                effects,
                subject,
            } => vec![HoldEvent::Notified {
                target,
                effects,
                subject,
            }],
        })
    }

    fn apply(s: &mut Hold, e: &HoldEvent) {
        match e {
            HoldEvent::Placed { expires } => s.expires = Some(*expires),
            HoldEvent::Paid => s.expires = None,
            HoldEvent::Expired => {
                s.expires = None;
                s.released += 1;
            }
            HoldEvent::Many { name, n, at } => {
                s.extra = (0..*n).map(|i| (format!("{name}-{i}"), *at)).collect();
            }
            HoldEvent::Notified { .. } => {}
        }
    }

    fn reply(s: &Hold, _: &HoldCommand, _: &[HoldEvent]) -> u32 {
        s.released
    }

    fn timers(_: &str, s: &Hold) -> Vec<Timer<HoldCommand>> {
        let mut t: Vec<_> = s
            .expires
            .map(|at| Timer::at("expire", at, HoldCommand::Expire))
            .into_iter()
            .collect();
        t.extend(
            s.extra
                .iter()
                .map(|(name, at)| Timer::at(name.clone(), *at, HoldCommand::Expire)),
        );
        t
    }

    fn effects(_: &str, e: &HoldEvent) -> Vec<Effect> {
        match e {
            HoldEvent::Notified {
                target,
                effects,
                subject,
            } => {
                let mut out: Vec<Effect> = (0..*effects)
                    .map(|i| Effect::send_to(target.clone(), format!("p-{i}"), &"Charge"))
                    .collect();
                out.extend(subject.iter().map(|s| Effect::publish(s.clone(), &"done")));
                out
            }
            _ => Vec::new(),
        }
    }
}

/// A reactor with timers that delivers to `payment` too.
struct WithTimers;

impl ReactionSupport for WithTimers {
    fn timers(&self) -> Result<(), ReactionError> {
        Ok(())
    }

    fn knows(&self, actor_type: &str) -> bool {
        actor_type == "payment"
    }
}

fn host() -> (ActorHost<Holds>, Arc<InMemoryEventStore>) {
    let store = Arc::new(InMemoryEventStore::new());
    let host = ActorHost::new(Holds, store.clone(), RuntimeConfig::default());
    host.set_reactions(Arc::new(WithTimers));
    (host, store)
}

async fn recorded(store: &InMemoryEventStore, id: &str) -> Vec<Option<Reactions>> {
    store
        .events_of(ActorKey::new("hold", id), 1)
        .await
        .expect("events")
        .iter()
        .map(|e| Reactions::of(e).expect("readable"))
        .collect()
}

fn in_minutes(m: i64) -> DateTime<Utc> {
    // Whole milliseconds, as the stored form keeps them.
    let t = Utc::now() + Span::minutes(m);
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a time")
}

#[tokio::test]
async fn timers_are_recorded_as_they_change() {
    let (host, store) = host();
    let first = in_minutes(10);
    host.send("h1", HoldCommand::Place { expires: first })
        .await
        .expect("placed");
    let later = in_minutes(20);
    host.send("h1", HoldCommand::Place { expires: later })
        .await
        .expect("replaced");
    host.send("h1", HoldCommand::Pay).await.expect("paid");
    let r = recorded(&store, "h1").await;
    let ops: Vec<Vec<TimerOp>> = r
        .into_iter()
        .map(|r| r.map(|r| r.timers).unwrap_or_default())
        .collect();
    assert_eq!(ops.len(), 3);
    assert!(matches!(&ops[0][..], [TimerOp::Set(t)] if t.name == "expire" && t.due == first));
    assert!(matches!(&ops[1][..], [TimerOp::Set(t)] if t.due == later));
    assert!(matches!(&ops[2][..], [TimerOp::Cancel { name }] if name == "expire"));
    assert!(host.pending_timers("h1").await.expect("loads").is_empty());
}

#[tokio::test]
async fn pending_timers_are_rebuilt_from_the_store() {
    let (host, store) = host();
    let due = in_minutes(5);
    host.send("h2", HoldCommand::Place { expires: due })
        .await
        .expect("placed");
    // Another host over the same store (a new owner after a failover) sees the same timer.
    let other = ActorHost::new(Holds, store, RuntimeConfig::default());
    let pending = other.pending_timers("h2").await.expect("loads");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].name.as_str(), pending[0].due), ("expire", due));
    assert_eq!(
        pending[0].command_id(),
        aether_core::timer_command_id("expire", due)
    );
}

fn fire(name: &str, due: DateTime<Utc>) -> Envelope<HoldCommand> {
    Envelope::new(HoldCommand::Expire).with_meta(CommandMeta {
        command_id: Some(aether_core::timer_command_id(name, due)),
        timer: Some(TimerFire {
            name: name.into(),
            due,
        }),
        ..CommandMeta::default()
    })
}

#[tokio::test]
async fn a_fire_applies_once_and_a_stale_fire_is_dropped() {
    let (host, store) = host();
    let old = in_minutes(1);
    host.send("h3", HoldCommand::Place { expires: old })
        .await
        .expect("placed");
    let new = in_minutes(30);
    host.send("h3", HoldCommand::Place { expires: new })
        .await
        .expect("replaced");

    // The replaced timer's fire is dropped without a decision.
    let stale = host.dispatch("h3", fire("expire", old)).await;
    assert!(
        matches!(stale, Err(CommandError::Reaction(ReactionError::StaleTimer { ref fire })) if fire.due == old),
        "{stale:?}"
    );
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("hold", "h3"))
            .await
            .expect("v"),
        2
    );

    // The current one applies, once; its repeat is absorbed, here and on a new activation.
    let applied = host
        .dispatch("h3", fire("expire", new))
        .await
        .expect("applied");
    assert!(
        matches!(
            applied,
            Handled::Reply {
                reply: 1,
                version: 3
            }
        ),
        "{applied:?}"
    );
    let again = host
        .dispatch("h3", fire("expire", new))
        .await
        .expect("absorbed");
    assert!(
        matches!(again, Handled::Reply { version: 3, .. }),
        "{again:?}"
    );
    host.passivate("h3");
    let other = ActorHost::new(Holds, store.clone(), RuntimeConfig::default());
    let repeat = other.dispatch("h3", fire("expire", new)).await;
    assert!(
        matches!(
            repeat,
            Ok(Handled::AlreadyApplied { reply: 1, .. })
                | Err(CommandError::Reaction(ReactionError::StaleTimer { .. }))
        ),
        "{repeat:?}"
    );
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("hold", "h3"))
            .await
            .expect("v"),
        3
    );
    // Expiring cancelled the timer in the same decision.
    let last = recorded(&store, "h3")
        .await
        .pop()
        .flatten()
        .expect("recorded");
    assert!(matches!(&last.timers[..], [TimerOp::Cancel { name }] if name == "expire"));
}

async fn refused(host: &ActorHost<Holds>, id: &str, command: HoldCommand) -> ReactionError {
    match host.send(id, command).await {
        Err(CommandError::Reaction(e)) => e,
        other => panic!("expected a refused reaction, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_timers_are_refused_and_write_nothing() {
    let (host, store) = host();
    let key = ActorKey::new("hold", "h4");
    let past = Utc::now() - Span::hours(2);
    assert!(matches!(
        refused(&host, "h4", HoldCommand::Place { expires: past }).await,
        ReactionError::TooFarPast { .. }
    ));
    let far = Utc::now() + Span::days(500);
    assert!(matches!(
        refused(&host, "h4", HoldCommand::Place { expires: far }).await,
        ReactionError::TooFarFuture { .. }
    ));
    let at = in_minutes(5);
    let many = HoldCommand::Many {
        name: "t".into(),
        n: MAX_TIMERS_PER_ACTOR + 1,
        at,
    };
    assert!(matches!(
        refused(&host, "h4", many).await,
        ReactionError::TooManyTimers { count, limit } if count == MAX_TIMERS_PER_ACTOR + 1 && limit == MAX_TIMERS_PER_ACTOR
    ));
    let bad_name = HoldCommand::Many {
        name: "a.b".into(),
        n: 1,
        at,
    };
    assert!(matches!(
        refused(&host, "h4", bad_name).await,
        ReactionError::InvalidTimerName { .. }
    ));
    assert_eq!(store.latest_version_of(key).await.expect("v"), 0);
    // The actor is still usable, and a timer a little in the past is accepted (fires at once).
    host.send(
        "h4",
        HoldCommand::Place {
            expires: Utc::now() - Span::minutes(5),
        },
    )
    .await
    .expect("a little late is fine");
    assert_eq!(store.latest_version_of(key).await.expect("v"), 1);
    assert_eq!(host.stats().reactions_refused, 4);
}

#[tokio::test]
async fn timers_without_a_reactor_are_unavailable() {
    let store = Arc::new(InMemoryEventStore::new());
    let host = ActorHost::new(Holds, store.clone(), RuntimeConfig::default());
    let e = refused(
        &host,
        "h5",
        HoldCommand::Place {
            expires: in_minutes(1),
        },
    )
    .await;
    assert!(
        matches!(e, ReactionError::TimersUnavailable { .. }),
        "{e:?}"
    );
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("hold", "h5"))
            .await
            .expect("v"),
        0
    );
    // As the workspace's error, it is `Unsupported`.
    let as_error: aether_core::Error = CommandError::<NotHeld>::Reaction(e).into();
    assert!(matches!(as_error, aether_core::Error::Unsupported { .. }));
    // Decisions without timers go on as before.
    host.send("h5", HoldCommand::Pay)
        .await
        .expect_err("not held");
}

#[tokio::test]
async fn effects_are_recorded_on_their_event_and_checked() {
    let (host, store) = host();
    host.send(
        "h6",
        HoldCommand::Notify {
            target: "payment".into(),
            effects: 2,
            subject: Some("shop.holds.done".into()),
        },
    )
    .await
    .expect("recorded");
    let r = recorded(&store, "h6")
        .await
        .pop()
        .flatten()
        .expect("recorded");
    assert_eq!(r.effects.len(), 3);
    assert!(
        matches!(&r.effects[1], EffectRecord::Command { actor_type, actor_id, .. } if actor_type == "payment" && actor_id == "p-1")
    );
    assert!(
        matches!(&r.effects[2], EffectRecord::Publish { subject, .. } if subject == "shop.holds.done")
    );

    let unknown = HoldCommand::Notify {
        target: "nobody".into(),
        effects: 1,
        subject: None,
    };
    assert!(matches!(
        refused(&host, "h6", unknown).await,
        ReactionError::UnknownTarget { actor_type } if actor_type == "nobody"
    ));
    let bad_subject = HoldCommand::Notify {
        target: "payment".into(),
        effects: 0,
        subject: Some("shop.*".into()),
    };
    assert!(matches!(
        refused(&host, "h6", bad_subject).await,
        ReactionError::InvalidSubject { .. }
    ));
    let too_many = HoldCommand::Notify {
        target: "payment".into(),
        effects: aether_core::MAX_EFFECTS_PER_EVENT + 1,
        subject: None,
    };
    assert!(matches!(
        refused(&host, "h6", too_many).await,
        ReactionError::TooManyEffects { .. }
    ));
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("hold", "h6"))
            .await
            .expect("v"),
        1
    );
}

#[tokio::test]
async fn a_transaction_records_timers_too() {
    let (host, store) = host();
    let due = in_minutes(3);
    host.transact(&["h7", "h8"], CommandMeta::new(), |_| {
        Ok((vec![vec![HoldEvent::Placed { expires: due }], vec![]], ()))
    })
    .await
    .expect("committed");
    let r = recorded(&store, "h7")
        .await
        .pop()
        .flatten()
        .expect("recorded");
    assert!(matches!(&r.timers[..], [TimerOp::Set(t)] if t.due == due));
    // Refused like a single decision, and nothing written.
    let past = Utc::now() - Span::days(1);
    let e = host
        .transact(&["h8", "h9"], CommandMeta::new(), |_| {
            Ok((
                vec![
                    vec![HoldEvent::Paid],
                    vec![HoldEvent::Placed { expires: past }],
                ],
                (),
            ))
        })
        .await;
    assert!(
        matches!(
            e,
            Err(CommandError::Reaction(ReactionError::TooFarPast { .. }))
        ),
        "{e:?}"
    );
    assert_eq!(
        store
            .latest_version_of(ActorKey::new("hold", "h8"))
            .await
            .expect("v"),
        0
    );
}
